"""Key pools with failover, bring-your-own-key, and credentials per actor.

The upstream is a :class:`KeyGate` in front of the fake provider: it notes
which key each call carried and answers 429/401/403 for chosen keys, like a
provider whose keys are rate limited or revoked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.types import Receive, Scope, Send

from aibridge_asgi import (
    Actor,
    CircuitBreakerConfig,
    InterceptionEnded,
    InterceptionStarted,
    ProviderConfig,
    RetryPolicy,
)
from aibridge_asgi.keys import Key, KeyCooldowns, KeyPool, parse_keys, rate_limit_wait
from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.otel import OpenTelemetryHooks
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    FakeResponse,
    FakeUpstream,
    ServerThread,
    streams,
)

from .conftest import HOST_TOKEN, Running

MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
HOST = {"x-api-key": HOST_TOKEN, "anthropic-version": "2023-06-01"}
POOL = ["sk-pool-first-111111", "sk-pool-second-22222", "sk-pool-third-333333"]
OPENAI_POOL = ["sk-openai-first-777777", "sk-openai-second-88888"]
USER_KEY = "sk-ant-user-own-key-444444"
OAUTH = "sk-ant-oat01-user-oauth-555555"
TEAM_KEY = "sk-team-red-key-666666"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class KeyGate:
    """An upstream that checks keys: refused keys get their scripted
    status; any other key is let through to the fake provider."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.refuse: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        #: Keys refused only this many more times (then let through).
        self.refuse_times: dict[str, int] = {}
        #: (path, key, every header) per call.
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    @property
    def seen(self) -> list[str]:
        return [key for _, key, _ in self.calls]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        key = (
            headers.get("x-api-key")
            or headers.get("api-key")
            or headers.get("authorization", "").partition(" ")[2]
        )
        self.calls.append((scope["path"], key, headers))
        if key in self.refuse and self.refuse_times.get(key, 1) > 0:
            if key in self.refuse_times:
                self.refuse_times[key] -= 1
            status, extra = self.refuse[key]
            body = json.dumps(
                {"type": "error", "error": {"type": "rate_limit_error", "message": "refused"}}
            ).encode()
            start_headers = [(b"content-type", b"application/json")]
            start_headers += [(k.encode(), v.encode()) for k, v in extra]
            await send({"type": "http.response.start", "status": status, "headers": start_headers})
            await send({"type": "http.response.body", "body": body})
            return
        kept = [
            (k, v)
            for k, v in scope["headers"]
            if k not in (b"x-api-key", b"authorization", b"api-key")
        ]
        kept.append((b"x-api-key", ANTHROPIC_KEY.encode()))
        await self.fake({**scope, "headers": kept}, receive, send)


@pytest.fixture
def gate(fake: FakeUpstream) -> KeyGate:
    return KeyGate(fake)


@pytest.fixture
def upstream(gate: KeyGate) -> Iterator[ServerThread]:
    with ServerThread(gate) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pooled(start_bridge: Callable[..., Running], clock: Clock) -> Callable[..., Running]:
    def start(**options: Any) -> Running:
        options.setdefault("provider_keys", {"anthropic": POOL, "openai": OPENAI_POOL})
        options.setdefault("key_cooldowns", KeyCooldowns(clock=clock))
        return start_bridge(**options)

    return start


def ended(running: Running) -> list[InterceptionEnded]:
    running.flush()
    return running.recorder.of_type(InterceptionEnded)


def post(
    client: httpx.Client, running: Running, body: Any = None, **headers: str
) -> httpx.Response:
    return client.post(
        running.url + "/anthropic/v1/messages",
        json=body or MESSAGE,
        headers={**HOST, **{k.replace("_", "-"): v for k, v in headers.items()}},
    )


# -- pools ------------------------------------------------------------------------


