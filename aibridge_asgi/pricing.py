"""Prices: what an interception's tokens cost, in exact decimals.

A *price book* turns a model, the provider instance that served it and a
:class:`~aibridge_asgi.records.TokenUsage` into a :class:`Price` (a
``Decimal`` amount in USD and its breakdown by token kind), or ``None`` when
it has no price for that model. The bridge asks it once per usage record and
hands the host a :class:`~aibridge_asgi.records.Cost` record.

The default book, :class:`GenaiPrices`, reads the price data that ships with
the `genai-prices <https://pypi.org/project/genai-prices/>`_ package (an
offline snapshot, updated with each release); it never fetches prices over
the network. Hosts layer their own :class:`Rates` over it for single models
(negotiated rates, a self-hosted model at zero) and say how each provider
instance is priced::

    prices = GenaiPrices(
        overrides={
            "claude-sonnet-4-5": Rates(Decimal("2.4"), Decimal("12")),  # negotiated
            ("vllm", "qwen3-coder"): Rates.free(),                     # self-hosted
        },
        providers={"azure": "azure", "lab": None},                   # lab: unpriced
    )
    bridge = create_bridge(..., prices=prices)

What is charged, per million tokens unless said otherwise:

* ``input``: uncached input tokens;
* ``cache_read``: input read from the prompt cache (OpenAI cached input,
  Anthropic cache hits);
* ``cache_write_5m`` and ``cache_write_1h``: Anthropic cache writes at the
  5-minute and 1-hour rates (split by ``TokenUsage.extra``'s
  ``ephemeral_1h_input_tokens``; writes without a split are 5-minute ones);
* ``output``: output tokens, reasoning included (providers bill reasoning as
  output);
* ``web_search``: Anthropic server-side web searches, per thousand.

Long-context tiers apply as the providers bill them: once the whole prompt
(uncached + cache reads + cache writes) passes a tier's start, every token of
the request is charged at that tier's rates.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Protocol, TypeAlias, runtime_checkable

from .config import ProviderConfig
from .records import Cost, TokenUsage

__all__ = [
    "GenaiPrices",
    "Price",
    "PriceBook",
    "Rates",
    "charge",
    "default_prices",
]

logger = logging.getLogger("aibridge_asgi.pricing")

# Exact arithmetic whatever the thread's decimal context: products and sums
# of prices (a few digits) and token counts (at most ~12) stay far below 60.
_CTX = Context(prec=60)
_ZERO = Decimal(0)
_ONE = Decimal(1)

#: The breakdown's keys, in the order they appear.
TOKEN_KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "web_search")

_RATE_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "web_search")
_ONE_HOUR = "ephemeral_1h_input_tokens"
_WEB_SEARCHES = "web_search_requests"
#: How many (provider, model) lookups the default book remembers.
_CACHE_SIZE = 4096


def _decimal(name: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float | bool):
        raise TypeError(f"Rates.{name} must be a Decimal, int or str, not {type(value).__name__}")
    if not isinstance(value, Decimal | int | str):
        raise TypeError(f"Rates.{name} must be a Decimal, not {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"Rates.{name}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"Rates.{name} must be a finite, non-negative amount, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Rates:
    """One model's prices in USD per million tokens (``web_search`` per
    thousand searches), as ``Decimal`` (an ``int`` or a ``str`` is converted;
    a float is refused: it is not exact).

    ``cache_read`` and ``cache_write`` default to the ``input`` rate,
    ``cache_write_1h`` to ``cache_write``; ``web_search`` defaults to free.
    ``tiers`` are long-context prices: ``((200_000, Rates(...)),)`` charges a
    request whose prompt is above 200,000 tokens at those rates, all of it.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    web_search: Decimal | None = None
    tiers: tuple[tuple[int, Rates], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in (
            "input",
            "output",
            "cache_read",
            "cache_write",
            "cache_write_1h",
            "web_search",
        ):
            object.__setattr__(self, name, _decimal(name, getattr(self, name)))
        tiers = tuple(sorted(self.tiers, key=lambda tier: tier[0]))
        for start, rates in tiers:
            if not isinstance(start, int) or start < 0 or not isinstance(rates, Rates):
                raise ValueError("Rates.tiers holds (start: int >= 0, Rates) pairs")
        object.__setattr__(self, "tiers", tiers)

    @classmethod
    def free(cls) -> Rates:
        """Zero for everything (a self-hosted model)."""
        return cls(input=_ZERO, output=_ZERO)

    def for_prompt(self, prompt_tokens: int) -> Rates:
        """The rates that apply to a request with this many prompt tokens."""
        chosen = self
        for start, rates in self.tiers:
            if prompt_tokens > start:
                chosen = rates
            else:
                break
        return chosen


@dataclass(frozen=True, slots=True)
class Price:
    """What a price book answers: ``amount`` in ``currency`` and the share of
    each token kind (which sums exactly to ``amount``)."""

    amount: Decimal
    breakdown: Mapping[str, Decimal]
    currency: str = "USD"


@runtime_checkable
class PriceBook(Protocol):
    """Anything that prices usage. Called on the request path (after the
    response): it must be quick and must not block."""

    def price(self, model: str, provider: ProviderConfig, usage: TokenUsage) -> Price | None:
        """The price of ``usage`` of ``model`` served by ``provider``, or
        ``None`` when the model has no price here (never a guess)."""
        ...


def _tidy(amount: Decimal) -> Decimal:
    """``amount`` without trailing zeros, never in exponent notation."""
    if amount == amount.to_integral_value():
        return amount.quantize(_ONE, context=_CTX)
    return amount.normalize(_CTX)


def charge(rates: Rates, usage: TokenUsage) -> Price:
    """Price ``usage`` at ``rates``, exactly, with the breakdown by token kind.

    Kinds with no tokens are left out of the breakdown.
    """
    cache_write = usage.cache_write_input_tokens
    one_hour = min(max(usage.extra.get(_ONE_HOUR, 0), 0), cache_write)
    prompt = usage.input_tokens + usage.cache_read_input_tokens + cache_write
    r = rates.for_prompt(prompt)
    inp = r.input
    write = r.cache_write if r.cache_write is not None else inp
    read = r.cache_read if r.cache_read is not None else inp
    write_1h = r.cache_write_1h if r.cache_write_1h is not None else write
    counts = (
        ("input", usage.input_tokens, inp),
        ("cache_read", usage.cache_read_input_tokens, read),
        ("cache_write_5m", cache_write - one_hour, write),
        ("cache_write_1h", one_hour, write_1h),
        ("output", usage.output_tokens, r.output),
    )
    breakdown: dict[str, Decimal] = {}
    total = _ZERO
    multiply, add = _CTX.multiply, _CTX.add
    for kind, count, rate in counts:
        if count > 0:
            share = _tidy(multiply(rate, count).scaleb(-6, _CTX))
            breakdown[kind] = share
            total = add(total, share)
    searches = usage.extra.get(_WEB_SEARCHES, 0)
    if searches > 0 and r.web_search is not None:
        share = _tidy(multiply(r.web_search, searches).scaleb(-3, _CTX))
        breakdown["web_search"] = share
        total = add(total, share)
    return Price(_tidy(total), breakdown)


# -- the default book: genai-prices' bundled data ------------------------------


def _snapshot() -> Any:
    """genai-prices' bundled data, in a snapshot of our own: the package's
    global one can be swapped for fetched prices by ``UpdatePrices``; ours
    never is, and nothing here starts an updater."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def _genai_price(model_price: Any, key: str) -> Any:
    return getattr(model_price, key, None)


def _rates_from(model_price: Any) -> Rates | None:
    """Our :class:`Rates` from a genai-prices ``ModelPrice`` (``None`` when
    it has no per-token input price: a model billed otherwise)."""
    from genai_prices.types import TieredPrices

    keys = {
        "input": "input_mtok",
        "output": "output_mtok",
        "cache_read": "cache_read_mtok",
        "cache_write": "cache_write_mtok",
        "cache_write_1h": "cache_write_1h_mtok",
        "web_search": "web_searches_kcount",
    }
    raw: dict[str, Any] = {name: _genai_price(model_price, key) for name, key in keys.items()}
    five = _genai_price(model_price, "cache_write_5m_mtok")
    if five is not None:
        raw["cache_write"] = five
    if raw["input"] is None:
        return None
    if raw["output"] is None:
        raw["output"] = _ZERO

    def at(price: Any, prompt: int | None) -> Any:
        if not isinstance(price, TieredPrices):
            return price
        chosen = price.base
        if prompt is not None:
            for tier in price.tiers:
                if prompt > tier.start:
                    chosen = tier.price
        return chosen

    starts = sorted(
        {t.start for price in raw.values() if isinstance(price, TieredPrices) for t in price.tiers}
    )
    tiers = tuple(
        (start, Rates(**{name: at(price, start + 1) for name, price in raw.items()}))
        for start in starts
    )
    return Rates(**{name: at(price, None) for name, price in raw.items()}, tiers=tiers)


OverrideKey: TypeAlias = "str | tuple[str, str]"


class GenaiPrices:
    """The default price book: genai-prices' bundled data, with the host's
    overrides on top.

    :param overrides: :class:`Rates` (or ``None``: no price) by model name,
        for every provider instance, or by ``(provider_name, model)`` for one
        instance only (that wins). Models not named here keep the data's prices.
    :param providers: how to price a provider instance, by its name: a
        genai-prices provider id (``"anthropic"``, ``"openai"``, ``"azure"``,
        ``"openrouter"``...) or ``None`` for no prices (only ``overrides``).
        Instances not named here are priced as the provider their base URL
        belongs to (``openrouter.ai`` is OpenRouter, ``*.openai.azure.com``
        Azure...), else as their kind (``anthropic`` or ``openai``).
    """

    def __init__(
        self,
        overrides: Mapping[OverrideKey, Rates | None] | None = None,
        *,
        providers: Mapping[str, str | None] | None = None,
    ) -> None:
        self._models: dict[str, Rates | None] = {}
        self._instance_models: dict[tuple[str, str], Rates | None] = {}
        for key, rates in (overrides or {}).items():
            if rates is not None and not isinstance(rates, Rates):
                raise TypeError(f"overrides[{key!r}] must be Rates or None")
            if isinstance(key, tuple):
                self._instance_models[(key[0], key[1].lower())] = rates
            else:
                self._models[key.lower()] = rates
        self._providers = dict(providers or {})
        self._data = _snapshot()
        self._provider_ids: dict[str, str | None] = {}
        # (provider id, model) -> the data's ModelInfo, or None if unknown.
        self._lookups: dict[tuple[str, str], Any] = {}
        # id(ModelPrice) -> (ModelPrice, Rates | None): compiled once.
        self._compiled: dict[int, tuple[Any, Rates | None]] = {}

    def price(self, model: str, provider: ProviderConfig, usage: TokenUsage) -> Price | None:
        """See :class:`PriceBook`."""
        rates = self.rates(model, provider, usage.created_at)
        return None if rates is None else charge(rates, usage)

    def rates(self, model: str, provider: ProviderConfig, when: datetime) -> Rates | None:
        """The rates that price ``model`` on ``provider`` at time ``when``."""
        name = model.lower()
        if self._instance_models:
            key = (provider.name, name)
            if key in self._instance_models:
                return self._instance_models[key]
        if name in self._models:
            return self._models[name]
        provider_id = self._provider_id(provider)
        if provider_id is None:
            return None
        lookup = (provider_id, name)
        try:
            info = self._lookups[lookup]
        except KeyError:
            info = self._find(provider_id, name)
            if len(self._lookups) >= _CACHE_SIZE:
                self._lookups.clear()
            self._lookups[lookup] = info
        if info is None:
            return None
        model_price = info.get_prices(when)
        try:
            return self._compiled[id(model_price)][1]
        except KeyError:
            rates = _rates_from(model_price)
            self._compiled[id(model_price)] = (model_price, rates)
            return rates

    def _find(self, provider_id: str, model: str) -> Any:
        try:
            _, info = self._data.find_provider_model(model, None, provider_id, None)
        except LookupError:
            return None
        return info

    def _provider_id(self, provider: ProviderConfig) -> str | None:
        try:
            return self._provider_ids[provider.name]
        except KeyError:
            pass
        if provider.name in self._providers:
            found = self._providers[provider.name]
        else:
            found = provider.kind
            if provider.base_url is not None:
                with contextlib.suppress(LookupError):
                    found = self._data.find_provider(None, None, provider.resolved_base_url).id
        self._provider_ids[provider.name] = found
        return found


@functools.cache
def default_prices() -> GenaiPrices:
    """The bridge's default price book (one per process): genai-prices'
    bundled data, no overrides."""
    return GenaiPrices()


# -- the bridge's side: one Cost record per usage record -------------------------


class Costing:
    """Turns the usage records of an interception into :class:`Cost` records
    (used by the bridge; hosts give it a :class:`PriceBook`)."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self._unpriced: set[tuple[str, str]] = set()

    def cost(self, usage: TokenUsage, provider: ProviderConfig, model: str) -> Cost:
        """The :class:`Cost` of one usage record (amount ``None`` if unpriced)."""
        try:
            price = self.book.price(model, provider, usage)
        except Exception:
            logger.exception("price book %s failed on %r", type(self.book).__name__, model)
            price = None
        if price is None:
            key = (provider.name, model)
            if key not in self._unpriced and len(self._unpriced) < _CACHE_SIZE:
                self._unpriced.add(key)
                logger.warning(
                    "no price for model %r on provider %r; its interceptions have no cost",
                    model,
                    provider.name,
                )
            return Cost(usage.interception_id, provider.name, model, None)
        return Cost(
            usage.interception_id,
            provider.name,
            model,
            price.amount,
            price.currency,
            price.breakdown,
        )
