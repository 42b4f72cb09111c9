"""The management API, after Coder's.

``GET /api/v2/aibridge/interceptions`` lists interceptions, newest first,
with their token usages, prompts, tool usages and model thoughts nested.
Query parameters, all optional:

``initiator``
    a user id, a username, or ``me``. Only admins may name someone else;
    without it, admins see everyone and other users see their own rows.
``provider``, ``model``, ``client``
    exact matches (``provider`` matches the kind, ``anthropic`` or
    ``openai``, or the configured instance name; ``client`` ignores case).
``started_after``, ``started_before``
    RFC 3339 times (``2025-10-01T12:00:00Z``); after is inclusive, before
    exclusive.
``limit``
    page size, 1 to 1000 (default 100).
``cursor``
    the ``next_cursor`` of the previous page.

The answer is ``{"count": N, "results": [...], "next_cursor": "..." | null}``
where ``count`` counts every matching interception (all pages). An
interception whose end has not been recorded yet has ``"in_flight": true``
and ``"status": null``.

Authentication: the same tokens as the bridge (``Authorization: Bearer``,
``X-Api-Key`` or ``Coder-Session-Token``), or the usage page's session
cookie.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import current_user
from .db import Database, User, timestamp
from .queries import Filters, Page, decode_cursor, list_interceptions

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
FILTERS = ("initiator", "provider", "model", "client", "started_after", "started_before")
PARAMETERS = frozenset((*FILTERS, "limit", "cursor"))


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str, detail: str = "") -> JSONResponse:
    """Errors look like Coder's: ``{"message": ..., "detail": ...}``."""
    return JSONResponse({"message": message, "detail": detail}, status_code=status)


def _time(name: str, value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BadRequest(
            f"{name} must be an RFC 3339 time with an offset, e.g. 2025-10-01T12:00:00Z"
        )
    return timestamp(parsed)


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def parse_filters(db: Database, user: User, query: dict[str, str]) -> Filters:
    """The query parameters as filters, with the caller's visibility applied."""
    unknown = sorted(set(query) - PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}")
    initiator_id: str | None = None if user.is_admin else user.id
    ref = query.get("initiator")
    if ref:
        initiator = user if ref == "me" else db.user(ref)
        if initiator is None:
            raise BadRequest(f"no user {ref!r}")
        if initiator.id != user.id and not user.is_admin:
            raise BadRequest("only admins may list other users' interceptions", 403)
        initiator_id = initiator.id
    after = _time("started_after", query["started_after"]) if "started_after" in query else None
    before = _time("started_before", query["started_before"]) if "started_before" in query else None
    if after is not None and before is not None and after >= before:
        raise BadRequest("started_after must be before started_before")
    return Filters(
        initiator_id=initiator_id,
        provider=query.get("provider") or None,
        model=query.get("model") or None,
        client=query.get("client") or None,
        started_after=after,
        started_before=before,
    )


def _list(db: Database, user: User, query: dict[str, str]) -> Page:
    filters = parse_filters(db, user, query)
    limit = _limit(query.get("limit"))
    cursor = query.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise BadRequest("invalid cursor") from None
    with db.connect() as conn:
        return list_interceptions(conn, filters, limit=limit, cursor=cursor)


async def interceptions(request: Request) -> JSONResponse:
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated: send your token as 'Authorization: Bearer'")
    try:
        page = await anyio.to_thread.run_sync(
            _list, request.app.state.db, user, dict(request.query_params)
        )
    except BadRequest as exc:
        return error(exc.status, str(exc))
    body: dict[str, Any] = {
        "count": page.count,
        "results": page.results,
        "next_cursor": page.next_cursor,
    }
    return JSONResponse(body)


async def me(request: Request) -> JSONResponse:
    """``GET /api/v2/users/me``: who the token belongs to."""
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated")
    return JSONResponse({"id": user.id, "username": user.username, "is_admin": user.is_admin})


#: Routes to put BEFORE the bridge's ``Mount("/api/v2/aibridge", ...)``:
#: Starlette takes the first route that matches, and the mount matches every
#: path under its prefix.
routes = [
    Route("/api/v2/aibridge/interceptions", interceptions, methods=["GET"]),
    Route("/api/v2/users/me", me, methods=["GET"]),
]
