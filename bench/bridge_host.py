"""A minimal Starlette host with the bridge mounted, for the benchmark.

The bridge is mounted at ``/api/v2/aibridge`` with an async token resolver
(a dict lookup) and a recorder that keeps records in memory: every record is
stored (the newest ``--keep`` of them, so that the growth test measures the
bridge and not an ever-growing list) and counted. ``GET /_bench/stats``
returns the counts, so the harness can check that every request was
recorded and ended ``completed``.

Served by uvicorn with uvloop and httptools, one worker unless
``--workers N`` (uvicorn then starts N worker processes that share the
listening socket; the app is rebuilt in each from environment variables), no
access log.

    python bench/bridge_host.py --port 8102 --upstream-url http://127.0.0.1:8101 --seam aiohttp

``--seam`` picks the upstream seam class from :mod:`aibridge_asgi.upstream`
by name (``httpx``: ``HttpxUpstream``, ``aiohttp``: ``AiohttpUpstream``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import aibridge_asgi.upstream as upstream_module
from aibridge_asgi import Actor, BridgeHooks, InterceptionEnded, Record, create_bridge
from aibridge_asgi.config import Timeouts

__all__ = ["HOST_TOKEN", "PREFIX", "SEAMS", "BenchRecorder", "build_app", "make_upstream"]

PREFIX = "/api/v2/aibridge"
HOST_TOKEN = "bench-host-token"
ANTHROPIC_KEY = "sk-ant-bench-upstream"
OPENAI_KEY = "sk-bench-upstream"
GOOGLE_KEY = "bench-google-upstream"

#: Seam flag -> class name in aibridge_asgi.upstream.
#: "aiohttp-obs" adds the observability extras (Prometheus metrics on a
#: registry, OpenTelemetry spans through the SDK to an exporter that drops
#: them), to measure what they cost.
SEAMS = {"httpx": "HttpxUpstream", "aiohttp": "AiohttpUpstream", "aiohttp-obs": "AiohttpUpstream"}

_ACTORS = {HOST_TOKEN: Actor("bench-user", {"team": "bench"})}


async def resolve_token(token: str) -> Actor | None:
    """An async dict lookup, as a host with a token cache would do."""
    return _ACTORS.get(token)


class BenchRecorder:
    """Keeps the newest ``keep`` records in memory and counts all of them."""

    def __init__(self, keep: int = 10_000) -> None:
        self.records: deque[Record] = deque(maxlen=keep)
        self.counts: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()

    async def record(self, record: Record) -> None:
        self.records.append(record)
        self.counts[type(record).__name__] += 1
        if isinstance(record, InterceptionEnded):
            self.ended[
                record.status if record.error is None else f"{record.status}: {record.error}"
            ] += 1

    def stats(self) -> dict[str, Any]:
        return {"records": dict(self.counts), "ended": dict(self.ended), "kept": len(self.records)}


def make_upstream(seam: str) -> Any:
    """An instance of the seam class named by ``seam``, or SystemExit."""
    cls = getattr(upstream_module, SEAMS[seam], None)
    if cls is None:
        raise SystemExit(f"aibridge_asgi.upstream has no {SEAMS[seam]} (seam {seam!r})")
    return cls(Timeouts())


def observability_hooks() -> list[BridgeHooks]:
    """Prometheus metrics and OpenTelemetry spans, as a host would run them."""
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    from aibridge_asgi.metrics import PrometheusHooks
    from aibridge_asgi.otel import OpenTelemetryHooks

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    return [PrometheusHooks(CollectorRegistry()), OpenTelemetryHooks(provider.get_tracer("bench"))]


def build_app(upstream_url: str, seam: str, keep: int = 10_000) -> Starlette:
    recorder = BenchRecorder(keep)
    bridge = create_bridge(
        resolve_token,
        {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY, "gemini": GOOGLE_KEY},
        base_urls={
            "anthropic": upstream_url,
            "openai": upstream_url + "/v1",
            "gemini": upstream_url,
        },
        recorder=recorder,
        upstream=make_upstream(seam),
        hooks=observability_hooks() if seam.endswith("-obs") else (),
    )

    async def stats(request: Request) -> JSONResponse:
        await bridge.flush()
        return JSONResponse({"seam": seam, **recorder.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await bridge.aclose(grace_period=1.0)

    return Starlette(
        routes=[Route("/_bench/stats", stats), Mount(PREFIX, bridge)],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """The app of one worker process (``--workers`` > 1), from the settings
    the parent left in the environment."""
    env = os.environ
    return build_app(env["BENCH_UPSTREAM_URL"], env["BENCH_SEAM"], int(env["BENCH_KEEP"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--upstream-url", default="http://127.0.0.1:8101")
    parser.add_argument("--seam", choices=sorted(SEAMS), default="httpx")
    parser.add_argument("--keep", type=int, default=10_000, help="records kept in memory")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args(argv)
    print(
        f"bridge host: seam={args.seam} port={args.port} workers={args.workers}",
        file=sys.stderr,
        flush=True,
    )
    app: Any
    if args.workers > 1:
        os.environ.update(
            BENCH_UPSTREAM_URL=args.upstream_url.rstrip("/"),
            BENCH_SEAM=args.seam,
            BENCH_KEEP=str(args.keep),
        )
        app = "bridge_host:app_from_env"
    else:
        app = build_app(args.upstream_url.rstrip("/"), args.seam, args.keep)
    uvicorn.run(
        app,
        factory=args.workers > 1,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=args.workers,
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
