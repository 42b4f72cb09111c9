"""The sessions pages: ``/sessions`` lists the client sessions (interceptions
grouped by the session id the client sent; an interception without one is a
session of its own), newest first, with their cost; ``/sessions/{id}`` shows
one session's interceptions with prompts, tool calls, tool results,
thoughts, tokens and cost.

Server-rendered like the usage page (:mod:`minicoder.pages`), from the same
queries as the API (:func:`minicoder.queries.list_sessions`). Non-admins see
only their own sessions.
"""

from __future__ import annotations

import json
from decimal import Decimal
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .api import session_detail
from .auth import current_user
from .db import Database, User, parse_timestamp
from .pages import dollars, excerpt, render, viewed_initiator
from .queries import Filters, Page, decode_cursor, list_sessions

PAGE_SIZE = 50


def _when(stamp: str | None) -> str:
    return parse_timestamp(stamp).strftime("%m-%d %H:%M:%S") if stamp else "?"


def _sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _list(db: Database, viewer: User, params: dict[str, str]) -> Page:
    filters = Filters(
        initiator_id=viewed_initiator(db, viewer, params),
        model=params.get("model") or None,
        client=params.get("client") or None,
    )
    cursor = params.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            cursor = None
    with db.connect() as conn:
        return list_sessions(conn, filters, limit=PAGE_SIZE, cursor=cursor)


def _session_cost(session: dict[str, Any]) -> str:
    unpriced = session["unpriced_interceptions"]
    if session["cost"] == "0" and unpriced:
        return dollars(None)
    return dollars(session["cost"], unpriced)


async def sessions_page(request: Request) -> Response:
    viewer = await current_user(request)
    if viewer is None:
        return _sign_in(request)
    query = request.query_params
    params = {
        "user": (query.get("user") or "") if viewer.is_admin else "",
        "model": query.get("model") or "",
        "client": query.get("client") or "",
        "cursor": query.get("cursor") or "",
    }
    page = await anyio.to_thread.run_sync(_list, request.app.state.db, viewer, params)
    rows = []
    for s in page.results:
        link = escape("/sessions/" + quote(s["id"], safe=""))
        prompt = s["first_prompt"] or ""
        rows.append(
            f'<tr data-session="{escape(s["id"])}">'
            f'<td class="when"><a href="{link}">{_when(s["started_at"])}</a></td>'
            f"<td>{escape(s['initiator']['username'] or s['initiator']['id'])}</td>"
            f"<td>{escape(', '.join(s['clients']))}</td>"
            f"<td>{escape(', '.join(s['models']))}</td>"
            f'<td class="prompt" title="{escape(prompt[:500])}">{escape(excerpt(prompt))}</td>'
            f'<td class="num">{s["interceptions"]:,}</td>'
            f'<td class="num">{s["tokens_in"]:,} / {s["tokens_out"]:,}</td>'
            f'<td class="num">{_session_cost(s)}</td></tr>'
        )
    if rows:
        head = (
            "<tr><th>Started (UTC)</th><th>User</th><th>Client</th><th>Models</th>"
            '<th>First prompt</th><th class="num">Interceptions</th>'
            '<th class="num">Tokens in / out</th><th class="num">Cost</th></tr>'
        )
        table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    else:
        table = '<p class="empty">No sessions yet.</p>'
    more = ""
    if page.next_cursor:
        older = urlencode({**{k: v for k, v in params.items() if v}, "cursor": page.next_cursor})
        more = f'<p><a class="pill" href="{escape("/sessions?" + older)}">Older sessions</a></p>'
    api = urlencode({k: v for k, v in params.items() if v and k != "cursor"})
    scope = params["user"] or ("everyone" if viewer.is_admin else viewer.username)
    content = (
        '<section class="toolbar">'
        f"<h1>Sessions <small>{escape(scope)}</small></h1>"
        '<a class="pill" href="/usage">Usage</a></section>'
        '<section class="card" id="sessions">'
        f"<h2>{page.count:,} sessions, newest first"
        f'<a class="json" href="{escape("/api/v2/aibridge/sessions?" + api)}">as JSON</a></h2>'
        f"{table}{more}</section>"
    )
    return render("Sessions", content, viewer)


