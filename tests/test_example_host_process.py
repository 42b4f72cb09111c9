"""The example host as a process (``python examples/host.py serve``): stopping
it mid-stream loses no record, on SQLite and on PostgreSQL.

The host runs with "real" provider settings pointed at a fake upstream in
the test process (``AIBRIDGE_ANTHROPIC_BASE_URL``), so the test can script a
slow stream.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibridge_asgi.testing import ANTHROPIC_KEY, FakeResponse, FakeUpstream, ServerThread, streams

from .test_example_host import ROOT, Database, HostProcess, host_command, messages, spawn_host

# Spawns host processes: deselected by -m 'not slow'.
pytestmark = pytest.mark.slow


def _spawn(db: Path | str, upstream: ServerThread, *extra: str) -> HostProcess:
    env = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENAI_API_KEY": "",
        "AIBRIDGE_ANTHROPIC_BASE_URL": upstream.url,
    }
    return spawn_host(host_command(db, *extra), env=env)


class Streamer(threading.Thread):
    """Reads one streamed answer in the background."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.started = threading.Event()
        self.body = b""
        self.error: Exception | None = None
        self.interception_id = ""

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "POST",
                    self.url + "/api/v2/aibridge/anthropic/v1/messages",
                    headers={"x-api-key": self.token, "user-agent": "claude-cli/2.1.0"},
                    json=messages("claude-sonnet-4-5", "Stream slowly, please", stream=True),
                ) as response,
            ):
                self.interception_id = response.headers["x-aibridge-interception-id"]
                for chunk in response.iter_raw():
                    self.body += chunk
                    self.started.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.started.set()


def _rows(target: Path | str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = Database(target, migrate=False)
    try:
        with db.connect() as conn:
            return [tuple(row) for row in conn.execute(sql, params)]
    finally:
        db.close()


ENDED = "CASE WHEN ended_at IS NOT NULL THEN 1 ELSE 0 END"


def test_sigterm_mid_stream_finishes_the_stream_and_loses_nothing(
    db_target: str, fake: FakeUpstream, upstream: ServerThread
) -> None:
    db = db_target
    events = streams.anthropic_events(
        "A slow answer, piece by piece.",
        pieces=10,
        usage=streams.Usage(input_tokens=30, output_tokens=12),
    )
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.08))  # about 1.3 s in all
    host = _spawn(db, upstream)
    streamer = Streamer(host.url, host.token)
    streamer.start()
    assert streamer.started.wait(10)
    assert streamer.error is None
    host.stop(signal.SIGTERM)  # graceful: running calls may finish (10 s by default)
    streamer.join(10)
    assert streamer.error is None
    assert streamer.body.endswith(events[-1])  # the client got the whole answer
    [row] = _rows(
        db,
        f"SELECT id, status, http_status, {ENDED} FROM aibridge_interceptions",
    )
    assert row == (streamer.interception_id, "completed", 200, 1)
    assert _rows(db, "SELECT input_tokens, output_tokens FROM aibridge_token_usages") == [(30, 12)]
    assert _rows(db, "SELECT prompt FROM aibridge_user_prompts") == [("Stream slowly, please",)]


def test_sigterm_past_the_grace_period_records_the_cancellation(
    db_target: str, fake: FakeUpstream, upstream: ServerThread
) -> None:
    db = db_target
    events = streams.anthropic_events("Never finished.")
    fake.enqueue(FakeResponse.sse(events[:3], hang=float("inf")))  # starts, then hangs
    host = _spawn(db, upstream, "--graceful-timeout", "0.3")
    streamer = Streamer(host.url, host.token)
    streamer.start()
    assert streamer.started.wait(10)
    host.stop(signal.SIGTERM)
    streamer.join(10)
    [row] = _rows(
        db,
        f"SELECT id, status, error, {ENDED} FROM aibridge_interceptions",
    )
    assert row == (streamer.interception_id, "cancelled", "bridge shut down during the call", 1)
    # What the bridge had recorded before the end is there too.
    assert _rows(db, "SELECT prompt FROM aibridge_user_prompts") == [("Stream slowly, please",)]


def test_tokens_made_while_serving_work_at_once(
    db_target: str, fake: FakeUpstream, upstream: ServerThread
) -> None:
    """``create-user`` from another process, against the live database."""
    db = db_target
    host = _spawn(db, upstream)
    try:
        token = subprocess.run(
            [sys.executable, "examples/host.py", "create-user", "dave", "--db", str(db)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        r = httpx.post(
            host.url + "/api/v2/aibridge/anthropic/v1/messages",
            headers={"x-api-key": token},
            json=messages("claude-haiku-4-5", "hi", stream=False),
        )
        assert r.status_code == 200, r.text
        assert "REAL provider at " + upstream.url in host.banner
    finally:
        host.stop()
    [(username,)] = _rows(
        db, "SELECT username FROM aibridge_interceptions JOIN users ON users.id = initiator_id"
    )
    assert username == "dave"


def test_the_access_log_never_shows_a_token_sent_as_key_in_the_query(tmp_path: Path) -> None:
    """Gemini clients may send their key as ``?key=``: the host's access log
    (uvicorn's, printed on stdout) keeps the request line but not the token."""
    env = {"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "", "GEMINI_API_KEY": ""}
    host = spawn_host(host_command(tmp_path / "host.db"), env=env)
    try:
        path = "/api/v2/aibridge/gemini/v1beta/models/gemini-2.5-flash:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        statuses = [
            httpx.post(f"{host.url}{path}?alt=json&{spelling}={host.token}", json=body).status_code
            for spelling in ("key", "KEY", "k%65y")
        ]
        assert statuses[0] == 200  # the token was taken from the query
    finally:
        host.stop()
    log = "".join(host.output)
    assert log.count("generateContent?alt=json&") == 3, log
    assert "key=[redacted]" in log and "k%65y=[redacted]" in log
    assert host.token not in log
