"""The host's policy: groups, budgets, model allow-lists and a rate limit.

What the host keeps (SQLite, tables of their own, created if missing):

- groups, each with an optional monthly budget (USD) and an optional model
  allow-list (globs);
- group members;
- per-user budget overrides.

How it maps onto the bridge's checks (:mod:`aibridge_asgi.policy`):

- ``ModelAccess``: the union of the allow-lists of the user's groups; a
  user in no group with a list may use every model;
- ``Budget`` (monthly, UTC): the user's override if there is one, else the
  highest budget of their groups (the highest wins), else no budget;
- ``RateLimit``: ``--rpm`` requests per minute per user (0: off).

The settings are read from SQLite into memory and re-read at most every
``refresh`` seconds (and at once after a change through this process's
admin API), so the per-request callables are dictionary lookups. With
several workers (``serve --workers N``) state is shared through Redis
(``--redis URL``); with one worker a memory store is enough.

Admin API (admins only; the same tokens as the bridge):

``GET /api/v2/aibridge/policy``
    every group, its members, budgets and models, and the user overrides.
``PUT /api/v2/aibridge/policy/groups/{name}``
    ``{"monthly_budget": "50.00" | null, "models": ["claude-*"] | null,
    "members": ["alice", ...]}`` creates or replaces a group.
``DELETE /api/v2/aibridge/policy/groups/{name}``
``PUT /api/v2/aibridge/policy/users/{user}/budget``
    ``{"monthly_budget": "80.00" | null}`` (null removes the override).
``GET /api/v2/aibridge/policy/budget[?user=NAME]``
    a user's spend this month against their budget (their own for
    non-admins).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aibridge_asgi import Actor
from aibridge_asgi.policy import (
    Budget,
    Check,
    MemoryStore,
    ModelAccess,
    RateLimit,
    RedisStore,
    Store,
    StoreUnavailable,
)

from .api import error
from .auth import current_user
from .db import POLICY_TABLES, Database, User

#: The policy's tables (schema version 3 of :mod:`.db`, made by its migrations).
TABLES = POLICY_TABLES


@dataclass
class Snapshot:
    """The policy settings, as last read from the database."""

    budgets: dict[str, Decimal] = field(default_factory=dict)  # group -> budget
    models: dict[str, list[str]] = field(default_factory=dict)  # group -> globs
    groups_of: dict[str, list[str]] = field(default_factory=dict)  # user id -> groups
    overrides: dict[str, Decimal] = field(default_factory=dict)  # user id -> budget


class HostPolicy:
    """The host's policy settings and the bridge checks built on them."""

    def __init__(
        self,
        db: Database,
        *,
        requests_per_minute: int = 0,
        redis_url: str | None = None,
        refresh: float = 5.0,
    ) -> None:
        self.db = db
        self.requests_per_minute = requests_per_minute
        self.refresh = refresh
        self.store: Store = RedisStore(redis_url) if redis_url else MemoryStore()
        self._snapshot = Snapshot()
        self._read_at = 0.0
        self.budget = Budget(self.budget_for, "month", self.store)

    # -- what the checks ask, per request (in memory) --------------------------

    def _current(self) -> Snapshot:
        if time.monotonic() - self._read_at > self.refresh:
            self.reload()
        return self._snapshot

    def reload(self) -> None:
        """Read the settings from the database now."""
        snap = Snapshot()
        with self.db.connect() as conn:
            for name, budget, models in conn.execute(
                "SELECT name, monthly_budget, models FROM policy_groups"
            ):
                if budget is not None:
                    snap.budgets[name] = Decimal(budget)
                if models is not None:
                    snap.models[name] = json.loads(models)
            for group, user_id in conn.execute(
                "SELECT group_name, user_id FROM policy_group_members"
            ):
                snap.groups_of.setdefault(user_id, []).append(group)
            for user_id, budget in conn.execute(
                "SELECT user_id, monthly_budget FROM policy_user_budgets"
            ):
                snap.overrides[user_id] = Decimal(budget)
        self._snapshot = snap
        self._read_at = time.monotonic()

    def budget_for(self, actor: Actor) -> Decimal | None:
        """The user's override, else the highest budget of their groups."""
        snap = self._current()
        if actor.id in snap.overrides:
            return snap.overrides[actor.id]
        budgets = [snap.budgets[g] for g in snap.groups_of.get(actor.id, ()) if g in snap.budgets]
        return max(budgets) if budgets else None

    def models_for(self, actor: Actor) -> list[str] | None:
        """The union of the user's groups' allow-lists (None: every model)."""
        snap = self._current()
        lists = [snap.models[g] for g in snap.groups_of.get(actor.id, ()) if g in snap.models]
        if not lists:
            return None
        return sorted({glob for globs in lists for glob in globs})

    def checks(self) -> Sequence[Check]:
        """The bridge's ``policy=``: model access, then budget, then rate."""
        checks: list[Check] = [ModelAccess(allow=self.models_for), self.budget]
        if self.requests_per_minute > 0:
            checks.append(RateLimit(requests_per_minute=self.requests_per_minute, store=self.store))
        return checks

    async def aclose(self) -> None:
        """Close the Redis pool, if any."""
        if isinstance(self.store, RedisStore):
            await self.store.aclose()

    # -- admin -----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything, for ``GET /policy`` (usernames, not ids)."""
        with self.db.connect() as conn:
            names = dict(conn.execute("SELECT id, username FROM users").fetchall())
            groups = []
            for name, budget, models in conn.execute(
                "SELECT name, monthly_budget, models FROM policy_groups ORDER BY name"
            ).fetchall():
                members = [
                    names.get(uid, uid)
                    for (uid,) in conn.execute(
                        "SELECT user_id FROM policy_group_members WHERE group_name = ?", (name,)
                    )
                ]
                groups.append(
                    {
                        "name": name,
                        "monthly_budget": budget,
                        "models": json.loads(models) if models is not None else None,
                        "members": sorted(members),
                    }
                )
            overrides = {
                names.get(uid, uid): budget
                for uid, budget in conn.execute(
                    "SELECT user_id, monthly_budget FROM policy_user_budgets"
                )
            }
        return {
            "groups": groups,
            "user_budgets": overrides,
            "requests_per_minute": self.requests_per_minute or None,
            "store": "redis" if isinstance(self.store, RedisStore) else "memory",
        }

    def put_group(
        self, name: str, budget: Decimal | None, models: list[str] | None, members: list[User]
    ) -> None:
        with self.db.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM policy_group_members WHERE group_name = ?", (name,))
            conn.execute(
                "INSERT INTO policy_groups (name, monthly_budget, models) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET monthly_budget = excluded.monthly_budget,"
                " models = excluded.models",
                (
                    name,
                    None if budget is None else str(budget),
                    None if models is None else json.dumps(models),
                ),
            )
            conn.executemany(
                "INSERT INTO policy_group_members (group_name, user_id) VALUES (?, ?)",
                [(name, user.id) for user in members],
            )
            conn.execute("COMMIT")
        self.reload()

    def delete_group(self, name: str) -> bool:
        with self.db.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM policy_group_members WHERE group_name = ?", (name,))
            deleted = conn.execute("DELETE FROM policy_groups WHERE name = ?", (name,)).rowcount
            conn.execute("COMMIT")
        self.reload()
        return bool(deleted)

    def set_user_budget(self, user: User, budget: Decimal | None) -> None:
        with self.db.connect() as conn:
            if budget is None:
                conn.execute("DELETE FROM policy_user_budgets WHERE user_id = ?", (user.id,))
            else:
                conn.execute(
                    "INSERT INTO policy_user_budgets (user_id, monthly_budget) VALUES (?, ?)"
                    " ON CONFLICT (user_id) DO UPDATE SET monthly_budget = excluded.monthly_budget",
                    (user.id, str(budget)),
                )
        self.reload()


