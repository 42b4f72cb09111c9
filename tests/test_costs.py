"""Cost and ToolResult records through a real bridge on loopback: one Cost
after each TokenUsage and before InterceptionEnded, for every bridged API,
streamed or not, also when the client leaves mid-stream; metrics and spans."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aibridge_asgi import (
    Cost,
    GenaiPrices,
    InterceptionEnded,
    Price,
    ProviderConfig,
    Rates,
    TokenUsage,
    ToolResult,
)
from aibridge_asgi.apis import interception_for
from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.otel import OpenTelemetryHooks
from aibridge_asgi.routing import CHAT_COMPLETIONS, MESSAGES, RESPONSES
from aibridge_asgi.testing import FakeResponse, FakeUpstream, streams

from .conftest import HOST_TOKEN, Running
from .test_lifecycle import pair_by_id

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
D = Decimal
M = 1_000_000
USAGE = streams.Usage(input_tokens=3000, output_tokens=900, cache_read=20_000, cache_write=0)

# (path, model, body, answer(stream), published prices per million: in, cached, out)
CALLS: list[tuple[str, str, dict[str, Any], Callable[[bool], FakeResponse], tuple[str, ...]]] = [
    (
        "/anthropic/v1/messages",
        "claude-sonnet-4-5",
        {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        lambda stream: (
            FakeResponse.sse(streams.anthropic_events("hello", usage=USAGE))
            if stream
            else FakeResponse.json(streams.anthropic_message("hello", usage=USAGE))
        ),
        ("3", "0.30", "15"),
    ),
    (
        "/openai/v1/chat/completions",
        "gpt-5",
        {"messages": [{"role": "user", "content": "hi"}]},
        lambda stream: (
            FakeResponse.sse(streams.chat_events("hello", include_usage=True, usage=USAGE))
            if stream
            else FakeResponse.json(streams.chat_completion("hello", usage=USAGE))
        ),
        ("1.25", "0.125", "10"),
    ),
    (
        "/openai/v1/responses",
        "gpt-5-codex",
        {"input": "hi"},
        lambda stream: (
            FakeResponse.sse(streams.response_events("hello", usage=USAGE))
            if stream
            else FakeResponse.json(streams.response_object("hello", usage=USAGE))
        ),
        ("1.25", "0.125", "10"),
    ),
]


def expected_amount(rates: tuple[str, ...]) -> Decimal:
    inp, cached, out = (D(r) for r in rates)
    return (D(USAGE.input_tokens) * inp + D(USAGE.cache_read) * cached) / M + D(
        USAGE.output_tokens
    ) * out / M


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streamed"])
@pytest.mark.parametrize("call", CALLS, ids=[c[0].rsplit("/", 1)[1] for c in CALLS])
def test_one_cost_after_the_usage_and_before_the_end(
    running: Running, client: httpx.Client, fake: FakeUpstream, call: Any, stream: bool
) -> None:
    path, model, body, answer, rates = call
    fake.enqueue(answer(stream))
    r = client.post(
        running.url + path, headers=AUTH, json={**body, "model": model, "stream": stream}
    )
    assert r.status_code == 200
    interception_id = r.headers["x-aibridge-interception-id"]
    pair_by_id(running, interception_id)
    records = running.recorder.for_interception(interception_id)
    kinds = [type(rec).__name__ for rec in records]
    assert kinds.count("Cost") == 1 and kinds.count("TokenUsage") == 1, kinds
    assert kinds.index("TokenUsage") < kinds.index("Cost") < kinds.index("InterceptionEnded")
    (cost,) = [rec for rec in records if isinstance(rec, Cost)]
    assert cost.interception_id == interception_id
    assert (cost.provider_name, cost.model, cost.currency) == (
        path.split("/")[1],
        model,
        "USD",
    )
    assert cost.priced and cost.amount == expected_amount(rates)
    assert set(cost.breakdown) == {"input", "cache_read", "output"}
    assert sum(cost.breakdown.values()) == cost.amount


def test_a_cancelled_stream_is_priced_on_the_tokens_seen(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    events = streams.anthropic_events("a b c d e f g h i j", pieces=10, usage=USAGE)
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.1))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 9, "stream": True, "messages": []}
    with client.stream(
        "POST", running.url + "/anthropic/v1/messages", headers=AUTH, json=body
    ) as r:
        interception_id = r.headers["x-aibridge-interception-id"]
        assert next(r.iter_raw()).startswith(b"event: message_start")
    _, ended = pair_by_id(running, interception_id)
    assert ended.status == "cancelled"
    records = running.recorder.for_interception(interception_id)
    (usage,) = [rec for rec in records if isinstance(rec, TokenUsage)]
    (cost,) = [rec for rec in records if isinstance(rec, Cost)]
    assert records.index(usage) < records.index(cost) < len(records) - 1
    # message_start carried the input and cache counts, and one output token
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (3000, 20_000)
    expected = (D(3000) * 3 + D(20_000) * D("0.3") + D(usage.output_tokens) * 15) / M
    assert cost.amount == expected and usage.output_tokens < USAGE.output_tokens


def test_prices_none_turns_cost_off_and_a_host_book_sees_the_instance(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    off = start_bridge(prices=None)
    r = client.post(
        off.url + "/anthropic/v1/messages",
        headers=AUTH,
        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
    )
    interception_id = r.headers["x-aibridge-interception-id"]
    pair_by_id(off, interception_id)
    kinds = [type(rec).__name__ for rec in off.recorder.for_interception(interception_id)]
    assert "TokenUsage" in kinds and "Cost" not in kinds

    seen: list[tuple[str, ProviderConfig, TokenUsage]] = []

    class Flat:
        def price(self, model: str, provider: ProviderConfig, usage: TokenUsage) -> Price | None:
            seen.append((model, provider, usage))
            return Price(D("0.01"), {"request": D("0.01")}, currency="EUR")

    custom = start_bridge(prices=Flat())
    r = client.post(
        custom.url + "/openai/v1/chat/completions",
        headers=AUTH,
        json={"model": "my-model", "messages": [{"role": "user", "content": "x"}]},
    )
    interception_id = r.headers["x-aibridge-interception-id"]
    pair_by_id(custom, interception_id)
    (cost,) = custom.recorder.of_type(Cost)
    assert (cost.amount, cost.currency, dict(cost.breakdown)) == (
        D("0.01"),
        "EUR",
        {"request": D("0.01")},
    )
    ((model, provider, usage),) = seen
    assert (model, provider.name, provider.kind) == ("my-model", "openai", "openai")
    assert usage.interception_id == interception_id

    with pytest.raises(TypeError, match="PriceBook"):
        start_bridge(prices={"gpt-5": 1})


def test_unpriced_models_have_a_cost_without_amount(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    running = start_bridge(
        prices=GenaiPrices({"house-model": None, "cheap-model": Rates(D(1), D(2))})
    )
    ids = []
    for model in ("house-model", "cheap-model"):
        r = client.post(
            running.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        )
        ids.append(r.headers["x-aibridge-interception-id"])
        pair_by_id(running, ids[-1])
    unpriced, priced = (
        next(r for r in running.recorder.for_interception(i) if isinstance(r, Cost)) for i in ids
    )
    assert unpriced.amount is None and not unpriced.priced and unpriced.breakdown == {}
    # the fake's default usage: 12 input, 7 output
    assert priced.amount == D(12 * 1 + 7 * 2) / M


def test_tool_results_sent_back_are_recorded_without_content_by_default(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "list files"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py\nbé.py"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "denied"}],
                    },
                ],
            },
        ],
    }
    for keep in (None, 6):
        running = start_bridge(tool_result_content=keep)
        r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=body)
        interception_id = r.headers["x-aibridge-interception-id"]
        pair_by_id(running, interception_id)
        results = running.recorder.of_type(ToolResult)
        assert [(t.tool_call_id, t.is_error, t.size) for t in results] == [
            ("toolu_1", False, len("a.py\nbé.py".encode())),
            ("toolu_2", True, len('[{"type":"text","text":"denied"}]')),
        ]
        assert all(t.interception_id == interception_id for t in results)
        if keep is None:
            assert [(t.content, t.truncated) for t in results] == [(None, False), (None, False)]
        else:
            assert [(t.content, t.truncated) for t in results] == [
                ("a.py\nb", True),
                ('[{"typ', True),
            ]
    with pytest.raises(ValueError, match="tool_result_content"):
        start_bridge(tool_result_content=-1)


def test_cost_metrics_and_span_attribute(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = start_bridge(
        hooks=[PrometheusHooks(registry), OpenTelemetryHooks(tracer_provider.get_tracer("t"))],
        prices=GenaiPrices({"house-model": None}),
    )
    ids = []
    for model in ("gpt-5", "gpt-5", "house-model"):
        fake.enqueue(FakeResponse.json(streams.chat_completion("hi", usage=USAGE)))
        r = client.post(
            running.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={
                "model": model,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
            },
        )
        ids.append(r.headers["x-aibridge-interception-id"])
        pair_by_id(running, ids[-1])
    one = expected_amount(("1.25", "0.125", "10"))
    total = registry.get_sample_value(
        "aibridge_cost_usd_total", {"provider_name": "openai", "model": "gpt-5"}
    )
    assert total == pytest.approx(float(2 * one))
    assert (
        registry.get_sample_value(
            "aibridge_unpriced_total", {"provider_name": "openai", "model": "house-model"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "aibridge_tool_results_total",
            {"provider_name": "openai", "model": "gpt-5", "is_error": "false"},
        )
        == 2
    )
    spans = {
        span.attributes["aibridge.interception_id"]: span
        for span in exporter.get_finished_spans()
        if span.name.startswith("chat ") and span.attributes
    }
    priced = spans[ids[0]].attributes or {}
    assert priced["aibridge.cost.usd"] == pytest.approx(float(one))
    assert D(str(priced["aibridge.cost.usd_exact"])) == one
    unpriced = spans[ids[2]].attributes or {}
    assert "aibridge.cost.usd" not in unpriced and unpriced["aibridge.cost.unpriced"] is True
    assert all(isinstance(r, InterceptionEnded) for r in [running.recorder.records[-1]])


def tool_results(route: str, body: dict[str, Any], keep: int | None = None) -> list[Any]:
    api = interception_for(route, "iid", body, keep)
    return [
        (r.tool_call_id, r.is_error, r.size, r.content)
        for r in api.drain()
        if isinstance(r, ToolResult)
    ]


def test_only_the_results_of_the_model_s_last_turn_are_recorded() -> None:
    """Clients resend the whole conversation: results answered in earlier
    turns are not recorded again."""
    chat = {
        "model": "gpt-5",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "old"}]},
            {"role": "tool", "tool_call_id": "old", "content": "earlier"},
            {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]},
            {"role": "tool", "tool_call_id": "a", "content": "x" * 10},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "y"}]},
        ],
    }
    assert tool_results(CHAT_COMPLETIONS, chat, keep=3) == [
        ("a", False, 10, "xxx"),
        ("b", False, len('[{"type":"text","text":"y"}]'), '[{"'),
    ]
    chat["messages"].append({"role": "user", "content": "thanks"})
    assert tool_results(CHAT_COMPLETIONS, chat) == []

    responses = {
        "model": "gpt-5-codex",
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "old", "name": "sh", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "old", "output": "earlier"},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "sh", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "patch", "input": "..."},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "ok"},
        ],
    }
    assert tool_results(RESPONSES, responses) == [
        ("c1", False, 4, None),
        ("c2", False, 2, None),
    ]
    # without reasoning between turns, the last calls still bound the search
    items = responses["input"]
    del items[3]
    assert [r[0] for r in tool_results(RESPONSES, responses)] == ["c1", "c2"]
    assert tool_results(RESPONSES, {"model": "m", "input": "just text"}) == []

    messages = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0"}]},
            {"role": "assistant", "content": "ok"},
        ],
    }
    assert tool_results(MESSAGES, messages) == []
    messages["messages"].append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ""}]}
    )
    assert tool_results(MESSAGES, messages, keep=0) == [("t1", False, 0, "")]
