"""Load and soak, bounded and on loopback only.

* 1,000 concurrent streaming requests through one bridge worker, all held
  open at the same time at the upstream, all relayed byte for byte and each
  recorded exactly once;
* a mixed soak (successes, upstream errors, cut streams, clients leaving
  while sending or while reading) for ``AIBRIDGE_SOAK_SECONDS`` (default 40)
  or ``AIBRIDGE_SOAK_REQUESTS`` requests (default 100,000), whichever comes
  first: no leaked tasks on the bridge's loop, no leaked file descriptors,
  memory flat, every interception recorded with the right end;
* graceful shutdown under load: ``aclose()`` lets in-flight streams finish,
  or cancels them at the grace deadline, and every record is delivered.

The client is a minimal asyncio HTTP/1.1 client in the test's thread; the
bridge and the upstream each run in their own ServerThread. Figures are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from aibridge_asgi import (
    Bridge,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    Record,
    TokenUsage,
)
from aibridge_asgi.testing import InMemoryRecorder, ServerThread, streams

from .conftest import HOST_TOKEN, Running
from .test_hardening_input import rss_mib

# Minutes of load: deselected by -m 'not slow'.
pytestmark = pytest.mark.slow

USAGE = streams.Usage(input_tokens=11, output_tokens=5)
STREAM_EVENTS = streams.anthropic_events("soak test answer", usage=USAGE, pieces=4)
STREAM = b"".join(STREAM_EVENTS)
CHAT_EVENTS = streams.chat_events("soak chat answer", usage=USAGE, pieces=4)
CHAT_STREAM = b"".join(CHAT_EVENTS)
MESSAGE = json.dumps(streams.anthropic_message("soak json answer", usage=USAGE)).encode()
ERRORS = {
    429: b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
    500: b'{"type":"error","error":{"type":"api_error","message":"internal"}}',
}
MESSAGES_BODY = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
JSON_BODY = MESSAGES_BODY.replace(b'"stream": true', b'"stream": false')
CHAT_BODY = json.dumps(
    {
        "model": "gpt-5",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()


# -- the upstream ---------------------------------------------------------------------------


@dataclass
class SoakUpstream:
    """An ASGI upstream that answers as the ``x-soak`` request header says.

    ``stream``/``json``/``chat``: a whole answer; ``429``/``500``: an error;
    ``cut``: three events, then the connection drops; ``slow``: a stream
    with ``slow_delay`` between events; ``hold``: two events, then waits
    until ``hold_target`` streams are held at once, then the rest;
    ``endless``: pings until the client leaves.
    """

    slow_delay: float = 0.02
    hold_target: int = 0
    calls: int = 0
    active: int = 0
    peak: int = 0
    holding: int = 0
    released_at: int = 0
    abandoned: int = 0
    abandoned_at: list[float] = field(default_factory=list)
    _release: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        scenario = headers.get(b"x-soak", b"stream").decode()
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._answer(scenario, send, gone)
        finally:
            self.active -= 1
            watcher.cancel()

    async def _answer(self, scenario: str, send: Send, gone: asyncio.Event) -> None:
        async def start(status: int, content_type: bytes) -> None:
            headers = [(b"content-type", content_type), (b"request-id", b"req_soak")]
            await send({"type": "http.response.start", "status": status, "headers": headers})

        async def body(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        if scenario in ("429", "500"):
            await start(int(scenario), b"application/json")
            await body(ERRORS[int(scenario)], more=False)
            return
        if scenario == "json":
            await start(200, b"application/json")
            await body(MESSAGE, more=False)
            return
        await start(200, b"text/event-stream")
        events = CHAT_EVENTS if scenario == "chat" else STREAM_EVENTS
        if scenario == "cut":
            for event in events[:3]:
                await body(event)
            return  # unfinished: the server drops the connection
        if scenario == "endless":
            await body(events[0])  # message_start, with the input tokens
            while not gone.is_set():
                await body(b'event: ping\ndata: {"type": "ping"}\n\n')
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), 0.05)
            self.abandoned += 1
            self.abandoned_at.append(time.monotonic())
            return
        for n, event in enumerate(events):
            if gone.is_set():
                self.abandoned += 1
                self.abandoned_at.append(time.monotonic())
                return
            if scenario == "hold" and n == 2:
                await self._hold(gone)
            elif scenario == "slow" and n:
                await asyncio.sleep(self.slow_delay)
            await body(event)
        await body(b"", more=False)

    async def _hold(self, gone: asyncio.Event) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        self.holding += 1
        if self.holding >= self.hold_target:
            self.released_at = self.holding
            self._release.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), 45)


# -- a minimal client ---------------------------------------------------------------------


class Incomplete(Exception):
    """The chunked body ended before its last chunk (a cut stream)."""


def dechunk(data: bytes) -> bytes:
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise Incomplete()
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(data) < start + size + 2:
            raise Incomplete()
        out.append(data[start : start + size])
        pos = start + size + 2


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut: bool = False


async def call(
    port: int,
    path: str,
    body: bytes,
    scenario: str,
    *,
    leave: str | None = None,
) -> Answer:
    """POST ``body`` with ``Connection: close``. ``leave="sending"`` hangs up
    after half the body; ``leave="reading"`` after the first body byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {HOST_TOKEN}\r\n"
            f"Content-Type: application/json\r\nX-Soak: {scenario}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        if leave == "sending":
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            return Answer(None)
        writer.write(head + body)
        await writer.drain()
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if leave == "reading":
            await reader.readexactly(1)
            return Answer(status, headers)
        data = await reader.read()
        if headers.get("transfer-encoding") == "chunked":
            try:
                return Answer(status, headers, dechunk(data))
            except Incomplete:
                return Answer(status, headers, data, cut=True)
        return Answer(status, headers, data)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# -- helpers ----------------------------------------------------------------------------------


