"""What pricing adds to each request: the Cost record the bridge makes from a
TokenUsage with the default price book (target: under 20 us).

    .venv/bin/python bench/pricing.py [--n 20000]

Prints microseconds per Cost for a few usages (best of 5 rounds of ``--n``
calls each, the first lookup of each model excluded: it is cached), and the
same usage priced by genai-prices' own ``calc_price`` for comparison.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from aibridge_asgi import ProviderConfig, TokenUsage
from aibridge_asgi.pricing import Costing, default_prices

ANTHROPIC = ProviderConfig("anthropic", "anthropic", "k")
OPENAI = ProviderConfig("openai", "openai", "k")

CASES = [
    (
        "claude-sonnet-4-5, every kind",
        ANTHROPIC,
        "claude-sonnet-4-5-20250929",
        TokenUsage(
            "i",
            "r",
            1200,
            800,
            50_000,
            3000,
            {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
        ),
    ),
    (
        "claude-sonnet-4-5, past the tier",
        ANTHROPIC,
        "claude-sonnet-4-5",
        TokenUsage("i", "r", 250_000, 2000),
    ),
    (
        "gpt-5, cached + reasoning",
        OPENAI,
        "gpt-5",
        TokenUsage("i", "r", 2000, 3000, 6000, 0, {"reasoning_tokens": 2500}),
    ),
    ("unpriced model", OPENAI, "mystery-model", TokenUsage("i", "r", 10, 10)),
]


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of five rounds, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - began)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("aibridge_asgi.pricing").setLevel(logging.ERROR)  # the unpriced warning

    began = time.perf_counter()
    book = default_prices()
    loaded = time.perf_counter() - began
    costing = Costing(book)
    print(f"default price book loaded in {loaded * 1000:.0f} ms (once per process)")
    print(f"{'usage':36} {'Cost record':>12} {'calc_price':>12}")
    worst = 0.0
    when = datetime.now(UTC)
    for name, provider, model, usage in CASES:
        costing.cost(usage, provider, model)  # warm the lookup cache
        ours = per_call(partial(costing.cost, usage, provider, model), args.n)
        worst = max(worst, ours)
        theirs = "-"
        if book.price(model, provider, usage) is not None:
            from genai_prices import Usage, calc_price

            u = Usage(
                input_tokens=usage.input_tokens
                + usage.cache_read_input_tokens
                + usage.cache_write_input_tokens,
                cache_read_tokens=usage.cache_read_input_tokens,
                cache_write_tokens=usage.cache_write_input_tokens,
                output_tokens=usage.output_tokens,
            )

            def theirs_once(u: Usage = u, model: str = model, kind: str = provider.kind) -> object:
                return calc_price(u, model, provider_id=kind, genai_request_timestamp=when)

            us = per_call(theirs_once, max(args.n // 10, 100))
            theirs = f"{us:9.1f} us"
        print(f"{name:36} {ours:9.2f} us {theirs:>12}")
    verdict = "met" if worst < 20 else "NOT MET"
    print(f"worst case {worst:.2f} us per request; target < 20 us: {verdict}")


if __name__ == "__main__":
    main()
