"""Embedding at the edges: shutdown races, a bridge reused across event
loops, bounded memory, request-only headers, and the public surface.

Each test here reproduces a fault found against an earlier version (issue
18): it failed there and passes now. Requests are driven by hand
(:mod:`tests.asgi_harness`) where the order of events matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from aibridge_asgi import (
    Actor,
    BridgeHooks,
    CircuitBreakerConfig,
    HttpxUpstream,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    Record,
    Timeouts,
    Timings,
    Upstream,
    create_bridge,
)
from aibridge_asgi.breaker import CircuitBreakers
from aibridge_asgi.delivery import RecordQueue
from aibridge_asgi.records import utcnow
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    ReceivedRequest,
    ServerThread,
    streams,
)

from .asgi_harness import Exchange, call

TOKEN = "host-token-embedding-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PATH = "/anthropic/v1/messages"
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
STREAM_BODY = {**BODY, "stream": True}


def resolve(token: str) -> Actor | None:
    return Actor("alice") if token == TOKEN else None


def in_process(fake: FakeUpstream) -> Upstream:
    """An upstream seam that calls ``fake`` in-process (no sockets)."""
    return HttpxUpstream(Timeouts(), transport=httpx.ASGITransport(app=fake))


def bridge_for(fake: FakeUpstream, **options: Any) -> Any:
    options.setdefault("resolve_token", resolve)
    options.setdefault("upstream", in_process(fake))
    return create_bridge(
        provider_keys={"anthropic": ANTHROPIC_KEY},
        base_urls={"anthropic": "http://upstream"},
        **options,
    )


def only_pair(recorder: InMemoryRecorder) -> tuple[InterceptionStarted, InterceptionEnded]:
    starts = recorder.of_type(InterceptionStarted)
    ends = recorder.of_type(InterceptionEnded)
    assert len(starts) == 1 and len(ends) == 1, [type(r).__name__ for r in recorder.records]
    return starts[0], ends[0]


def signalling(event: asyncio.Event, answer: FakeResponse) -> Callable[[ReceivedRequest], Any]:
    """A scripted answer that sets ``event`` when the upstream got the request."""

    def respond(request: ReceivedRequest) -> FakeResponse:
        event.set()
        return answer

    return respond


@pytest.fixture
def served_fake() -> Iterator[tuple[FakeUpstream, ServerThread]]:
    fake = FakeUpstream()
    with ServerThread(fake) as server:
        yield fake, server


# -- shutdown ------------------------------------------------------------------------


def test_request_waiting_on_the_resolver_at_aclose_ends_with_its_records() -> None:
    """Admitted before aclose(): aclose waits for it, and it is recorded."""

    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow_resolve(token: str) -> Actor | None:
            entered.set()
            await release.wait()
            return resolve(token)

        recorder = InMemoryRecorder()
        bridge = bridge_for(FakeUpstream(), resolve_token=slow_resolve, recorder=recorder)
        request = asyncio.create_task(call(bridge, PATH, BODY, AUTH))
        await entered.wait()
        closing = asyncio.create_task(bridge.aclose())
        for _ in range(50):
            await asyncio.sleep(0)
        assert not closing.done(), "aclose() returned with a request still admitted"
        # Admission is closed for newcomers meanwhile.
        late = await call(bridge, PATH, BODY, AUTH)
        assert late.status == 503 and "shutting down" in late.json()["error"]["message"]
        release.set()
        response = await asyncio.wait_for(request, 5)
        await asyncio.wait_for(closing, 5)
        assert response.status == 200
        started, ended = only_pair(recorder)
        assert ended.status == "completed"
        assert started.interception_id == response.header("x-aibridge-interception-id")

    asyncio.run(main())


def test_resolver_still_running_at_the_grace_deadline_gets_503_and_no_records() -> None:
    async def main() -> None:
        entered = asyncio.Event()

        async def stuck_resolve(token: str) -> Actor | None:
            entered.set()
            await asyncio.Event().wait()
            return None

        recorder = InMemoryRecorder()
        bridge = bridge_for(FakeUpstream(), resolve_token=stuck_resolve, recorder=recorder)
        request = asyncio.create_task(call(bridge, PATH, BODY, AUTH))
        await entered.wait()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(bridge.aclose(grace_period=0.2), 5)
        assert loop.time() - began < 2
        response = await asyncio.wait_for(request, 5)
        assert response.status == 503
        assert "shutting down" in response.json()["error"]["message"]
        assert recorder.records == []

    asyncio.run(main())


def test_concurrent_and_repeated_aclose_all_return() -> None:
    async def main() -> None:
        fake = FakeUpstream()
        reached = asyncio.Event()
        fake.enqueue(
            signalling(reached, FakeResponse.json(streams.anthropic_message("ok"), delay=0.2))
        )
        recorder = InMemoryRecorder()
        bridge = bridge_for(fake, recorder=recorder)
        request = asyncio.create_task(call(bridge, PATH, BODY, AUTH))
        await reached.wait()
        first = asyncio.create_task(bridge.aclose())
        second = asyncio.create_task(bridge.aclose(grace_period=10))
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert (await request).status == 200
        await asyncio.wait_for(bridge.aclose(), 1)  # again: returns at once
        only_pair(recorder)

    asyncio.run(main())


class HangingRecorder:
    """Never returns from record() (a recorder stuck on a dead database)."""

    def __init__(self) -> None:
        self.calls = 0

    async def record(self, record: Record) -> None:
        self.calls += 1
        await asyncio.Event().wait()


class Drops(BridgeHooks):
    """Counts the records produced, and those dropped on the way."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []
        self.produced_count = 0

    def interception_started(self, started: InterceptionStarted, headers: Any) -> None:
        self.produced_count += 1

    def produced(self, record: Record) -> None:
        self.produced_count += 1

    def interception_ended(self, started: Any, ended: Any, timings: Any) -> None:
        self.produced_count += 1

    def record_dropped(self, record: Record, reason: str) -> None:
        self.dropped.append((type(record).__name__, reason))


