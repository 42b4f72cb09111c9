"""The example host (examples/minicoder): its recorder and management API,
over real HTTP on loopback, on a real SQLite file and on a real PostgreSQL
server (the ``db_target`` fixture runs each test on both).

The helpers at the top are shared by the other test_example_host_* files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from aibridge_asgi import (
    Actor,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    PromptUsage,
    TokenUsage,
    ToolUsage,
)
from aibridge_asgi.testing import FakeResponse, ServerThread, streams

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from minicoder import Host, Settings, build_app  # noqa: E402
from minicoder.db import Database  # noqa: E402
from minicoder.recorder import SQLiteRecorder  # noqa: E402

API = "/api/v2/aibridge/interceptions"


# -- shared helpers -------------------------------------------------------------


class _Later:
    """An ASGI app set after the server socket is bound: the host needs its
    own URL (its fake upstream is reached over loopback) before it is built."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class RunningHost:
    server: ServerThread
    host: Host

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def bridge_url(self) -> str:
        return self.server.url + "/api/v2/aibridge"

    def flush(self) -> None:
        """Every record produced so far is in the database."""
        self.server.call(self.host.flush())

    def user(self, name: str, *, admin: bool = False) -> str:
        """Create ``name``; return a new token."""
        user = self.host.db.create_user(name, admin=admin)
        return self.host.db.new_token(user.id)


@pytest.fixture
def start_host(db_target: str) -> Iterator[Callable[..., RunningHost]]:
    """Start the example host in offline mode on a loopback port, lifespan on,
    on ``db_target`` (SQLite, then PostgreSQL) unless given another database."""
    running: list[RunningHost] = []

    def start(db_path: Path | str | None = None) -> RunningHost:
        later = _Later()
        server = ServerThread(later, lifespan="on")
        app = build_app(Settings(db_path=str(db_path or db_target), url=server.url))
        later.app = app
        server.start()
        host = RunningHost(server, app.state.host)
        running.append(host)
        return host

    yield start
    for host in running:
        host.server.stop()
        host.host.db.close()


