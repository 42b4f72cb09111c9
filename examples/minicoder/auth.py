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
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

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


def admin_only(app: ASGIApp) -> ASGIApp:
    """``app`` for admins only: an admin's token (``Authorization: Bearer``,
    as Prometheus sends it with ``authorization: {credentials: ...}``) or an
    admin's browser session; 401 without credentials, 403 for others."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        user = await current_user(Request(scope))
        if user is None:
            answer = PlainTextResponse(
                "sign in as an admin", status_code=401, headers={"www-authenticate": "Bearer"}
            )
        elif not user.is_admin:
            answer = PlainTextResponse("Forbidden", status_code=403)
        else:
            await app(scope, receive, send)
            return
        await answer(scope, receive, send)

    return guarded
