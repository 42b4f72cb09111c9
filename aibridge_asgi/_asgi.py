"""Small ASGI helpers shared by the bridged and passthrough paths."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.types import Receive, Scope, Send

from .breaker import CircuitBreakers
from .config import ProviderConfig, RetryPolicy
from .deadlines import Deadlines, WaitLimit
from .delivery import RecordQueue
from .errors import BridgeError, error_body
from .hooks import BridgeHooks
from .keys import Keys
from .limits import Limits
from .policy import Policy
from .pricing import Costing
from .upstream import Upstream

__all__ = [
    "UPSTREAM_BROKE",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_UNREACHABLE",
    "ClientGone",
    "Runtime",
    "header",
    "read_body",
    "send_error",
    "upstream_url",
]

#: What the client reads when the upstream gave no usable answer.
UPSTREAM_TIMEOUT = BridgeError(504, "the upstream provider did not answer in time")
UPSTREAM_UNREACHABLE = BridgeError(502, "the upstream provider could not be reached")
UPSTREAM_BROKE = BridgeError(502, "the upstream provider's answer broke off")


class ClientGone(Exception):
    """The client disconnected while its request was being read."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the request handlers need from the bridge."""

    upstream: Upstream
    records: RecordQueue
    strip_headers: frozenset[bytes]
    limits: Limits = field(default_factory=Limits)
    hooks: tuple[BridgeHooks, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breakers: CircuitBreakers | None = None
    keys: Keys = field(default_factory=lambda: Keys({}))
    costing: Costing | None = None
    tool_result_content: int | None = None
    policy: Policy | None = None
    #: The coarse deadlines of calls (body time limit, disconnect watcher).
    deadlines: Deadlines = field(default_factory=Deadlines)
    _strips: dict[str, frozenset[bytes]] = field(default_factory=dict)

    def strip_for(self, provider: ProviderConfig) -> frozenset[bytes]:
        """``strip_headers`` and the provider's key header: what the bridge
        never forwards to that provider (made once per provider)."""
        strip = self._strips.get(provider.name)
        if strip is None:
            strip = self._strips[provider.name] = self.strip_headers | {provider.key_header_name}
        return strip

    @property
    def max_body_size(self) -> int:
        """Request bodies above this many bytes get 413."""
        return self.limits.max_body_size

    @property
    def keepalive_interval(self) -> float | None:
        """Seconds of upstream silence before a keep-alive comment."""
        return self.limits.keepalive_interval

    @property
    def body_timeout(self) -> float | None:
        """Seconds a client may take to send its request body."""
        return self.limits.body_timeout


def header(headers: Sequence[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    """The first value of header ``wanted`` (a lower-case name), or None."""
    for name, value in headers:
        if name == wanted:
            return value
    return None


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The declared request body size, if the client sent a valid one."""
    value = header(headers, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


async def read_body(rt: Runtime, scope: Scope, receive: Receive) -> bytes:
    """Read the whole request body: 413 as soon as it passes the size limit
    (nothing past it is buffered), 408 if it takes longer than the body
    timeout (slow uploads), :class:`ClientGone` if the client leaves."""
    limit = rt.max_body_size
    too_large = BridgeError(413, f"request body is larger than the limit of {limit} bytes")
    declared = content_length(scope["headers"])
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # The first receive too: a body that never starts is timed out, by a
    # coarse deadline rather than asyncio.timeout (deadlines.py: it almost
    # never fires, and a loop timer per request is dear under load).
    timeout = rt.body_timeout
    limit_wait = WaitLimit(timeout, rt.deadlines) if timeout is not None else None
    if limit_wait is not None:
        limit_wait.waiting()  # never done(): the whole body is bounded
    try:
        while True:
            message = await receive()  # usually the whole body, already buffered
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            if not message.get("more_body", False):
                if not chunks:
                    return bytes(chunk)
                chunks.append(chunk)
                break
            if chunk:
                chunks.append(chunk)
    except asyncio.CancelledError:
        if limit_wait is not None and limit_wait.expired():
            raise BridgeError(
                408, f"request body was not received within {timeout:g} seconds"
            ) from None
        raise
    finally:
        if limit_wait is not None:
            limit_wait.close()
    return b"".join(chunks)


async def send_error(
    send: Send,
    kind: str | None,
    error: BridgeError,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with ``error`` as a JSON body in the shape of provider ``kind``."""
    body = error_body(kind, error.status, error.message, error.code, error.error_type)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *error.headers,
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def upstream_url(base_url: str, path: str, query_string: bytes) -> str:
    """The configured base URL, the matched path, and the client's query."""
    url = base_url + path
    if query_string:
        url += "?" + query_string.decode("latin-1")
    return url