def test_hanging_recorder_cannot_hold_aclose_past_its_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        hooks = Drops()
        bridge = bridge_for(FakeUpstream(), recorder=HangingRecorder(), hooks=[hooks])
        assert (await call(bridge, PATH, BODY, AUTH)).status == 200
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(bridge.aclose(grace_period=0.4), 5)
        assert loop.time() - began < 2
        dropped = bridge.records_dropped
        assert dropped.get("undelivered", 0) >= 1, dropped
        assert ("InterceptionEnded", "undelivered") in hooks.dropped

    with caplog.at_level(logging.ERROR, "aibridge_asgi"):
        asyncio.run(main())
    assert any("could not be delivered" in r.getMessage() for r in caplog.records)


def test_each_recorder_call_is_timed_out_and_the_rest_still_arrive() -> None:
    class StuckOnce(InMemoryRecorder):
        stuck = False

        async def record(self, record: Record) -> None:
            if not self.stuck:
                self.stuck = True
                await asyncio.Event().wait()
            await super().record(record)

    async def main() -> None:
        recorder = StuckOnce()
        hooks = Drops()
        bridge = bridge_for(
            FakeUpstream(), recorder=recorder, hooks=[hooks], limits=Limits(record_timeout=0.1)
        )
        assert (await call(bridge, PATH, BODY, AUTH)).status == 200
        await asyncio.wait_for(bridge.aclose(), 5)
        assert hooks.dropped == [("InterceptionStarted", "timeout")]
        assert bridge.records_dropped == {"timeout": 1}
        assert isinstance(recorder.records[-1], InterceptionEnded)

    asyncio.run(main())


