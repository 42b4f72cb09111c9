"""CPU the bridge spends per request and per relayed event, in process.

    .venv/bin/python bench/inprocess.py [--n 2000] [--events 200] [--profile]

No sockets: the bridge's ASGI app is called directly, its upstream seam is a
stub that answers pre-built bytes (the streams of
``aibridge_asgi.testing.streams``), and ``send`` drops what it gets. So the
figures are the bridge's own work (auth, parsing, records, relay, pricing,
hooks), measured with ``time.process_time`` over many calls, which a loaded
machine disturbs far less than wall-clock throughput. The time of the stub
and of the harness is measured the same way (``--bare``: a handler that only
reads the body and answers the stub's bytes) and printed for reference.

Rows: ``json`` (non-streaming, round-robin over the three APIs), and per API
a stream of ``--events`` events delivered one event per read (as at low
load) and 16 events per read (as under load); ``us/event`` is the CPU of a
``--events`` stream less that of a 10-event stream, over the difference in
events. Configurations: ``bare`` (no bridge: the stub and the harness alone),
``noprice`` (the bridge with ``prices=None``), ``plain`` (the default bridge,
with its default price book), ``policy`` (plus a memory-store policy of the
four built-in checks, when the installed bridge has ``policy=``),
``prometheus``, ``otel`` and ``extras`` (the plain bridge plus the
Prometheus hooks, the OpenTelemetry hooks, or both; spans go through the
SDK's batch processor to an exporter that drops them; ``--trace-records``
asks for a span per record too).
``--profile`` prints a cProfile of the plain configuration instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import inspect
import json
import pstats
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aibridge_asgi import Actor, create_bridge
from aibridge_asgi.records import Record
from aibridge_asgi.testing import streams

EVENTS_PER_READ_UNDER_LOAD = 16
TOKEN = "bench-token"
ACTOR = Actor("bench")

PATHS = {
    "anthropic": "/anthropic/v1/messages",
    "chat": "/openai/v1/chat/completions",
    "responses": "/openai/v1/responses",
}


def request_body(api: str, stream: bool) -> bytes:
    if api == "anthropic":
        body: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    elif api == "chat":
        body = {"model": "gpt-5", "messages": [{"role": "user", "content": "Say hello."}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    else:
        body = {"model": "gpt-5", "input": "Say hello."}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def stream_events(api: str, n: int) -> list[bytes]:
    """About ``n`` events of a text answer (a few are framing)."""
    usage = streams.Usage(input_tokens=120, output_tokens=n, cache_read=30)
    text = "hello " * n
    if api == "anthropic":
        return streams.anthropic_events(text, usage=usage, pieces=max(n - 7, 1))
    if api == "chat":
        return streams.chat_events(text, usage=usage, pieces=max(n - 4, 1))
    return streams.response_events(text, usage=usage, pieces=max(n - 9, 1))


def json_answer(api: str) -> bytes:
    usage = streams.Usage(input_tokens=120, output_tokens=20, cache_read=30)
    if api == "anthropic":
        return json.dumps(streams.anthropic_message("Hello there.", usage=usage)).encode()
    if api == "chat":
        return json.dumps(streams.chat_completion("Hello there.", usage=usage)).encode()
    return json.dumps(streams.response_object("Hello there.", usage=usage)).encode()


class CountingRecorder:
    """Counts records and keeps none (a growing heap would slow the
    collector down and be measured as the bridge's cost)."""

    def __init__(self) -> None:
        self.count = 0

    async def record(self, record: Record) -> None:
        self.count += 1


class StubResponse:
    """An upstream answer whose bytes are already here."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], reads: Sequence[bytes]):
        self.status = status
        self.headers = headers
        self._reads = reads

    async def iter_raw(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read

    async def aclose(self) -> None:
        return None


class StubUpstream:
    """Answers every request with the next prepared answer for its path."""

    def __init__(self) -> None:
        self.answer: tuple[int, list[tuple[bytes, bytes]], Sequence[bytes]] = (200, [], [b""])

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> StubResponse:
        status, answer_headers, reads = self.answer
        return StubResponse(status, answer_headers, reads)

    async def aclose(self) -> None:
        return None


SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


def scope_for(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"anthropic-version", b"2023-06-01"),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


App = Callable[..., Any]


async def call(app: App, path: str, body: bytes, forever: asyncio.Future[Any]) -> None:
    sent = [False]

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await forever  # as a server does: no disconnect while the client waits
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope_for(path, body), receive, send)


def bare_app(stub: StubUpstream) -> App:
    """The least a proxy can do with the stub: read, forward, relay."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        response = await stub.send("POST", scope["path"], scope["headers"], message["body"])
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        async for chunk in response.iter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def memory_policy() -> Any:
    """The four built-in checks (``create_bridge(policy=...)``) on a memory
    store, never refusing (issue 13's
    ``bench/policy.py`` measures the same set on its own)."""
    from decimal import Decimal

    from aibridge_asgi import policy as p  # type: ignore[attr-defined,unused-ignore]

    store = p.MemoryStore()
    return [
        p.ModelAccess(allow=["claude-*", "gpt-5*", "gemini-*"], deny=["*-preview"]),
        p.Budget(Decimal("1000000"), "month", store),
        p.RateLimit(requests_per_minute=10**9, tokens_per_minute=10**12, store=store),
        p.ConcurrencyLimit(1000, store),
    ]


def build(config: str, stub: StubUpstream, trace_records: bool) -> tuple[App, Any]:
    """The app for a configuration, and what to close after."""

    async def resolve(token: str) -> Actor | None:
        return ACTOR if token == TOKEN else None

    kwargs: dict[str, Any] = {
        "provider_keys": {"anthropic": "sk-ant", "openai": "sk-oai"},
        "upstream": stub,
        "recorder": CountingRecorder(),
    }
    params = inspect.signature(create_bridge).parameters
    if config == "noprice":
        kwargs["prices"] = None
    if config == "policy" and "policy" in params:
        kwargs["policy"] = memory_policy()
    hooks: list[Any] = []
    if config in ("extras", "prometheus", "otel"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from prometheus_client import CollectorRegistry

        from aibridge_asgi.metrics import PrometheusHooks
        from aibridge_asgi.otel import OpenTelemetryHooks

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        otel_kwargs: dict[str, Any] = {"tracer": provider.get_tracer("aibridge_asgi")}
        if "trace_records" in inspect.signature(OpenTelemetryHooks).parameters:
            otel_kwargs["trace_records"] = trace_records
        hooks = [PrometheusHooks(registry=CollectorRegistry()), OpenTelemetryHooks(**otel_kwargs)]
        if config != "extras":  # one of the two alone
            hooks = [hooks[0] if config == "prometheus" else hooks[1]]
        kwargs["hooks"] = hooks
    bridge = create_bridge(resolve, **kwargs)
    return bridge, bridge


Case = tuple[str, bytes, tuple[int, list[tuple[bytes, bytes]], Sequence[bytes]]]


async def timed_round(
    app: App, stub: StubUpstream, cases: Sequence[Case], n: int, forever: asyncio.Future[Any]
) -> float:
    """CPU microseconds per call over ``n`` calls, the cases in turn."""
    gc.collect()
    began = time.process_time()
    for i in range(n):
        path, body, answer = cases[i % len(cases)]
        stub.answer = answer
        await call(app, path, body, forever)
    return (time.process_time() - began) / n * 1e6


def cpu_per_call(
    loop: asyncio.AbstractEventLoop,
    app: App,
    stub: StubUpstream,
    cases: list[Case],
    n: int,
) -> float:
    """CPU microseconds per call, best of three rounds of ``n`` calls."""
    forever: asyncio.Future[Any] = loop.create_future()

    async def rounds() -> float:
        return min([await timed_round(app, stub, cases, n, forever) for _ in range(3)])

    return loop.run_until_complete(rounds())


def json_mix() -> list[Case]:
    """One non-streaming call of each API, with its prepared answer."""
    cases: list[Case] = []
    for api, path in PATHS.items():
        answer = json_answer(api)
        cases.append((path, request_body(api, False), (200, json_headers(answer), [answer])))
    return cases


def reads_of(events: list[bytes], per_read: int) -> list[bytes]:
    return [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]


def measure(
    config: str, n: int, events: int, trace_records: bool, json_only: bool = False
) -> dict[str, float]:
    loop = asyncio.new_event_loop()
    stub = StubUpstream()
    if config == "bare":
        app: App = bare_app(stub)
        closer = None
    else:
        app, closer = build(config, stub, trace_records)
    out: dict[str, float] = {}
    json_cases = json_mix()
    cpu_per_call(loop, app, stub, json_cases, n // 10)  # warm up
    out["json us/request"] = cpu_per_call(loop, app, stub, json_cases, n)
    for api, path in PATHS.items():
        if json_only:
            break
        body = request_body(api, True)
        long_events, short_events = stream_events(api, events), stream_events(api, 10)
        for per_read, label in ((1, "1/read"), (EVENTS_PER_READ_UNDER_LOAD, "16/read")):
            long_case = (path, body, (200, SSE_HEADERS, reads_of(long_events, per_read)))
            short_case = (path, body, (200, SSE_HEADERS, reads_of(short_events, per_read)))
            rounds = max(n // 20, 20)
            long_us = cpu_per_call(loop, app, stub, [long_case], rounds)
            short_us = cpu_per_call(loop, app, stub, [short_case], rounds)
            per_event = (long_us - short_us) / (len(long_events) - len(short_events))
            out[f"{api} {label} us/stream"] = long_us
            out[f"{api} {label} us/event"] = per_event
    if closer is not None:
        loop.run_until_complete(closer.aclose())
    loop.close()
    return out


def measure_json_interleaved(
    configs: Sequence[str], n: int, trace_records: bool, rounds: int = 5
) -> dict[str, dict[str, float]]:
    """CPU per non-streaming request of each configuration, their rounds
    interleaved (one round of ``n`` calls of each in turn, ``rounds`` times;
    the best round of each counts), so that a machine busier for a while
    weighs on every configuration alike and their differences hold."""
    loop = asyncio.new_event_loop()
    forever: asyncio.Future[Any] = loop.create_future()
    apps: dict[str, tuple[App, StubUpstream, Any]] = {}
    for config in configs:
        stub = StubUpstream()
        if config == "bare":
            apps[config] = (bare_app(stub), stub, None)
        else:
            app, closer = build(config, stub, trace_records)
            apps[config] = (app, stub, closer)
    cases = json_mix()
    best = dict.fromkeys(configs, float("inf"))
    for app, stub, _ in apps.values():
        loop.run_until_complete(timed_round(app, stub, cases, max(n // 10, 10), forever))  # warm
    for _ in range(rounds):
        for config, (app, stub, _) in apps.items():
            spent = loop.run_until_complete(timed_round(app, stub, cases, n, forever))
            best[config] = min(best[config], spent)
    for _, _, closer in apps.values():
        if closer is not None:
            loop.run_until_complete(closer.aclose())
    loop.close()
    return {config: {"json us/request": best[config]} for config in configs}


def run_calls(config: str, case: str, calls: int) -> None:
    """Make ``calls`` calls of one case and nothing else (for instruction
    counts: ``valgrind --tool=callgrind``, at two call counts, differenced)."""
    loop = asyncio.new_event_loop()
    stub = StubUpstream()
    app, closer = build(config, stub, False)
    forever: asyncio.Future[Any] = loop.create_future()
    if case == "json":
        cases = json_mix()
    else:
        api, _, per_read = case.partition(":")
        reads = reads_of(stream_events(api, 200), int(per_read or 1))
        cases = [(PATHS[api], request_body(api, True), (200, SSE_HEADERS, reads))]

    async def go() -> None:
        for i in range(calls):
            path, body, answer = cases[i % len(cases)]
            stub.answer = answer
            await call(app, path, body, forever)
        await closer.aclose()

    loop.run_until_complete(go())
    loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--configs", default="bare,plain,extras")
    parser.add_argument("--trace-records", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json-only", action="store_true", help="non-streaming requests only")
    parser.add_argument("--calls", type=int, help="only make this many calls (see run_calls)")
    parser.add_argument("--case", default="json", help="json, or API[:events per read]")
    args = parser.parse_args()
    if args.calls is not None:
        run_calls(args.configs.split(",")[-1], args.case, args.calls)
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        measure("plain", args.n, args.events, False, args.json_only)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    configs = args.configs.split(",")
    if args.json_only:
        results = measure_json_interleaved(configs, args.n, args.trace_records)
    else:
        results = {
            config: measure(config, args.n, args.events, args.trace_records) for config in configs
        }
    rows = list(next(iter(results.values())))
    print(f"{'CPU, in process':32}" + "".join(f"{c:>12}" for c in configs))
    for row in rows:
        print(f"{row:32}" + "".join(f"{results[c][row]:12.2f}" for c in configs))
    if "plain" in results and "extras" in results:
        ratio = results["extras"]["json us/request"] / results["plain"]["json us/request"]
        print(f"extras / plain, json us/request: {ratio:.2f}x")


if __name__ == "__main__":
    main()
