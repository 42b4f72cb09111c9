"""The host application: its own routes, and the bridge mounted among them.

This is the file to read first when embedding the bridge: everything the
host does for it is here, in :func:`build_app`.

1. A resolver that maps a host token to an ``Actor`` (:mod:`.auth`).
2. A recorder that stores what the bridge reports (:mod:`.recorder`).
3. ``create_bridge(...)`` with the provider keys, mounted at
   ``/api/v2/aibridge``, after the host's own routes under that prefix.
4. A lifespan that, on shutdown, closes the bridge (in-flight calls finish,
   their records are handed over) and then the recorder (every record
   handed over is written). While the host runs, it also deletes
   interceptions older than ``Settings.retention_days``, in small batches in
   a worker thread, off the request path (:class:`Retention`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio.to_thread
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from aibridge_asgi import Bridge, BridgeHooks, create_bridge
from aibridge_asgi.limits import DEFAULT_MAX_BODY_SIZE
from aibridge_asgi.policy import RedisStore
from aibridge_asgi.testing import ANTHROPIC_KEY, GOOGLE_KEY, OPENAI_KEY, FakeUpstream

from . import api, health, pages, session_pages
from . import policy as host_policy
from .auth import admin_only, make_resolver
from .db import Database
from .recorder import DatabaseRecorder

logger = logging.getLogger("minicoder")

BRIDGE_PREFIX = "/api/v2/aibridge"
FAKE_PREFIX = "/_fake_upstream"
DEFAULT_DB = "aibridge-host.db"
#: Requests the offline fake upstream remembers (for tests that script it).
FAKE_KEPT_REQUESTS = 20


@dataclass(frozen=True)
class Settings:
    """How to run the host.

    ``url`` is where the host listens, as seen from the machine it runs on:
    in offline mode the bridge reaches the embedded fake upstream there.
    Provider keys enable the real providers; with neither key the host runs
    offline. ``*_base_url`` point a provider somewhere else (a proxy, a
    compatible gateway).
    """

    db_path: str = DEFAULT_DB
    url: str = "http://127.0.0.1:8080"
    anthropic_key: str = ""
    openai_key: str = ""
    anthropic_base_url: str | None = None
    openai_base_url: str | None = None
    gemini_key: str = ""
    gemini_base_url: str | None = None
    #: Interceptions older than this many days are deleted (None: kept forever).
    retention_days: int | None = 60
    #: Seconds between two retention passes.
    retention_interval: float = 3600.0
    #: Requests per minute per user (0: no limit); see :mod:`.policy`.
    requests_per_minute: int = 0
    #: Policy state shared by workers (``serve --workers N``); None: in memory.
    redis_url: str | None = None
    #: Mark interceptions an earlier run left without an end ``interrupted``
    #: at start. ``serve --workers N`` does it once, before its workers
    #: start, and turns it off in them (a worker restarted later must not
    #: mark its siblings' calls in flight).
    mark_interrupted: bool = True

    @property
    def offline(self) -> bool:
        return not (self.anthropic_key or self.openai_key or self.gemini_key)

    @classmethod
    def from_env(cls, db_path: str, url: str, environ: Mapping[str, str] = os.environ) -> Settings:
        """Keys from ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` /
        ``GEMINI_API_KEY``, base URLs from ``AIBRIDGE_ANTHROPIC_BASE_URL`` /
        ``AIBRIDGE_OPENAI_BASE_URL`` / ``AIBRIDGE_GEMINI_BASE_URL``."""
        return cls(
            db_path=db_path,
            url=url,
            anthropic_key=environ.get("ANTHROPIC_API_KEY", ""),
            openai_key=environ.get("OPENAI_API_KEY", ""),
            anthropic_base_url=environ.get("AIBRIDGE_ANTHROPIC_BASE_URL") or None,
            openai_base_url=environ.get("AIBRIDGE_OPENAI_BASE_URL") or None,
            gemini_key=environ.get("GEMINI_API_KEY", ""),
            gemini_base_url=environ.get("AIBRIDGE_GEMINI_BASE_URL") or None,
        )


class Retention:
    """Deletes interceptions older than ``days`` from ``db``: a pass every
    ``interval`` seconds, each in batches of ``batch`` rows (one short
    transaction each, in a worker thread, with a pause between them so the
    recorder's writes and the readers go first)."""

    def __init__(
        self, db: Database, days: int, interval: float, *, batch: int = 500, pause: float = 0.05
    ) -> None:
        self.db = db
        self.days = days
        self.interval = interval
        self.batch = batch
        self.pause = pause
        #: Interceptions deleted so far (for tests and the log).
        self.deleted = 0

    async def run_once(self) -> int:
        """One pass: delete everything past the retention period."""
        cutoff = datetime.now(UTC) - timedelta(days=self.days)
        total = 0
        while True:
            n = await anyio.to_thread.run_sync(self.db.delete_older_than, cutoff, self.batch)
            total += n
            if n < self.batch:
                break
            await asyncio.sleep(self.pause)
        self.deleted += total
        if total:
            logger.info("retention: deleted %d interceptions older than %d days", total, self.days)
        return total

    async def run(self) -> None:
        """Passes forever (until cancelled)."""
        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("retention pass failed; trying again later")
            await asyncio.sleep(self.interval)


@dataclass
class Host:
    """What a running host holds (``app.state.host``)."""

    settings: Settings
    db: Database
    recorder: DatabaseRecorder
    bridge: Bridge
    #: The embedded fake provider, in offline mode (scriptable: ``fake.enqueue``).
    fake: FakeUpstream | None = None
    providers: list[str] = field(default_factory=list)
    retention: Retention | None = None
    policy: host_policy.HostPolicy | None = None
    #: What ``/readyz`` checks: name -> an async callable raising when down.
    ready_checks: dict[str, health.Check] = field(default_factory=dict)

    async def flush(self) -> None:
        """Wait until every record produced so far is in the database."""
        await self.bridge.flush()
        await self.recorder.flush()

    async def aclose(self) -> None:
        """Finish in-flight calls, then write every record, then let go of
        the database; in this order."""
        await self.bridge.aclose()
        await self.recorder.aclose()
        if self.policy is not None:
            await self.policy.aclose()
        await anyio.to_thread.run_sync(self.db.close)


Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]


def with_retention(lifespan: Lifespan, host: Host) -> Lifespan:
    """``lifespan``, with the host's retention passes running in the
    background while the app serves (stopped before the rest shuts down)."""

    @contextlib.asynccontextmanager
    async def wrapped(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(app):
            task = None
            if host.retention is not None:
                task = asyncio.get_running_loop().create_task(host.retention.run())
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    return wrapped


def build_app(settings: Settings) -> Starlette:
    """The host as an ASGI app. Its lifespan must run (any ASGI server runs
    it; ``ServerThread`` needs ``lifespan="on"``) so that nothing is lost
    on shutdown."""
    db = Database(settings.db_path)
    recorder = DatabaseRecorder(db)
    fake: FakeUpstream | None = None
    if settings.offline:
        # The library's fake provider, served by this very app (see the
        # routes below); the bridge calls it over loopback like a real one.
        # It keeps the latest requests only (a demo host runs for days), and
        # reads no more of a body than the bridge would send.
        fake = FakeUpstream(max_kept=FAKE_KEPT_REQUESTS, max_body_size=DEFAULT_MAX_BODY_SIZE)
        fake_url = settings.url + FAKE_PREFIX
        keys = {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY, "gemini": GOOGLE_KEY}
        base_urls = {"anthropic": fake_url, "openai": fake_url + "/v1", "gemini": fake_url}
    else:
        keys = {
            "anthropic": settings.anthropic_key,
            "openai": settings.openai_key,
            "gemini": settings.gemini_key,
        }
        base_urls = {
            name: url
            for name, url in (
                ("anthropic", settings.anthropic_base_url),
                ("openai", settings.openai_base_url),
                ("gemini", settings.gemini_base_url),
            )
            if url and keys[name]
        }
    # Prometheus metrics at /metrics when the [prometheus] extra is installed.
    hooks: list[BridgeHooks] = []
    metrics_app: ASGIApp | None = None
    try:
        from prometheus_client import CollectorRegistry, make_asgi_app

        from aibridge_asgi.metrics import PrometheusHooks
    except ImportError:
        logger.info("prometheus_client is not installed: no /metrics")
    else:
        registry = CollectorRegistry()
        hooks.append(PrometheusHooks(registry))
        metrics_app = make_asgi_app(registry)
    # Groups, budgets, model allow-lists and a rate limit (see .policy).
    policy = host_policy.HostPolicy(
        db, requests_per_minute=settings.requests_per_minute, redis_url=settings.redis_url
    )
    bridge = create_bridge(
        resolve_token=make_resolver(db),
        provider_keys=keys,
        base_urls=base_urls,
        recorder=recorder,
        # Coder's CLI sends its token in this header; Authorization and
        # X-Api-Key are always looked at. The bridge never forwards them.
        token_headers=["Coder-Session-Token"],
        hooks=hooks,
        policy=policy.checks(),
    )
    host = Host(settings, db, recorder, bridge, fake, [n for n, key in keys.items() if key])
    if settings.retention_days is not None:
        host.retention = Retention(db, settings.retention_days, settings.retention_interval)
    host.policy = policy

    # /readyz: the database answers (docs/deployment.md).
    host.ready_checks["database"] = health.database_check(db.ping)
    if isinstance(policy.store, RedisStore):  # and Redis, when the workers share it
        host.ready_checks["redis"] = health.redis_check(policy.store.client)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.mark_interrupted:  # (serve --workers N: done before the workers)
            interrupted = await anyio.to_thread.run_sync(db.mark_interrupted)
            if interrupted:
                logger.warning("%d interceptions of an earlier run never ended", interrupted)
        yield
        # Starlette does not pass lifespan events to mounted apps: close the
        # bridge here. Then the recorder, which writes what is still queued.
        await host.aclose()

    # The host's own routes go before the bridge's mount.
    routes: list[BaseRoute] = [*health.routes, *pages.routes, *session_pages.routes, *api.routes]
    routes += host_policy.routes  # the policy's admin API
    if metrics_app is not None:
        # Usage by model and user is not for everyone: admins only.
        routes.append(Mount("/metrics", app=admin_only(metrics_app)))
    if fake is not None:
        routes.append(Mount(FAKE_PREFIX, app=fake))
    routes.append(Mount(BRIDGE_PREFIX, app=bridge))
    app = Starlette(routes=routes, lifespan=with_retention(lifespan, host))
    app.state.host = host
    app.state.db = db
    app.state.host_policy = policy
    app.state.bridge_prefix = BRIDGE_PREFIX  # for the snippets of the connect page
    return app
