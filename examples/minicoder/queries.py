"""Reading the records back, for the management API and the usage page.

Blocking functions taking a connection (``with db.connect() as conn``); the
handlers run them in a worker thread.

Interceptions are listed newest first, ordered by ``(started_at, id)``.
A page's cursor is the position of its last row, encoded so clients treat
it as opaque; the next page is everything strictly after it. New
interceptions started meanwhile do not shift later pages (they sort before
the cursor), unlike ``OFFSET`` pagination.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from .backends import Connection

#: Tokens in: every input token, whether read from or written to the cache.
TOKENS_IN = "COALESCE(t.input_tokens + t.cache_read_input_tokens + t.cache_write_input_tokens, 0)"
TOKENS_OUT = "COALESCE(t.output_tokens, 0)"
#: Cost records without a price (``c``: aibridge_costs), summed portably.
UNPRICED = "SUM(CASE WHEN c.amount IS NULL THEN 1 ELSE 0 END)"


@dataclass(frozen=True)
class Filters:
    """What to list. ``started_after`` (inclusive) and ``started_before``
    (exclusive) are timestamps in the stored format (:func:`db.timestamp`)."""

    initiator_id: str | None = None
    provider: str | None = None
    model: str | None = None
    client: str | None = None
    started_after: str | None = None
    started_before: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """A SQL condition on ``aibridge_interceptions AS i``, and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.initiator_id is not None:
            clauses.append("i.initiator_id = ?")
            params.append(self.initiator_id)
        if self.provider is not None:  # the kind ("openai") or the instance ("azure")
            clauses.append("(i.provider = ? OR i.provider_name = ?)")
            params += [self.provider, self.provider]
        if self.model is not None:
            clauses.append("i.model = ?")
            params.append(self.model)
        if self.client is not None:
            clauses.append("LOWER(i.client) = LOWER(?)")
            params.append(self.client)
        if self.started_after is not None:
            clauses.append("i.started_at >= ?")
            params.append(self.started_after)
        if self.started_before is not None:
            clauses.append("i.started_at < ?")
            params.append(self.started_before)
        return " AND ".join(clauses) or "1 = 1", params


def money(pico: int | None) -> str | None:
    """An amount stored in units of 10^-12 as an exact decimal string
    (``"0.0441"``, ``"12"``), or None."""
    if pico is None:
        return None
    amount = Decimal(pico).scaleb(-12).normalize()
    return format(amount, "f")


# -- cursors ------------------------------------------------------------------


