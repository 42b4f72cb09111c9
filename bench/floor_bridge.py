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

``--governed`` (target ``floor-governed``) adds the two steps issue 19 asks
to be in the measured path, taken from the bridge itself: the usage of a
JSON answer priced by :class:`aibridge_asgi.pricing.Costing` on the default
price book (genai-prices), and the bridge's
:class:`aibridge_asgi.policy.Policy` of the four built-in checks on a memory
store (``bench/inprocess.py``'s) admitting each request and told of its end.
Its records are then the bridge's own record types (the policy and the
pricing take them).

    python bench/floor_bridge.py --port 8104 --upstream-url http://127.0.0.1:8101 [--governed]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
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

# bridge_host.py's token (not imported: the plain floor's process holds no
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


def _path_model(rest: str) -> str:
    """Gemini's model, from ``v1beta/models/{model}:{method}``."""
    return rest.partition("models/")[2].partition(":")[0]


async def resolve(token: str) -> str | None:
    return _USERS.get(token)


def _usage(answer: bytes, interception_id: str) -> Usage:
    usage = json.loads(answer).get("usage") or {}
    return Usage(
        interception_id,
        usage.get("input_tokens") or usage.get("prompt_tokens") or 0,
        usage.get("output_tokens") or usage.get("completion_tokens") or 0,
    )


class Governance:
    """``--governed``: the bridge's own pricing and memory-store policy."""

    def __init__(self) -> None:
        from inprocess import memory_policy

        from aibridge_asgi.config import ProviderConfig
        from aibridge_asgi.policy import Policy
        from aibridge_asgi.pricing import Costing, default_prices
        from aibridge_asgi.records import Actor, InterceptionEnded, InterceptionStarted, TokenUsage

        self.Started, self.Ended, self.TokenUsage = (
            InterceptionStarted,
            InterceptionEnded,
            TokenUsage,
        )
        self.policy = Policy(memory_policy())
        self.costing = Costing(default_prices())
        kinds = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}
        self.providers = {n: ProviderConfig(n, k, "unused") for n, k in kinds.items()}  # type: ignore[arg-type]
        self.actors = {user: Actor(user) for user in _USERS.values()}

    def started(self, interception_id: str, user: str, provider: str, model: str) -> Any:
        return self.Started(
            interception_id, self.actors[user], self.providers[provider].kind, provider,
            model, "floor", False, "unknown", None, None, _now(),
        )  # fmt: skip

    def priced(self, usage: Usage, provider: str, model: str) -> tuple[Any, Any]:
        tokens = self.TokenUsage(usage.interception_id, "", usage.input_tokens, usage.output_tokens)
        return tokens, self.costing.cost(tokens, self.providers[provider], model)


@dataclass(slots=True)
class _Tally:
    """What Policy.finish reads of an interception."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Any = None


def build_app(upstream_url: str, governed: bool = False) -> Starlette:
    session: aiohttp.ClientSession | None = None
    gov = Governance() if governed else None
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
        model = json.loads(body).get("model") or _path_model(request.path_params["rest"])
        interception_id = str(uuid.uuid4())
        pending: Any = ()
        if gov is None:
            started: Any = Started(interception_id, user, provider, model)
            records.put_nowait(started)
        else:
            started = gov.started(interception_id, user, provider, model)
            records.put_nowait(started)
            refusal, pending = await gov.policy.admit(started)
            if refusal is not None:
                records.put_nowait(gov.Ended(interception_id, _now(), "failed", refusal.status))
                return JSONResponse({"error": {"message": refusal.message}}, refusal.status)

        async def end(tally: _Tally) -> None:
            if gov is None:
                records.put_nowait(Ended(interception_id, "completed"))
                return
            ended = gov.Ended(interception_id, _now(), "completed", 200)
            records.put_nowait(ended)
            if pending:
                await gov.policy.finish(pending, started, ended, tally)

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
            usage = _usage(answer, interception_id)
            tally = _Tally(usage.input_tokens, usage.output_tokens)
            if gov is None:
                records.put_nowait(usage)
            else:
                tokens, cost = gov.priced(usage, provider, model)
                tally.cost = cost.amount
                records.put_nowait(tokens)
                records.put_nowait(cost)
            await end(tally)
            return Response(answer, upstream.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()
                await end(_Tally())

        return StreamingResponse(relay(), upstream.status, media_type=content_type)

    return Starlette(
        routes=[Route("/api/v2/aibridge/{provider:str}/{rest:path}", forward, methods=["POST"])],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--governed", action="store_true")
    known, rest = parser.parse_known_args(argv)
    build = functools.partial(build_app, governed=known.governed)
    serve(build, __doc__.split("\n\n")[0], 8104, rest)


if __name__ == "__main__":
    main()
