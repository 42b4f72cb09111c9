"""Policy: checks run before the provider is called.

``create_bridge(..., policy=[ModelAccess(...), Budget(...), RateLimit(...)])``
runs each check in order once the request body is parsed and before any
upstream connection is made. A check allows the request (returns ``None``)
or refuses it (returns a :class:`Refusal`: status, message, optional
Retry-After). A refused request is answered in the provider's own error
shape, still produces its :class:`~aibridge_asgi.InterceptionStarted` and
:class:`~aibridge_asgi.InterceptionEnded` (``failed``, the status, the
message) and is reported to the hooks (``policy_refused``).

A check that needs to see how an admitted request went (its tokens, its
cost, its end) defines ``ended``; it is called once per admitted request,
after the response, with a :class:`PolicyUsage`. Checks without ``ended``
cost nothing after admission.

Writing your own check::

    class WorkingHours:
        async def check(self, request: InterceptionStarted) -> Refusal | None:
            if 8 <= request.started_at.hour < 20:
                return None
            return Refusal(403, "AI tools are available 08:00-20:00 UTC")

Each built-in takes its limit as a constant or as a callable of the
:class:`~aibridge_asgi.Actor` (plain or ``async``) so the host maps its own
groups and overrides; a callable returning ``None`` means "no limit".
See docs/policy.md.
"""

from __future__ import annotations

import asyncio
import calendar
import fnmatch
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

from ..errors import BridgeError
from ..hooks import BridgeHooks
from ..hooks import call as call_hooks
from ..records import Actor, InterceptionEnded, InterceptionStarted
from .stores import Bucket, MemoryStore, Op, RedisStore, Store, StoreUnavailable, ceil_seconds

__all__ = [
    "Budget",
    "BudgetAlert",
    "BudgetStatus",
    "Check",
    "ConcurrencyLimit",
    "MemoryStore",
    "ModelAccess",
    "Policy",
    "PolicyUsage",
    "RateLimit",
    "RedisStore",
    "Refusal",
    "Store",
    "StoreUnavailable",
    "period_bounds",
]

logger = logging.getLogger("aibridge_asgi.policy")

