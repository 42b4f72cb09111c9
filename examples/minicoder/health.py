"""Health endpoints for load balancers and orchestrators (no sign-in).

* ``GET /healthz``: the process is up and serving (liveness). Always 200
  while the event loop runs; it touches nothing else.
* ``GET /readyz``: this worker can do its job (readiness): the database
  answers a query and, when the host shares state through Redis, Redis
  answers a ``PING``. 200 with each check's result, or 503 naming the one
  that failed; each check is given :data:`CHECK_TIMEOUT` seconds. Details of
  a failure go to the log, not to the unauthenticated caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

logger = logging.getLogger("minicoder.health")

CHECK_TIMEOUT = 5.0

#: A readiness check: raises (or times out) when its dependency is down.
Check = Callable[[], Awaitable[None]]


def database_check(ping: Callable[[], None]) -> Check:
    """The database's ``ping`` (blocking), run in a worker thread."""

    async def check() -> None:
        await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)

    return check


def redis_check(client: Any) -> Check:
    """A ``PING`` to the Redis the policy state lives in (a
    ``redis.asyncio.Redis``)."""

    async def check() -> None:
        await client.ping()

    return check


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    checks: dict[str, Check] = request.app.state.host.ready_checks
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                await check()
        except Exception as exc:
            logger.warning("readiness: %s is not reachable: %r", name, exc)
            results[name] = "unreachable"
        else:
            results[name] = "ok"
    ready = all(result == "ok" for result in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": results},
        status_code=200 if ready else 503,
        headers={"cache-control": "no-store"},
    )


routes = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