class PairingRecorder:
    """Counts records and pairs starts with ends, keeping only open ones (so
    that its own memory stays flat over a long soak)."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.started = 0
        self.ended: Counter[str] = Counter()
        self.usage = 0
        self.problems: list[str] = []

    async def record(self, record: Record) -> None:
        if isinstance(record, InterceptionStarted):
            if record.interception_id in self.open:
                self.problems.append(f"started twice: {record.interception_id}")
            self.open.add(record.interception_id)
            self.started += 1
        elif isinstance(record, InterceptionEnded):
            if record.interception_id not in self.open:
                self.problems.append(f"ended without a start: {record.interception_id}")
            self.open.discard(record.interception_id)
            self.ended[record.status] += 1
        elif isinstance(record, TokenUsage):
            self.usage += 1


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _loop_tasks() -> list[str]:
    current = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)


async def _in_flight(bridge: Bridge) -> int:
    return bridge.in_flight


def settle(check: Callable[[], bool], within: float = 10.0) -> bool:
    """Wait until ``check()`` holds (things happen on other threads); its last value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


class _DropCutNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


@pytest.fixture
def soak_upstream() -> Iterator[tuple[SoakUpstream, ServerThread]]:
    app = SoakUpstream()
    # Quiet: uvicorn logs an ERROR for each stream the "cut" scenario drops.
    quiet = _DropCutNotices()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        with ServerThread(app) as server:
            yield app, server
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)


def bridge_for(
    start_bridge: Callable[..., Running], server: ServerThread, **options: Any
) -> Running:
    return start_bridge(
        base_urls={"anthropic": server.url, "openai": server.url + "/v1"},
        limits=Limits(keepalive_interval=None),
        **options,
    )


# -- 1,000 concurrent streams ---------------------------------------------------------------


def test_a_thousand_concurrent_streams(
    start_bridge: Callable[..., Running], soak_upstream: tuple[SoakUpstream, ServerThread]
) -> None:
    streams_wanted = 1000
    app, server = soak_upstream
    app.hold_target = streams_wanted
    running = bridge_for(start_bridge, server)
    port = running.server.port

    async def main() -> list[Answer | BaseException]:
        tasks = [
            call(port, "/anthropic/v1/messages", MESSAGES_BODY, "hold")
            for _ in range(streams_wanted)
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)

    began = time.monotonic()
    answers = asyncio.run(main())
    took = time.monotonic() - began
    failures = [a for a in answers if not isinstance(a, Answer) or a.status != 200]
    assert failures == [], failures[:5]
    bodies = Counter(a.body == STREAM for a in answers if isinstance(a, Answer))
    assert bodies == {True: streams_wanted}, bodies
    assert app.released_at == streams_wanted  # all were held open at the same time
    assert app.peak == streams_wanted
    ids = [a.headers["x-aibridge-interception-id"] for a in answers if isinstance(a, Answer)]
    assert len(set(ids)) == streams_wanted
    running.recorder.wait_ended(streams_wanted, timeout=30)
    running.flush()
    starts = Counter(r.interception_id for r in running.recorder.of_type(InterceptionStarted))
    ends = running.recorder.of_type(InterceptionEnded)
    assert set(starts) == set(ids) and set(starts.values()) == {1}
    assert Counter(e.interception_id for e in ends) == Counter(ids)
    assert {e.status for e in ends} == {"completed"}
    assert len(running.recorder.of_type(TokenUsage)) == streams_wanted
    print(f"\n1,000 concurrent streams: {took:.1f} s, peak held at upstream {app.peak}")