def test_failover_goes_through_the_keys_in_order(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled()
    gate.refuse[POOL[0]] = (429, [("retry-after", "20")])
    gate.refuse[POOL[1]] = (401, [])
    response = post(client, running)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert gate.seen == POOL  # the same request, key after key
    assert [c[2]["content-length"] for c in gate.calls] == [gate.calls[0][2]["content-length"]] * 3
    # The next request skips the keys that are cooling down.
    assert post(client, running).status_code == 200
    assert gate.seen == [*POOL, POOL[2]]
    ends = ended(running)
    assert [(e.credential, e.key_name, e.http_status) for e in ends] == [("pool", "2", 200)] * 2
    assert len(running.recorder.of_type(InterceptionStarted)) == 2


def test_cooldowns_expire_on_the_clock(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client, clock: Clock
) -> None:
    running = pooled(key_cooldowns=KeyCooldowns(rejected=600, clock=clock))
    gate.refuse[POOL[0]] = (429, [("retry-after", "20")])
    gate.refuse[POOL[1]] = (403, [])
    assert post(client, running).status_code == 200
    del gate.refuse[POOL[0]], gate.refuse[POOL[1]]
    clock.now += 19
    post(client, running)
    assert gate.seen[-1] == POOL[2]  # both still cooling
    clock.now += 2
    post(client, running)
    assert gate.seen[-1] == POOL[0]  # the rate limit is over
    clock.now += 600
    assert running.bridge._rt.keys.pools["anthropic"].cooling() == {}


def test_a_revoked_key_rests_longer_than_a_rate_limited_one(clock: Clock) -> None:
    pool = KeyPool(
        "anthropic",
        parse_keys(POOL),
        kind="anthropic",
        cooldowns=KeyCooldowns(rate_limited=30, rejected=900, clock=clock),
    )
    assert pool.put_aside("0", 429, []) == 30
    assert pool.put_aside("1", 401, []) == 900
    assert pool.put_aside("2", 500, []) is None
    assert pool.cooling() == {"0": 30, "1": 900}
    assert pool.retry_after() == 30
    available = pool.available()
    assert available is not None and available.name == "2"


def test_rate_limit_headers_set_the_cooldown(clock: Clock) -> None:
    now = clock.now
    stamp = datetime.fromtimestamp(now + 42, UTC).isoformat().replace("+00:00", "Z")
    later = datetime.fromtimestamp(now + 7, UTC).isoformat().replace("+00:00", "Z")
    anthropic = [
        (b"anthropic-ratelimit-tokens-reset", stamp.encode()),
        (b"anthropic-ratelimit-tokens-remaining", b"0"),
        (b"anthropic-ratelimit-requests-reset", later.encode()),
        (b"anthropic-ratelimit-requests-remaining", b"12"),
    ]
    assert rate_limit_wait(anthropic, now) == pytest.approx(42)  # the exhausted limit
    openai = [
        (b"x-ratelimit-reset-requests", b"1m30s"),
        (b"x-ratelimit-remaining-requests", b"0"),
        (b"x-ratelimit-reset-tokens", b"250ms"),
    ]
    assert rate_limit_wait(openai, now) == pytest.approx(90)
    assert rate_limit_wait([(b"x-ratelimit-reset-tokens", b"6m0s")], now) == 360
    assert rate_limit_wait([(b"retry-after", b"12"), *openai], now) == 12
    date = datetime.fromtimestamp(now + 60, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert rate_limit_wait([(b"retry-after", date.encode())], now) == pytest.approx(60)
    assert rate_limit_wait([(b"x-ratelimit-reset-tokens", b"soon")], now) is None
    assert rate_limit_wait([], now) is None
    # Through the pool: header first, default without one, capped.
    settings = KeyCooldowns(rate_limited=30, max_rate_limited=300, clock=clock)
    pool = KeyPool("openai", parse_keys(POOL), kind="openai", cooldowns=settings)
    assert pool.put_aside("0", 429, openai) == pytest.approx(90)
    assert pool.put_aside("1", 429, []) == 30
    assert pool.put_aside("2", 429, [(b"retry-after", b"86400")]) == 300


def test_every_key_cooling_down_answers_429_with_the_soonest_return(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client, clock: Clock
) -> None:
    running = pooled()
    gate.refuse[POOL[0]] = (429, [("retry-after", "40")])
    gate.refuse[POOL[1]] = (429, [("retry-after", "15")])
    gate.refuse[POOL[2]] = (401, [])
    # The last key's own answer reaches the client as the upstream sent it.
    last = post(client, running)
    assert last.status_code == 401
    assert last.json()["error"]["message"] == "refused"
    calls = len(gate.calls)
    clock.now += 5
    refused = post(client, running)
    assert len(gate.calls) == calls  # no upstream call at all
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "x-aibridge-interception-id" in refused.headers
    chat = client.post(
        running.url + "/openai/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {HOST_TOKEN}"},
    )
    assert chat.status_code == 200  # another provider instance, another pool
    # OpenAI's shape when its pool is cooling down.
    for key in OPENAI_POOL:
        gate.refuse[key] = (429, [("x-ratelimit-reset-requests", "3s")])
    for _ in range(2):
        chat = client.post(
            running.url + "/openai/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {HOST_TOKEN}"},
        )
    assert chat.status_code == 429
    assert chat.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat.headers["retry-after"] == "3"
    ends = ended(running)
    assert len(ends) == len(running.recorder.of_type(InterceptionStarted)) == 5
    assert (ends[1].http_status, ends[1].credential) == (429, None)


