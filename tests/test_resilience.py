"""Retries before the first byte, and circuit breakers per provider/route/model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx
from prometheus_client import CollectorRegistry

from aibridge_asgi import CircuitBreakerConfig, RetryPolicy, Timeouts
from aibridge_asgi.breaker import CircuitBreakers
from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.testing import FakeResponse, FakeUpstream, streams
from aibridge_asgi.upstream import AiohttpUpstream, UpstreamResponse, UpstreamUnreachable

from .conftest import HOST_TOKEN, Running

AUTH = {"x-api-key": HOST_TOKEN, "anthropic-version": "2023-06-01"}
MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
KEY = ("anthropic", "/v1/messages", "claude-sonnet-4-5")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_state_machine() -> None:
    clock = Clock()
    changes: list[str] = []
    config = CircuitBreakerConfig(failure_threshold=3, open_seconds=10, half_open_probes=1)
    breakers = CircuitBreakers(config, lambda key, state: changes.append(state), clock)
    for _ in range(2):
        assert breakers.acquire(KEY) is None
        breakers.record(KEY, True)
    assert breakers.acquire(KEY) is None
    breakers.record(KEY, False)  # a success resets the run of failures
    for _ in range(3):
        assert breakers.acquire(KEY) is None
        breakers.record(KEY, True)
    assert breakers.state(KEY) == "open"
    assert breakers.acquire(KEY) == 10
    clock.now += 4.2
    assert breakers.acquire(KEY) == 6  # Retry-After counts down
    assert breakers.acquire(("anthropic", "/v1/messages", "other-model")) is None
    clock.now += 6
    assert breakers.acquire(KEY) is None  # the half-open probe
    assert breakers.state(KEY) == "half_open"
    assert breakers.acquire(KEY) is not None  # only one probe at a time
    breakers.record(KEY, True)  # the probe failed: open again
    assert breakers.state(KEY) == "open"
    clock.now += 10
    assert breakers.acquire(KEY) is None
    breakers.record(KEY, None)  # client left: no verdict, probe slot freed
    assert breakers.acquire(KEY) is None
    breakers.record(KEY, False)
    assert breakers.state(KEY) == "closed"
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_open_breaker_answers_503_without_calling_upstream(
    start_bridge: Callable[..., Running], fake: FakeUpstream, client: httpx.Client
) -> None:
    registry = CollectorRegistry()
    running = start_bridge(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, open_seconds=0.6),
        hooks=[PrometheusHooks(registry)],
    )
    url = running.url + "/anthropic/v1/messages"
    fake.enqueue(FakeResponse.json(OVERLOADED, status=529))
    # A mid-stream overload error counts too.
    events = streams.anthropic_events("partial")
    fake.enqueue(
        FakeResponse.sse(
            [
                *events[:3],
                b'event: error\ndata: {"type":"error","error":'
                b'{"type":"overloaded_error","message":"Overloaded"}}\n\n',
            ]
        )
    )
    assert client.post(url, headers=AUTH, json=MESSAGE).status_code == 529
    assert client.post(url, headers=AUTH, json={**MESSAGE, "stream": True}).status_code == 200
    calls = len(fake.requests)
    refused = client.post(url, headers=AUTH, json=MESSAGE)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "not calling it" in body["error"]["message"]
    assert len(fake.requests) == calls  # the upstream was not called
    # Another model is not affected.
    other = client.post(url, headers=AUTH, json={**MESSAGE, "model": "claude-haiku-4-5"})
    assert other.status_code == 200
    ends = running.recorder.wait_ended(4)
    assert [(e.status, e.http_status) for e in ends][2] == ("failed", 503)
    labels = {"provider_name": "anthropic", "route": "/v1/messages", "model": "claude-sonnet-4-5"}
    assert registry.get_sample_value("aibridge_circuit_state", labels) == 2
    assert registry.get_sample_value("aibridge_circuit_trips_total", labels) == 1
    assert registry.get_sample_value("aibridge_circuit_rejects_total", labels) == 1
    time.sleep(0.7)
    assert client.post(url, headers=AUTH, json=MESSAGE).status_code == 200  # probe
    assert client.post(url, headers=AUTH, json=MESSAGE).status_code == 200
    assert registry.get_sample_value("aibridge_circuit_state", labels) == 0


def test_retry_on_status_honours_retry_after(
    start_bridge: Callable[..., Running], fake: FakeUpstream, client: httpx.Client
) -> None:
    running = start_bridge(
        retry=RetryPolicy(max_retries=2, statuses=frozenset({529}), max_wait=1.0, backoff=0.01)
    )
    url = running.url + "/anthropic/v1/messages"
    fake.enqueue(FakeResponse.json(OVERLOADED, status=529, headers=[("retry-after", "0.2")]))
    r = client.post(url, headers=AUTH, json=MESSAGE)
    assert r.status_code == 200
    assert len(fake.requests) == 2
    # A Retry-After past max_wait is not waited for: the client gets the 529.
    fake.requests.clear()
    fake.enqueue(FakeResponse.json(OVERLOADED, status=529, headers=[("retry-after", "30")]))
    r = client.post(url, headers=AUTH, json=MESSAGE)
    assert r.status_code == 529 and r.headers["retry-after"] == "30"
    assert len(fake.requests) == 1


def test_default_policy_does_not_retry_statuses(
    running: Running, fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.enqueue(FakeResponse.json(OVERLOADED, status=529))
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGE)
    assert r.status_code == 529
    assert len(fake.requests) == 1


class FlakyUpstream(AiohttpUpstream):
    """Fails the first ``failures`` sends with a connect-phase error."""

    def __init__(self, failures: int, before_send: bool) -> None:
        super().__init__(Timeouts())
        self.failures = failures
        self.before_send = before_send
        self.sends = 0

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        self.sends += 1
        if self.sends <= self.failures:
            raise UpstreamUnreachable("refused", before_send=self.before_send)
        return await super().send(method, url, headers, body)


def test_connect_failures_are_retried_once_by_default(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    flaky = FlakyUpstream(failures=1, before_send=True)
    running = start_bridge(upstream=flaky)
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGE)
    assert r.status_code == 200
    assert flaky.sends == 2

    # A failure after the request may have reached the upstream: no retry.
    unsure = FlakyUpstream(failures=1, before_send=False)
    running = start_bridge(upstream=unsure)
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGE)
    assert r.status_code == 502
    assert unsure.sends == 1
