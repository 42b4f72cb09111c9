"""Prices: the default book against the providers' published prices, host
overrides, exact arithmetic (hypothesis), and no network at run time."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge_asgi import Cost, GenaiPrices, Price, PriceBook, ProviderConfig, Rates, TokenUsage
from aibridge_asgi.pricing import Costing, charge, default_prices

D = Decimal
M = 1_000_000
ANTHROPIC = ProviderConfig("anthropic", "anthropic", "k")
OPENAI = ProviderConfig("openai", "openai", "k")
GEMINI = ProviderConfig("gemini", "google", "k")
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def usage(
    input: int = 0,
    output: int = 0,
    read: int = 0,
    write: int = 0,
    **extra: int,
) -> TokenUsage:
    return TokenUsage("i", "r", input, output, read, write, extra, created_at=NOW)


@dataclass
class Row:
    """One usage and what the provider's price page says it costs."""

    what: str
    provider: ProviderConfig
    model: str
    usage: TokenUsage
    # (token count, published USD per million) for each kind billed
    billed: dict[str, tuple[int, str]]


# Published list prices, USD per million tokens (anthropic.com/pricing,
# platform.openai.com/pricing), written out by hand:
#   Claude Sonnet 4.5  in 3    out 15   cache read 0.30  write 5m 3.75  write 1h 6
#     prompts over 200k: in 6, out 22.50, read 0.60, write 5m 7.50, write 1h 12
#   Claude Opus 4.1    in 15   out 75   read 1.50  5m 18.75  1h 30
#   Claude Haiku 4.5   in 1    out 5    read 0.10  5m 1.25   1h 2
#   Anthropic web search: $10 per 1,000 searches
#   GPT-5              in 1.25 cached 0.125 out 10
#   GPT-5 mini         in 0.25 cached 0.025 out 2
#   GPT-4o             in 2.50 cached 1.25  out 10
#   GPT-5.4            in 2.50 cached 0.25  out 15; prompts over 272k: 5 / 0.50 / 22.50
# and ai.google.dev/pricing:
#   Gemini 2.5 Pro     in 1.25 cached 0.125 out 10 (thinking included);
#     prompts over 200k: 2.50 / 0.25 / 15
#   Gemini 2.5 Flash   in 0.30 out 2.50 (text input)
ROWS = [
    Row(
        "every Anthropic token kind",
        ANTHROPIC,
        "claude-sonnet-4-5",
        usage(
            1200,
            800,
            read=50_000,
            write=3000,
            ephemeral_5m_input_tokens=2000,
            ephemeral_1h_input_tokens=1000,
        ),
        {
            "input": (1200, "3"),
            "output": (800, "15"),
            "cache_read": (50_000, "0.30"),
            "cache_write_5m": (2000, "3.75"),
            "cache_write_1h": (1000, "6"),
        },
    ),
    Row(
        "a dated model id, cache writes with no TTL split are 5-minute ones",
        ANTHROPIC,
        "claude-sonnet-4-5-20250929",
        usage(10, 20, write=4000),
        {"input": (10, "3"), "output": (20, "15"), "cache_write_5m": (4000, "3.75")},
    ),
    Row(
        "a prompt past the 200k tier: every token at the long-context rates",
        ANTHROPIC,
        "claude-sonnet-4-5",
        usage(150_000, 2000, read=40_000, write=20_000, ephemeral_1h_input_tokens=20_000),
        {
            "input": (150_000, "6"),
            "output": (2000, "22.50"),
            "cache_read": (40_000, "0.60"),
            "cache_write_1h": (20_000, "12"),
        },
    ),
    Row(
        "exactly at the tier start is still the base rate",
        ANTHROPIC,
        "claude-sonnet-4-5",
        usage(200_000, 1),
        {"input": (200_000, "3"), "output": (1, "15")},
    ),
    Row(
        "Opus 4.1, both cache TTLs",
        ANTHROPIC,
        "claude-opus-4-1",
        usage(3, 1000, read=9000, write=700, ephemeral_1h_input_tokens=300),
        {
            "input": (3, "15"),
            "output": (1000, "75"),
            "cache_read": (9000, "1.50"),
            "cache_write_5m": (400, "18.75"),
            "cache_write_1h": (300, "30"),
        },
    ),
    Row(
        "Haiku 4.5 with thinking (billed as output) and web searches",
        ANTHROPIC,
        "claude-haiku-4-5",
        usage(500, 4000, web_search_requests=3),
        {"input": (500, "1"), "output": (4000, "5")},
    ),
    Row(
        "GPT-5: cached input and reasoning output",
        OPENAI,
        "gpt-5",
        usage(2000, 3000, read=6000, reasoning_tokens=2500),
        {"input": (2000, "1.25"), "cache_read": (6000, "0.125"), "output": (3000, "10")},
    ),
    Row(
        "GPT-5 mini",
        OPENAI,
        "gpt-5-mini",
        usage(1_000_000, 1_000_000, read=1_000_000),
        {"input": (M, "0.25"), "cache_read": (M, "0.025"), "output": (M, "2")},
    ),
    Row(
        "GPT-4o",
        OPENAI,
        "gpt-4o",
        usage(100, 10, read=1024),
        {"input": (100, "2.50"), "cache_read": (1024, "1.25"), "output": (10, "10")},
    ),
    Row(
        "GPT-5.4 past its 272k tier",
        OPENAI,
        "gpt-5.4",
        usage(100_000, 500, read=200_000),
        {"input": (100_000, "5"), "cache_read": (200_000, "0.50"), "output": (500, "22.50")},
    ),
    Row(
        "Gemini 2.5 Pro: cached input, thoughts billed as output",
        GEMINI,
        "gemini-2.5-pro",
        usage(12_000, 900, read=30_000, reasoning_tokens=600),
        {"input": (12_000, "1.25"), "cache_read": (30_000, "0.125"), "output": (900, "10")},
    ),
    Row(
        "Gemini 2.5 Pro past its 200k tier",
        GEMINI,
        "gemini-2.5-pro",
        usage(150_000, 2000, read=100_000),
        {"input": (150_000, "2.50"), "cache_read": (100_000, "0.25"), "output": (2000, "15")},
    ),
    Row(
        "Gemini 2.5 Flash",
        GEMINI,
        "gemini-2.5-flash",
        usage(40_000, 3000),
        {"input": (40_000, "0.30"), "output": (3000, "2.50")},
    ),
    Row(
        "GPT-5.4 below the tier",
        OPENAI,
        "gpt-5.4",
        usage(100_000, 500, read=100_000),
        {"input": (100_000, "2.50"), "cache_read": (100_000, "0.25"), "output": (500, "15")},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.what for r in ROWS])
