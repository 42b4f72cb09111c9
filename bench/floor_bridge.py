"""The floor: the reference proxy plus the least a bridge must do.

Measures what the bridge's essentials cost on top of the reference proxy, so
the bridge's own figures can be read against a bridge that does nothing
else. On top of ``reference_proxy.py`` it checks the host token (an async
dict lookup, as the bench host's resolver), parses the request body for the
model, parses a JSON answer for its usage, and hands three records (start,
usage, end) to a queue drained by a background task. No pricing, policy,
key pools, header hygiene, client detection, deadlines, hooks or retries.
It is not a product and not tested as one; ``bench/underload.py --targets
reference,floor,bridge-aiohttp`` compares the three.

    python bench/floor_bridge.py --port 8104 --upstream-url http://127.0.0.1:8101
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from reference_proxy import KEYS, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["build_app"]

# bridge_host.py's token (not imported: the floor's process holds no
# aibridge_asgi module).
_USERS = {"bench-host-token": "bench-user"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Started:
    interception_id: str
    user: str
    provider: str
    model: str
    at: datetime = field(default_factory=_now)


@dataclass(slots=True)
class Usage:
    interception_id: str
    input_tokens: int
    output_tokens: int
    at: datetime = field(default_factory=_now)


@dataclass(slots=True)
class Ended:
    interception_id: str
    status: str
    at: datetime = field(default_factory=_now)


async def resolve(token: str) -> str | None:
    return _USERS.get(token)


def _usage(answer: bytes, interception_id: str) -> Usage:
    usage = json.loads(answer).get("usage") or {}
    return Usage(
        interception_id,
        usage.get("input_tokens") or usage.get("prompt_tokens") or 0,
        usage.get("output_tokens") or usage.get("completion_tokens") or 0,
    )


def build_app(upstream_url: str) -> Starlette:
    session: aiohttp.ClientSession | None = None
    records: asyncio.Queue[Any] = asyncio.Queue()
    kept: deque[Any] = deque(maxlen=10_000)

    async def drain() -> None:
        while True:
            kept.append(await records.get())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120),
            auto_decompress=False,
        )
        drainer = asyncio.ensure_future(drain())
        yield
        drainer.cancel()
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        provider = request.path_params["provider"]
        key_name, key = KEYS[provider]
        headers = request.headers
        token = (
            headers.get("x-api-key")
            or headers.get("x-goog-api-key")
            or headers.get("authorization", "").removeprefix("Bearer ")
        )
        user = await resolve(token)
        if user is None:
            return JSONResponse({"error": {"message": "invalid credentials"}}, 401)
        body = await request.body()
        model = json.loads(body).get("model", "")
        interception_id = str(uuid.uuid4())
        records.put_nowait(Started(interception_id, user, provider, model))
        content_type = headers.get("content-type", "application/json")
        query = request.scope["query_string"]
        upstream = await session.post(
            f"{upstream_url}/{request.path_params['rest']}"
            + ("?" + query.decode("latin-1") if query else ""),
            data=body,
            headers={"content-type": content_type, key_name: key},
        )
        content_type = upstream.headers.get("content-type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            answer = await upstream.read()
            upstream.release()
            records.put_nowait(_usage(answer, interception_id))
            records.put_nowait(Ended(interception_id, "completed"))
            return Response(answer, upstream.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()
                records.put_nowait(Ended(interception_id, "completed"))

        return StreamingResponse(relay(), upstream.status, media_type=content_type)

    return Starlette(
        routes=[Route("/api/v2/aibridge/{provider:str}/{rest:path}", forward, methods=["POST"])],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    serve(build_app, __doc__.split("\n\n")[0], 8104, argv)


if __name__ == "__main__":
    main()