def test_a_single_key_is_never_put_aside(
    start_bridge: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = start_bridge(provider_keys={"anthropic": POOL[0]})
    gate.refuse[POOL[0]] = (429, [("retry-after", "30")])
    assert post(client, running).status_code == 429
    del gate.refuse[POOL[0]]
    assert post(client, running).status_code == 200  # it went upstream again
    assert gate.seen == [POOL[0], POOL[0]]


def test_streams_fail_over_before_the_first_byte_only(
    pooled: Callable[..., Running], gate: KeyGate, fake: FakeUpstream, client: httpx.Client
) -> None:
    running = pooled()
    gate.refuse[POOL[0]] = (429, [("retry-after", "20")])
    body = {**MESSAGE, "stream": True}
    response = post(client, running, body)
    assert response.status_code == 200
    assert b"message_stop" in response.content
    assert gate.seen == POOL[:2]
    # A stream that breaks after its first bytes is not sent again.
    events = streams.anthropic_events("partial answer")
    fake.enqueue(FakeResponse.sse(events[:3], cut=True))
    with client.stream(
        "POST", running.url + "/anthropic/v1/messages", json=body, headers=HOST
    ) as cut:
        assert cut.status_code == 200
        with pytest.raises(httpx.HTTPError):
            cut.read()
    assert gate.seen == [*POOL[:2], POOL[1]]
    # And a rate-limit error inside a started stream is relayed, not retried.
    limited = b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error"}}\n\n'
    fake.enqueue(FakeResponse.sse([*events[:3], limited]))
    answer = post(client, running, body)
    assert answer.status_code == 200 and b"rate_limit_error" in answer.content
    assert gate.seen == [*POOL[:2], POOL[1], POOL[1]]


def test_named_keys_and_provider_config_pools(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client, upstream: ServerThread
) -> None:
    azure = ProviderConfig(
        "azure",
        "openai",
        [Key(POOL[0], "east"), Key(POOL[1], "west")],
        base_url=upstream.url + "/v1",
        key_header="api-key",
    )
    running = pooled(
        provider_keys={"anthropic": {"primary": POOL[0], "backup": POOL[1]}}, providers=[azure]
    )
    gate.refuse[POOL[0]] = (429, [])
    assert post(client, running).status_code == 200
    chat = client.post(
        running.url + "/azure/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {HOST_TOKEN}", "api-key": "client-sent-this"},
    )
    assert chat.status_code == 200
    assert gate.calls[-1][2]["api-key"] == POOL[1]  # the pool's key, not the client's
    assert [(e.key_name) for e in ended(running)] == ["backup", "west"]


def test_passthrough_fails_over_too(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled()
    gate.refuse[POOL[0]] = (429, [])
    models = client.get(running.url + "/anthropic/v1/models", headers=HOST)
    assert models.status_code == 200 and models.json()["data"]
    assert gate.seen == POOL[:2]


def test_failover_does_not_trip_the_circuit_breaker(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, open_seconds=60))
    gate.refuse[POOL[0]] = (429, [("retry-after", "20")])
    assert post(client, running).status_code == 200
    assert post(client, running).status_code == 200  # the breaker stayed closed
    breakers = running.bridge._rt.breakers
    assert breakers is not None
    assert breakers.state(("anthropic", "/v1/messages", "claude-sonnet-4-5")) == "closed"