def _interception_html(item: dict[str, Any]) -> str:
    cost = item.get("cost")
    tokens_in = sum(
        t["input_tokens"] + t["cache_read_input_tokens"] + t["cache_write_input_tokens"]
        for t in item["token_usages"]
    )
    tokens_out = sum(t["output_tokens"] for t in item["token_usages"])
    status = "in flight" if item["in_flight"] else (item["status"] or "?")
    parts = [
        f'<section class="card interception" data-interception="{escape(item["id"])}">',
        f"<h2>{_when(item['started_at'])} · {escape(item['model'])}"
        f"<small>{escape(item['client'])} · {escape(item['route'])} · {escape(status)}"
        f" · {tokens_in:,} tokens in / {tokens_out:,} out · "
        f"{dollars(cost['amount']) if cost else 'no cost'}</small></h2>",
    ]
    for prompt in item["user_prompts"]:
        parts.append(f'<p class="prompt-full"><b>Prompt</b> {escape(prompt["prompt"])}</p>')
    if item["tool_results"]:
        results = "".join(
            f"<li><code>{escape(r['tool_call_id'])}</code> {r['size']:,} bytes"
            + (' <span class="status s-failed">error</span>' if r["is_error"] else "")
            + (f" <q>{escape(excerpt(r['content']))}</q>" if r["content"] else "")
            + "</li>"
            for r in item["tool_results"]
        )
        parts.append(f'<div class="tool-results"><b>Tool results sent</b><ul>{results}</ul></div>')
    if item["model_thoughts"]:
        thoughts = "".join(
            f"<li>{escape(excerpt(t['content'], 200))}</li>" for t in item["model_thoughts"]
        )
        parts.append(f'<div class="thoughts"><b>Thoughts</b><ul>{thoughts}</ul></div>')
    if item["tool_usages"]:
        calls = "".join(
            f"<li><code>{escape(t['tool'])}</code> "
            f"{escape(excerpt(json.dumps(t['input'], ensure_ascii=False), 160))}</li>"
            for t in item["tool_usages"]
        )
        parts.append(f'<div class="tool-calls"><b>Tool calls</b><ul>{calls}</ul></div>')
    if cost and item["costs"] and item["costs"][0]["breakdown"]:
        breakdown = " · ".join(
            f"{escape(kind.replace('_', ' '))} ${escape(amount)}"
            for kind, amount in item["costs"][0]["breakdown"].items()
        )
        parts.append(f'<p class="breakdown">{breakdown}</p>')
    parts.append("</section>")
    return "".join(parts)


async def session_page(request: Request) -> Response:
    viewer = await current_user(request)
    if viewer is None:
        return _sign_in(request)
    session_id = request.path_params["session_id"]
    items = await anyio.to_thread.run_sync(session_detail, request.app.state.db, viewer, session_id)
    if not items:
        content = f'<p class="error">No session {escape(session_id)} here.</p>'
        return render("Session", content, viewer, status=404)
    total_known = all(i["cost"] is None or i["cost"]["priced"] for i in items)
    total = sum(
        (Decimal(i["cost"]["amount"]) for i in items if i["cost"] and i["cost"]["priced"]),
        Decimal(0),
    )
    api = escape("/api/v2/aibridge/sessions/" + quote(session_id, safe=""))
    summary = f"{len(items)} interceptions · {dollars(total)}" + (
        "" if total_known else " (some without a price)"
    )
    content = (
        '<section class="toolbar">'
        f"<h1>Session <small>{escape(session_id)}</small></h1>"
        '<a class="pill" href="/sessions">All sessions</a></section>'
        f'<p class="totals" id="session-total">{summary}'
        f' <a class="json" href="{api}">as JSON</a></p>'
        + "".join(_interception_html(item) for item in items)
    )
    return render("Session", content, viewer)


routes = [
    Route("/sessions", sessions_page, methods=["GET"]),
    Route("/sessions/{session_id}", session_page, methods=["GET"]),
]
