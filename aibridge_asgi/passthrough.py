"""Allow-listed routes forwarded as they are (models, token counting...).

Same credential swap as bridged routes (with the same failover between
pooled keys), any method, no records; the answer streams back unchanged.
"""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from ._asgi import (
    UPSTREAM_BROKE,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
    Runtime,
    read_body,
    send_error,
    upstream_url,
)
from .auth import request_headers_for_upstream, response_headers_for_client
from .errors import BridgeError
from .hooks import call as call_hooks
from .keys import Access
from .routing import Route
from .upstream import (
    UpstreamRequestInvalid,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["passthrough"]


async def passthrough(
    rt: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    access: Access | None = None,
) -> None:
    """Forward one authenticated request on a passthrough route.

    Raises :class:`~aibridge_asgi._asgi.ClientGone` if the client leaves
    while sending its body.
    """
    began = time.perf_counter()
    status: int | None = None
    try:
        if access is None:
            access = rt.keys.access(route.provider.name)
        status = await _forward(rt, scope, receive, send, route, access)
    finally:
        if rt.hooks:
            seconds = time.perf_counter() - began
            call_hooks(
                rt.hooks, "passthrough_done", route.provider, scope["method"], status, seconds
            )


async def _forward(
    rt: Runtime, scope: Scope, receive: Receive, send: Send, route: Route, access: Access
) -> int | None:
    """Forward the request; return the status sent to the client."""
    provider = route.provider
    kind = provider.kind
    raw_headers = scope["headers"]
    try:
        body = await read_body(rt, scope, receive)
    except BridgeError as exc:
        await send_error(send, kind, exc)
        return exc.status
    url = upstream_url(provider.resolved_base_url, route.upstream_path, scope["query_string"])
    try:
        strip = rt.strip_for(provider)
        headers = request_headers_for_upstream(raw_headers, strip, provider.extra_headers)
        while True:
            credential = access.next()
            if credential is None:
                raise access.exhausted()
            response = await rt.upstream.send(
                scope["method"], url, [*headers, *credential.headers], body
            )
            if not access.fail_over(credential, response.status, response.headers):
                break
            await response.aclose()
    except BridgeError as exc:
        await send_error(send, kind, exc)
        return exc.status
    except UpstreamRequestInvalid as exc:
        await send_error(send, kind, BridgeError(400, str(exc)))
        return 400
    except UpstreamTimeout:
        await send_error(send, kind, UPSTREAM_TIMEOUT)
        return 504
    except UpstreamUnreachable:
        await send_error(send, kind, UPSTREAM_UNREACHABLE)
        return 502
    try:
        started = False
        try:
            async for chunk in response.iter_raw():
                if not started:
                    await _start(send, response.status, response.headers)
                    started = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamStreamError:
            if not started:
                error = UPSTREAM_BROKE
                await send_error(send, kind, error)
                return 502
            return response.status  # started: leave the response cut, as upstream cut it
        if not started:
            await _start(send, response.status, response.headers)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return response.status
    finally:
        await response.aclose()  # asyncio delivers a cancellation once: this runs


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": response_headers_for_client(headers),
        }
    )