def test_a_status_retry_policy_waits_for_the_first_key_back(
    start_bridge: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    """With 429 in RetryPolicy.statuses, after the last key's 429 the bridge
    waits as the policy says, then takes the first key that is back."""
    retry = RetryPolicy(statuses=frozenset({429}), max_wait=3, backoff=0.01)
    running = start_bridge(provider_keys={"anthropic": POOL[:2]}, retry=retry)
    gate.refuse[POOL[0]] = gate.refuse[POOL[1]] = (429, [("retry-after", "1")])
    gate.refuse_times[POOL[0]] = 1
    response = post(client, running)
    assert response.status_code == 200, response.text
    assert gate.seen == [POOL[0], POOL[1], POOL[0]]
    assert [(e.credential, e.key_name) for e in ended(running)] == [("pool", "0")]


def test_key_specs_are_checked() -> None:
    assert [k.name for k in parse_keys(["a", Key("b", "named"), "c"])] == ["0", "named", "2"]
    assert "sk-secret" not in repr(Key("sk-secret", "n"))
    assert "sk-secret" not in repr(ProviderConfig("x", "openai", ["sk-secret"]))
    with pytest.raises(ValueError, match="empty"):
        parse_keys(["a", ""])
    with pytest.raises(ValueError, match="twice"):
        parse_keys(["a", "a"])
    with pytest.raises(ValueError, match="differ"):
        parse_keys([Key("a", "x"), Key("b", "x")])
    with pytest.raises(ValueError, match="key name"):
        Key("a", "no spaces")


# -- bring your own key ---------------------------------------------------------------


def test_byok_sends_the_users_key_upstream_and_records_the_actor(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled()
    response = client.post(
        running.url + "/anthropic/v1/messages",
        json=MESSAGE,
        headers={
            "x-aibridge-token": HOST_TOKEN,
            "x-api-key": USER_KEY,
            "anthropic-version": "2023-06-01",
        },
    )
    assert response.status_code == 200, response.text
    _, key, headers = gate.calls[-1]
    assert key == USER_KEY
    assert "x-aibridge-token" not in headers
    assert HOST_TOKEN not in json.dumps(headers)
    # An OAuth token (a Claude subscription) goes as sent, with its beta header.
    beta = "oauth-2025-04-20,claude-code-20250219"
    response = client.post(
        running.url + "/anthropic/v1/messages",
        json=MESSAGE,
        headers={
            "X-AIBridge-Token": HOST_TOKEN,
            "authorization": f"Bearer {OAUTH}",
            "anthropic-beta": beta,
            "anthropic-version": "2023-06-01",
        },
    )
    assert response.status_code == 200
    _, key, headers = gate.calls[-1]
    assert headers["authorization"] == f"Bearer {OAUTH}"
    assert headers["anthropic-beta"] == beta
    assert "x-api-key" not in headers
    started = running.recorder.of_type(InterceptionStarted)
    assert [s.actor.id for s in started] == ["alice", "alice"]
    assert [(e.credential, e.key_name) for e in ended(running)] == [("byok", "byok")] * 2


def test_byok_still_needs_a_valid_host_token(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled()
    url = running.url + "/anthropic/v1/messages"
    bad = client.post(
        url, json=MESSAGE, headers={"x-aibridge-token": "nope", "x-api-key": USER_KEY}
    )
    assert bad.status_code == 401
    assert bad.json()["error"]["type"] == "authentication_error"
    # Without the BYOK header the user's key is taken for a host token: refused.
    alone = client.post(url, json=MESSAGE, headers={"x-api-key": USER_KEY})
    assert alone.status_code == 401
    assert gate.calls == []
    # The host token in both headers is not a user credential: the pool serves.
    both = client.post(url, json=MESSAGE, headers={"x-aibridge-token": HOST_TOKEN, **HOST})
    assert both.status_code == 200
    assert gate.seen == [POOL[0]]
    assert ended(running)[-1].credential == "pool"


def test_byok_can_be_turned_off_or_allowed_per_provider(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled(byok=["openai"], byok_header="X-Gateway-Key")
    refused = client.post(
        running.url + "/anthropic/v1/messages",
        json=MESSAGE,
        headers={"x-gateway-key": HOST_TOKEN, "x-api-key": USER_KEY},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    allowed = client.post(
        running.url + "/openai/v1/chat/completions",
        json=CHAT,
        headers={"x-gateway-key": HOST_TOKEN, "authorization": f"Bearer {USER_KEY}"},
    )
    assert allowed.status_code == 200
    assert gate.seen == [USER_KEY]
    assert "x-gateway-key" not in gate.calls[-1][2]
    off = pooled(byok=False)
    refused = client.post(
        off.url + "/openai/v1/chat/completions",
        json=CHAT,
        headers={"x-aibridge-token": HOST_TOKEN, "authorization": f"Bearer {USER_KEY}"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    # The gateway header alone still works: the pool serves.
    plain = client.post(
        off.url + "/openai/v1/chat/completions",
        json=CHAT,
        headers={"x-aibridge-token": HOST_TOKEN},
    )
    assert plain.status_code == 200
    assert gate.seen == [USER_KEY, OPENAI_POOL[0]]
    with pytest.raises(ValueError, match="byok names"):
        pooled(byok=["gemini"])


def test_a_byok_key_is_not_failed_over(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    running = pooled()
    gate.refuse[USER_KEY] = (429, [("retry-after", "9")])
    response = post(client, running, x_aibridge_token=HOST_TOKEN, x_api_key=USER_KEY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "9"
    assert gate.seen == [USER_KEY]


# -- the actor's own credentials ----------------------------------------------------


def test_an_actors_own_key_replaces_the_pool(
    pooled: Callable[..., Running], gate: KeyGate, client: httpx.Client
) -> None:
    team = Actor("carol", {"team": "red"}, credentials={"anthropic": Key(TEAM_KEY, "team-red")})

    def resolve(token: str) -> Actor | None:
        return {HOST_TOKEN: Actor("alice"), "carol-token": team}.get(token)

    running = pooled(resolve_token=resolve)
    assert post(client, running, x_api_key="carol-token").status_code == 200
    assert gate.seen == [TEAM_KEY]
    chat = client.post(
        running.url + "/openai/v1/chat/completions",
        json=CHAT,
        headers={"authorization": "Bearer carol-token"},
    )
    assert chat.status_code == 200
    assert gate.seen == [TEAM_KEY, OPENAI_POOL[0]]  # no key of hers there: the pool
    assert post(client, running).status_code == 200
    assert gate.seen[-1] == POOL[0]
    started = running.recorder.of_type(InterceptionStarted)
    assert started[0].actor == Actor("carol", {"team": "red"})
    assert started[0].actor.credentials == {}
    assert TEAM_KEY not in repr(team)
    got = [(e.credential, e.key_name) for e in ended(running)]
    assert got == [("actor", "team-red"), ("pool", "0"), ("pool", "0")]


# -- no secret anywhere -----------------------------------------------------------------


def test_no_key_in_logs_records_or_metrics(
    pooled: Callable[..., Running],
    gate: KeyGate,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    team = Actor("carol", credentials={"anthropic": TEAM_KEY})

    def resolve(token: str) -> Actor | None:
        return {HOST_TOKEN: Actor("alice"), "carol-token": team}.get(token)

    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.set_level(logging.DEBUG)
    hooks = [PrometheusHooks(registry), OpenTelemetryHooks(tracing.get_tracer("keys"))]
    running = pooled(resolve_token=resolve, hooks=hooks)
    gate.refuse[POOL[0]] = (429, [("retry-after", "20")])
    gate.refuse[POOL[1]] = (401, [])
    assert post(client, running).status_code == 200
    assert post(client, running, {**MESSAGE, "stream": True}).status_code == 200
    assert client.get(running.url + "/anthropic/v1/models", headers=HOST).status_code == 200
    byok = post(client, running, x_aibridge_token=HOST_TOKEN, authorization=f"Bearer {OAUTH}")
    assert byok.status_code == 200
    assert post(client, running, x_api_key="carol-token").status_code == 200
    for key in POOL:
        gate.refuse[key] = (429, [])
    assert post(client, running).status_code == 429
    running.flush()
    records = running.recorder.records
    metrics = generate_latest(registry).decode()
    logs = "\n".join(f"{r.getMessage()} {r.__dict__!r} {r.exc_text or ''}" for r in caplog.records)
    spans = exporter.get_finished_spans()
    texts = {
        "spans": "\n".join(json.dumps(dict(s.attributes or {}), default=str) for s in spans),
        "metrics": metrics,
        "logs": logs,
        "records": "\n".join(repr(r) + json.dumps(asdict(r), default=str) for r in records),
    }
    for where, text in texts.items():
        for secret in (*POOL, *OPENAI_POOL, USER_KEY, OAUTH, TEAM_KEY):
            assert secret not in text, f"{secret} in {where}"
    # What they do say: the keys by name.
    assert 'aibridge_key_failovers_total{key="0",provider_name="anthropic",status="429"} 1.0' in (
        metrics
    )
    assert 'key="1",provider_name="anthropic",reason="rejected"} 1.0' in metrics
    assert 'aibridge_key_requests_total{credential="byok",key="byok"' in metrics
    assert 'aibridge_key_requests_total{credential="actor",key="actor"' in metrics
    assert "failing over from key 0 (429) to key 1" in logs
    ends = [r for r in records if isinstance(r, InterceptionEnded)]
    assert {e.credential for e in ends} == {"pool", "byok", "actor"}
    named = {
        (s.attributes.get("aibridge.credential"), s.attributes.get("aibridge.key_name"))
        for s in spans
        if s.attributes and "aibridge.status" in s.attributes
    }
    assert {("pool", "2"), ("byok", "byok"), ("actor", "actor")} <= named