def test_default_prices_match_the_published_ones(row: Row) -> None:
    price = default_prices().price(row.model, row.provider, row.usage)
    assert price is not None
    expected = {kind: D(count) * D(rate) / M for kind, (count, rate) in row.billed.items()}
    searches = row.usage.extra.get("web_search_requests", 0)
    if searches:
        expected["web_search"] = D(searches) * D(10) / 1000
    assert price.breakdown == expected
    assert price.amount == sum(expected.values())
    assert isinstance(price.amount, Decimal) and price.currency == "USD"


def test_prices_follow_the_date_of_the_request() -> None:
    # Sonnet 4.6 had a long-context tier until 2026-03-13, flat prices since.
    book = default_prices()
    big = {"input_tokens": 250_000, "output_tokens": 0}
    before = TokenUsage("i", "r", **big, created_at=datetime(2026, 3, 1, tzinfo=UTC))
    after = TokenUsage("i", "r", **big, created_at=datetime(2026, 3, 20, tzinfo=UTC))
    assert book.price("claude-sonnet-4-6", ANTHROPIC, before) == Price(
        D(250_000) * 6 / M, {"input": D(250_000) * 6 / M}
    )
    assert book.price("claude-sonnet-4-6", ANTHROPIC, after) == Price(
        D(250_000) * 3 / M, {"input": D(250_000) * 3 / M}
    )


def test_unknown_models_have_no_price() -> None:
    book = default_prices()
    assert book.price("my-finetune-v7", OPENAI, usage(10, 10)) is None
    assert book.price("", ANTHROPIC, usage(10, 10)) is None