def test_the_call_timeout_is_per_call_not_per_batch() -> None:
    """Calls that each stay under the timeout are never cut, however long the
    whole batch takes; a stuck call among them is cut at its own deadline
    and the records after it still arrive, in order. One watchdog timer
    keeps the deadline, so a quick recorder arms no timer per record."""

    class Recorder:
        def __init__(self) -> None:
            self.got: list[str] = []

        async def record(self, record: Record) -> None:
            assert isinstance(record, InterceptionEnded)
            if record.interception_id == "stuck":
                await asyncio.Event().wait()
            if record.interception_id.startswith("slow"):
                await asyncio.sleep(0.06)
            self.got.append(record.interception_id)

    def ended(name: str) -> InterceptionEnded:
        return InterceptionEnded(name, utcnow(), "completed", 200)

    async def main() -> None:
        recorder = Recorder()
        dropped: list[tuple[str, str]] = []
        queue = RecordQueue(
            recorder,
            call_timeout=0.1,
            on_dropped=lambda r, why: dropped.append((r.interception_id, why)),  # type: ignore[union-attr]
        )
        names = [f"slow{i}" for i in range(5)] + ["stuck", "after"]
        for name in names:
            queue.put(ended(name))
        await asyncio.wait_for(queue.aclose(), 5)
        assert recorder.got == [*names[:5], "after"]
        assert dropped == [("stuck", "timeout")]
        assert queue.dropped == {"timeout": 1}

        quick = InMemoryRecorder()
        queue = RecordQueue(quick, call_timeout=30)
        loop = asyncio.get_running_loop()
        timers: list[float] = []
        call_at = loop.call_at

        def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(when)
            return call_at(when, *args, **kwargs)

        loop.call_at = counting_call_at  # type: ignore[method-assign]
        for i in range(200):
            queue.put(ended(f"q{i}"))
        await queue.flush()
        loop.call_at = call_at  # type: ignore[method-assign]
        assert len(quick.records) == 200
        assert len(timers) <= 1, len(timers)
        await queue.aclose()

    asyncio.run(main())


def test_a_recorder_that_swallows_the_timeout_does_not_stop_delivery() -> None:
    class Swallower:
        def __init__(self) -> None:
            self.got: list[str] = []

        async def record(self, record: Record) -> None:
            assert isinstance(record, InterceptionEnded)
            if record.interception_id == "first":
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            self.got.append(record.interception_id)

    async def main() -> None:
        recorder = Swallower()
        queue = RecordQueue(recorder, call_timeout=0.1)
        for name in ("first", "second"):
            queue.put(InterceptionEnded(name, utcnow(), "completed", 200))
        await asyncio.wait_for(queue.aclose(), 5)
        assert recorder.got == ["first", "second"]
        assert queue.dropped == {"timeout": 1}

    asyncio.run(main())


def test_record_queue_is_bounded_and_overflow_is_counted() -> None:
    class Gated(InMemoryRecorder):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def record(self, record: Record) -> None:
            await self.gate.wait()
            await super().record(record)

    from prometheus_client import CollectorRegistry

    from aibridge_asgi.metrics import PrometheusHooks

    registry = CollectorRegistry()

    async def main() -> None:
        recorder = Gated()
        hooks = Drops()
        limits = Limits(max_pending_records=3)
        bridge = bridge_for(
            FakeUpstream(),
            recorder=recorder,
            hooks=[hooks, PrometheusHooks(registry)],
            limits=limits,
        )
        for _ in range(4):
            assert (await call(bridge, PATH, BODY, AUTH)).status == 200
        # One record is with the recorder, three wait; the rest were dropped.
        assert hooks.produced_count >= 4 * 4  # Started, usage..., Ended per call
        overflow = bridge.records_dropped["overflow"]
        assert overflow == hooks.produced_count - 4
        assert len(hooks.dropped) == overflow
        counted = sum(
            registry.get_sample_value(
                "aibridge_records_dropped_total", {"record": name, "reason": "overflow"}
            )
            or 0
            for name in (
                "InterceptionStarted",
                "TokenUsage",
                "Cost",
                "PromptUsage",
                "InterceptionEnded",
            )
        )
        assert counted == overflow
        recorder.gate.set()
        await asyncio.wait_for(bridge.aclose(), 5)
        assert len(recorder.records) == 4
        assert isinstance(recorder.records[0], InterceptionStarted)

    asyncio.run(main())


# -- a bridge that starts again ------------------------------------------------------


