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

Each interception also carries ``costs`` (its Cost records), ``cost`` (their
sum as an exact decimal string, ``amount: null`` when unpriced) and
``tool_results``.

``GET /api/v2/aibridge/sessions`` groups interceptions by the client's
session id (the same filters, ``user`` for ``initiator``, and paging);
``GET /api/v2/aibridge/sessions/{id}`` lists one session's interceptions;
``GET /api/v2/aibridge/spend?group_by=user|model|day&from=&to=`` sums what
was spent, as JSON or (``&format=csv``) CSV. See docs/embedding.md.

Authentication: the same tokens as the bridge (``Authorization: Bearer``,
``X-Api-Key`` or ``Coder-Session-Token``), or the usage page's session
cookie. A non-admin naming anyone but themselves gets the same 403 whether
that user exists or not.

Prompts, thoughts and tool inputs longer than 4,096 characters are cut (in
SQL: a page never loads whole prompts); the item then has
``prompt_truncated: true`` and ``prompt_length`` (``content_*`` for
thoughts, ``input_*`` for tool inputs, whose cut input stays a string).

``DELETE /api/v2/users/{user}/keys/{key_id}`` revokes a token at once
(``key_id`` is the part of the token before its first ``-``; ``user`` is
``me``, an id or a username). Users revoke their own, admins anyone's;
token only, not the browser session (204, 403, or 404 if no such key).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import current_user
from .db import Database, User, timestamp
from .queries import (
    Filters,
    Page,
    SpendBy,
    decode_cursor,
    list_interceptions,
    list_sessions,
    money,
    session_interceptions,
    spend,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
FILTERS = ("initiator", "provider", "model", "client", "started_after", "started_before")
PARAMETERS = frozenset((*FILTERS, "limit", "cursor"))


#: The one answer to a request for someone else's data.
FORBIDDEN = "only admins may see or change other users' data"


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
        if not user.is_admin:
            # Not an admin: only oneself, and the same 403 for any other
            # name, existing or not (no probing for user names).
            if ref not in ("me", user.id, user.username):
                raise BadRequest(FORBIDDEN, 403)
            initiator: User | None = user
        else:
            initiator = user if ref == "me" else db.user(ref)
        if initiator is None:
            raise BadRequest(f"no user {ref!r}")
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


def _paging(query: dict[str, str]) -> tuple[int, str | None]:
    """``limit`` and ``cursor`` of a list request, checked (in that order)."""
    limit = _limit(query.get("limit"))
    cursor = query.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise BadRequest("invalid cursor") from None
    return limit, cursor


def _list(db: Database, user: User, query: dict[str, str]) -> Page:
    filters = parse_filters(db, user, query)
    limit, cursor = _paging(query)
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


# -- sessions and spend ------------------------------------------------------------


def _user_alias(query: dict[str, str]) -> dict[str, str]:
    """``user=`` is accepted for ``initiator=`` on the newer endpoints."""
    query = dict(query)
    if "user" in query:
        query.setdefault("initiator", query.pop("user"))
    return query


def _sessions(db: Database, user: User, query: dict[str, str]) -> Page:
    query = _user_alias(query)
    filters = parse_filters(db, user, query)
    limit, cursor = _paging(query)
    with db.connect() as conn:
        return list_sessions(conn, filters, limit=limit, cursor=cursor)


async def sessions(request: Request) -> JSONResponse:
    """``GET /api/v2/aibridge/sessions``: interceptions grouped by the
    client's session id (one without a session id is a session of its own),
    newest first. The same filters and paging as the interceptions list
    (``user`` may stand for ``initiator``)."""
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated: send your token as 'Authorization: Bearer'")
    try:
        page = await anyio.to_thread.run_sync(
            _sessions, request.app.state.db, user, dict(request.query_params)
        )
    except BadRequest as exc:
        return error(exc.status, str(exc))
    return JSONResponse(
        {"count": page.count, "results": page.results, "next_cursor": page.next_cursor}
    )


def session_detail(db: Database, user: User, session_id: str) -> list[dict[str, Any]]:
    """The interceptions of one session the user may see (blocking)."""
    filters = Filters(initiator_id=None if user.is_admin else user.id)
    with db.connect() as conn:
        return session_interceptions(conn, filters, session_id)


async def session(request: Request) -> JSONResponse:
    """``GET /api/v2/aibridge/sessions/{id}``: the session's interceptions,
    oldest first, with prompts, tool calls and results, thoughts, tokens and
    cost. 404 when the caller has none in it."""
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated: send your token as 'Authorization: Bearer'")
    session_id = request.path_params["session_id"]
    items = await anyio.to_thread.run_sync(session_detail, request.app.state.db, user, session_id)
    if not items:
        return error(404, f"no session {session_id!r}")
    return JSONResponse({"id": session_id, "interceptions": items})


SPEND_PARAMETERS = frozenset(("group_by", "from", "to", "user", "format"))


def _bound(name: str, value: str, *, end: bool) -> str:
    """``from``/``to`` as a stored timestamp: an RFC 3339 time, or a date
    (``from``: its start; ``to``: the end of that day, so the day counts)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return _time(name, value)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return timestamp(start + timedelta(days=1) if end else start)


def _spend(db: Database, user: User, query: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(query) - SPEND_PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}")
    group_by = query.get("group_by", "user")
    if group_by not in ("user", "model", "day"):
        raise BadRequest("group_by must be user, model or day")
    if query.get("format", "json") not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    filters = parse_filters(db, user, {"initiator": query["user"]} if query.get("user") else {})
    after = _bound("from", query["from"], end=False) if query.get("from") else None
    before = _bound("to", query["to"], end=True) if query.get("to") else None
    if after is not None and before is not None and after >= before:
        raise BadRequest("from must be before to")
    filters = Filters(initiator_id=filters.initiator_id, started_after=after, started_before=before)
    with db.connect() as conn:
        rows = spend(conn, filters, cast(SpendBy, group_by))
    total = sum(row.amount_pico for row in rows)
    return {
        "group_by": group_by,
        "from": after,
        "to": before,
        "currency": "USD",
        "total": format_pico(total),
        "results": [
            {
                "key": row.key,
                "amount": row.amount,
                "interceptions": row.interceptions,
                "unpriced_interceptions": row.unpriced,
            }
            for row in rows
        ],
    }


def format_pico(pico: int) -> str:
    return money(pico) or "0"


async def spend_report(request: Request) -> Response:
    """``GET /api/v2/aibridge/spend?group_by=user|model|day&from=&to=``:
    USD spent, exactly, per group; ``&format=csv`` for a CSV download.
    Non-admins see their own spend; admins everyone's, or ``user=``'s."""
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated: send your token as 'Authorization: Bearer'")
    query = dict(request.query_params)
    try:
        report = await anyio.to_thread.run_sync(_spend, request.app.state.db, user, query)
    except BadRequest as exc:
        return error(exc.status, str(exc))
    if query.get("format") != "csv":
        return JSONResponse(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report["group_by"], "amount_usd", "interceptions", "unpriced_interceptions"])
    for row in report["results"]:
        writer.writerow(
            [row["key"], row["amount"], row["interceptions"], row["unpriced_interceptions"]]
        )
    filename = f"aibridge-spend-by-{report['group_by']}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _revoke(db: Database, user: User, ref: str, key_id: str) -> bool:
    """Revoke ``key_id`` of user ``ref`` (``me``, an id or a username)."""
    if ref in ("me", user.id, user.username):
        owner: User | None = user
    elif not user.is_admin:
        raise BadRequest(FORBIDDEN, 403)
    else:
        owner = db.user(ref)
    if owner is None:
        return False
    return db.revoke_token(key_id, owner.id)


async def revoke_key(request: Request) -> Response:
    """``DELETE /api/v2/users/{user}/keys/{key_id}``: end a token at once
    (``key_id`` is the part of the token before its first ``-``). Users
    revoke their own; admins anyone's. 204, or 404 if there is no such key."""
    user = await current_user(request, cookie=False)
    if user is None:
        return error(401, "You must be authenticated")
    try:
        done = await anyio.to_thread.run_sync(
            _revoke,
            request.app.state.db,
            user,
            request.path_params["user"],
            request.path_params["key_id"],
        )
    except BadRequest as exc:
        return error(exc.status, str(exc))
    if not done:
        return error(404, "no such key")
    return Response(status_code=204)


#: Routes to put BEFORE the bridge's ``Mount("/api/v2/aibridge", ...)``:
#: Starlette takes the first route that matches, and the mount matches every
#: path under its prefix.
routes = [
    Route("/api/v2/aibridge/interceptions", interceptions, methods=["GET"]),
    Route("/api/v2/aibridge/sessions", sessions, methods=["GET"]),
    Route("/api/v2/aibridge/sessions/{session_id}", session, methods=["GET"]),
    Route("/api/v2/aibridge/spend", spend_report, methods=["GET"]),
    Route("/api/v2/users/me", me, methods=["GET"]),
    Route("/api/v2/users/{user}/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