def test_host_overrides_single_models_and_keeps_the_rest() -> None:
    vllm = ProviderConfig("vllm", "openai", "k", "http://10.0.0.5:8000/v1")
    book = GenaiPrices(
        {
            "claude-sonnet-4-5": Rates(D("2.4"), D(12), cache_read=D("0.24")),
            ("vllm", "qwen3-coder"): Rates.free(),
            "gpt-4o": None,  # the host does not want this one priced
        }
    )
    negotiated = book.price("claude-sonnet-4-5", ANTHROPIC, usage(M, M, read=M, write=M))
    # cache writes default to the input rate when the override does not say
    assert negotiated == Price(
        D("17.04"),
        {"input": D("2.4"), "cache_read": D("0.24"), "cache_write_5m": D("2.4"), "output": D(12)},
    )
    assert book.price("claude-haiku-4-5", ANTHROPIC, usage(M, 0)) == Price(D(1), {"input": D(1)})
    free = book.price("qwen3-coder", vllm, usage(5000, 100))
    assert free is not None and free.amount == 0
    assert free.breakdown == {"input": 0, "output": 0}
    # the override is for the vllm instance only
    assert book.price("qwen3-coder", OPENAI, usage(5000, 100)) is None
    assert book.price("gpt-4o", OPENAI, usage(1, 1)) is None
    # model names match case-insensitively, like the data's
    assert book.price("Claude-Sonnet-4-5", ANTHROPIC, usage(M, 0)) == Price(
        D("2.4"), {"input": D("2.4")}
    )


def test_provider_instances_are_priced_as_what_they_are() -> None:
    openrouter = ProviderConfig("openrouter", "openai", "k", "https://openrouter.ai/api/v1")
    azure = ProviderConfig("azure", "openai", "k", "https://acme.openai.azure.com/openai/v1")
    lab = ProviderConfig("lab", "anthropic", "k", "http://127.0.0.1:9/")
    book = GenaiPrices({("lab", "claude-haiku-4-5"): Rates(D(1), D(1))}, providers={"lab": None})
    # OpenRouter: its own model names and prices, found from the base URL
    routed = book.price("anthropic/claude-sonnet-4.5", openrouter, usage(100_000, 0))
    assert routed is not None and routed.amount == D("0.3")
    # Azure OpenAI: Azure's price list
    assert book.price("gpt-4o", azure, usage(M, 0)) == Price(D("2.5"), {"input": D("2.5")})
    # an instance the host says has no prices: only its overrides count
    assert book.price("claude-sonnet-4-5", lab, usage(M, 0)) is None
    assert book.price("claude-haiku-4-5", lab, usage(M, M)) == Price(
        D(2), {"input": D(1), "output": D(1)}
    )
    # an unknown base URL: priced as its kind
    proxy = ProviderConfig("proxy", "anthropic", "k", "http://10.1.2.3:8080")
    assert book.price("claude-haiku-4-5", proxy, usage(M, 0)) == Price(D(1), {"input": D(1)})
    # or as the provider the host names
    named = GenaiPrices(providers={"proxy": "openai"})
    assert named.price("gpt-5", proxy, usage(M, 0)) == Price(D("1.25"), {"input": D("1.25")})


