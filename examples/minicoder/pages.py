"""The usage page, the "Connect your tools" page, and signing in to them.

Server-rendered HTML: ``string.Template`` files under ``templates/`` filled
with values escaped by ``html.escape``, and charts drawn as inline SVG
(:mod:`minicoder.charts`). No JavaScript.

The connect page shows, for the client the user picks, the configuration
:func:`aibridge_asgi.clients.configure` gives for this host (its address as
the browser sees it), and mints a token for it on request (a ``POST`` form;
the new token is shown once, filled into the snippet).

Signing in takes a host token once and exchanges it for a browser session:
a random id in an ``HttpOnly``, ``SameSite=Lax`` cookie, stored hashed in
``web_sessions``. The token itself never goes into the cookie, nor into any
address: the form at ``/login`` is the only way in, by ``POST``, from this
site only (a cross-site sign-in would sign the victim in as the attacker).
Every form post is checked the same way (:mod:`minicoder.web`): session
first, then origin, then a capped body.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from aibridge_asgi.client_table import API_NAMES, CLIENTS, Client, Setup
from aibridge_asgi.clients import ClientConfig, UnknownClient, configure, find_client

from . import charts
from . import policy as host_policy
from .auth import SESSION_COOKIE, current_user
from .db import SESSION_LIFETIME, Database, User, parse_timestamp, timestamp
from .queries import Filters, Usage, list_interceptions, usage
from .web import TooLarge, forbidden, read_form, same_origin, too_large

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
        if not same_origin(request):
            return forbidden(HEADERS)
        try:
            form = await read_form(request)
        except TooLarge:
            return too_large(HEADERS)
        token = form.get("token", "").strip()
        return await _sign_in(request, token, _safe_next(form.get("next")))
    next_url = _safe_next(request.query_params.get("next"))
    if "token" in request.query_params:
        # Never a sign-in by address: it lands in logs and histories, and a
        # GET cannot be checked for a cross-site origin.
        return _login_page(next_url, "Paste the token in the form below.", status=400)
    return _login_page(next_url)


async def logout(request: Request) -> Response:
    if not same_origin(request):
        return forbidden(HEADERS)
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


def _served_by(item: dict[str, Any]) -> str | None:
    """Which credential served the call, for people (never the key itself)."""
    credential, name = item.get("credential"), item.get("key_name")
    if credential == "byok":
        return "the client's own key"
    if credential == "actor":
        return f"the user's key {name}"
    return f"key {name}" if name else None


def _status(item: dict[str, Any]) -> str:
    status = "in_flight" if item["in_flight"] else (item["status"] or "?")
    parts = (item["http_status"], item["error"], _served_by(item))
    detail = " · ".join(str(part) for part in parts if part is not None)
    title = f' title="{escape(detail)}"' if detail else ""
    label = escape(status.replace("_", " "))
    return f'<span class="status s-{escape(status)}"{title}>{label}</span>'


def dollars(amount: str | Decimal | None, unpriced: int = 0) -> str:
    """An amount for people: dollars to 1/100 of a cent (the exact value
    in the tooltip); "no price" when nothing was priced."""
    if amount is None:
        return '<span class="unpriced" title="this model has no price">no price</span>'
    exact = Decimal(amount)
    shown = f"${exact.quantize(Decimal('0.0001'))}"
    note = f" (+{unpriced} without a price)" if unpriced else ""
    return f'<span class="cost" title="${exact:f} exactly{note}">{shown}</span>'


def excerpt(text: str, size: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def _cost_cell(item: dict[str, Any]) -> str:
    cost = item.get("cost")
    if cost is None:
        return "-"
    return dollars(cost["amount"])


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
            f'<td class="num">{_cost_cell(item)}</td>'
            f'<td class="num">{_duration(item)}</td>'
            f"<td>{_status(item)}</td></tr>"
        )
    head = (
        "<tr><th>Started (UTC)</th><th>User</th><th>Client</th><th>Model</th><th>Prompt</th>"
        '<th>Tools</th><th class="num">Tokens in / out</th><th class="num">Cost</th>'
        '<th class="num">Duration</th><th>Status</th></tr>'
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _entry_cost(entry: Usage) -> str:
    if entry.cost_pico == 0 and entry.unpriced:
        return dollars(None)
    return dollars(entry.cost, entry.unpriced)


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
            f'<td class="num">{entry.tokens_out:,}</td>'
            f'<td class="num">{_entry_cost(entry)}</td><td>{spark}</td></tr>'
        )
    head = (
        f'<tr><th>{heading}</th><th class="num">Requests</th><th class="num">Tokens in</th>'
        '<th class="num">Tokens out</th><th class="num">Cost</th><th>Over time</th></tr>'
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def viewed_initiator(db: Database, viewer: User, params: dict[str, str]) -> str | None:
    """Whose records a page shows: a non-admin's own; for an admin, the
    ``user`` the page names, or everyone's (``None``)."""
    if not viewer.is_admin:
        return viewer.id
    if not params.get("user"):
        return None
    chosen = db.user(params["user"])
    # An unknown name matches no initiator id: an empty page.
    return chosen.id if chosen else params["user"]