# -- the mixed soak ---------------------------------------------------------------------------

# (scenario, path, body, leave, expected end status)
MIX: list[tuple[str, str, bytes, str | None, str]] = [
    ("stream", "/anthropic/v1/messages", MESSAGES_BODY, None, "completed"),
    ("stream", "/anthropic/v1/messages", MESSAGES_BODY, None, "completed"),
    ("json", "/anthropic/v1/messages", JSON_BODY, None, "completed"),
    ("chat", "/openai/v1/chat/completions", CHAT_BODY, None, "completed"),
    ("429", "/anthropic/v1/messages", MESSAGES_BODY, None, "failed"),
    ("500", "/anthropic/v1/messages", JSON_BODY, None, "failed"),
    ("cut", "/anthropic/v1/messages", MESSAGES_BODY, None, "failed"),
    ("slow", "/anthropic/v1/messages", MESSAGES_BODY, "reading", "cancelled"),
    ("stream", "/anthropic/v1/messages", MESSAGES_BODY, "sending", "cancelled"),
    ("stream", "/anthropic/v1/messages", MESSAGES_BODY, None, "completed"),
]
EXPECTED = {
    "stream": STREAM,
    "json": MESSAGE,
    "chat": CHAT_STREAM,
    "429": ERRORS[429],
    "500": ERRORS[500],
}


def check(scenario: str, leave: str | None, answer: Answer) -> str | None:
    """What is wrong with ``answer``, if anything."""
    if leave == "sending":
        return None
    if scenario in ("429", "500"):
        ok = answer.status == int(scenario) and answer.body == EXPECTED[scenario]
    elif leave == "reading":
        ok = answer.status == 200
    elif scenario == "cut":
        ok = answer.status == 200 and answer.cut
    else:
        ok = answer.status == 200 and not answer.cut and answer.body == EXPECTED[scenario]
    return (
        None if ok else f"{scenario}/{leave}: {answer.status} cut={answer.cut} {answer.body[:80]!r}"
    )


def test_mixed_soak_leaks_nothing_and_loses_no_record(
    start_bridge: Callable[..., Running], soak_upstream: tuple[SoakUpstream, ServerThread]
) -> None:
    seconds = float(os.environ.get("AIBRIDGE_SOAK_SECONDS", "40"))
    limit = int(os.environ.get("AIBRIDGE_SOAK_REQUESTS", "100000"))
    concurrency = 32
    app, server = soak_upstream
    recorder = PairingRecorder()
    running = bridge_for(start_bridge, server, recorder=recorder)
    port = running.server.port

    async def batch(count: int, offset: int, problems: list[str], outcomes: Counter[str]) -> None:
        queue = iter(range(offset, offset + count))

        async def worker() -> None:
            for n in queue:
                scenario, path, body, leave, end = MIX[n % len(MIX)]
                try:
                    answer = await call(port, path, body, scenario, leave=leave)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    problems.append(f"{scenario}/{leave}: {exc!r}")
                    continue
                wrong = check(scenario, leave, answer)
                if wrong:
                    problems.append(wrong)
                outcomes[end] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    # Warm up (pools, the recorder worker, caches), then take the baselines.
    asyncio.run(batch(500, 0, problems, outcomes))
    assert settle(lambda: recorder.started == sum(recorder.ended.values()) == 500)
    gc.collect()
    tasks_before = running.server.call(_loop_tasks())
    fds_before = fd_count()
    rss_before = rss_mib()

    sent = 500
    began = time.monotonic()
    rss_samples = []
    while sent < limit and time.monotonic() - began < seconds:
        step = min(2000, limit - sent)
        asyncio.run(batch(step, sent, problems, outcomes))
        sent += step
        rss_samples.append(rss_mib())
        assert len(problems) < 20, problems
    took = time.monotonic() - began

    # Every request's interception has ended, with the end its scenario implies.
    assert settle(lambda: recorder.started == sum(recorder.ended.values()) == sent)
    assert settle(lambda: running.server.call(_in_flight(running.bridge)) == 0)
    assert problems == [], problems[:10]
    assert recorder.problems == [], recorder.problems[:10]
    assert recorder.open == set()
    assert dict(recorder.ended) == dict(outcomes), (recorder.ended, outcomes)

    # No tasks left behind on the bridge's loop; no sockets beyond the idle pool.
    assert settle(lambda: len(running.server.call(_loop_tasks())) <= len(tasks_before))
    tasks_after = running.server.call(_loop_tasks())
    assert Counter(tasks_after) - Counter(tasks_before) == Counter(), tasks_after
    fds_after = fd_count()
    assert fds_after - fds_before <= 2 * concurrency + 8, (fds_before, fds_after)
    running.server.call(running.bridge.aclose())  # drops the idle upstream pool too
    assert settle(lambda: fd_count() <= fds_before + 4), (fds_before, fd_count())
    rss_after = rss_mib()
    growth = rss_after - rss_before
    assert growth < 48, f"RSS grew {growth:.0f} MiB over {sent} requests: {rss_samples}"
    print(
        f"\nmixed soak: {sent} requests in {took:.1f} s ({sent / took:.0f}/s), "
        f"ends {dict(recorder.ended)}, records lost {sent - sum(recorder.ended.values())}, "
        f"tasks {len(tasks_before)}->{len(tasks_after)}, fds {fds_before}->{fds_after}->"
        f"{fd_count()} after aclose, RSS {rss_before:.0f}->{rss_after:.0f} MiB, "
        f"upstream calls {app.calls}"
    )