# -- the admin API -------------------------------------------------------------


class Invalid(Exception):
    pass


def _money(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise Invalid(f'{what} must be a decimal amount like "50.00" or null') from None
    if not amount.is_finite() or amount < 0:
        raise Invalid(f"{what} must be a non-negative amount")
    return amount


def _models(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise Invalid('models must be a list of model globs (e.g. ["claude-*"]) or null')
    return value


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Invalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


async def _admin(request: Request) -> tuple[User | None, JSONResponse | None]:
    user = await current_user(request)
    if user is None:
        return None, error(401, "You must be authenticated")
    if not user.is_admin:
        return None, error(403, "Only admins may read or change the policy")
    return user, None


def _policy(request: Request) -> HostPolicy:
    policy: HostPolicy = request.app.state.host_policy
    return policy


async def get_policy(request: Request) -> Response:
    _, refused = await _admin(request)
    if refused is not None:
        return refused
    return JSONResponse(await anyio.to_thread.run_sync(_policy(request).describe))


async def put_group(request: Request) -> Response:
    _, refused = await _admin(request)
    if refused is not None:
        return refused
    policy, db = _policy(request), request.app.state.db
    name = request.path_params["name"]
    try:
        body = await _json(request)
        budget = _money(body.get("monthly_budget"), "monthly_budget")
        models = _models(body.get("models"))
        refs = body.get("members", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise Invalid("members must be a list of usernames or user ids")
        members = []
        for ref in refs:
            user = await anyio.to_thread.run_sync(db.user, ref)
            if user is None:
                raise Invalid(f"no user {ref!r}")
            members.append(user)
    except Invalid as exc:
        return error(400, str(exc))
    await anyio.to_thread.run_sync(policy.put_group, name, budget, models, members)
    return JSONResponse(await anyio.to_thread.run_sync(policy.describe))


async def delete_group(request: Request) -> Response:
    _, refused = await _admin(request)
    if refused is not None:
        return refused
    name = request.path_params["name"]
    if not await anyio.to_thread.run_sync(_policy(request).delete_group, name):
        return error(404, f"no group {name!r}")
    return Response(status_code=204)


async def put_user_budget(request: Request) -> Response:
    _, refused = await _admin(request)
    if refused is not None:
        return refused
    db = request.app.state.db
    user = await anyio.to_thread.run_sync(db.user, request.path_params["user"])
    if user is None:
        return error(404, f"no user {request.path_params['user']!r}")
    try:
        budget = _money((await _json(request)).get("monthly_budget"), "monthly_budget")
    except Invalid as exc:
        return error(400, str(exc))
    await anyio.to_thread.run_sync(_policy(request).set_user_budget, user, budget)
    return JSONResponse(await anyio.to_thread.run_sync(_policy(request).describe))


async def budget_status(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "You must be authenticated")
    ref = request.query_params.get("user")
    if ref and ref not in (user.id, user.username):
        if not user.is_admin:
            return error(403, "only admins may see other users' budgets")
        other = await anyio.to_thread.run_sync(request.app.state.db.user, ref)
        if other is None:
            return error(404, f"no user {ref!r}")
        user = other
    status = await _policy(request).budget.status(Actor(user.id))
    return JSONResponse(
        {
            "user": user.username,
            "period": status.period,
            "spent": str(status.spent),
            "limit": None if status.limit is None else str(status.limit),
            "period_start": status.period_start.isoformat(),
            "resets_on": status.resets_on.isoformat(),
            "exhausted": status.exhausted,
        }
    )


# -- the usage page's budget card ------------------------------------------------


def _users(db: Database) -> list[User]:
    with db.connect() as conn:
        rows = conn.execute("SELECT id, username, is_admin FROM users ORDER BY username").fetchall()
    return [User(r["id"], r["username"], bool(r["is_admin"])) for r in rows]


async def budget_card(request: Request, viewer: User) -> str:
    """HTML for the usage page: spend this month against the budget, for the
    viewer (everyone's, for admins). Empty when nobody has a budget or spend."""
    policy = _policy(request)
    users = (
        await anyio.to_thread.run_sync(_users, request.app.state.db)
        if viewer.is_admin
        else [viewer]
    )
    rows = []
    resets = ""
    for user in users:
        try:
            status = await policy.budget.status(Actor(user.id))
        except StoreUnavailable:
            return (
                '<section class="card" id="budgets"><h2>AI budgets</h2><p>unavailable</p></section>'
            )
        resets = status.resets_on.isoformat()
        if status.limit is None and not status.spent:
            continue
        if status.limit:
            share = min(float(status.spent / status.limit), 1.0)
            limit = f"${status.limit:,.2f}"
            bar = (
                f'<span style="display:inline-block;width:120px;height:8px;background:#e4e7ec">'
                f'<span style="display:block;height:8px;width:{share * 100:.0f}%;'
                f'background:{"#c62828" if status.exhausted else "#2e7d32"}"></span></span>'
                f" {share * 100:.0f} %"
            )
        else:
            limit, bar = "no budget", ""
        rows.append(
            f"<tr><td>{escape(user.username)}</td><td>${status.spent:,.2f}</td>"
            f"<td>{limit}</td><td>{bar}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<section class="card" id="budgets"><h2>AI budgets<small>this month (UTC), resets '
        f"{resets}</small></h2><table><tr><th>User</th><th>Spent</th><th>Budget</th><th></th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


#: Routes to put before the bridge's mount.
routes = [
    Route("/api/v2/aibridge/policy", get_policy, methods=["GET"]),
    Route("/api/v2/aibridge/policy/budget", budget_status, methods=["GET"]),
    Route("/api/v2/aibridge/policy/groups/{name}", put_group, methods=["PUT"]),
    Route("/api/v2/aibridge/policy/groups/{name}", delete_group, methods=["DELETE"]),
    Route("/api/v2/aibridge/policy/users/{user}/budget", put_user_budget, methods=["PUT"]),
]