def _usage_data(db: Database, viewer: User, params: dict[str, str]) -> dict[str, Any]:
    """Everything the page shows (blocking: runs in a worker thread)."""
    span, bucket, _, _ = RANGES[params["range"]]
    end = (int(time.time()) // bucket + 1) * bucket
    buckets = list(range(end - span, end, bucket))
    initiator_id = viewed_initiator(db, viewer, params)
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
            "latest": list_interceptions(conn, scope, limit=LATEST, text_limit=500).results,
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
            f" · {total.tokens_out:,} tokens out · {dollars(total.cost, total.unpriced)}"
        ),
        cost_chart=charts.cost_chart(
            [(start, total.cost_series.get(start, 0)) for start in data["buckets"]],
            bucket,
            title=f"Cost in USD, {range_label}, {bucket_label} buckets",
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
        spend_url=escape(
            "/api/v2/aibridge/spend?"
            + urlencode(
                {
                    "group_by": "day",
                    "format": "csv",
                    **({"user": params["user"]} if params["user"] else {}),
                }
            )
        ),
    )
    content += await host_policy.budget_card(request, viewer)  # spend against budgets
    return render("AI usage", content, viewer)


# -- the connect page --------------------------------------------------------------

#: The client shown when none is picked.
DEFAULT_CLIENT = "claude-code"
#: Stands for the token in snippets until one is minted.
TOKEN_PLACEHOLDER = "<your token>"


def _inline_code(text: str) -> str:
    """``text`` escaped, with its `backquoted` parts as <code>."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _snippet(kind: str, title: str, body: str) -> str:
    return (
        f'<div class="snippet" data-kind="{kind}"><h3>{title}</h3>'
        f"<pre>{escape(body.rstrip())}</pre></div>"
    )


def _config_html(config: ClientConfig, kind: str = "") -> str:
    """The configuration as snippets; ``kind`` prefixes their data-kind."""
    parts = []
    if config.file_path and config.file_content is not None:
        title = f"In <code>{escape(config.file_path)}</code>"
        parts.append(_snippet(kind + "file", title, config.file_content))
    if config.env:
        parts.append(_snippet(kind + "env", "In the environment", "\n".join(config.env_lines)))
    if config.commands:
        parts.append(_snippet(kind + "commands", "Run once", "\n".join(config.command_lines)))
    if config.settings:
        rows = "".join(
            f"<tr><th>{escape(label)}</th><td><code>{escape(value)}</code></td></tr>"
            for label, value in config.settings
        )
        parts.append(
            '<div class="snippet" data-kind="settings"><h3>In its settings</h3>'
            f'<table class="settings">{rows}</table></div>'
        )
    if config.run:
        parts.append(f"<p>Then run <code>{escape(config.run_line)}</code>.</p>")
    if config.notes:
        notes = "".join(f"<li>{_inline_code(note)}</li>" for note in config.notes)
        parts.append(f'<ul class="notes">{notes}</ul>')
    return "".join(parts)


def _byok_html(client: Client, base_url: str, token: str, setup: Setup) -> str:
    """The bring-your-own-key form of the setup, or why there is none."""
    if setup.byok is None:
        return (
            '<p class="byok none">Bring your own key: not with this tool (it has no known'
            " way to send an extra header); it uses this host's provider key.</p>"
        )
    config = configure(client, base_url, token, api=setup.api, protocol=setup.protocol, byok=True)
    return (
        '<details class="byok"><summary>Bring your own key instead</summary>'
        "<p>Your token goes in an extra header and your own provider key (or"
        " subscription) pays for the calls; this host still sees and records them.</p>"
        f"{_config_html(config, 'byok-')}</details>"
    )


def _connect_link(client: Client, setup: Setup | None = None) -> str:
    query = {"client": client.key}
    if setup is not None:
        query["api"] = setup.api
        if sum(s.api == setup.api for s in client.setups) > 1:
            query["protocol"] = setup.protocol
    return escape("/connect?" + urlencode(query))


def _client_nav(selected: Client) -> str:
    def link(client: Client) -> str:
        on = ' class="on"' if client is selected else ""
        return f'<a href="{_connect_link(client)}"{on}>{escape(client.name)}</a>'

    works = " ".join(link(c) for c in CLIENTS if c.supported)
    cannot = " ".join(link(c) for c in CLIENTS if not c.supported)
    return (
        f'<nav class="clients">{works}</nav>'
        f'<p class="cannot">Cannot connect: <span class="clients">{cannot}</span></p>'
    )


def _setup(client: Client, api: str | None, protocol: str | None) -> Setup | None:
    """The client's setup for that API (and protocol, where it speaks several
    there); None for the client's first."""
    same_api = [s for s in client.setups if s.api == api]
    return next((s for s in same_api if s.protocol == protocol), same_api[0] if same_api else None)