def encode_cursor(started_at: str, interception_id: str) -> str:
    raw = json.dumps([started_at, interception_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The position a cursor stands for; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, interception_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(started_at, str) or not isinstance(interception_id, str):
        raise ValueError("invalid cursor")
    return started_at, interception_id


# -- listing ------------------------------------------------------------------


@dataclass
class Page:
    count: int  # interceptions matching the filters, all pages together
    results: list[dict[str, Any]]
    next_cursor: str | None


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


#: Characters of a prompt, thought or tool input a list shows: a page of
#: 1000 interceptions must not load 1000 whole 30 MB prompts.
LIST_TEXT_LIMIT = 4096

#: The long text column of each child table.
_LONG_TEXT = {
    "aibridge_user_prompts": "prompt",
    "aibridge_tool_usages": "input",
    "aibridge_model_thoughts": "content",
    "aibridge_tool_results": "content",
}


def list_interceptions(
    conn: Connection,
    filters: Filters,
    *,
    limit: int,
    cursor: str | None = None,
    text_limit: int = LIST_TEXT_LIMIT,
) -> Page:
    """One page of interceptions, newest first, each with its token usages,
    prompts, tool usages and thoughts nested. Prompts, thoughts and tool
    inputs longer than ``text_limit`` characters are cut there in SQL (the
    rest is never read): the item then has ``<column>_truncated: true`` and
    ``<column>_length``, and a cut tool input stays a string."""
    where, params = filters.where()
    count = conn.execute(
        f"SELECT COUNT(*) FROM aibridge_interceptions AS i WHERE {where}", params
    ).fetchone()[0]
    if cursor is not None:
        started_at, interception_id = decode_cursor(cursor)
        where += " AND (i.started_at < ? OR (i.started_at = ? AND i.id < ?))"
        params = [*params, started_at, started_at, interception_id]
    rows = conn.execute(
        "SELECT i.*, u.username FROM aibridge_interceptions AS i"
        f" LEFT JOIN users AS u ON u.id = i.initiator_id WHERE {where}"
        " ORDER BY i.started_at DESC, i.id DESC LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    children = _children(conn, [row["id"] for row in rows], text_limit)
    results = [_interception(row, children[row["id"]]) for row in rows]
    next_cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["id"]) if more else None
    return Page(count, results, next_cursor)


#: The record tables' column names, by connection class and table: looked up
#: once (on PostgreSQL an information_schema query per table and page
#: otherwise); a migration in this process forgets them.
_COLUMN_NAMES: dict[tuple[type, str], list[str]] = {}


def forget_columns() -> None:
    """Forget the column names read so far (the schema changed)."""
    _COLUMN_NAMES.clear()


def _columns(conn: Connection, table: str, text_limit: int) -> str:
    """The select list of ``table`` with its long text column cut short."""
    long = _LONG_TEXT.get(table)
    key = (type(conn), table)
    names = _COLUMN_NAMES.get(key)
    if names is None:
        names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        _COLUMN_NAMES[key] = names
    parts = []
    for name in names:
        if name == long:
            parts.append(f"substr({name}, 1, {int(text_limit)}) AS {name}")
            parts.append(f"length({name}) AS {name}_length")
        else:
            parts.append(name)
    return ", ".join(parts)


def _children(
    conn: Connection, ids: list[str], text_limit: int = LIST_TEXT_LIMIT
) -> defaultdict[str, dict[str, list[dict[str, Any]]]]:
    found: defaultdict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {
            "token_usages": [],
            "user_prompts": [],
            "tool_usages": [],
            "model_thoughts": [],
            "costs": [],
            "tool_results": [],
        }
    )
    if not ids:
        return found
    marks = ", ".join("?" * len(ids))
    for table, key in (
        ("aibridge_token_usages", "token_usages"),
        ("aibridge_user_prompts", "user_prompts"),
        ("aibridge_tool_usages", "tool_usages"),
        ("aibridge_model_thoughts", "model_thoughts"),
        ("aibridge_costs", "costs"),
        ("aibridge_tool_results", "tool_results"),
    ):
        columns = _columns(conn, table, text_limit)
        long = _LONG_TEXT.get(table)
        for row in conn.execute(
            f"SELECT {columns} FROM {table} WHERE interception_id IN ({marks})"
            " ORDER BY created_at, rowid",
            ids,
        ):
            item = dict(row)
            item.pop("rowid", None)  # PostgreSQL's explicit one
            cut = False
            if long is not None:
                length = item.pop(f"{long}_length")
                cut = length is not None and length > text_limit
                if cut:
                    item[f"{long}_truncated"] = True
                    item[f"{long}_length"] = length
            if "metadata" in item:
                item["metadata"] = _loads(item["metadata"])
            if key == "costs":
                item["breakdown"] = _loads(item["breakdown"])
                item["priced"] = item["amount"] is not None
                del item["amount_pico"]
            elif key == "tool_results":
                item["is_error"] = bool(item["is_error"])
                item["truncated"] = bool(item["truncated"])
            elif key == "tool_usages":
                if not cut:
                    item["input"] = _loads(item["input"])
                item["injected"] = bool(item["injected"])
            found[row["interception_id"]][key].append(item)
    return found


def _interception(row: Any, children: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    in_flight = row["ended_at"] is None and row["status"] is None
    return {
        "id": row["id"],
        "initiator": {"id": row["initiator_id"], "username": row["username"]},
        "api_key_id": row["api_key_id"],
        "provider": row["provider"],
        "provider_name": row["provider_name"],
        "model": row["model"],
        "client": row["client"],
        "client_session_id": row["client_session_id"],
        "route": row["route"],
        "streaming": bool(row["streaming"]),
        "user_agent": row["user_agent"],
        "metadata": _loads(row["metadata"]),
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "in_flight": in_flight,
        "status": row["status"],  # None while in flight
        "http_status": row["http_status"],
        "error": row["error"],
        "credential": row["credential"],  # "pool", "byok"; None while in flight
        "key_name": row["key_name"],  # the pool key's name, never the key
        "cost": cost_summary(children.get("costs", [])),
        **children,
    }


def cost_summary(costs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An interception's cost: its records' amounts added up (exactly);
    ``amount`` None if any was unpriced; None if there is no cost record."""
    if not costs:
        return None
    priced = all(c["amount"] is not None for c in costs)
    total = sum((Decimal(c["amount"]) for c in costs if c["amount"] is not None), Decimal(0))
    return {
        "amount": format(total.normalize(), "f") if priced else None,
        "currency": costs[0]["currency"],
        "priced": priced,
    }


# -- usage aggregates -----------------------------------------------------------

GroupBy = Literal["user", "model"]

_GROUPS: dict[GroupBy, tuple[str, str]] = {
    # (the key selected, the columns grouped on)
    "user": ("COALESCE(u.username, i.initiator_id)", "i.initiator_id, u.username"),
    "model": ("i.model", "i.model"),
}


@dataclass
class Usage:
    key: str
    requests: int
    tokens_in: int
    tokens_out: int
    #: bucket start (Unix seconds) -> (tokens in, tokens out)
    series: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: what it cost, in 10^-12 USD (see :func:`money`), and how many of its
    #: interceptions had no price
    cost_pico: int = 0
    unpriced: int = 0
    #: bucket start -> cost in 10^-12 USD
    cost_series: dict[int, int] = field(default_factory=dict)

    @property
    def cost(self) -> str:
        """The cost as an exact decimal string."""
        return money(self.cost_pico) or "0"


def usage(
    conn: Connection, filters: Filters, bucket_seconds: int, by: GroupBy | None = None
) -> list[Usage]:
    """Requests and tokens in/out per user or per model (or in total, with
    ``by=None``), each with a time series of ``bucket_seconds`` buckets of
    start time. Busiest first."""
    where, params = filters.where()
    key, group = _GROUPS[by] if by is not None else ("''", "")
    group = f"{group}, bucket" if group else "bucket"
    rows = conn.execute(
        f"SELECT {key} AS key,"
        " (CAST(strftime('%s', i.started_at) AS INTEGER) / ?) * ? AS bucket,"
        f" COUNT(DISTINCT i.id) AS requests, SUM({TOKENS_IN}) AS tokens_in,"
        f" SUM({TOKENS_OUT}) AS tokens_out"
        " FROM aibridge_interceptions AS i"
        " LEFT JOIN users AS u ON u.id = i.initiator_id"
        " LEFT JOIN aibridge_token_usages AS t ON t.interception_id = i.id"
        f" WHERE {where} GROUP BY {group}",
        [bucket_seconds, bucket_seconds, *params],
    ).fetchall()
    totals: dict[str, Usage] = {}
    for row in rows:
        entry = totals.setdefault(row["key"], Usage(row["key"], 0, 0, 0))
        entry.requests += row["requests"]
        entry.tokens_in += row["tokens_in"]
        entry.tokens_out += row["tokens_out"]
        entry.series[row["bucket"]] = (row["tokens_in"], row["tokens_out"])
    for row in conn.execute(
        f"SELECT {key} AS key,"
        " (CAST(strftime('%s', i.started_at) AS INTEGER) / ?) * ? AS bucket,"
        f" SUM(c.amount_pico) AS pico, {UNPRICED} AS unpriced"
        " FROM aibridge_interceptions AS i"
        " LEFT JOIN users AS u ON u.id = i.initiator_id"
        " JOIN aibridge_costs AS c ON c.interception_id = i.id"
        f" WHERE {where} AND c.currency = 'USD' GROUP BY {group}",
        [bucket_seconds, bucket_seconds, *params],
    ):
        entry = totals.get(row["key"])
        if entry is None:
            continue
        entry.cost_pico += row["pico"] or 0
        entry.unpriced += row["unpriced"] or 0
        entry.cost_series[row["bucket"]] = row["pico"] or 0
    return sorted(totals.values(), key=lambda u: (-(u.tokens_in + u.tokens_out), u.key))


# -- sessions ---------------------------------------------------------------------

#: An interception's session: the client's session id, or the interception
#: itself when the client sent none.
SESSION_KEY = "COALESCE(i.client_session_id, i.id)"


def list_sessions(
    conn: Connection, filters: Filters, *, limit: int, cursor: str | None = None
) -> Page:
    """One page of sessions (interceptions grouped by the client's session
    id), newest first by their first interception, each with its first
    prompt, clients, models, interception count, tokens and cost. Filters
    pick interceptions; a session shows the ones that match."""
    where, params = filters.where()
    count = conn.execute(
        f"SELECT COUNT(DISTINCT {SESSION_KEY}) FROM aibridge_interceptions AS i WHERE {where}",
        params,
    ).fetchone()[0]
    having, extra = "", []
    if cursor is not None:
        started_at, session_id = decode_cursor(cursor)
        having = f" HAVING (MIN(i.started_at) < ? OR (MIN(i.started_at) = ? AND {SESSION_KEY} < ?))"
        extra = [started_at, started_at, session_id]
    rows = conn.execute(
        f"SELECT {SESSION_KEY} AS session_id, MIN(i.started_at) AS started_at,"
        " MAX(COALESCE(i.ended_at, i.started_at)) AS ended_at,"
        " SUM(CASE WHEN i.ended_at IS NULL AND i.status IS NULL THEN 1 ELSE 0 END) AS in_flight,"
        " COUNT(*) AS interceptions, MIN(i.initiator_id) AS initiator_id,"
        " MIN(u.username) AS username"
        " FROM aibridge_interceptions AS i LEFT JOIN users AS u ON u.id = i.initiator_id"
        f" WHERE {where} GROUP BY session_id{having}"
        " ORDER BY started_at DESC, session_id DESC LIMIT ?",
        [*params, *extra, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    results = [_session(conn, row, where, params) for row in rows]
    next_cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["session_id"]) if more else None
    return Page(count, results, next_cursor)


def _session(conn: Connection, row: Any, where: str, params: list[Any]) -> dict[str, Any]:
    """The summary of one session, over its interceptions matching ``where``."""
    scope = f"{where} AND {SESSION_KEY} = ?"
    args = [*params, row["session_id"]]
    names = conn.execute(
        "SELECT GROUP_CONCAT(DISTINCT i.client) AS clients,"
        " GROUP_CONCAT(DISTINCT i.model) AS models"
        f" FROM aibridge_interceptions AS i WHERE {scope}",
        args,
    ).fetchone()
    tokens = conn.execute(
        f"SELECT SUM({TOKENS_IN}) AS tokens_in, SUM({TOKENS_OUT}) AS tokens_out"
        " FROM aibridge_interceptions AS i"
        f" JOIN aibridge_token_usages AS t ON t.interception_id = i.id WHERE {scope}",
        args,
    ).fetchone()
    cost = conn.execute(
        f"SELECT SUM(c.amount_pico) AS pico, {UNPRICED} AS unpriced"
        " FROM aibridge_interceptions AS i"
        f" JOIN aibridge_costs AS c ON c.interception_id = i.id WHERE {scope}",
        args,
    ).fetchone()
    prompt = conn.execute(
        "SELECT p.prompt FROM aibridge_interceptions AS i"
        f" JOIN aibridge_user_prompts AS p ON p.interception_id = i.id WHERE {scope}"
        " ORDER BY i.started_at, p.created_at LIMIT 1",
        args,
    ).fetchone()
    return {
        "id": row["session_id"],
        "initiator": {"id": row["initiator_id"], "username": row["username"]},
        "first_prompt": prompt["prompt"] if prompt else None,
        "clients": sorted((names["clients"] or "").split(",")) if names["clients"] else [],
        "models": sorted((names["models"] or "").split(",")) if names["models"] else [],
        "interceptions": row["interceptions"],
        "in_flight": bool(row["in_flight"]),
        "tokens_in": tokens["tokens_in"] or 0,
        "tokens_out": tokens["tokens_out"] or 0,
        "cost": money(cost["pico"] or 0),
        "unpriced_interceptions": cost["unpriced"] or 0,
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
    }


def session_interceptions(
    conn: Connection, filters: Filters, session_id: str
) -> list[dict[str, Any]]:
    """Every interception of one session (oldest first) that ``filters``
    let through, with its records nested."""
    where, params = filters.where()
    rows = conn.execute(
        "SELECT i.*, u.username FROM aibridge_interceptions AS i"
        f" LEFT JOIN users AS u ON u.id = i.initiator_id WHERE {where}"
        " AND (i.client_session_id = ? OR (i.client_session_id IS NULL AND i.id = ?))"
        " ORDER BY i.started_at, i.id",
        [*params, session_id, session_id],
    ).fetchall()
    children = _children(conn, [row["id"] for row in rows])
    return [_interception(row, children[row["id"]]) for row in rows]


# -- spend ---------------------------------------------------------------------------

SpendBy = Literal["user", "model", "day"]

_SPEND_GROUPS: dict[SpendBy, str] = {
    "user": "COALESCE(u.username, i.initiator_id)",
    "model": "i.model",
    "day": "substr(i.started_at, 1, 10)",
}


@dataclass
class Spend:
    key: str
    amount_pico: int
    interceptions: int
    unpriced: int

    @property
    def amount(self) -> str:
        return money(self.amount_pico) or "0"


def spend(conn: Connection, filters: Filters, by: SpendBy) -> list[Spend]:
    """USD spent per user, model or day (UTC) of the interceptions'
    start, exactly: interceptions without a cost record are not counted,
    unpriced ones are counted in ``unpriced``. Ordered by key."""
    where, params = filters.where()
    key = _SPEND_GROUPS[by]
    rows = conn.execute(
        f"SELECT {key} AS key, SUM(c.amount_pico) AS pico,"
        f" COUNT(DISTINCT i.id) AS interceptions, {UNPRICED} AS unpriced"
        " FROM aibridge_interceptions AS i LEFT JOIN users AS u ON u.id = i.initiator_id"
        " JOIN aibridge_costs AS c ON c.interception_id = i.id"
        f" WHERE {where} AND c.currency = 'USD' GROUP BY key ORDER BY key",
        params,
    ).fetchall()
    return [Spend(r["key"], r["pico"] or 0, r["interceptions"], r["unpriced"] or 0) for r in rows]
