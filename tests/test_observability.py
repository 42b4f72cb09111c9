"""Prometheus metrics, OpenTelemetry spans and the structured end log, checked
with a real CollectorRegistry and the OTel SDK's in-memory exporter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.otel import OpenTelemetryHooks
from aibridge_asgi.testing import ANTHROPIC_KEY, FakeResponse, FakeUpstream, streams

from .conftest import HOST_TOKEN, Running

AUTH = {"x-api-key": HOST_TOKEN, "anthropic-version": "2023-06-01"}
MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "what is in main.py?"}],
}
USAGE = streams.Usage(input_tokens=30, output_tokens=9, cache_read=100, cache_write=5)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def observed(
    start_bridge: Callable[..., Running], exporter: InMemorySpanExporter
) -> Iterator[tuple[Running, CollectorRegistry]]:
    registry = CollectorRegistry()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hooks = [
        PrometheusHooks(registry, max_label_values=3),
        OpenTelemetryHooks(provider.get_tracer("test"), upstream_spans=True, record_spans=True),
    ]
    yield start_bridge(hooks=hooks), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def test_streaming_call_metrics_spans_and_log(
    observed: tuple[Running, CollectorRegistry],
    fake: FakeUpstream,
    client: httpx.Client,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, registry = observed
    tool = streams.ToolCall("Read", {"file_path": "main.py"}, id="toolu_1")
    fake.enqueue(FakeResponse.sse(streams.anthropic_events("ok", tool_calls=[tool], usage=USAGE)))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caplog.set_level(logging.INFO, logger="aibridge_asgi.interceptions")
    headers = {
        **AUTH,
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        "user-agent": "claude-cli/2.1.328 (external, sdk-cli)",
    }
    r = client.post(
        running.url + "/anthropic/v1/messages", headers=headers, json={**MESSAGE, "stream": True}
    )
    assert r.status_code == 200
    running.recorder.wait_ended()
    running.flush()

    base = {"provider_name": "anthropic", "model": "claude-sonnet-4-5"}
    assert value(registry, "aibridge_tokens_total", **base, type="input") == 30
    assert value(registry, "aibridge_tokens_total", **base, type="output") == 9
    assert value(registry, "aibridge_tokens_total", **base, type="cache_read") == 100
    assert value(registry, "aibridge_tokens_total", **base, type="cache_write") == 5
    assert value(registry, "aibridge_prompts_total", **base, client="Claude Code") == 1
    assert value(registry, "aibridge_tool_calls_total", **base, tool="Read", injected="false") == 1
    labels = {"provider_name": "anthropic", "route": "/v1/messages"}
    assert (
        value(
            registry,
            "aibridge_interceptions_total",
            provider="anthropic",
            **labels,
            model="claude-sonnet-4-5",
            client="Claude Code",
            status="completed",
        )
        == 1
    )
    assert value(registry, "aibridge_interceptions_in_flight", **labels) == 0
    assert (
        value(registry, "aibridge_interception_duration_seconds_count", **labels, streaming="true")
        == 1
    )
    assert (
        value(registry, "aibridge_time_to_first_byte_seconds_count", **labels, streaming="true")
        == 1
    )
    assert value(registry, "aibridge_overhead_seconds_count", **labels) == 1
    assert (
        value(registry, "aibridge_recorder_duration_seconds_count", record="InterceptionEnded") == 1
    )

    (span,) = spans_named(exporter, "chat ")
    assert span.name == "chat claude-sonnet-4-5"
    assert format(span.context.trace_id, "032x") == trace_id  # incoming context honoured
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.system"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert attributes["gen_ai.usage.input_tokens"] == 130  # input incl. cache reads
    assert attributes["gen_ai.usage.output_tokens"] == 9
    assert attributes["gen_ai.response.id"] == "msg_fake_01"
    assert attributes["enduser.id"] == "alice"
    (upstream_span,) = spans_named(exporter, "POST upstream")
    assert upstream_span.parent is not None and upstream_span.parent.span_id == span.context.span_id
    # The upstream got the upstream span's context, in the same trace.
    sent = propagate.extract({"traceparent": fake.last().header("traceparent") or ""})
    from opentelemetry import trace

    assert trace.get_current_span(sent).get_span_context().span_id == upstream_span.context.span_id
    records = spans_named(exporter, "record ")
    assert {s.name for s in records} >= {"record InterceptionStarted", "record InterceptionEnded"}
    assert all(s.parent is not None and s.parent.span_id == span.context.span_id for s in records)

    (log,) = [r for r in caplog.records if r.name == "aibridge_asgi.interceptions"]
    fields = log.__dict__["aibridge"]
    assert fields["status"] == "completed"
    assert fields["actor_id"] == "alice"
    assert (fields["input_tokens"], fields["output_tokens"]) == (30, 9)
    assert fields["client"] == "Claude Code"
    text = caplog.text
    assert HOST_TOKEN not in text and ANTHROPIC_KEY not in text


def test_blocking_error_and_cardinality(
    observed: tuple[Running, CollectorRegistry],
    fake: FakeUpstream,
    client: httpx.Client,
    exporter: InMemorySpanExporter,
) -> None:
    running, registry = observed
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.enqueue(FakeResponse.json(error, status=529))
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGE)
    assert r.status_code == 529
    for n in range(5):  # more distinct models than max_label_values=3
        r = client.post(
            running.url + "/anthropic/v1/messages", headers=AUTH, json={**MESSAGE, "model": f"m{n}"}
        )
        assert r.status_code == 200
    running.recorder.wait_ended(6)
    running.flush()
    labels = {"provider_name": "anthropic", "route": "/v1/messages"}
    assert value(registry, "aibridge_upstream_errors_total", **labels, status="529") == 1
    failed = [s for s in spans_named(exporter, "chat ") if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1
    models = {
        s.labels["model"]
        for metric in registry.collect()
        if metric.name == "aibridge_interceptions"
        for s in metric.samples
    }
    assert models == {"claude-sonnet-4-5", "m0", "m1", "other"}


def test_default_tracing_has_one_span_per_interception(
    start_bridge: Callable[..., Running],
    fake: FakeUpstream,
    client: httpx.Client,
    exporter: InMemorySpanExporter,
) -> None:
    """By default: the interception's span alone (no upstream or record
    spans), and the upstream gets its context."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = start_bridge(hooks=[OpenTelemetryHooks(provider.get_tracer("test"))])
    for _ in range(3):
        fake.enqueue(FakeResponse.json(streams.anthropic_message("hi", usage=USAGE)))
        r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGE)
        assert r.status_code == 200
    running.recorder.wait_ended(3)
    running.flush()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat claude-sonnet-4-5"] * 3
    sent = propagate.extract({"traceparent": fake.last().header("traceparent") or ""})
    from opentelemetry import trace

    assert trace.get_current_span(sent).get_span_context().span_id == spans[-1].context.span_id
    attributes = dict(spans[-1].attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == 9
    assert attributes["http.response.status_code"] == 200


def test_disconnect_and_passthrough(
    observed: tuple[Running, CollectorRegistry],
    fake: FakeUpstream,
    client: httpx.Client,
    exporter: InMemorySpanExporter,
) -> None:
    running, registry = observed
    events = streams.anthropic_events("slow answer", pieces=10)
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.2))
    with client.stream(
        "POST",
        running.url + "/anthropic/v1/messages",
        headers=AUTH,
        json={**MESSAGE, "stream": True},
    ) as r:
        next(r.iter_raw())
    (end,) = running.recorder.wait_ended()
    assert end.status == "cancelled"
    r = client.get(running.url + "/anthropic/v1/models", headers=AUTH)
    assert r.status_code == 200
    running.flush()
    assert (
        value(
            registry,
            "aibridge_interceptions_total",
            provider="anthropic",
            provider_name="anthropic",
            route="/v1/messages",
            model="claude-sonnet-4-5",
            client="unknown",
            status="cancelled",
        )
        == 1
    )
    assert (
        value(
            registry,
            "aibridge_interceptions_in_flight",
            provider_name="anthropic",
            route="/v1/messages",
        )
        == 0
    )
    assert (
        value(
            registry,
            "aibridge_passthrough_requests_total",
            provider_name="anthropic",
            method="GET",
            status="200",
        )
        == 1
    )
    (span,) = spans_named(exporter, "chat ")
    assert dict(span.attributes or {})["aibridge.status"] == "cancelled"
    assert span.status.status_code != StatusCode.ERROR


def test_grafana_dashboard_uses_only_these_metrics() -> None:
    """Every metric the example dashboard queries is one PrometheusHooks exports."""
    import json
    import re
    from pathlib import Path

    registry = CollectorRegistry()
    PrometheusHooks(registry)
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    exported = {
        metric.name + suffix for metric in registry.collect() for suffix in suffixes[metric.type]
    }
    dashboard = json.loads(
        (Path(__file__).parent.parent / "examples" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\baibridge_[a-z_]+", expr)}
    assert len(dashboard["panels"]) >= 10
    assert used and used <= exported, used - exported