def get_api(
    client: httpx.Client, host: RunningHost, token: str, /, **params: Any
) -> dict[str, Any]:
    r = client.get(host.url + API, params=params, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def messages(model: str, prompt: str, *, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    }


@dataclass
class HostProcess:
    """``python examples/host.py serve`` as a child process."""

    process: subprocess.Popen[str]
    url: str
    token: str
    banner: str
    #: What the process printed after its banner (filled while it runs).
    output: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def read_banner(stdout: IO[str], timeout: float) -> str:
    """The startup banner: everything up to its closing bar."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        bars = 0
        for line in stdout:
            lines.append(line)
            bars += line.startswith("=" * 20)
            if bars == 3:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return "".join(lines)


def spawn_host(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = 60
) -> HostProcess:
    """Start a host with ``command`` (it must print the banner), wait until
    it answers HTTP."""
    environ = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    banner = read_banner(process.stdout, timeout)  # type: ignore[arg-type]
    url = re.search(r"Host URL: +(\S+)", banner)
    token = re.search(r"Demo token: +(\S+)", banner)
    if url is None or token is None:
        process.kill()
        out = banner + (process.stdout.read() if process.stdout else "")
        raise AssertionError(f"no banner from {command}:\n{out}")
    # Keep draining the output so that the child never blocks on a full pipe.
    drained: list[str] = []
    threading.Thread(target=lambda: drained.extend(process.stdout or []), daemon=True).start()
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url.group(1) + "/login", timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)
    return HostProcess(process, url.group(1), token.group(1), banner, drained)


def host_command(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "examples/host.py", "serve", "--port", "0", "--db", str(db), *extra]


# -- the recorder -----------------------------------------------------------------


def _records(interception_id: str, actor: str = "u-1") -> list[Any]:
    now = datetime.now(UTC)
    return [
        InterceptionStarted(
            interception_id,
            Actor(actor, {"username": "x", "api_key_id": "k1"}),
            "anthropic",
            "anthropic",
            "claude-sonnet-4-5",
            "/v1/messages",
            True,
            "Claude Code",
            "s-1",
            "claude-cli/2",
            now,
            {"username": "x", "api_key_id": "k1"},
        ),
        PromptUsage(interception_id, "msg_1", "Fix the test"),
        ToolUsage(interception_id, "msg_1", "Read", "toolu_1", {"file_path": "a.py"}),
        ModelThought(interception_id, "Look at a.py", "thinking"),
        TokenUsage(interception_id, "msg_1", 10, 20, 300, 4, {"x": 1}),
        InterceptionEnded(
            interception_id,
            now + timedelta(seconds=1),
            "completed",
            200,
            credential="pool",
            key_name="backup",
        ),
    ]


def _rows(db: Database, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


def _count(db: Database, table: str) -> int:
    [(n,)] = _rows(db, f"SELECT COUNT(*) FROM {table}")
    return int(n)


def test_recorder_writes_every_record_type(db_target: str) -> None:
    db = Database(db_target)
    recorder = SQLiteRecorder(db)

    async def main() -> None:
        for record in _records("i-1"):
            await recorder.record(record)
        await recorder.aclose()

    asyncio.run(main())
    [row] = _rows(
        db,
        "SELECT initiator_id, api_key_id, provider, model, client, client_session_id,"
        " streaming, status, http_status, CASE WHEN ended_at IS NOT NULL THEN 1 ELSE 0 END,"
        " credential, key_name FROM aibridge_interceptions",
    )
    assert row == (
        *("u-1", "k1", "anthropic", "claude-sonnet-4-5", "Claude Code", "s-1", 1),
        *("completed", 200, 1, "pool", "backup"),
    )
    assert _rows(
        db,
        "SELECT provider_response_id, input_tokens, output_tokens, cache_read_input_tokens,"
        " cache_write_input_tokens, metadata FROM aibridge_token_usages",
    ) == [("msg_1", 10, 20, 300, 4, '{"x": 1}')]
    assert _rows(db, "SELECT prompt FROM aibridge_user_prompts") == [("Fix the test",)]
    assert _rows(db, "SELECT tool, tool_call_id, input, injected FROM aibridge_tool_usages") == [
        ("Read", "toolu_1", '{"file_path": "a.py"}', 0)
    ]
    assert _rows(db, "SELECT content, metadata FROM aibridge_model_thoughts") == [
        ("Look at a.py", '{"source": "thinking"}')
    ]
    db.close()


class _Blocker:
    """Another client holding the record tables against writes (readers
    still read): SQLite's exclusive transaction, PostgreSQL's table lock."""

    def __init__(self, db: Database, target: str) -> None:
        if db.kind == "sqlite":
            self.conn: Any = sqlite3.connect(target, isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
        else:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
            self.conn.execute("BEGIN")
            self.conn.execute(
                "LOCK TABLE aibridge_interceptions, aibridge_token_usages IN EXCLUSIVE MODE"
            )

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def test_recorder_never_waits_for_the_disk_and_batches(db_target: str) -> None:
    """With the database locked by someone else, record() still returns at
    once; the writer catches up afterwards, many records per transaction."""
    db = Database(db_target)
    recorder = SQLiteRecorder(db)
    blocker = _Blocker(db, db_target)

    async def main() -> float:
        started = time.perf_counter()
        for n in range(300):
            for record in _records(f"i-{n}"):
                await recorder.record(record)
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    assert elapsed < 1.0  # 1800 records, never waiting for the lock
    assert recorder.pending > 0
    time.sleep(0.2)
    if db.kind == "sqlite":
        assert _count(db, "aibridge_interceptions") == 0  # still locked out
    blocker.release()
    assert recorder.flush_sync(timeout=10)
    recorder.close()
    assert _count(db, "aibridge_interceptions") == 300
    assert _count(db, "aibridge_token_usages") == 300
    assert sum(recorder.batches) == 1800
    assert max(recorder.batches) > 1  # batched
    assert _rows(db, "SELECT COUNT(*) FROM aibridge_interceptions WHERE status = 'completed'") == [
        (300,)
    ]
    db.close()


def test_recorder_close_writes_everything_queued(db_target: str) -> None:
    db = Database(db_target)
    recorder = SQLiteRecorder(db)

    async def main() -> None:
        for n in range(200):
            for record in _records(f"i-{n}"):
                await recorder.record(record)
        await recorder.aclose()  # at once: nothing flushed before
        await recorder.record(_records("late")[0])  # after close: dropped, logged

    asyncio.run(main())
    assert _count(db, "aibridge_interceptions") == 200
    assert _count(db, "aibridge_model_thoughts") == 200
    db.close()


def test_recorder_one_bad_record_costs_only_itself(
    db_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(db_target)
    recorder = SQLiteRecorder(db)
    batch = _records("i-1") + _records("i-1")[:1] + _records("i-2")  # a duplicate start

    async def main() -> None:
        for record in batch:
            await recorder.record(record)
        await recorder.aclose()

    with caplog.at_level(logging.ERROR, "minicoder.recorder"):
        asyncio.run(main())
    assert _count(db, "aibridge_interceptions") == 2
    assert _count(db, "aibridge_token_usages") == 2
    assert _rows(db, "SELECT COUNT(*) FROM aibridge_interceptions WHERE status = 'completed'") == [
        (2,)
    ]
    assert "could not store InterceptionStarted" in caplog.text
    db.close()


# -- through the host: requests in, records out through the management API ----------


@dataclass
class Scenario:
    host: RunningHost
    admin: str
    alice: str
    bob: str
    #: interception ids in the order the requests were made
    ids: list[str]


@pytest.fixture
def scenario(start_host: Callable[..., RunningHost], client: httpx.Client) -> Scenario:
    """Four interceptions by two users, over both providers and all three
    APIs, streamed and not."""
    host = start_host()
    admin, alice, bob = host.user("root", admin=True), host.user("alice"), host.user("bob")
    fake = host.host.fake
    assert fake is not None
    ids: list[str] = []

    def sent(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-aibridge-interception-id"])
        time.sleep(0.002)  # distinct start times

    # 1. alice, Claude Code, Anthropic Messages, streamed, with thinking and a tool call
    fake.enqueue(
        FakeResponse.sse(
            streams.anthropic_events(
                "I'll read the file first.",
                thinking="The test imports app.py; look there.",
                tool_calls=[streams.ToolCall("Read", {"file_path": "app.py"}, id="toolu_01")],
                usage=streams.Usage(input_tokens=85, output_tokens=120, cache_read=9000),
            )
        )
    )
    sent(
        client.post(
            host.bridge_url + "/anthropic/v1/messages",
            headers={"authorization": f"Bearer {alice}", "user-agent": "claude-cli/2.1.0"},
            json=messages("claude-sonnet-4-5", "Fix the failing test in app.py", stream=True),
        )
    )
    # 2. alice, Codex, OpenAI Responses, not streamed
    sent(
        client.post(
            host.bridge_url + "/openai/v1/responses",
            headers={"authorization": f"Bearer {alice}", "user-agent": "codex_exec/0.171.0"},
            json={"model": "gpt-5-codex", "input": "Summarise the README"},
        )
    )
    # 3. bob, an OpenAI SDK, Chat Completions, streamed, with a tool call;
    #    the token in Coder's header
    fake.enqueue(
        FakeResponse.sse(
            streams.chat_events(
                "",
                model="gpt-4o",
                tool_calls=[streams.ToolCall("get_weather", {"city": "Paris"})],
                usage=streams.Usage(input_tokens=40, output_tokens=9),
            )
        )
    )
    sent(
        client.post(
            host.bridge_url + "/openai/v1/chat/completions",
            headers={"coder-session-token": bob, "user-agent": "OpenAI/Python 1.99.0"},
            json={
                "model": "gpt-4o",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
            },
        )
    )
    # 4. bob, curl, Anthropic Messages, not streamed, token in X-Api-Key
    sent(
        client.post(
            host.bridge_url + "/anthropic/v1/messages",
            headers={"x-api-key": bob, "user-agent": "curl/8.0"},
            json=messages("claude-haiku-4-5", "Say hi", stream=False),
        )
    )
    host.flush()
    return Scenario(host, admin, alice, bob, ids)


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["results"]]


def test_api_lists_everything_nested_newest_first(scenario: Scenario, client: httpx.Client) -> None:
    body = get_api(client, scenario.host, scenario.admin)
    assert body["count"] == 4
    assert body["next_cursor"] is None
    assert _ids(body) == scenario.ids[::-1]
    by_id = {item["id"]: item for item in body["results"]}

    claude = by_id[scenario.ids[0]]
    assert claude["initiator"]["username"] == "alice"
    assert claude["api_key_id"] == scenario.alice.split("-")[0]
    assert (claude["provider"], claude["model"], claude["client"]) == (
        "anthropic",
        "claude-sonnet-4-5",
        "Claude Code",
    )
    assert (claude["route"], claude["streaming"]) == ("/v1/messages", True)
    assert (claude["status"], claude["http_status"], claude["in_flight"]) == (
        "completed",
        200,
        False,
    )
    # Which credential served it: the provider's pool, its only key (named by position).
    assert (claude["credential"], claude["key_name"]) == ("pool", "0")
    page = client.get(scenario.host.url + "/usage", headers={"x-api-key": scenario.admin})
    assert 'title="200 · key 0"' in page.text  # the status tooltip names it
    assert claude["ended_at"] >= claude["started_at"]
    [usage] = claude["token_usages"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"]) == (
        85,
        120,
        9000,
    )
    assert [p["prompt"] for p in claude["user_prompts"]] == ["Fix the failing test in app.py"]
    [tool] = claude["tool_usages"]
    assert (tool["tool"], tool["tool_call_id"], tool["input"]) == (
        "Read",
        "toolu_01",
        {"file_path": "app.py"},
    )
    [thought] = claude["model_thoughts"]
    assert thought["content"] == "The test imports app.py; look there."
    assert thought["metadata"] == {"source": "thinking"}

    codex = by_id[scenario.ids[1]]
    assert (codex["client"], codex["route"], codex["streaming"]) == ("Codex", "/responses", False)
    assert [p["prompt"] for p in codex["user_prompts"]] == ["Summarise the README"]
    assert codex["token_usages"][0]["provider_response_id"].startswith("resp_")

    chat = by_id[scenario.ids[2]]
    assert chat["initiator"]["username"] == "bob"
    assert (chat["client"], chat["route"]) == ("openai-python", "/chat/completions")
    assert [t["tool"] for t in chat["tool_usages"]] == ["get_weather"]
    assert chat["token_usages"][0]["input_tokens"] == 40

    plain = by_id[scenario.ids[3]]
    assert (plain["client"], plain["model"]) == ("unknown", "claude-haiku-4-5")


def test_api_filters(scenario: Scenario, client: httpx.Client) -> None:
    host, admin, ids = scenario.host, scenario.admin, scenario.ids
    alice_id = host.host.db.user("alice").id  # type: ignore[union-attr]

    def listed(**params: Any) -> list[str]:
        body = get_api(client, host, admin, **params)
        assert body["count"] == len(body["results"])
        return _ids(body)

    assert listed(initiator="alice") == [ids[1], ids[0]]
    assert listed(initiator=alice_id) == [ids[1], ids[0]]
    assert listed(initiator="bob") == [ids[3], ids[2]]
    assert listed(initiator="me") == []
    assert listed(provider="anthropic") == [ids[3], ids[0]]
    assert listed(provider="openai") == [ids[2], ids[1]]
    assert listed(model="gpt-4o") == [ids[2]]
    assert listed(model="nope") == []
    assert listed(client="Claude Code") == [ids[0]]
    assert listed(client="codex") == [ids[1]]  # any case
    assert listed(provider="openai", initiator="alice") == [ids[1]]

    started = {item["id"]: item["started_at"] for item in get_api(client, host, admin)["results"]}
    assert listed(started_after=started[ids[2]]) == [ids[3], ids[2]]  # inclusive
    assert listed(started_before=started[ids[2]]) == [ids[1], ids[0]]  # exclusive
    assert listed(started_after=started[ids[1]], started_before=started[ids[3]]) == [
        ids[2],
        ids[1],
    ]
    # Any RFC 3339 offset: the same instant written in +02:00.
    moment = datetime.fromisoformat(started[ids[2]]).astimezone(timezone(timedelta(hours=2)))
    assert listed(started_after=moment.isoformat()) == [ids[3], ids[2]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert listed(started_after=future) == []


def test_api_cursor_pagination(scenario: Scenario, client: httpx.Client) -> None:
    host, admin, ids = scenario.host, scenario.admin, scenario.ids
    for limit, pages in ((1, 4), (3, 2), (4, 1), (1000, 1)):
        seen: list[str] = []
        cursor = None
        for _ in range(pages):
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            body = get_api(client, host, admin, **params)
            assert body["count"] == 4
            assert len(body["results"]) <= limit
            seen += _ids(body)
            cursor = body["next_cursor"]
        assert cursor is None, limit
        assert seen == ids[::-1], limit
    # With a filter, pages stay within it.
    first = get_api(client, host, admin, initiator="bob", limit=1)
    second = get_api(client, host, admin, initiator="bob", limit=1, cursor=first["next_cursor"])
    assert (_ids(first), _ids(second), second["next_cursor"]) == ([ids[3]], [ids[2]], None)
    assert first["count"] == second["count"] == 2
    # New interceptions do not shift later pages.
    r = client.post(
        host.bridge_url + "/anthropic/v1/messages",
        headers={"x-api-key": admin},
        json=messages("claude-haiku-4-5", "newer", stream=False),
    )
    assert r.status_code == 200
    host.flush()
    rest = get_api(client, host, admin, limit=2, cursor=first["next_cursor"])
    assert _ids(rest) == [ids[2], ids[1]]


def test_api_visibility(scenario: Scenario, client: httpx.Client) -> None:
    host, ids = scenario.host, scenario.ids
    assert _ids(get_api(client, host, scenario.alice)) == [ids[1], ids[0]]
    assert _ids(get_api(client, host, scenario.alice, initiator="me")) == [ids[1], ids[0]]
    assert _ids(get_api(client, host, scenario.alice, initiator="alice")) == [ids[1], ids[0]]
    assert _ids(get_api(client, host, scenario.bob)) == [ids[3], ids[2]]
    assert _ids(get_api(client, host, scenario.bob, model="gpt-5-codex")) == []
    r = client.get(
        host.url + API,
        params={"initiator": "bob"},
        headers={"authorization": f"Bearer {scenario.alice}"},
    )
    assert r.status_code == 403
    assert "admin" in r.json()["message"]
    assert len(get_api(client, host, scenario.admin)["results"]) == 4


def test_api_authentication(scenario: Scenario, client: httpx.Client) -> None:
    url = scenario.host.url + API
    for headers in (
        {"x-api-key": scenario.alice},
        {"coder-session-token": scenario.alice},
        {"authorization": f"bearer {scenario.alice}"},
    ):
        r = client.get(url, headers=headers)
        assert r.status_code == 200, headers
        assert r.json()["count"] == 2
    assert client.get(url).status_code == 401
    bad = scenario.alice[:-1] + ("x" if scenario.alice[-1] != "x" else "y")
    assert client.get(url, headers={"authorization": f"Bearer {bad}"}).status_code == 401
    assert client.get(url, headers={"x-api-key": "no-dash"}).status_code == 401
    r = client.get(scenario.host.url + "/api/v2/users/me", headers={"x-api-key": scenario.admin})
    assert r.json()["username"] == "root"
    assert r.json()["is_admin"] is True
    # The bridge refuses the same bad token.
    r = client.post(
        scenario.host.bridge_url + "/openai/v1/responses",
        headers={"authorization": f"Bearer {bad}"},
        json={"model": "gpt-5", "input": "hi"},
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"started_after": "yesterday"}, "started_after"),
        ({"started_before": "2025-01-01T00:00:00"}, "started_before"),  # no offset
        (
            {"started_after": "2025-02-01T00:00:00Z", "started_before": "2025-01-01T00:00:00Z"},
            "before",
        ),
        ({"initiator": "nobody"}, "nobody"),
        ({"user": "alice"}, "unknown query parameter"),
    ],
)
def test_api_rejects_bad_parameters(
    start_host: Callable[..., RunningHost],
    client: httpx.Client,
    params: dict[str, str],
    message: str,
) -> None:
    host = start_host()
    token = host.user("root", admin=True)
    r = client.get(host.url + API, params=params, headers={"x-api-key": token})
    assert r.status_code == 400
    assert message in r.json()["message"]


def test_in_flight_interceptions_are_listed_and_marked(
    start_host: Callable[..., RunningHost], client: httpx.Client
) -> None:
    host = start_host()
    alice = host.user("alice")
    assert host.host.fake is not None
    events = streams.anthropic_events("A slow answer.")
    # The first events, then nothing until the client leaves.
    host.host.fake.enqueue(FakeResponse.sse(events[:3], hang=float("inf")))
    headers = {"x-api-key": alice, "user-agent": "claude-cli/2.1.0"}
    with client.stream(
        "POST",
        host.bridge_url + "/anthropic/v1/messages",
        headers=headers,
        json=messages("claude-sonnet-4-5", "Take your time", stream=True),
    ) as response:
        assert response.status_code == 200
        interception_id = response.headers["x-aibridge-interception-id"]
        chunks = response.iter_raw()  # (kept: dropping it would close the response)
        next(chunks)  # the stream has started
        deadline = time.monotonic() + 5
        while True:
            body = get_api(client, host, alice)
            # (the start and the prompt may be written in two batches)
            if body["results"] and body["results"][0]["user_prompts"]:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        [item] = body["results"]
        assert item["id"] == interception_id
        assert (item["in_flight"], item["status"], item["ended_at"]) == (True, None, None)
        assert [p["prompt"] for p in item["user_prompts"]] == ["Take your time"]
        page = client.get(host.url + "/usage", headers=headers)
        assert "in flight" in page.text
    # The client left: the interception ends, cancelled.
    deadline = time.monotonic() + 5
    while get_api(client, host, alice)["results"][0]["in_flight"]:
        assert time.monotonic() < deadline, "the interception never ended"
        time.sleep(0.02)
    [item] = get_api(client, host, alice)["results"]
    assert (item["status"], item["error"]) == ("cancelled", "client disconnected")
    assert item["ended_at"] is not None


def test_restart_keeps_everything(
    start_host: Callable[..., RunningHost], client: httpx.Client, db_target: str
) -> None:
    first = start_host(db_target)
    admin, alice = first.user("root", admin=True), first.user("alice")
    made: list[str] = []
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
        r = client.post(
            first.bridge_url + "/anthropic/v1/messages",
            headers={"x-api-key": alice},
            json=messages(model, f"hello {model}", stream=True),
        )
        assert r.status_code == 200
        made.insert(0, r.headers["x-aibridge-interception-id"])
    # No flush first: stopping (the lifespan) must write everything.
    first.server.stop()
    # An interception a killed run never ended (as if SIGKILLed mid-call).
    other = Database(db_target)
    with other.connect() as conn:
        conn.execute(
            "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name,"
            " model, route, streaming, started_at) VALUES ('lost', 'x', 'openai', 'openai',"
            " 'gpt-5', '/responses', 1, ?)",
            # within the retention period (older ones are deleted at startup)
            ((datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),),
        )
    other.close()

    second = start_host(db_target)
    # The tokens still work, on the bridge and on the API.
    r = client.post(
        second.bridge_url + "/openai/v1/responses",
        headers={"authorization": f"Bearer {alice}"},
        json={"model": "gpt-5", "input": "after the restart"},
    )
    assert r.status_code == 200
    second.flush()
    after = get_api(client, second, admin)
    assert after["count"] == 4
    assert [p["prompt"] for p in after["results"][0]["user_prompts"]] == ["after the restart"]
    assert _ids(after)[1:3] == made
    models = ("claude-haiku-4-5", "claude-sonnet-4-5")
    for item, model in zip(after["results"][1:3], models, strict=True):
        assert (item["model"], item["status"], item["in_flight"]) == (model, "completed", False)
        assert [p["prompt"] for p in item["user_prompts"]] == [f"hello {model}"]
        assert item["token_usages"][0]["output_tokens"] == 7
    lost = after["results"][3]
    assert (lost["id"], lost["in_flight"], lost["status"]) == ("lost", False, "interrupted")


def test_create_user_command(tmp_path: Path) -> None:
    db_path = tmp_path / "cli.db"
    command = [sys.executable, "examples/host.py", "create-user", "--db", str(db_path)]
    made = subprocess.run(
        [*command, "carol", "--admin"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    token = made.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{10}-[A-Za-z0-9_-]{32}", token), made.stdout
    again = subprocess.run(
        [*command, "carol"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert again != token
    db = Database(db_path)
    for t in (token, again):  # both valid, same user, still admin
        owner = db.token_owner(t)
        assert owner is not None
        assert (owner.user.username, owner.user.is_admin) == ("carol", True)
    with sqlite3.connect(db_path) as conn:
        stored = b"".join(row[0] for row in conn.execute("SELECT hashed_secret FROM api_keys"))
        dump = "\n".join(conn.iterdump())
    for t in (token, again):  # never in clear
        assert t.split("-", 1)[1].encode() not in stored
        assert t.split("-", 1)[1] not in dump