# -- graceful shutdown under load ---------------------------------------------------------


def test_graceful_shutdown_lets_in_flight_streams_finish(
    start_bridge: Callable[..., Running], soak_upstream: tuple[SoakUpstream, ServerThread]
) -> None:
    in_flight = 200
    app, server = soak_upstream
    app.slow_delay = 0.1  # each stream takes about 1.2 s
    recorder = InMemoryRecorder()
    running = bridge_for(start_bridge, server, recorder=recorder)
    port = running.server.port
    closed: list[float] = []

    async def main() -> list[Answer | BaseException]:
        tasks = [
            asyncio.ensure_future(call(port, "/anthropic/v1/messages", MESSAGES_BODY, "slow"))
            for _ in range(in_flight)
        ]
        await asyncio.to_thread(settle, lambda: app.active >= in_flight, 30)
        began = time.monotonic()
        await asyncio.to_thread(running.server.call, running.bridge.aclose(grace_period=20), 60)
        closed.append(time.monotonic() - began)
        # Already closed: a new call is refused.
        late = await call(port, "/anthropic/v1/messages", JSON_BODY, "json")
        assert late.status == 503 and b"shutting down" in late.body
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(main(), 60))
    assert 0.5 < closed[0] < 15, closed
    assert [a for a in answers if not isinstance(a, Answer) or a.body != STREAM] == []
    # aclose() returned with every record delivered, without a flush.
    ends = recorder.of_type(InterceptionEnded)
    assert len(recorder.of_type(InterceptionStarted)) == len(ends) == in_flight
    assert {e.status for e in ends} == {"completed"}
    assert len(recorder.of_type(TokenUsage)) == in_flight
    print(f"\ngraceful shutdown: {in_flight} streams finished, aclose took {closed[0]:.1f} s")


def test_shutdown_deadline_cancels_endless_streams_and_keeps_their_records(
    start_bridge: Callable[..., Running], soak_upstream: tuple[SoakUpstream, ServerThread]
) -> None:
    in_flight = 200
    app, server = soak_upstream
    recorder = InMemoryRecorder()
    running = bridge_for(start_bridge, server, recorder=recorder)
    port = running.server.port
    timing: dict[str, float] = {}

    async def main() -> list[Answer | BaseException]:
        tasks = [
            asyncio.ensure_future(call(port, "/anthropic/v1/messages", MESSAGES_BODY, "endless"))
            for _ in range(in_flight)
        ]
        await asyncio.to_thread(settle, lambda: app.active >= in_flight, 30)
        began = time.monotonic()
        await asyncio.to_thread(running.server.call, running.bridge.aclose(grace_period=0.5), 60)
        timing["aclose"] = time.monotonic() - began
        timing["began"] = began
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(main(), 60))
    assert 0.4 < timing["aclose"] < 5, timing
    # The clients see their streams cut, not ended as if complete.
    assert [a for a in answers if not isinstance(a, Answer) or not a.cut] == []
    ends = recorder.of_type(InterceptionEnded)
    assert len(recorder.of_type(InterceptionStarted)) == len(ends) == in_flight
    assert {e.status for e in ends} == {"cancelled"}, Counter(e.status for e in ends)
    assert len(recorder.of_type(TokenUsage)) == in_flight  # message_start's usage, kept
    deadline = time.monotonic() + 3
    while app.abandoned < in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.abandoned == in_flight  # every upstream stream was closed too
    assert max(app.abandoned_at) - timing["began"] < 3
    print(f"\nshutdown deadline: {in_flight} endless streams cancelled in {timing['aclose']:.1f} s")