def test_rates_refuse_floats_and_negative_amounts() -> None:
    with pytest.raises(TypeError, match="not float"):
        Rates(0.1, D(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        Rates(D(-1), D(1))
    with pytest.raises(ValueError, match="not a number"):
        Rates("cheap", D(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Rates or None"):
        GenaiPrices({"m": {"input": 1}})  # type: ignore[dict-item]
    assert Rates("1.5", 2).input == D("1.5")  # type: ignore[arg-type]


# -- exactness and monotonicity ----------------------------------------------

counts = st.integers(min_value=0, max_value=3_000_000)
prices = st.decimals(min_value=0, max_value=200, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def rate_tables(draw: st.DrawFn) -> Rates:
    """Rates with optional long-context tiers that never charge less."""
    base = [draw(prices) for _ in range(5)]
    write_1h = max(base[3], draw(prices))
    rates = Rates(base[0], base[1], base[2], base[3], write_1h, draw(prices))
    tiers = []
    current = rates
    for start in sorted(draw(st.sets(st.integers(1, 2_000_000), max_size=2))):
        bump = [draw(st.decimals(0, 5, places=3)) for _ in range(6)]
        current = Rates(
            current.input + bump[0],
            current.output + bump[1],
            current.cache_read + bump[2],  # type: ignore[operator]
            current.cache_write + bump[3],  # type: ignore[operator]
            current.cache_write_1h + bump[4],  # type: ignore[operator]
            current.web_search + bump[5],  # type: ignore[operator]
        )
        tiers.append((start, current))
    return Rates(
        rates.input,
        rates.output,
        rates.cache_read,
        rates.cache_write,
        rates.cache_write_1h,
        rates.web_search,
        tuple(tiers),
    )


@st.composite
def usages(draw: st.DrawFn) -> TokenUsage:
    write = draw(counts)
    return usage(
        draw(counts),
        draw(counts),
        read=draw(counts),
        write=write,
        ephemeral_1h_input_tokens=draw(st.integers(0, write)),
        web_search_requests=draw(st.integers(0, 50)),
    )


FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


def raised(u: TokenUsage, field: str, by: int) -> TokenUsage:
    values: dict[str, Any] = {f: getattr(u, f) for f in FIELDS}
    values[field] += by
    return TokenUsage("i", "r", **values, extra=u.extra, created_at=NOW)


@settings(max_examples=300, deadline=None)
@given(rate_tables(), usages())
def test_the_breakdown_sums_exactly_to_the_amount(rates: Rates, u: TokenUsage) -> None:
    price = charge(rates, u)
    assert sum(price.breakdown.values(), D(0)) == price.amount
    assert all(share >= 0 for share in price.breakdown.values())
    # and each share is count x rate, with no rounding anywhere
    r = rates.for_prompt(u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens)
    if u.input_tokens:
        assert price.breakdown["input"] * M == r.input * u.input_tokens


@settings(max_examples=300, deadline=None)
@given(rate_tables(), usages(), st.sampled_from(FIELDS), st.integers(1, 500_000))
def test_the_amount_never_falls_when_a_count_rises(
    rates: Rates, u: TokenUsage, field: str, by: int
) -> None:
    assert charge(rates, raised(u, field, by)).amount >= charge(rates, u).amount


MODELS = [
    (ANTHROPIC, "claude-sonnet-4-5"),
    (ANTHROPIC, "claude-opus-4-1"),
    (OPENAI, "gpt-5"),
    (OPENAI, "gpt-5.4"),
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MODELS), usages(), st.sampled_from(FIELDS), st.integers(1, 500_000))
def test_the_default_book_is_exact_and_monotone_too(
    model: tuple[ProviderConfig, str], u: TokenUsage, field: str, by: int
) -> None:
    provider, name = model
    book = default_prices()
    price, more = book.price(name, provider, u), book.price(name, provider, raised(u, field, by))
    assert price is not None and more is not None
    assert sum(price.breakdown.values(), D(0)) == price.amount
    assert more.amount >= price.amount


# -- the bridge's side ------------------------------------------------------------


def test_unpriced_models_are_logged_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    costing = Costing(default_prices())
    with caplog.at_level(logging.WARNING, "aibridge_asgi.pricing"):
        for _ in range(3):
            cost = costing.cost(usage(5, 5), OPENAI, "mystery-model")
            assert cost == Cost("i", "openai", "mystery-model", None, created_at=cost.created_at)
            assert not cost.priced
        costing.cost(usage(5, 5), OPENAI, "other-mystery")
        priced = costing.cost(usage(M, 0), OPENAI, "gpt-5")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "no price for model 'mystery-model' on provider 'openai'; its interceptions have no cost",
        "no price for model 'other-mystery' on provider 'openai'; its interceptions have no cost",
    ]
    assert priced.priced and priced.amount == D("1.25")
    assert priced.breakdown == {"input": D("1.25")}


def test_a_failing_price_book_gives_an_unpriced_cost(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def price(self, model: str, provider: ProviderConfig, usage: TokenUsage) -> Price | None:
            raise ZeroDivisionError("oops")

    assert isinstance(Broken(), PriceBook)
    cost = Costing(Broken()).cost(usage(1, 1), ANTHROPIC, "claude-haiku-4-5")
    assert cost.amount is None
    assert "price book Broken failed" in caplog.text


def test_prices_come_from_the_bundled_data_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building the default book and pricing with it opens no socket and
    starts no thread (genai-prices' updater is never started)."""
    import genai_prices.data_snapshot as snapshots

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    threads = set(threading.enumerate())
    book = GenaiPrices()
    for provider, model in MODELS:
        assert book.price(model, provider, usage(1000, 1000)) is not None
    assert set(threading.enumerate()) <= threads
    # a snapshot fetched by a host's own UpdatePrices would not be used either
    assert book._data is not snapshots.get_snapshot()