def _verification(client: Client, setup: Setup) -> str:
    if setup.verified_by:
        version = f" {client.version}" if client.version else ""
        return (
            f"The bridge's compatibility suite runs {escape(client.name)}{escape(version)}"
            " with exactly this configuration."
        )
    reason = f" ({escape(client.untested)})" if client.untested else ""
    return f"From the client's documentation; not run by the bridge's test suite{reason}."


def _connect_content(
    request: Request, client: Client, chosen: Setup | None, token: str | None
) -> str:
    base_url = str(request.base_url).rstrip("/") + request.app.state.bridge_prefix
    values = {
        "base_url": escape(base_url),
        "clients": _client_nav(client),
        "key": escape(client.key),
        "name": escape(client.name),
        "apis": "",
        "minted": "",
        "body": "",
        "byok": "",
        "mint": "",
        "status": "",
    }
    if not client.supported:
        values["body"] = f'<p class="error">{_inline_code(client.unsupported or "")}</p>'
        return template("connect.html").substitute(values)
    setup = chosen or client.setups[0]
    config = configure(
        client, base_url, token or TOKEN_PLACEHOLDER, api=setup.api, protocol=setup.protocol
    )
    if len(client.setups) > 1:
        values["apis"] = (
            '<nav class="ranges">'
            + " ".join(
                f'<a href="{_connect_link(client, s)}"'
                f"{' class=on' if s is setup else ''}>"
                f"{API_NAMES[s.api]} API ({escape(s.protocol)})</a>"
                for s in client.setups
            )
            + "</nav>"
        )
    if token is not None:
        values["minted"] = (
            f'<p class="minted">New token <code id="new-token">{escape(token)}</code>: shown'
            " this once, and filled in below. Keep it like a password.</p>"
        )
    else:
        values["mint"] = (
            '<form method="post" action="/connect" class="mint">'
            f'<input type="hidden" name="client" value="{escape(client.key)}">'
            f'<input type="hidden" name="api" value="{escape(config.api)}">'
            f'<input type="hidden" name="protocol" value="{escape(config.protocol)}">'
            f'<button type="submit">Create a token for {escape(client.name)}</button>'
            f" <span>or put one of your tokens where it says"
            f" <code>{escape(TOKEN_PLACEHOLDER)}</code>.</span></form>"
        )
    values["body"] = _config_html(config)
    values["byok"] = _byok_html(client, base_url, token or TOKEN_PLACEHOLDER, setup)
    values["status"] = _verification(client, setup)
    return template("connect.html").substitute(values)


async def connect_page(request: Request) -> Response:
    viewer = await current_user(request)
    if request.method == "POST":
        # Session, then origin, then a capped body: nothing is read for a
        # stranger or a cross-site post.
        if viewer is None or not same_origin(request):
            return forbidden(HEADERS)
        try:
            form = await read_form(request)
        except TooLarge:
            return too_large(HEADERS)
    else:
        form = dict(request.query_params)
    if viewer is None:
        target = "/connect?" + urlencode({"client": form.get("client") or DEFAULT_CLIENT})
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
    try:
        client = find_client(form.get("client") or DEFAULT_CLIENT)
    except UnknownClient:
        client = find_client(DEFAULT_CLIENT)
    chosen = _setup(client, form.get("api"), form.get("protocol"))
    token = None
    if request.method == "POST" and client.supported:
        token = await anyio.to_thread.run_sync(
            request.app.state.db.new_token, viewer.id, f"connect: {client.name}"
        )
    content = _connect_content(request, client, chosen, token)
    return render("Connect your tools", content, viewer)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/usage", usage_page, methods=["GET"]),
    Route("/connect", connect_page, methods=["GET", "POST"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
