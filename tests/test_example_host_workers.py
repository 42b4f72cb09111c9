"""``examples/host.py serve --workers 2`` on a real PostgreSQL server: many
requests spread over both workers, streams the clients cancel, a worker
stopped mid-stream; afterwards every interception is in the management API
exactly once, with its end."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ServerThread,
    streams,
)

from .postgres_server import PostgresServer
from .test_example_host import API, HostProcess, host_command, messages, spawn_host

pytestmark = pytest.mark.slow


def _workers(parent: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True
    ).stdout
    pids = [int(pid) for pid in out.split()]
    # multiprocessing's resource tracker is a child too: workers hold sockets
    return [pid for pid in pids if _listening(pid)]


def _listening(pid: int) -> bool:
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def _server_pid(client_port: int, candidates: list[int]) -> int | None:
    """Which worker holds the server side of the connection from ``client_port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:  # remote = the client
                    inodes.add(fields[9])
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


class Stream(threading.Thread):
    """One streamed Messages call; ``cancel`` leaves after the first chunk."""

    def __init__(self, url: str, token: str, *, cancel: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.cancel = url, token, cancel
        self.started = threading.Event()
        self.interception_id = ""
        self.client_port = 0
        self.body = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST",
                    self.url + "/api/v2/aibridge/anthropic/v1/messages",
                    headers={"x-api-key": self.token, "user-agent": "claude-cli/2.1.0"},
                    json=messages("claude-sonnet-4-5", "Stream slowly", stream=True),
                ) as response,
            ):
                assert response.status_code == 200
                self.interception_id = response.headers["x-aibridge-interception-id"]
                sock = response.extensions["network_stream"].get_extra_info("socket")
                self.client_port = sock.getsockname()[1]
                for chunk in response.iter_raw():
                    self.body += chunk
                    self.started.set()
                    if self.cancel:
                        break
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()


def _request(client: httpx.Client, url: str, token: str, n: int) -> str:
    """Request ``n`` of the mix: the three APIs, streamed and not."""
    bridge = url + "/api/v2/aibridge"
    headers = {"authorization": f"Bearer {token}"}
    kind = n % 4
    if kind == 0:
        r = client.post(
            bridge + "/anthropic/v1/messages",
            headers=headers,
            json=messages("claude-haiku-4-5", f"request {n}", stream=False),
        )
    elif kind == 1:
        r = client.post(
            bridge + "/anthropic/v1/messages",
            headers=headers,
            json=messages("claude-sonnet-4-5", f"request {n}", stream=True),
        )
    elif kind == 2:
        r = client.post(
            bridge + "/openai/v1/chat/completions",
            headers=headers,
            json={
                "model": "gpt-4o",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"request {n}"}],
            },
        )
    else:
        r = client.post(
            bridge + "/openai/v1/responses",
            headers=headers,
            json={"model": "gpt-5", "input": f"request {n}"},
        )
    assert r.status_code == 200, r.text
    return r.headers["x-aibridge-interception-id"]


def _all_interceptions(url: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with httpx.Client(timeout=60) as client:
        while True:
            r = client.get(url + API, params=params, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            body = r.json()
            items += body["results"]
            if body["next_cursor"] is None:
                return items
            params["cursor"] = body["next_cursor"]


def test_two_workers_on_postgresql_lose_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    fake = FakeUpstream()
    slow = streams.anthropic_events(
        "A slow answer, piece by piece.",
        pieces=12,
        usage=streams.Usage(input_tokens=30, output_tokens=12),
    )
    with ServerThread(fake) as upstream:
        env = {
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "OPENAI_API_KEY": OPENAI_KEY,
            "AIBRIDGE_ANTHROPIC_BASE_URL": upstream.url,
            "AIBRIDGE_OPENAI_BASE_URL": upstream.url + "/v1",
        }
        db = postgres_server.new_database()
        host: HostProcess = spawn_host(host_command(db, "--workers", "2"), env=env, timeout=90)
        try:
            deadline = time.monotonic() + 30
            while len(workers := _workers(host.process.pid)) < 2:
                assert time.monotonic() < deadline, "the workers never started"
                time.sleep(0.1)

            # 1. 500 requests of every kind, 16 at a time, over both workers.
            with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
                made = list(
                    pool.map(lambda n: _request(client, host.url, host.token, n), range(500))
                )

            # 2. 50 streams the clients leave after the first chunk.
            for _ in range(50):
                fake.enqueue(FakeResponse.sse(slow, chunk_delay=0.2), path="/v1/messages")
            cancelled = [Stream(host.url, host.token, cancel=True) for _ in range(50)]
            for s in cancelled:
                s.start()
            for s in cancelled:
                s.join(60)
                assert s.error is None and s.interception_id

            # 3. SIGTERM to the worker serving a stream, mid-stream: it
            #    finishes the streams it serves, writes their records, exits
            #    (uvicorn starts another); the other worker is untouched.
            for _ in range(6):
                fake.enqueue(FakeResponse.sse(slow, chunk_delay=0.1), path="/v1/messages")
            finishing = [Stream(host.url, host.token, cancel=False) for _ in range(6)]
            for s in finishing:
                s.start()
            for s in finishing:
                assert s.started.wait(30)
            served_by = {s: _server_pid(s.client_port, workers) for s in finishing}
            victim = next(pid for pid in served_by.values() if pid is not None)
            os.kill(victim, signal.SIGTERM)
            for s in finishing:
                s.join(60)
                assert s.error is None
                assert s.body.endswith(slow[-1]), "a stream was cut"
            assert any(pid == victim for pid in served_by.values())

            # Every interception, exactly once, ended (wait for the writers).
            expected = set(made) | {s.interception_id for s in cancelled + finishing}
            assert len(expected) == 556
            deadline = time.monotonic() + 30
            while True:
                items = _all_interceptions(host.url, host.token)
                if all(not item["in_flight"] for item in items) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            ids = [item["id"] for item in items]
            assert len(ids) == len(set(ids)) == 556
            assert set(ids) == expected
            by_id = {item["id"]: item for item in items}
            for item in items:
                assert item["ended_at"] is not None and not item["in_flight"], item
                assert len(item["user_prompts"]) == 1, item
            assert {by_id[i]["status"] for i in made} == {"completed"}
            assert {by_id[s.interception_id]["status"] for s in cancelled} == {"cancelled"}
            for s in finishing:
                item = by_id[s.interception_id]
                assert item["status"] == "completed"
                assert [t["output_tokens"] for t in item["token_usages"]] == [12]
            # The same answers whichever worker serves them: sessions (one
            # per interception here: no client session ids), spend, the page.
            auth = {"authorization": f"Bearer {host.token}"}
            with httpx.Client(base_url=host.url, headers=auth, timeout=60) as client:
                for _ in range(4):
                    r = client.get("/api/v2/aibridge/sessions", params={"limit": 1})
                    assert r.status_code == 200 and r.json()["count"] == 556
                    page = client.get("/usage")
                    assert page.status_code == 200 and "556" in page.text
            # The stopped worker was replaced.
            deadline = time.monotonic() + 30
            while victim in _workers(host.process.pid) or len(_workers(host.process.pid)) < 2:
                assert time.monotonic() < deadline, "the worker was not replaced"
                time.sleep(0.1)
        finally:
            assert host.stop(signal.SIGTERM, timeout=60) == 0