T = TypeVar("T")
#: A constant, or a callable of the actor returning it (``None``: no limit).
PerActor: TypeAlias = (
    "T | Callable[[Actor], T | None] | Callable[[Actor], Awaitable[T | None]] | None"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A check's "no".

    ``status`` is the HTTP status (403 for access and budgets, 429 for rate
    and concurrency limits); ``message`` is what the user reads, so say what
    to do; ``retry_after`` (whole seconds) becomes a ``Retry-After`` header.
    ``code`` and ``error_type`` set the OpenAI-shaped body's ``code`` and
    ``type`` (Anthropic bodies take their type from the status).
    """

    status: int
    message: str
    retry_after: int | None = None
    code: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyUsage:
    """How an admitted request went, as checks with ``ended`` see it.

    Token counts are what the provider reported (0 when it reported none);
    ``cost`` is the sum of the interception's priced
    :class:`~aibridge_asgi.Cost` records (``None`` when none was priced).
    """

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    cost: Decimal | None

    @property
    def rate_tokens(self) -> int:
        """Tokens a tokens-per-minute limit counts: input, cache writes and
        output (cache reads are not counted, as providers do not)."""
        return self.input_tokens + self.cache_write_input_tokens + self.output_tokens


@runtime_checkable
class Check(Protocol):
    """A policy check. ``check`` is required; ``ended`` is optional.

    ``request`` is the interception's :class:`InterceptionStarted`: actor,
    ``provider`` (kind), ``provider_name`` (instance), ``route``, ``model``,
    ``streaming``, ``client``, ``interception_id``. ``check`` runs on the
    request path: keep it to one store round trip. Raising
    :class:`StoreUnavailable` applies the store's failure mode; any other
    exception refuses the request with 503 (and is logged).

    Optionally::

        async def ended(self, request: InterceptionStarted,
                        ended: InterceptionEnded, usage: PolicyUsage) -> None

    is called once for every request this check admitted, after its
    response (also when a later check refused it).
    """

    async def check(self, request: InterceptionStarted) -> Refusal | None:
        """Allow (``None``) or refuse the request."""
        ...


async def _per_actor(value: Any, actor: Actor) -> Any:
    """A per-actor setting's value for ``actor``."""
    if callable(value):
        value = value(actor)
        if inspect.isawaitable(value):
            value = await value
    return value


class _Tally(Protocol):
    """What the interception counted (its ``Outcome``)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost: Decimal | None


# -- the step ------------------------------------------------------------------

_STORE_DOWN = "the AI gateway cannot check its usage limits right now; try again shortly"
_CHECK_FAILED = "the AI gateway could not check this request; try again"

#: A built-in's planned store op and what its result means (Refusal or None).
_Plan: TypeAlias = "tuple[Op, Callable[[Any], Refusal | None]] | None"
#: A built-in's op for the end of a request, and what to do with its result.
_EndPlan: TypeAlias = "tuple[Op, Callable[[Any], None] | None] | None"


class _Planned:
    """Built-ins: their store work is planned as ops, so consecutive checks
    sharing a store run as one :meth:`Store.run` (one Redis round trip)
    before the call and one after it."""

    store: Store
    ends: bool = False  # whether end_plan has anything to do

    async def plan(self, request: InterceptionStarted) -> _Plan:
        raise NotImplementedError

    async def end_plan(self, request: InterceptionStarted, usage: PolicyUsage) -> _EndPlan:
        return None

    async def check(self, request: InterceptionStarted) -> Refusal | None:
        """Allow (``None``) or refuse the request (one store step)."""
        planned = await self.plan(request)
        if planned is None:
            return None
        op, verdict = planned
        return verdict((await self.store.run([op]))[0])

    async def ended(
        self, request: InterceptionStarted, ended: InterceptionEnded, usage: PolicyUsage
    ) -> None:
        """Account for the request's end (one store step, if any)."""
        planned = await self.end_plan(request, usage)
        if planned is not None:
            op, after = planned
            result = (await self.store.run([op]))[0]
            if after is not None:
                after(result)


def _refused(refusal: Refusal) -> BridgeError:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if refusal.retry_after is not None:
        headers = ((b"retry-after", str(refusal.retry_after).encode()),)
    return BridgeError(refusal.status, refusal.message, refusal.code, headers, refusal.error_type)


class Policy:
    """Runs the checks in order; made by ``create_bridge(policy=[...])``.

    Consecutive built-ins that share a store run their store work together:
    one :meth:`Store.run` before the call (stopping at the first check that
    refuses) and one after it.
    """

    def __init__(self, checks: Iterable[Check], hooks: Sequence[BridgeHooks] = ()) -> None:
        self.checks = tuple(checks)
        for c in self.checks:
            if not callable(getattr(c, "check", None)):
                raise TypeError(f"policy check {c!r} has no check() method")
        # Segments: a run of built-ins sharing a store, or one other check.
        self._segments: list[tuple[Store | None, tuple[Any, ...]]] = []
        for c in self.checks:
            store = c.store if isinstance(c, _Planned) else None
            last = self._segments[-1] if self._segments else None
            if store is not None and last is not None and last[0] is store:
                self._segments[-1] = (store, (*last[1], c))
            else:
                self._segments.append((store, (c,)))
        self._enders = frozenset(
            id(c)
            for c in self.checks
            if (c.ends if isinstance(c, _Planned) else callable(getattr(c, "ended", None)))
        )
        self._hooks = tuple(hooks)
        self._last_store_log = 0.0

    async def admit(
        self, request: InterceptionStarted
    ) -> tuple[BridgeError | None, tuple[Any, ...]]:
        """Run the checks. Returns the refusal (``None`` when admitted) and
        the checks to tell about the end (hand them to :meth:`finish`)."""
        pending: tuple[Any, ...] = ()
        enders = self._enders
        for store, group in self._segments:
            if store is None:
                c = group[0]
                try:
                    refusal = await c.check(request)
                except StoreUnavailable as exc:
                    self._store_failed(group, exc)
                    if exc.fail_open:
                        continue
                    refusal = Refusal(503, _STORE_DOWN, retry_after=1)
                except Exception:
                    logger.exception("policy check %s failed", type(c).__name__)
                    refusal = Refusal(503, _CHECK_FAILED)
                if refusal is not None:
                    return self._refuse(request, c, refusal), pending
                if id(c) in enders:
                    pending = (*pending, c)
                continue
            plans: list[_Plan] = []
            ops: list[Op] = []
            for c in group:
                try:
                    planned = await c.plan(request)
                except Exception:
                    logger.exception("policy check %s failed", type(c).__name__)
                    return self._refuse(request, c, Refusal(503, _CHECK_FAILED)), pending
                plans.append(planned)
                if planned is not None:
                    ops.append(planned[0])
            results: list[Any] = []
            if ops:
                try:
                    results = await store.run(ops)
                except StoreUnavailable as exc:
                    self._store_failed(group, exc)
                    if exc.fail_open:
                        continue
                    refusal = Refusal(503, _STORE_DOWN, retry_after=1)
                    return self._refuse(request, group[0], refusal), pending
            n = 0
            for c, planned in zip(group, plans, strict=True):
                if planned is not None:
                    refusal = planned[1](results[n])
                    n += 1
                    if refusal is not None:
                        return self._refuse(request, c, refusal), pending
                if id(c) in enders:
                    pending = (*pending, c)
        return None, pending

    def _refuse(self, request: InterceptionStarted, check: Any, refusal: Refusal) -> BridgeError:
        if self._hooks:
            call_hooks(self._hooks, "policy_refused", request, type(check).__name__, refusal.status)
        return _refused(refusal)

    async def finish(
        self,
        pending: tuple[Any, ...],
        request: InterceptionStarted,
        ended: InterceptionEnded,
        tally: _Tally,
    ) -> None:
        """Tell the checks that admitted a request how it went. Never raises."""
        usage = PolicyUsage(
            tally.input_tokens,
            tally.output_tokens,
            tally.cache_read_tokens,
            tally.cache_write_tokens,
            tally.cost,
        )
        # Consecutive built-ins sharing a store: one store step for them.
        batches: list[tuple[Store, list[Any], list[Op], list[Callable[[Any], None] | None]]]
        batches = []
        for c in pending:
            try:
                if isinstance(c, _Planned):
                    planned = await c.end_plan(request, usage)
                    if planned is not None:
                        if not batches or batches[-1][0] is not c.store:
                            batches.append((c.store, [], [], []))
                        batch = batches[-1]
                        batch[1].append(c)
                        batch[2].append(planned[0])
                        batch[3].append(planned[1])
                else:
                    await c.ended(request, ended, usage)
            except StoreUnavailable as exc:
                self._store_failed((c,), exc)
            except Exception:
                logger.exception("policy check %s failed at the end", type(c).__name__)
        for store, checks, ops, afters in batches:
            try:
                results = await store.run(ops)
            except StoreUnavailable as exc:
                self._store_failed(checks, exc)
                continue
            except Exception:
                logger.exception("policy store failed at the end")
                continue
            for after, result in zip(afters, results, strict=False):
                if after is not None:
                    try:
                        after(result)
                    except Exception:
                        logger.exception("policy check failed at the end")

    def _store_failed(self, checks: Sequence[Any], exc: StoreUnavailable) -> None:
        mode = "open" if exc.fail_open else "closed"
        names = [type(c).__name__ for c in checks]
        now = time.monotonic()
        if now - self._last_store_log >= 10.0:  # at most one line per 10 s
            self._last_store_log = now
            logger.warning(
                "policy store unavailable for %s (%s); failing %s", ", ".join(names), exc, mode
            )
        if self._hooks:
            for name in names:
                call_hooks(self._hooks, "policy_store_failed", name, mode)


# -- ModelAccess -----------------------------------------------------------------


class ModelAccess:
    """Which models an actor may use, as globs (``claude-sonnet-*``, ``gpt-5*``).

    A model passes when it matches an ``allow`` glob (``None``: every model)
    and no ``deny`` glob; matching ignores case. Either may be a callable of
    the actor. Refuses with 403.
    """

    def __init__(
        self,
        allow: PerActor[Sequence[str]] = None,
        deny: PerActor[Sequence[str]] = None,
    ) -> None:
        self.allow = allow
        self.deny = deny
        self._allow_varies = callable(allow)
        self._deny_varies = callable(deny)
        self._compiled: dict[tuple[str, ...], re.Pattern[str]] = {}

    def _matcher(self, globs: Sequence[str]) -> re.Pattern[str]:
        key = tuple(globs)
        pattern = self._compiled.get(key)
        if pattern is None:
            alternatives = "|".join(fnmatch.translate(g.lower()) for g in key) or "(?!)"
            pattern = re.compile(alternatives)
            if len(self._compiled) < 1024:
                self._compiled[key] = pattern
        return pattern

    async def check(self, request: InterceptionStarted) -> Refusal | None:
        """Refuse models outside the allow list or inside the deny list."""
        model = request.model.lower()
        actor = request.actor
        allow: Any = await _per_actor(self.allow, actor) if self._allow_varies else self.allow
        deny: Any = await _per_actor(self.deny, actor) if self._deny_varies else self.deny
        denied = bool(deny) and self._matcher(deny).match(model) is not None
        if not denied and (allow is None or self._matcher(allow).match(model) is not None):
            return None
        if allow:
            hint = "models you may use: " + ", ".join(allow)
        else:
            hint = "ask your administrator for access"
        return Refusal(
            403,
            f"model '{request.model}' is not allowed for your account; {hint}",
            code="model_not_allowed",
        )


# -- Budget ------------------------------------------------------------------------

Period: TypeAlias = Literal["day", "week", "month"]
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}


