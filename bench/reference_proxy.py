"""The reference proxy: the smallest honest Starlette forwarder (our limit).

Same paths as the bridge host (``/api/v2/aibridge/{provider}/{rest}`` goes
to ``{upstream}/{rest}``, with the query string; for OpenAI ``rest``
already starts with ``v1/``),
forwarded with aiohttp through one shared ``ClientSession``. It swaps in the
provider key and forwards the body and its content type, then relays the
status, the content type and the body bytes, streaming SSE answers as they
arrive. No auth check, no parsing, no records.

Served like the bridge host: uvicorn, uvloop, httptools, one worker.

    python bench/reference_proxy.py --port 8103 --upstream-url http://127.0.0.1:8101
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["build_app", "serve"]

KEYS = {
    "anthropic": ("x-api-key", "sk-ant-bench-upstream"),
    "openai": ("authorization", "Bearer sk-bench-upstream"),
    "gemini": ("x-goog-api-key", "bench-google-upstream"),
}


def build_app(upstream_url: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120),
            auto_decompress=False,
        )
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        key_name, key = KEYS[request.path_params["provider"]]
        body = await request.body()
        headers = {
            "content-type": request.headers.get("content-type", "application/json"),
            key_name: key,
        }
        url = f"{upstream_url}/{request.path_params['rest']}"
        query = request.scope["query_string"]
        if query:  # Gemini's alt=sse
            url += "?" + query.decode("latin-1")
        upstream = await session.post(url, data=body, headers=headers)
        content_type = upstream.headers.get("content-type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            data = await upstream.read()
            upstream.release()
            return Response(data, upstream.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()

        return StreamingResponse(relay(), upstream.status, media_type=content_type)

    return Starlette(
        routes=[
            Route(
                "/api/v2/aibridge/{provider:str}/{rest:path}",
                forward,
                methods=["POST"],
            )
        ],
        lifespan=lifespan,
    )


def serve(
    build: Callable[[str], Starlette], description: str, port: int, argv: list[str] | None
) -> None:
    """Parse ``--host``, ``--port``, ``--upstream-url`` and serve
    ``build(upstream_url)`` as the bridge host is served (uvloop, httptools,
    one worker, no access log)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--upstream-url", default="http://127.0.0.1:8101")
    args = parser.parse_args(argv)
    uvicorn.run(
        build(args.upstream_url.rstrip("/")),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=120,
    )


def main(argv: list[str] | None = None) -> None:
    serve(build_app, __doc__.split("\n\n")[0], 8103, argv)


if __name__ == "__main__":
    main()