def _host(bridge: Any, close_in_lifespan: bool) -> Any:
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        if close_in_lifespan:
            await bridge.aclose(grace_period=30)

    app = FastAPI(lifespan=lifespan)
    app.mount("/api/v2/aibridge", bridge)
    return app


@pytest.mark.parametrize("close_in_lifespan", [True, False])
@pytest.mark.parametrize("seam", ["aiohttp", "httpx"])
def test_host_app_works_in_several_testclient_blocks(
    served_fake: tuple[FakeUpstream, ServerThread], close_in_lifespan: bool, seam: str
) -> None:
    """Each ``with TestClient(app):`` block runs on its own event loop."""
    from fastapi.testclient import TestClient

    _, server = served_fake
    recorder = InMemoryRecorder()
    options: dict[str, Any] = {} if seam == "aiohttp" else {"upstream": HttpxUpstream()}
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY},
        base_urls={"anthropic": server.url},
        recorder=recorder,
        **options,
    )
    app = _host(bridge, close_in_lifespan)
    for block in range(3):
        with TestClient(app) as client:
            for stream in (False, True):
                r = client.post(
                    "/api/v2/aibridge" + PATH, headers=AUTH, json={**BODY, "stream": stream}
                )
                assert r.status_code == 200, (block, r.text)
                assert "Hello" in r.text
    ends = recorder.of_type(InterceptionEnded)
    assert [e.status for e in ends] == ["completed"] * 6


def test_bridge_survives_per_test_event_loops(
    served_fake: tuple[FakeUpstream, ServerThread],
) -> None:
    """pytest-asyncio gives each test a new loop; the docs' ``async with
    bridge:`` pattern (and a bare reuse) must work in each."""
    _, server = served_fake
    recorder = InMemoryRecorder()
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY},
        base_urls={"anthropic": server.url},
        recorder=recorder,
    )

    async def one_test(use_context: bool) -> Exchange:
        if use_context:
            async with bridge:
                return await call(bridge, PATH, STREAM_BODY, AUTH)
        return await call(bridge, PATH, BODY, AUTH)

    for use_context in (True, True, False, True):
        response = asyncio.run(one_test(use_context))
        assert response.status == 200, response.body
    assert len(recorder.of_type(InterceptionEnded)) == 4


def test_closed_bridge_refuses_on_the_same_loop_until_reopened() -> None:
    async def main() -> None:
        bridge = bridge_for(FakeUpstream())
        await bridge.aclose()
        assert (await call(bridge, PATH, BODY, AUTH)).status == 503
        bridge.reopen()
        assert (await call(bridge, PATH, BODY, AUTH)).status == 200
        await bridge.aclose()

    asyncio.run(main())


# -- bounded memory --------------------------------------------------------------------


def test_unfinished_sse_event_past_the_cap_fails_the_stream() -> None:
    async def main() -> None:
        fake = FakeUpstream()
        head = streams.anthropic_events("hi")[0]
        endless = [head] + [b"data: " + b"x" * 1000] + [b"y" * 1000] * 20
        fake.enqueue(FakeResponse.sse(endless))
        recorder = InMemoryRecorder()
        bridge = bridge_for(fake, recorder=recorder, limits=Limits(max_event_size=4096))
        response = await asyncio.wait_for(call(bridge, PATH, STREAM_BODY, AUTH), 5)
        await bridge.aclose()
        assert response.status == 200
        assert not response.ended  # cut, as an upstream cut is relayed
        assert bytes(response.body) == head  # the oversized event never reached the client
        _, ended = only_pair(recorder)
        assert ended.status == "failed"
        assert ended.error is not None and "longer than 4096 bytes" in ended.error

    asyncio.run(main())


def test_buffered_answer_past_the_cap_is_502() -> None:
    async def main() -> None:
        fake = FakeUpstream()
        big = streams.anthropic_message("z" * 20_000)
        fake.enqueue(FakeResponse.json(big))
        recorder = InMemoryRecorder()
        bridge = bridge_for(fake, recorder=recorder, limits=Limits(max_response_size=8192))
        response = await call(bridge, PATH, BODY, AUTH)
        await bridge.aclose()
        assert response.status == 502
        assert response.json()["type"] == "error"
        _, ended = only_pair(recorder)
        assert ended.status == "failed" and ended.http_status == 502
        assert ended.error is not None and "larger than the limit of 8192" in ended.error

    asyncio.run(main())


