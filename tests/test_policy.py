"""Policy checks: each built-in on its own (injectable clock), the step that
runs them, and the bridge refusing requests before any upstream call, in
each provider's error shape, with records and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from aibridge_asgi import Actor, Cost, InterceptionEnded, InterceptionStarted
from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.policy import (
    Budget,
    BudgetAlert,
    ConcurrencyLimit,
    MemoryStore,
    ModelAccess,
    Policy,
    PolicyUsage,
    RateLimit,
    RedisStore,
    Refusal,
)
from aibridge_asgi.testing import FakeResponse, FakeUpstream, streams

from .conftest import HOST_TOKEN, OTHER_TOKEN, Running
from .redis_server import free_port
from .test_errors import MESSAGES_BODY, assert_anthropic_error, assert_openai_error
from .test_policy_stores import Clock
from .test_policy_stores import make_store as make_store  # the fixture (memory, redis)

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
ALICE = Actor("alice", {"group": "staff"})
BOB = Actor("bob", {"group": "interns"})
# 2026-11-29 (a Sunday) 17:00 UTC
SUNDAY = datetime(2026, 11, 29, 17, 0, tzinfo=UTC).timestamp()


def request(actor: Actor = ALICE, model: str = "claude-sonnet-4-5") -> InterceptionStarted:
    return InterceptionStarted(
        interception_id=str(uuid.uuid4()),
        actor=actor,
        provider="anthropic",
        provider_name="anthropic",
        model=model,
        route="/v1/messages",
        streaming=True,
        client="claude-code",
        client_session_id=None,
        user_agent=None,
        started_at=datetime.now(UTC),
    )


def ended(started: InterceptionStarted) -> InterceptionEnded:
    return InterceptionEnded(started.interception_id, datetime.now(UTC), "completed", 200)


def tally(cost: str | None = None, input_tokens: int = 0, output_tokens: int = 0) -> Any:
    return SimpleNamespace(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost=None if cost is None else Decimal(cost),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- ModelAccess -----------------------------------------------------------------


def test_model_access_globs_deny_wins_and_ignores_case() -> None:
    check = ModelAccess(allow=["claude-sonnet-*", "gpt-5*"], deny=["*-preview"])

    async def go() -> None:
        assert await check.check(request(model="claude-sonnet-4-5")) is None
        assert await check.check(request(model="Claude-Sonnet-4-5")) is None
        assert await check.check(request(model="gpt-5-mini")) is None
        refused = await check.check(request(model="gpt-5-preview"))
        assert refused is not None and refused.status == 403
        refused = await check.check(request(model="claude-opus-4-1"))
        assert refused == Refusal(
            403,
            "model 'claude-opus-4-1' is not allowed for your account; "
            "models you may use: claude-sonnet-*, gpt-5*",
            code="model_not_allowed",
        )
        assert await ModelAccess(deny=["claude-opus-*"]).check(request(model="o3")) is None

    run(go())


def test_model_access_per_actor_callables() -> None:
    groups = {"staff": ["claude-*"], "interns": ["claude-haiku-*"]}

    async def deny(actor: Actor) -> list[str]:  # async callables work too
        return ["claude-opus-*"] if actor.id == "bob" else []

    check = ModelAccess(allow=lambda a: groups[a.metadata["group"]], deny=deny)

    async def go() -> None:
        assert await check.check(request(ALICE, "claude-opus-4-1")) is None
        assert await check.check(request(BOB, "claude-haiku-4-5")) is None
        assert await check.check(request(BOB, "claude-sonnet-4-5")) is not None
        refused = await ModelAccess(allow=[]).check(request(ALICE, "x"))
        assert refused is not None and "ask your administrator" in refused.message

    run(go())


# -- Budget --------------------------------------------------------------------------


def test_budget_refuses_at_the_limit_with_the_reset_date() -> None:
    clock = Clock(SUNDAY)
    budget = Budget(Decimal("50"), "month", MemoryStore(clock))
    policy = Policy([budget])

    async def spend(amount: str) -> None:
        started = request()
        refusal, pending = await policy.admit(started)
        assert refusal is None
        await policy.finish(pending, started, ended(started), tally(amount))

    async def go() -> None:
        await spend("49.99")
        await spend("0.005")  # 49.995: still under
        assert (await policy.admit(request()))[0] is None
        await spend("0.005")  # exactly 50: at the limit
        refusal, pending = await policy.admit(request())
        assert pending == ()
        assert refusal is not None and refusal.status == 403
        assert refusal.message == "monthly AI budget of $50.00 reached; resets 2026-12-01"
        assert refusal.code == "insufficient_quota" and refusal.error_type == "insufficient_quota"
        assert refusal.headers == ()
        # Someone else is not affected.
        assert (await policy.admit(request(BOB)))[0] is None
        status = await budget.status(ALICE)
        assert status.spent == Decimal("50.000") and status.exhausted
        assert str(status.resets_on) == "2026-12-01" and str(status.period_start) == "2026-11-01"

    run(go())


@pytest.mark.parametrize(
    ("period", "before_reset", "resets"),
    [
        ("day", datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC), "2026-11-30"),
        ("week", datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC), "2026-11-30"),  # Monday
        ("month", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "2026-12-01"),
    ],
)
def test_budget_period_rolls_over_at_utc_midnight(
    period: Any, before_reset: datetime, resets: str, make_store: Callable[[Clock], Any]
) -> None:
    clock = Clock(SUNDAY)
    budget = Budget(Decimal("1"), period, make_store(clock))
    policy = Policy([budget])

    async def go() -> None:
        started = request()
        _, pending = await policy.admit(started)
        await policy.finish(pending, started, ended(started), tally("1.50"))
        clock.now = before_reset.timestamp()
        refusal, _ = await policy.admit(request())
        assert refusal is not None and refusal.message.endswith(f"resets {resets}")
        clock.now += 1.0  # 00:00:00 UTC of the reset day
        assert (await policy.admit(request()))[0] is None
        assert (await budget.status(ALICE)).spent == 0

    run(go())


def test_budget_limit_per_actor_none_is_unlimited_and_alerts_fire_once() -> None:
    clock = Clock(SUNDAY)
    alerts: list[BudgetAlert] = []
    limits = {"alice": Decimal("10"), "bob": None}
    budget = Budget(
        lambda actor: limits[actor.id], "day", MemoryStore(clock), on_alert=alerts.append
    )
    policy = Policy([budget])

    async def spend(actor: Actor, amount: str) -> Any:
        started = request(actor)
        refusal, pending = await policy.admit(started)
        await policy.finish(pending, started, ended(started), tally(amount))
        return refusal

    async def go() -> None:
        for _ in range(10):
            assert await spend(BOB, "1000") is None  # no budget
        assert [await spend(ALICE, "2") for _ in range(4)] == [None] * 4  # 8.00
        assert alerts == []
        await spend(ALICE, "0.5")  # 8.50: crosses 85 %
        assert [(a.actor.id, a.threshold, a.status.spent) for a in alerts] == [
            ("alice", 0.85, Decimal("8.5"))
        ]
        await spend(ALICE, "0.25")
        await spend(ALICE, "1.25")  # 10.00: crosses 100 %
        assert [a.threshold for a in alerts] == [0.85, 1.0]
        assert alerts[1].status.exhausted
        assert await spend(ALICE, "0") is not None
        clock.now += 86400  # next day: alerts again when crossed again
        await spend(ALICE, "9")
        assert [a.threshold for a in alerts] == [0.85, 1.0, 0.85]

    run(go())


def test_budget_async_alert_hook_runs_in_the_background() -> None:
    seen: list[float] = []

    async def notify(alert: BudgetAlert) -> None:
        await asyncio.sleep(0)
        seen.append(alert.threshold)

    budget = Budget(Decimal("1"), "month", MemoryStore(Clock(SUNDAY)), on_alert=notify)

    async def go() -> None:
        started = request()
        await budget.ended(started, ended(started), PolicyUsage(0, 0, 0, 0, Decimal(2)))
        await asyncio.sleep(0.01)

    run(go())
    assert seen == [0.85, 1.0]


def test_concurrent_requests_racing_a_budget_overshoot_by_at_most_one_each(
    redis_url: str,
) -> None:
    """Four workers (each its own store connection) share a $10 budget in
    Redis, each sending requests of $1 one after another until refused. The
    spend may pass the limit by at most one in-flight request per worker,
    and each alert fires exactly once."""
    alerts: list[float] = []
    workers = [
        Policy(
            [
                Budget(
                    Decimal("10"),
                    "month",
                    RedisStore(redis_url, timeout=10),
                    on_alert=lambda a: alerts.append(a.threshold),
                )
            ]
        )
        for _ in range(4)
    ]

    async def worker(policy: Policy) -> int:
        admitted = 0
        while True:
            started = request()
            refusal, pending = await policy.admit(started)
            if refusal is not None:
                return admitted
            admitted += 1
            await asyncio.sleep(0.001)  # the call upstream
            await policy.finish(pending, started, ended(started), tally("1"))

    async def go() -> tuple[list[int], Decimal]:
        counts = await asyncio.gather(*(worker(p) for p in workers))
        budget = workers[0].checks[0]
        assert isinstance(budget, Budget)
        return counts, (await budget.status(ALICE)).spent

    counts, spent = run(go())
    assert 10 <= sum(counts) < 10 + len(workers)
    assert spent == sum(counts)
    assert sorted(alerts) == [0.85, 1.0]


# -- RateLimit --------------------------------------------------------------------------


def test_rate_limit_burst_then_retry_after_in_whole_seconds() -> None:
    clock = Clock(SUNDAY)
    policy = Policy([RateLimit(requests_per_minute=60, store=MemoryStore(clock))])

    async def go() -> None:
        for _ in range(60):  # "60 per minute" admits a burst of 60
            assert (await policy.admit(request()))[0] is None
        refusal, _ = await policy.admit(request())
        assert refusal is not None and refusal.status == 429
        assert refusal.headers == ((b"retry-after", b"1"),)
        assert refusal.message == "rate limit of 60 requests per minute reached; try again in 1 s"
        assert (await policy.admit(request(BOB)))[0] is None
        clock.now += 1.0  # exactly when Retry-After said
        assert (await policy.admit(request()))[0] is None
        assert (await policy.admit(request()))[0] is not None

    run(go())


def test_rate_limit_retry_after_is_the_wait_rounded_up() -> None:
    clock = Clock(SUNDAY)
    policy = Policy([RateLimit(requests_per_minute=lambda a: 4, store=MemoryStore(clock))])

    async def go() -> None:
        for _ in range(4):
            assert (await policy.admit(request()))[0] is None
        clock.now += 2.5  # one token every 15 s: 12.5 s to go
        refusal, _ = await policy.admit(request())
        assert refusal is not None and refusal.headers == ((b"retry-after", b"13"),)
        clock.now += 12.0
        assert (await policy.admit(request()))[0] is not None  # 0.5 s early
        clock.now += 0.5
        assert (await policy.admit(request()))[0] is None

    run(go())


def test_token_limit_counts_reported_tokens_after_the_call() -> None:
    clock = Clock(SUNDAY)
    policy = Policy([RateLimit(tokens_per_minute=6000, store=MemoryStore(clock))])

    async def call(tokens: int) -> Any:
        started = request()
        refusal, pending = await policy.admit(started)
        if refusal is None:
            await policy.finish(
                pending, started, ended(started), tally(None, tokens - tokens // 5, tokens // 5)
            )
        return refusal

    async def go() -> None:
        assert await call(5000) is None  # input and output counted
        assert await call(1000) is None  # 6000: bucket empty now
        refusal = await call(0)
        assert refusal is not None and refusal.status == 429
        # One token is needed; 100 tokens a second refill it.
        assert refusal.headers == ((b"retry-after", b"1"),)
        assert refusal.message.startswith("rate limit of 6,000 tokens per minute reached")
        clock.now += 1.0
        assert await call(0) is None

    run(go())


# -- ConcurrencyLimit and the step -----------------------------------------------------------


def test_concurrency_limit_and_release_when_a_later_check_refuses() -> None:
    store = MemoryStore()
    policy = Policy([ConcurrencyLimit(2, store), ModelAccess(deny=["bad-*"])])

    async def go() -> None:
        first, second = request(), request()
        r1, p1 = await policy.admit(first)
        r2, _ = await policy.admit(second)
        assert r1 is None and r2 is None
        refusal, _ = await policy.admit(request())
        assert refusal is not None and refusal.status == 429
        assert refusal.headers == ((b"retry-after", b"1"),)
        assert "limit of 2 concurrent AI requests" in refusal.message
        await policy.finish(p1, first, ended(first), tally())
        # A request refused by a later check gives its slot back at its end.
        bad = request(model="bad-model")
        refusal, pending = await policy.admit(bad)
        assert refusal is not None and refusal.status == 403 and len(pending) == 1
        assert (await policy.admit(request()))[0] is not None  # slot still held by `bad`
        await policy.finish(pending, bad, ended(bad), tally())
        assert (await policy.admit(request()))[0] is None

    run(go())


def test_a_failing_check_refuses_with_503_and_hosts_write_their_own() -> None:
    class Broken:
        async def check(self, request: InterceptionStarted) -> Refusal | None:
            raise KeyError("bug")

    class WorkingHours:
        async def check(self, request: InterceptionStarted) -> Refusal | None:
            if 8 <= request.started_at.hour < 20:
                return None
            return Refusal(403, "AI tools are available 08:00-20:00 UTC")

    async def go() -> None:
        refusal, _ = await Policy([Broken()]).admit(request())
        assert refusal is not None and refusal.status == 503
        hours = await Policy([WorkingHours()]).admit(request())
        assert hours[0] is None or hours[0].status == 403

    run(go())
    with pytest.raises(TypeError):
        Policy([object()])  # type: ignore[list-item]


# -- through the bridge ----------------------------------------------------------------------


@pytest.fixture
def metered(
    start_bridge: Callable[..., Running],
) -> Callable[..., tuple[Running, CollectorRegistry]]:
    def start(policy: list[Any], **options: Any) -> tuple[Running, CollectorRegistry]:
        registry = CollectorRegistry()
        running = start_bridge(policy=policy, hooks=[PrometheusHooks(registry)], **options)
        return running, registry

    return start


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_refusals_in_each_providers_shape_without_an_upstream_call(
    metered: Callable[..., tuple[Running, CollectorRegistry]],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    store = MemoryStore()
    running, registry = metered(
        [ModelAccess(deny=["claude-opus-*", "o3*"]), Budget(Decimal("5"), "month", store)]
    )
    asyncio.run(store.add(f"budget:month:{datetime.now(UTC):%Y-%m}-01:bob", Decimal(5), 3600))

    r = client.post(
        running.url + "/anthropic/v1/messages",
        headers=AUTH,
        json={**MESSAGES_BODY, "model": "claude-opus-4-1"},
    )
    body = assert_anthropic_error(r, 403)
    assert body["error"]["type"] == "permission_error"
    assert "model 'claude-opus-4-1' is not allowed" in body["error"]["message"]
    interception_id = r.headers["x-aibridge-interception-id"]

    r = client.post(
        running.url + "/openai/v1/chat/completions",
        headers=AUTH,
        json={"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    error = assert_openai_error(r, 403)["error"]
    assert error["code"] == "model_not_allowed"

    bob = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    r = client.post(
        running.url + "/openai/v1/responses", headers=bob, json={"model": "gpt-5", "input": "hi"}
    )
    error = assert_openai_error(r, 403)["error"]
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
    assert error["message"].startswith("monthly AI budget of $5.00 reached; resets ")
    r = client.post(running.url + "/anthropic/v1/messages", headers=bob, json=MESSAGES_BODY)
    body = assert_anthropic_error(r, 403)
    assert body["error"]["message"].startswith("monthly AI budget of $5.00 reached")

    assert fake.requests == []  # nothing went upstream
    running.flush()
    assert len(running.recorder.of_type(InterceptionStarted)) == 4
    ends = running.recorder.of_type(InterceptionEnded)
    assert [(e.status, e.http_status) for e in ends] == [("failed", 403)] * 4
    first = running.recorder.ended(interception_id)
    assert first is not None and first.error is not None and "not allowed" in first.error
    refused = "aibridge_policy_refusals_total"
    assert (
        metric(registry, refused, provider_name="anthropic", check="ModelAccess", status="403") == 1
    )
    assert metric(registry, refused, provider_name="openai", check="Budget", status="403") == 1

    # An allowed request goes through as before.
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 200 and len(fake.requests) == 1


def test_sdks_read_the_refusals_and_do_not_retry_403(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    running = start_bridge(
        policy=[
            ModelAccess(allow=["claude-haiku-*", "gpt-5-mini"]),
            RateLimit(requests_per_minute=1),
        ]
    )
    claude = anthropic.Anthropic(
        api_key=HOST_TOKEN, base_url=running.url + "/anthropic", max_retries=2
    )
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        claude.messages.create(
            model="claude-opus-4-1", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert "claude-haiku-*" in str(denied.value)
    gpt = openai.OpenAI(api_key=HOST_TOKEN, base_url=running.url + "/openai/v1", max_retries=0)
    gpt.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as limited:
        gpt.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert "limit of 1 request per minute" in str(limited.value)
    assert limited.value.response.headers["retry-after"] in {str(n) for n in range(55, 61)}
    running.flush()
    # The SDK did not retry the 403: one interception for it.
    assert len(running.recorder.of_type(InterceptionStarted)) == 3
    assert len(fake.requests) == 1


def test_concurrency_limit_holds_a_slot_for_a_whole_stream(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    running = start_bridge(policy=[ConcurrencyLimit(1)])
    fake.enqueue(
        FakeResponse.sse(streams.anthropic_events("a b c", pieces=3)[:3], hang=float("inf"))
    )
    with httpx.Client(timeout=10) as c1, httpx.Client(timeout=10) as c2:
        with c1.stream(
            "POST",
            running.url + "/anthropic/v1/messages",
            headers=AUTH,
            json={**MESSAGES_BODY, "stream": True},
        ) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_raw()  # kept: a dropped iterator closes the stream
            next(chunks)
            r = c2.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
            body = assert_anthropic_error(r, 429)
            assert body["error"]["type"] == "rate_limit_error"
            assert r.headers["retry-after"] == "1"
        # The first stream is over (client left): its slot is free again.
        for _ in range(100):
            if running.bridge.in_flight == 0:
                break
            threading.Event().wait(0.02)
        r = c2.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
        assert r.status_code == 200


def test_tokens_per_minute_counts_the_upstreams_reported_usage(
    start_bridge: Callable[..., Running], fake: FakeUpstream, client: httpx.Client
) -> None:
    limit = RateLimit(tokens_per_minute=10)  # the fake's default answer uses more
    running = start_bridge(policy=[limit])
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] > 10
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    body = assert_anthropic_error(r, 429)
    assert "10 tokens per minute" in body["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert len(fake.requests) == 1


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_down_through_the_bridge(
    fail: str,
    metered: Callable[..., tuple[Running, CollectorRegistry]],
    fake: FakeUpstream,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", fail=fail, timeout=0.3)  # type: ignore[arg-type]
    running, registry = metered(
        [RateLimit(requests_per_minute=1, store=store), ConcurrencyLimit(1, store)]
    )
    with caplog.at_level("WARNING", logger="aibridge_asgi.policy"):
        statuses = [
            client.post(
                running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY
            ).status_code
            for _ in range(3)
        ]
    errors = metric(registry, "aibridge_policy_store_errors_total", check="RateLimit", mode=fail)
    assert errors == 3
    if fail == "open":
        assert statuses == [200, 200, 200]  # the limit of 1/min is not enforced
        assert len(fake.requests) == 3
        assert (
            metric(
                registry,
                "aibridge_policy_store_errors_total",
                check="ConcurrencyLimit",
                mode="open",
            )
            == 3
        )
    else:
        assert statuses == [503, 503, 503]
        assert fake.requests == []
        r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
        body = assert_anthropic_error(r, 503)
        assert "cannot check its usage limits" in body["error"]["message"]
        assert r.headers["retry-after"] == "1"
    # Logged, but not once per request.
    assert 1 <= sum("policy store unavailable" in m for m in caplog.messages) <= 2


def test_cost_records_reach_the_budget_through_the_interceptions_tally() -> None:
    """The interception sums the amounts of its priced Cost records (what
    the price book emits after each TokenUsage) and hands the sum to
    Budget at the end; unpriced ones add nothing."""
    from aibridge_asgi.records import Cost, RecordQueue
    from aibridge_asgi.relay import Outcome

    clock = Clock(SUNDAY)
    budget = Budget(Decimal("1"), "day", MemoryStore(clock))
    policy = Policy([budget])

    async def go() -> None:
        started = request()
        refusal, pending = await policy.admit(started)
        assert refusal is None
        outcome = Outcome(SimpleNamespace(records=RecordQueue(None), hooks=()))  # type: ignore[arg-type]
        outcome.emit(Cost(started.interception_id, "anthropic", "m", Decimal("0.75")))
        outcome.emit(Cost(started.interception_id, "anthropic", "m", None))
        outcome.emit(Cost(started.interception_id, "anthropic", "m", Decimal("0.25")))
        assert outcome.cost == Decimal("1.00")
        await policy.finish(pending, started, ended(started), outcome)
        assert (await budget.status(ALICE)).spent == 1
        refusal, _ = await policy.admit(request())
        assert refusal is not None and refusal.message.startswith("daily AI budget of $1.00")

    run(go())


def test_budget_counts_the_priced_cost_records_end_to_end(
    start_bridge: Callable[..., Running], fake: FakeUpstream, client: httpx.Client
) -> None:
    """Through the bridge with its default price book: the spend Budget
    counts is the sum of the Cost records the recorder got, and the request
    after the one that crossed the limit is refused."""
    budget = Budget(Decimal("0.0002"), "month")
    running = start_bridge(policy=[budget])
    url = running.url + "/anthropic/v1/messages"
    assert client.post(url, headers=AUTH, json=MESSAGES_BODY).status_code == 200
    running.flush()
    [cost] = running.recorder.of_type(Cost)
    assert cost.amount is not None and 0 < cost.amount < Decimal("0.0002")
    assert running.server.call(budget.status(Actor("alice"))).spent == cost.amount
    assert client.post(url, headers=AUTH, json=MESSAGES_BODY).status_code == 200  # crosses
    r = client.post(url, headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 403 and "monthly AI budget of $0.0002 reached" in r.text
    running.flush()
    spent = running.server.call(budget.status(Actor("alice"))).spent
    assert spent == sum(c.amount for c in running.recorder.of_type(Cost) if c.amount)
    assert len(fake.requests) == 2


def test_each_websocket_turn_is_checked_before_it_goes_upstream(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    """Responses over WebSocket: every response.create is one interception,
    and the policy sees it before its frame is relayed. A refused turn gets
    an OpenAI-shaped error event, ends failed with the status, and the
    socket stays usable; the turn's slot is released when it ends."""
    import aiohttp

    from .test_websocket import HEADERS, create, read_turn, settle, ws_url

    store = MemoryStore()
    running = start_bridge(policy=[ModelAccess(deny=["o3*"]), Budget(Decimal("1"), "month", store)])
    asyncio.run(store.add(f"budget:month:{datetime.now(UTC):%Y-%m}-01:bob", Decimal(1), 3600))

    async def main() -> tuple[list[str], list[str], list[str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("first", model="o3-mini"))
            refused = await read_turn(ws)
            await ws.send_str(create("second"))
            admitted = await read_turn(ws)
        bob = {**HEADERS, "Authorization": f"Bearer {OTHER_TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=bob) as ws,
        ):
            await ws.send_str(create("over budget"))
            over = await read_turn(ws)
        return refused, admitted, over

    refused, admitted, over = asyncio.run(main())
    [event] = refused
    error = json.loads(event)
    assert (error["type"], error["status"], error["error"]["code"]) == (
        "error",
        403,
        "model_not_allowed",
    )
    assert json.loads(admitted[-1])["type"] == "response.completed"
    [event] = over
    error = json.loads(event)["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert error["message"].startswith("monthly AI budget of $1.00 reached")
    # Only the admitted turn's frame went upstream.
    creates = [c for ws in fake.websockets for c in ws.creates()]
    assert [c["input"][0]["content"] for c in creates] == ["second"]
    recorder = settle(running, 3)
    ends = {e.interception_id: e for e in recorder.of_type(InterceptionEnded)}
    starts = recorder.of_type(InterceptionStarted)
    assert [
        (ends[s.interception_id].status, ends[s.interception_id].http_status) for s in starts
    ] == [
        ("failed", 403),
        ("completed", 200),
        ("failed", 403),
    ]
    # The admitted turn's cost reached alice's budget.
    costs = [c.amount for c in recorder.of_type(Cost) if c.amount]
    assert costs and asyncio.run(_spent(store, "alice")) == sum(costs)


def _one_websocket_turn(running: Running) -> list[str]:
    """One response.create over a WebSocket to the bridge: its frames."""
    import aiohttp

    from .test_websocket import HEADERS, create, read_turn, ws_url

    async def main() -> list[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            return await read_turn(ws)

    return asyncio.run(main())


class _SlowToHear:
    """A check that admits everything and takes ``seconds`` to hear of an
    end (a remote store taking its time), then notes its status."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.told: list[str] = []

    async def check(self, request: InterceptionStarted) -> Refusal | None:
        return None

    async def ended(
        self, request: InterceptionStarted, ended: InterceptionEnded, usage: PolicyUsage
    ) -> None:
        await asyncio.sleep(self.seconds)
        self.told.append(ended.status)


def test_aclose_waits_for_the_policy_to_hear_of_websocket_turns(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    """A WebSocket turn's end is recorded at once and the policy hears of it
    in the background: closing the bridge waits for that, so a slot or a
    spend is never lost to a shutdown."""
    slow = _SlowToHear(0.5)
    running = start_bridge(policy=[slow])
    frames = _one_websocket_turn(running)
    assert json.loads(frames[-1])["type"] == "response.completed"
    running.server.call(running.bridge.aclose())
    assert slow.told == ["completed"]


def test_a_grace_period_bounds_the_wait_for_websocket_policy_ends(
    start_bridge: Callable[..., Running], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_bridge(policy=[_SlowToHear(30)])
    _one_websocket_turn(running)
    began = time.monotonic()
    running.server.call(running.bridge.aclose(grace_period=0.4))
    assert time.monotonic() - began < 3
    assert "policy end(s) unfinished at close" in caplog.text


async def _spent(store: MemoryStore, actor: str) -> Decimal:
    return await store.total(f"budget:month:{datetime.now(UTC):%Y-%m}-01:{actor}")


def test_gemini_refusals_in_googles_shape(
    start_bridge: Callable[..., Running], fake: FakeUpstream, client: httpx.Client
) -> None:
    """The Gemini routes are checked like the others; refusals come in
    Google's error shape (PERMISSION_DENIED, RESOURCE_EXHAUSTED)."""
    from .test_errors import assert_google_error

    running = start_bridge(
        policy=[ModelAccess(deny=["gemini-*-pro"]), RateLimit(requests_per_minute=1)]
    )
    goog = {"x-goog-api-key": HOST_TOKEN}
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = running.url + "/gemini/v1beta/models/{}:generateContent"
    r = client.post(url.format("gemini-2.5-pro"), headers=goog, json=body)
    error = assert_google_error(r, 403)["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert "model 'gemini-2.5-pro' is not allowed" in error["message"]
    assert client.post(url.format("gemini-2.5-flash"), headers=goog, json=body).status_code == 200
    r = client.post(url.format("gemini-2.5-flash"), headers=goog, json=body)
    error = assert_google_error(r, 429)["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert "limit of 1 request per minute" in error["message"]
    assert int(r.headers["retry-after"]) >= 55
    assert len(fake.requests) == 1
