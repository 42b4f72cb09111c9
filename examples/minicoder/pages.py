"""The usage page, and signing in to it.

Server-rendered HTML: ``string.Template`` files under ``templates/`` filled
with values escaped by ``html.escape``, and charts drawn as inline SVG
(:mod:`minicoder.charts`). No JavaScript.

Signing in takes a host token once and exchanges it for a browser session:
a random id in an ``HttpOnly``, ``SameSite=Lax`` cookie, stored hashed in
``web_sessions``. The token itself never goes into the cookie. Two ways in:

* the form at ``/login`` (``POST``), for people;
* ``GET /login?token=...``, for links and headless browsers: it redirects at
  once to the page, so the token leaves the address bar (and is sent with
  ``Referrer-Policy: no-referrer``). Prefer the form: an address can end up
  in a shell history or a proxy log.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import charts
from .auth import SESSION_COOKIE, current_user
from .db import SESSION_LIFETIME, Database, User, parse_timestamp, timestamp
from .queries import Filters, Usage, list_interceptions, usage

TEMPLATES = Path(__file__).with_name("templates")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: name -> (span, bucket, label, bucket label), in seconds
RANGES = {
    "1h": (3600, 300, "last hour", "5-minute"),
    "24h": (86400, 3600, "last 24 hours", "hourly"),
    "7d": (7 * 86400, 6 * 3600, "last 7 days", "6-hour"),
    "30d": (30 * 86400, 86400, "last 30 days", "daily"),
}
DEFAULT_RANGE = "24h"
LATEST = 50


@functools.cache
def template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(title: str, content: str, user: User | None = None, status: int = 200) -> Response:
    account = ""
    if user is not None:
        badge = ' <span class="badge">admin</span>' if user.is_admin else ""
        account = (
            f'<div class="account"><span>{escape(user.username)}{badge}</span>'
            '<form method="post" action="/logout"><button type="submit">Sign out</button>'
            "</form></div>"
        )
    page = template("base.html").substitute(title=escape(title), account=account, content=content)
    return HTMLResponse(page, status_code=status, headers=HEADERS)


# -- signing in ---------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only redirect within this site."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/usage"


def _login_page(next_url: str, message: str = "", status: int = 200) -> Response:
    error = f'<p class="error">{escape(message)}</p>' if message else ""
    content = template("login.html").substitute(error=error, next=escape(next_url))
    return render("Sign in", content, status=status)


async def _sign_in(request: Request, token: str, next_url: str) -> Response:
    db: Database = request.app.state.db
    owner = await anyio.to_thread.run_sync(db.token_owner, token) if token else None
    if owner is None:
        return _login_page(next_url, "That token is not valid.", status=401)
    session_id = await anyio.to_thread.run_sync(db.create_session, owner.user.id)
    response = RedirectResponse(next_url, status_code=303, headers=HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def login(request: Request) -> Response:
    if request.method == "POST":
        body = await request.body()
        form = parse_qs(body[:8192].decode("utf-8", "replace"))
        token = form.get("token", [""])[0].strip()
        return await _sign_in(request, token, _safe_next(form.get("next", [""])[0]))
    next_url = _safe_next(request.query_params.get("next"))
    if "token" in request.query_params:
        return await _sign_in(request, request.query_params["token"].strip(), next_url)
    return _login_page(next_url)


async def logout(request: Request) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await anyio.to_thread.run_sync(request.app.state.db.end_session, session_id)
    response = RedirectResponse("/login", status_code=303, headers=HEADERS)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/usage", status_code=303)


# -- the usage page -------------------------------------------------------------


def _link(params: dict[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    query = urlencode({k: v for k, v in merged.items() if v})
    return escape("/usage" + (f"?{query}" if query else ""))


def _duration(item: dict[str, Any]) -> str:
    started = parse_timestamp(item["started_at"])
    if item["ended_at"] is None:
        if not item["in_flight"]:
            return "?"
        seconds = (datetime.now(UTC) - started).total_seconds()
        return f"{seconds:.0f} s so far"
    seconds = (parse_timestamp(item["ended_at"]) - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _status(item: dict[str, Any]) -> str:
    status = "in_flight" if item["in_flight"] else (item["status"] or "?")
    detail = " · ".join(
        str(part) for part in (item["http_status"], item["error"]) if part is not None
    )
    title = f' title="{escape(detail)}"' if detail else ""
    label = escape(status.replace("_", " "))
    return f'<span class="status s-{escape(status)}"{title}>{label}</span>'


def excerpt(text: str, size: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def _latest_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return '<p class="empty">No interceptions yet.</p>'
    rows = []
    for item in items:
        prompts = [p["prompt"] for p in item["user_prompts"]]
        prompt = prompts[0] if prompts else ""
        tools = sorted({t["tool"] for t in item["tool_usages"]})
        tokens_in = sum(
            t["input_tokens"] + t["cache_read_input_tokens"] + t["cache_write_input_tokens"]
            for t in item["token_usages"]
        )
        tokens_out = sum(t["output_tokens"] for t in item["token_usages"])
        when = parse_timestamp(item["started_at"]).strftime("%m-%d %H:%M:%S")
        rows.append(
            f'<tr data-interception="{escape(item["id"])}">'
            f'<td class="when">{when}</td>'
            f"<td>{escape(item['initiator']['username'] or item['initiator']['id'])}</td>"
            f"<td>{escape(item['client'])}</td>"
            f"<td>{escape(item['model'])}</td>"
            f'<td class="prompt" title="{escape(prompt[:500])}">{escape(excerpt(prompt))}</td>'
            f"<td>{escape(', '.join(tools))}</td>"
            f'<td class="num">{tokens_in:,} / {tokens_out:,}</td>'
            f'<td class="num">{_duration(item)}</td>'
            f"<td>{_status(item)}</td></tr>"
        )
    head = (
        "<tr><th>Started (UTC)</th><th>User</th><th>Client</th><th>Model</th><th>Prompt</th>"
        '<th>Tools</th><th class="num">Tokens in / out</th><th class="num">Duration</th>'
        "<th>Status</th></tr>"
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _usage_table(
    entries: list[Usage], buckets: list[int], heading: str, link: Any, empty: str
) -> str:
    if not entries:
        return f'<p class="empty">{empty}</p>'
    rows = []
    for entry in entries:
        series = [entry.series.get(start, (0, 0)) for start in buckets]
        spark = charts.sparkline(series, label=f"{entry.key}: tokens in and out over time")
        rows.append(
            f'<tr><td class="key"><a href="{link(entry.key)}">{escape(entry.key or "?")}</a></td>'
            f'<td class="num">{entry.requests:,}</td>'
            f'<td class="num">{entry.tokens_in:,}</td>'
            f'<td class="num">{entry.tokens_out:,}</td><td>{spark}</td></tr>'
        )
    head = (
        f'<tr><th>{heading}</th><th class="num">Requests</th><th class="num">Tokens in</th>'
        '<th class="num">Tokens out</th><th>Over time</th></tr>'
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _usage_data(db: Database, viewer: User, params: dict[str, str]) -> dict[str, Any]:
    """Everything the page shows (blocking: runs in a worker thread)."""
    span, bucket, _, _ = RANGES[params["range"]]
    end = (int(time.time()) // bucket + 1) * bucket
    buckets = list(range(end - span, end, bucket))
    initiator_id: str | None = viewer.id
    if viewer.is_admin:
        initiator_id = None
        if params.get("user"):
            chosen = db.user(params["user"])
            # An unknown name matches no initiator id: an empty page.
            initiator_id = chosen.id if chosen else params["user"]
    scope = Filters(initiator_id=initiator_id, model=params.get("model") or None)
    in_range = Filters(
        initiator_id=scope.initiator_id,
        model=scope.model,
        started_after=timestamp(datetime.fromtimestamp(end - span, UTC)),
    )
    with db.connect() as conn:
        total = usage(conn, in_range, bucket)
        return {
            "buckets": buckets,
            "total": total[0] if total else Usage("", 0, 0, 0),
            "by_user": usage(conn, in_range, bucket, "user"),
            "by_model": usage(conn, in_range, bucket, "model"),
            "latest": list_interceptions(conn, scope, limit=LATEST).results,
        }


async def usage_page(request: Request) -> Response:
    viewer = await current_user(request)
    if viewer is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
    query = request.query_params
    chosen = query.get("range") or DEFAULT_RANGE
    params = {
        "range": chosen if chosen in RANGES else DEFAULT_RANGE,
        "user": (query.get("user") or "") if viewer.is_admin else "",
        "model": query.get("model") or "",
    }
    data = await anyio.to_thread.run_sync(_usage_data, request.app.state.db, viewer, params)
    _, bucket, range_label, bucket_label = RANGES[params["range"]]
    total: Usage = data["total"]
    series = [(start, *total.series.get(start, (0, 0))) for start in data["buckets"]]
    ranges = " ".join(
        f'<a href="{_link(params, range=name)}"{" class=on" if name == params["range"] else ""}>'
        f"{name}</a>"
        for name in RANGES
    )
    filters = " ".join(
        f"{label} <b>{escape(params[key])}</b>"
        f' <a href="{_link(params, **{key: None})}" title="remove this filter">&times;</a>'
        for key, label in (("user", "user"), ("model", "model"))
        if params[key]
    )
    api_query: dict[str, str] = {"limit": str(LATEST)}
    if params["user"]:
        api_query["initiator"] = params["user"]
    if params["model"]:
        api_query["model"] = params["model"]
    content = template("usage.html").substitute(
        scope=escape(params["user"] or ("everyone" if viewer.is_admin else viewer.username)),
        ranges=ranges,
        filters=filters,
        range_label=range_label,
        bucket_label=bucket_label,
        chart=charts.bar_chart(
            series, bucket, title=f"Tokens in and out, {range_label}, {bucket_label} buckets"
        ),
        totals=(
            f"{total.requests:,} requests · {total.tokens_in:,} tokens in"
            f" · {total.tokens_out:,} tokens out"
        ),
        by_user=_usage_table(
            data["by_user"],
            data["buckets"],
            "User",
            lambda key: _link(params, user=key) if viewer.is_admin else _link(params),
            f"No requests in the {range_label}.",
        ),
        by_model=_usage_table(
            data["by_model"],
            data["buckets"],
            "Model",
            lambda key: _link(params, model=key),
            f"No requests in the {range_label}.",
        ),
        latest=_latest_table(data["latest"]),
        json_url=escape("/api/v2/aibridge/interceptions?" + urlencode(api_query)),
    )
    return render("AI usage", content, viewer)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/usage", usage_page, methods=["GET"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