def test_breakers_for_client_chosen_models_stay_bounded() -> None:
    now = [0.0]
    breakers = CircuitBreakers(
        CircuitBreakerConfig(failure_threshold=2, max_breakers=64), clock=lambda: now[0]
    )
    real = ("anthropic", "messages", "claude-sonnet-4-5")
    breakers.record(real, True)
    breakers.record(real, True)
    assert breakers.state(real) == "open"
    for n in range(5000):
        breakers.record(("anthropic", "messages", f"made-up-{n}"), True)
        if n % 50 == 0:
            assert breakers.acquire(real) is not None  # still refused: still open
    assert len(breakers) <= 64
    assert breakers.state(real) == "open"


# -- request-only headers, bodies that never start ---------------------------------------


def test_expect_and_other_request_only_headers_are_not_forwarded() -> None:
    async def main() -> None:
        fake = FakeUpstream()
        bridge = bridge_for(fake)
        headers = {**AUTH, "expect": "100-continue", "http2-settings": "AAMAAABkAAQAAP__"}
        assert (await call(bridge, PATH, BODY, headers)).status == 200
        await bridge.aclose()
        sent = fake.last()
        assert sent.header("expect") is None
        assert sent.header("http2-settings") is None
        assert sent.header("anthropic-version") is None  # nothing else invented

    asyncio.run(main())


def test_body_that_never_starts_is_timed_out() -> None:
    async def main() -> None:
        recorder = InMemoryRecorder()
        bridge = bridge_for(FakeUpstream(), recorder=recorder, limits=Limits(body_timeout=0.2))
        never = asyncio.Event()

        async def silent() -> Any:
            await never.wait()
            return {"type": "http.disconnect"}

        response = await asyncio.wait_for(
            call(bridge, PATH, BODY, {**AUTH, "content-length": "100"}, receive=silent), 5
        )
        never.set()
        await bridge.aclose()
        assert response.status == 408
        _, ended = only_pair(recorder)
        assert ended.http_status == 408

    asyncio.run(main())


# -- the public surface ------------------------------------------------------------------


def test_recorder_whose_record_is_not_a_coroutine_function_is_refused() -> None:
    class SyncRecorder:
        def record(self, record: Record) -> None:
            pass

    with pytest.raises(TypeError, match="coroutine function"):
        create_bridge(resolve, {"anthropic": ANTHROPIC_KEY}, recorder=SyncRecorder())  # type: ignore[arg-type]


def test_resolver_failure_keeps_the_traceback_but_not_the_token() -> None:
    secret = "host-token-quoted-by-the-driver-42"

    class DriverError(Exception):
        pass

    def lookup(token: str) -> None:
        raise DriverError(f"[SQL: SELECT ... WHERE token = ?] [parameters: ('{token}',)]")

    def resolve_with_driver_error(token: str) -> Actor | None:
        try:
            lookup(token)
        except DriverError as exc:
            raise RuntimeError(f"lookup of {token} failed") from exc
        return None

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    log = logging.getLogger("aibridge_asgi")
    log.addHandler(handler)
    try:

        async def main() -> Exchange:
            bridge = bridge_for(FakeUpstream(), resolve_token=resolve_with_driver_error)
            try:
                return await call(bridge, PATH, BODY, {"authorization": f"Bearer {secret}"})
            finally:
                await bridge.aclose()

        response = asyncio.run(main())
    finally:
        log.removeHandler(handler)
    assert response.status == 503
    (failure,) = [r for r in records if "token resolver failed" in r.getMessage()]
    assert failure.exc_info is not None and failure.exc_info[2] is not None
    text = logging.Formatter().format(failure)
    assert "Traceback" in text and "resolve_with_driver_error" in text
    assert "RuntimeError" in text and "DriverError" in text
    assert secret not in text
    assert secret not in json.dumps(failure.__dict__, default=repr)


