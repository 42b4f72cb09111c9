"""Driving an ASGI app by hand: the test decides when each message arrives.

Used where the order of events matters (shutdown while a request waits on
the resolver, a body that never starts) and a real client could not hold a
request at an exact point.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class Exchange:
    """What the app sent back."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.decode().lower() == name.lower():
                return v.decode("latin-1")
        return None

    def json(self) -> Any:
        return json.loads(bytes(self.body))


def scope_for(
    path: str, headers: dict[str, str], method: str = "POST", query: bytes = b""
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def call(
    app: ASGIApp,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    receive: Callable[[], Awaitable[Message]] | None = None,
    on_send: Callable[[Message], Awaitable[None]] | None = None,
) -> Exchange:
    """One request to ``app``; the body is sent whole unless ``receive`` is
    given. After the body, receive() waits until the response ended and then
    reports a disconnect (as servers do)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"content-type": "application/json", "content-length": str(len(raw))}
    all_headers.update(headers or {})
    out = Exchange()
    finished = asyncio.Event()
    sent_body = False

    async def default_receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if on_send is not None:
            await on_send(message)
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")
            if not message.get("more_body", False):
                out.ended = True
                finished.set()

    try:
        await app(scope_for(path, all_headers), receive or default_receive, send)
    finally:
        finished.set()
    return out