def period_bounds(period: Period, now: float) -> tuple[datetime, datetime]:
    """The UTC calendar period holding ``now``: [start, end). Weeks start on Monday."""
    moment = datetime.fromtimestamp(now, UTC)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, start + timedelta(days=days)
    raise ValueError(f"period must be 'day', 'week' or 'month', not {period!r}")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """An actor's spend in the current period against their limit."""

    actor_id: str
    period: Period
    spent: Decimal
    limit: Decimal | None
    period_start: date
    resets_on: date

    @property
    def exhausted(self) -> bool:
        """At or over the limit (requests are refused)."""
        return self.limit is not None and self.spent >= self.limit


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """Spend crossed ``threshold`` (0.85 or 1.0) of the limit this period."""

    actor: Actor
    threshold: float
    status: BudgetStatus


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CENT = Decimal("0.01")


def _money(amount: Decimal) -> str:
    """``$50.00``; amounts finer than a cent as they are (``$0.0002``)."""
    if amount == amount.quantize(_CENT):
        return f"${amount:,.2f}"
    return f"${amount.normalize():,f}"


class Budget(_Planned):
    """Spend per actor per UTC calendar period, from the Cost records.

    Refuses with 403 once the actor's spend this period is at or over
    ``limit`` (a Decimal, in the Cost records' currency; or a callable of
    the actor; ``None``: no budget, spend is still counted). ``on_alert`` is
    called (a plain function, or ``async``, run in the background) once per
    period when spend crosses each of ``thresholds`` (default 85 % and
    100 %).

    Spend is known when a request ends, so the request that crosses the
    limit is answered in full: one in-flight request per worker may
    overshoot. Requests to models without a price add nothing.
    """

    ends = True

    def __init__(
        self,
        limit: PerActor[Decimal],
        period: Period = "month",
        store: Store | None = None,
        *,
        on_alert: Callable[[BudgetAlert], object] | None = None,
        thresholds: Sequence[float] = (0.85, 1.0),
        clock: Callable[[], float] | None = None,
    ) -> None:
        period_bounds(period, 0.0)  # validates
        self.limit = limit
        self.period = period
        self.store = store if store is not None else MemoryStore()
        self.on_alert = on_alert
        self.thresholds = tuple(Decimal(str(t)) for t in sorted(thresholds))
        self._clock = clock or self.store.now
        self._tasks: set[asyncio.Future[Any]] = set()
        self._current: tuple[float, float, str, datetime, datetime] = (1.0, 0.0, "", _EPOCH, _EPOCH)

    def _period(self, now: float) -> tuple[str, datetime, datetime]:
        """The key prefix and bounds of the period holding ``now`` (cached)."""
        begins, ends, prefix, start, end = self._current
        if not begins <= now < ends:
            start, end = period_bounds(self.period, now)
            prefix = f"budget:{self.period}:{start.date().isoformat()}:"
            self._current = (start.timestamp(), end.timestamp(), prefix, start, end)
        return prefix, start, end

    async def status(self, actor: Actor) -> BudgetStatus:
        """The actor's spend this period and their limit (for usage pages)."""
        prefix, start, end = self._period(self._clock())
        limit = await _per_actor(self.limit, actor) if callable(self.limit) else self.limit
        spent = await self.store.total(prefix + actor.id)
        return BudgetStatus(actor.id, self.period, spent, limit, start.date(), end.date())

    async def plan(self, request: InterceptionStarted) -> _Plan:
        """Refuse when this period's spend is at or over the limit."""
        limit = await _per_actor(self.limit, request.actor) if callable(self.limit) else self.limit
        if limit is None:
            return None
        prefix, _, end = self._period(self._clock())

        def verdict(spent: Decimal) -> Refusal | None:
            if spent < limit:
                return None
            return Refusal(
                403,
                f"{_ADJECTIVE[self.period]} AI budget of {_money(Decimal(limit))} reached; "
                f"resets {end.date().isoformat()}",
                code="insufficient_quota",
                error_type="insufficient_quota",
            )

        return ("below", prefix + request.actor.id, Decimal(limit)), verdict

    async def end_plan(self, request: InterceptionStarted, usage: PolicyUsage) -> _EndPlan:
        """Add the request's cost to this period's spend; alert on crossings."""
        cost = usage.cost
        if not cost:
            return None
        now = self._clock()
        prefix, start, end = self._period(now)
        op = ("add", prefix + request.actor.id, cost, end.timestamp() - now + 86400)
        if self.on_alert is None:
            return op, None
        limit = await _per_actor(self.limit, request.actor) if callable(self.limit) else self.limit
        if not limit:
            return op, None

        def after(total: Decimal) -> None:
            before = total - cost
            for threshold in self.thresholds:
                if before < Decimal(limit) * threshold <= total:
                    status = BudgetStatus(
                        request.actor.id, self.period, total, limit, start.date(), end.date()
                    )
                    self._alert(BudgetAlert(request.actor, float(threshold), status))

        return op, after

    def _alert(self, alert: BudgetAlert) -> None:
        assert self.on_alert is not None
        try:
            result = self.on_alert(alert)
        except Exception:
            logger.exception("budget alert hook failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._alert_done)

    def _alert_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("budget alert hook failed", exc_info=task.exception())


# -- RateLimit -----------------------------------------------------------------------


class RateLimit(_Planned):
    """Requests and tokens per minute, per actor.

    A limit of N per minute is a bucket of N that refills N per minute: a
    burst of up to N passes at once, then one every 60/N seconds. Refuses
    with 429 and ``Retry-After`` (whole seconds after which the request
    would pass). Tokens (input, cache writes, output; see
    :attr:`PolicyUsage.rate_tokens`) are counted when a response reports
    them, so a request is refused while the actor's token bucket is empty.
    """

    def __init__(
        self,
        requests_per_minute: PerActor[int] = None,
        tokens_per_minute: PerActor[int] = None,
        store: Store | None = None,
    ) -> None:
        if requests_per_minute is None and tokens_per_minute is None:
            raise ValueError("RateLimit needs requests_per_minute or tokens_per_minute")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.store = store if store is not None else MemoryStore()
        self.ends = tokens_per_minute is not None

    async def plan(self, request: InterceptionStarted) -> _Plan:
        """Take one request from the actor's buckets, or refuse."""
        actor = request.actor
        rpm = (
            await _per_actor(self.requests_per_minute, actor)
            if callable(self.requests_per_minute)
            else self.requests_per_minute
        )
        tpm = (
            await _per_actor(self.tokens_per_minute, actor)
            if callable(self.tokens_per_minute)
            else self.tokens_per_minute
        )
        buckets: list[Bucket] = []
        if rpm is not None:
            buckets.append(("rpm:" + actor.id, float(rpm), rpm / 60.0, 1.0, 1.0))
        if tpm is not None:
            buckets.append(("tpm:" + actor.id, float(tpm), tpm / 60.0, 1.0, 0.0))
        if not buckets:
            return None

        def verdict(wait: float) -> Refusal | None:
            if wait <= 0:
                return None
            seconds = ceil_seconds(wait)
            requests = f"{rpm} request{'' if rpm == 1 else 's'}"
            if tpm is None:
                what = f"rate limit of {requests} per minute reached"
            elif rpm is None:
                what = f"rate limit of {tpm:,} tokens per minute reached"
            else:
                what = f"rate limit of {requests} and {tpm:,} tokens per minute reached"
            return Refusal(429, f"{what}; try again in {seconds} s", retry_after=seconds)

        return ("take", buckets), verdict

    async def end_plan(self, request: InterceptionStarted, usage: PolicyUsage) -> _EndPlan:
        """Count the request's tokens against the actor's token bucket."""
        tokens = usage.rate_tokens
        if not tokens or self.tokens_per_minute is None:
            return None
        tpm = (
            await _per_actor(self.tokens_per_minute, request.actor)
            if callable(self.tokens_per_minute)
            else self.tokens_per_minute
        )
        if not tpm:
            return None
        return ("debit", "tpm:" + request.actor.id, float(tpm), tpm / 60.0, float(tokens)), None


# -- ConcurrencyLimit --------------------------------------------------------------------


class ConcurrencyLimit(_Planned):
    """At most ``max_in_flight`` open interceptions per actor (long streams
    included). Refuses with 429 and ``Retry-After: 1``.

    A slot is released when the interception ends; a worker that dies with
    slots held frees them after ``lease`` seconds (longer than any call).
    """

    ends = True

    def __init__(
        self,
        max_in_flight: PerActor[int],
        store: Store | None = None,
        *,
        lease: float = 3600.0,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.store = store if store is not None else MemoryStore()
        self.lease = lease

    async def plan(self, request: InterceptionStarted) -> _Plan:
        """Hold a slot for this interception, or refuse."""
        limit = (
            await _per_actor(self.max_in_flight, request.actor)
            if callable(self.max_in_flight)
            else self.max_in_flight
        )
        if limit is None:
            return None

        def verdict(held: bool) -> Refusal | None:
            if held:
                return None
            return Refusal(
                429,
                f"limit of {limit} concurrent AI requests reached; "
                "try again when one of yours finishes",
                retry_after=1,
            )

        op = ("acquire", "inflight:" + request.actor.id, request.interception_id, int(limit))
        return (*op, self.lease), verdict

    async def end_plan(self, request: InterceptionStarted, usage: PolicyUsage) -> _EndPlan:
        """Free the slot."""
        return ("release", "inflight:" + request.actor.id, request.interception_id), None