class FirstByte(BridgeHooks):
    def __init__(self) -> None:
        self.timings: list[Timings] = []

    def interception_ended(
        self, started: InterceptionStarted, ended: InterceptionEnded, timings: Timings
    ) -> None:
        self.timings.append(timings)


def test_keepalives_are_not_the_first_byte_and_never_overlap_a_send(
    served_fake: tuple[FakeUpstream, ServerThread],
) -> None:
    fake, server = served_fake
    events = streams.anthropic_events("one two three four five six seven eight")
    # Headers at once, then silence before the first event, then events
    # spaced out: keep-alives fill the gaps.
    fake.enqueue(FakeResponse.sse([b"", *events], chunk_delay=0.06))
    hooks = FirstByte()
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY},
        base_urls={"anthropic": server.url},
        hooks=[hooks],
        limits=Limits(keepalive_interval=0.01),
    )
    overlaps = 0
    active = 0
    keepalives = 0

    async def slow_send(message: Any) -> None:
        nonlocal active, overlaps, keepalives
        if message["type"] != "http.response.body":
            return
        if message.get("body", b"").startswith(b": keepalive"):
            keepalives += 1
        active += 1
        overlaps = max(overlaps, active)
        try:
            await asyncio.sleep(0.02)  # a slow client: each send takes a while
        finally:
            active -= 1

    async def main() -> Exchange:
        try:
            return await call(bridge, PATH, STREAM_BODY, AUTH, on_send=slow_send)
        finally:
            await bridge.aclose()

    response = asyncio.run(main())
    assert response.status == 200 and response.ended
    assert keepalives >= 2
    assert overlaps == 1, "two sends ran at once"
    (timings,) = hooks.timings
    assert timings.first_byte is not None
    assert timings.first_byte >= 0.05  # the first event came after one chunk_delay


def test_old_spellings_still_work_with_a_deprecation_warning() -> None:
    fake = FakeUpstream()
    with pytest.warns(DeprecationWarning, match="upstream="):
        old = create_bridge(
            resolve,
            {"anthropic": ANTHROPIC_KEY},
            base_urls={"anthropic": "http://upstream"},
            transport=httpx.ASGITransport(app=fake),
        )
    with pytest.warns(DeprecationWarning, match="limits=Limits"):
        limited = create_bridge(
            resolve,
            {"anthropic": ANTHROPIC_KEY},
            base_urls={"anthropic": "http://upstream"},
            upstream=httpx.ASGITransport(app=fake),
            max_body_size=10,
            body_timeout=5,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = create_bridge(
            resolve,
            {"anthropic": ANTHROPIC_KEY},
            base_urls={"anthropic": "http://upstream"},
            upstream=httpx.ASGITransport(app=fake),
            limits=Limits(max_body_size=10),
        )

    async def main() -> None:
        assert (await call(old, PATH, BODY, AUTH)).status == 200
        assert (await call(limited, PATH, BODY, AUTH)).status == 413
        assert (await call(new, PATH, BODY, AUTH)).status == 413
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as own:
            hosts = create_bridge(
                resolve,
                {"anthropic": ANTHROPIC_KEY},
                base_urls={"anthropic": "http://upstream"},
                upstream=own,
            )
            assert (await call(hosts, PATH, BODY, AUTH)).status == 200
            await hosts.aclose()
            assert not own.is_closed  # the host's client stays the host's
        for bridge in (old, limited, new):
            await bridge.aclose()

    asyncio.run(main())
    with pytest.raises(TypeError, match="upstream must be"):
        create_bridge(resolve, {"anthropic": ANTHROPIC_KEY}, upstream="http://x")  # type: ignore[arg-type]


def test_moved_and_exported_names() -> None:
    import aibridge_asgi
    from aibridge_asgi.delivery import RecordQueue
    from aibridge_asgi.records import RecordQueue as OldHome

    assert OldHome is RecordQueue
    for name in ("Upstream", "UpstreamResponse", "HttpxUpstream", "AiohttpUpstream", "Limits"):
        assert name in aibridge_asgi.__all__ and hasattr(aibridge_asgi, name)
