"""Who is calling: the bridge's token resolver, and the same check for the
host's own API and pages.

Clients send the host token the way their SDK sends an API key:
``Authorization: Bearer <token>`` (OpenAI clients, Claude Code with
``ANTHROPIC_AUTH_TOKEN``) or ``X-Api-Key: <token>`` (Anthropic clients), or
``Coder-Session-Token: <token>`` as Coder's own CLI does. The browser pages
use a session cookie instead (see :mod:`minicoder.pages`).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from starlette.requests import Request

from aibridge_asgi import Actor

from .db import Database, User

SESSION_COOKIE = "minicoder_session"

#: Headers that may carry the token, besides ``Authorization: Bearer``.
TOKEN_HEADERS = ("X-Api-Key", "Coder-Session-Token")


def make_resolver(db: Database) -> Callable[[str], Actor | None]:
    """The bridge's ``resolve_token``: a plain (blocking) function, which the
    bridge runs in a worker thread."""

    def resolve_token(token: str) -> Actor | None:
        owner = db.token_owner(token)
        if owner is None:
            return None
        # Actor metadata is copied into InterceptionStarted.metadata: the
        # recorder takes the key id from there.
        return Actor(
            owner.user.id, {"username": owner.user.username, "api_key_id": owner.api_key_id}
        )

    return resolve_token


def request_token(request: Request) -> str | None:
    """The token in the request's headers, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in TOKEN_HEADERS:
        value = request.headers.get(name, "").strip()
        if value:
            return value
    return None


async def current_user(request: Request, *, cookie: bool = True) -> User | None:
    """The user behind the request's token, or (``cookie``) its browser
    session. A token that is present decides, even if it is wrong."""
    db: Database = request.app.state.db
    token = request_token(request)
    if token is not None:
        owner = await anyio.to_thread.run_sync(db.token_owner, token)
        return owner.user if owner else None
    session_id = request.cookies.get(SESSION_COOKIE)
    if cookie and session_id:
        return await anyio.to_thread.run_sync(db.session_user, session_id)
    return None
