"""Prometheus metrics for the bridge (``pip install aibridge_asgi[prometheus]``).

>>> from prometheus_client import CollectorRegistry     # doctest: +SKIP
>>> metrics = PrometheusHooks(CollectorRegistry())      # doctest: +SKIP
>>> bridge = create_bridge(..., hooks=[metrics])        # doctest: +SKIP

Every metric name starts with ``prefix`` (default ``aibridge_``). Label
values that come from clients (model, client and tool names) are bounded:
past ``max_label_values`` distinct values per label, new ones are counted as
``other``. Per-user labels are off unless ``per_user=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from ._prom import CounterFamily, Families, GaugeFamily, HistogramFamily
from .config import ProviderConfig
from .hooks import BridgeHooks, Timings
from .records import (
    Cost,
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    Record,
    TokenUsage,
    ToolResult,
    ToolUsage,
)

__all__ = ["PrometheusHooks"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_STATES = {"closed": 0, "half_open": 1, "open": 2}
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class _Bounded:
    """Keeps at most ``limit`` distinct values; the rest become ``other``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


@dataclass(slots=True)
class _Live:
    provider_name: str
    route: str
    model: str
    client: str
    actor: str


class PrometheusHooks(BridgeHooks):
    """Bridge hooks that keep Prometheus metrics on ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        prefix: str = "aibridge_",
        max_label_values: int = 100,
        per_user: bool = False,
    ) -> None:
        self._per_user = per_user
        self._model = _Bounded(max_label_values)
        self._client = _Bounded(max_label_values)
        self._tool = _Bounded(max_label_values)
        self._key = _Bounded(max_label_values)  # actors' key names come from the host
        self._actor = _Bounded(max_label_values) if per_user else None
        self._live: dict[str, _Live] = {}
        user = ["actor"] if per_user else []
        p = prefix
        # Kept in plain objects and read when scraped (see _prom): an update
        # costs a dict lookup and an add, not prometheus_client's locks.
        families = Families(registry)

        def counter(name: str, doc: str, labels: Sequence[str]) -> CounterFamily:
            return families.add(CounterFamily(p + name.removesuffix("_total"), doc, labels))

        def gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeFamily:
            return families.add(GaugeFamily(p + name, doc, labels))

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> HistogramFamily:
            return families.add(HistogramFamily(p + name, doc, labels, buckets))

        self.interceptions = counter(
            "interceptions_total",
            "Interceptions by outcome.",
            ["provider", "provider_name", "route", "model", "client", "status", *user],
        )
        self.in_flight = gauge(
            "interceptions_in_flight",
            "Interceptions currently running.",
            ["provider_name", "route"],
        )
        self.duration = histogram(
            "interception_duration_seconds",
            "Time from request to end of response.",
            ["provider_name", "route", "streaming"],
            _LATENCY,
        )
        self.first_byte = histogram(
            "time_to_first_byte_seconds",
            "Time until the client got the first body byte.",
            ["provider_name", "route", "streaming"],
            _LATENCY,
        )
        self.overhead = histogram(
            "overhead_seconds",
            "Time per interception not spent waiting for the upstream.",
            ["provider_name", "route"],
            _OVERHEAD,
        )
        self.tokens = counter(
            "tokens_total",
            "Tokens by type (input excludes cache; extras by their own name).",
            ["provider_name", "model", "type", *user],
        )
        self.prompts = counter(
            "prompts_total", "User prompts seen.", ["provider_name", "model", "client"]
        )
        self.tool_calls = counter(
            "tool_calls_total",
            "Tool calls the models made.",
            ["provider_name", "model", "tool", "injected"],
        )
        self.cost = counter(
            "cost_usd",
            "What the interceptions cost in USD, from the bridge's price book.",
            ["provider_name", "model", *user],
        )
        self.unpriced = counter(
            "unpriced_total",
            "Usage records of models the price book has no price for.",
            ["provider_name", "model"],
        )
        self.tool_results = counter(
            "tool_results_total",
            "Tool results the clients sent back.",
            ["provider_name", "model", "is_error"],
        )
        self.upstream_errors = counter(
            "upstream_errors_total",
            "Upstream error statuses, and failures answered by the bridge (502/504).",
            ["provider_name", "route", "status"],
        )
        self.passthrough = counter(
            "passthrough_requests_total",
            "Passthrough calls.",
            ["provider_name", "method", "status"],
        )
        self.circuit_state = gauge(
            "circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["provider_name", "route", "model"],
        )
        self.circuit_trips = counter(
            "circuit_trips_total", "Times a breaker opened.", ["provider_name", "route", "model"]
        )
        self.circuit_rejects = counter(
            "circuit_rejects_total",
            "Calls refused because their breaker was open.",
            ["provider_name", "route", "model"],
        )
        self.key_requests = counter(
            "key_requests_total",
            "Upstream attempts per credential (kind pool, byok or actor; key by name).",
            ["provider_name", "credential", "key"],
        )
        self.key_failovers = counter(
            "key_failovers_total",
            "Requests moved to the next pooled key, by the key that refused and its status.",
            ["provider_name", "key", "status"],
        )
        self.key_cooldowns = counter(
            "key_cooldowns_total",
            "Times a pooled key was put aside (reason rate_limited or rejected).",
            ["provider_name", "key", "reason"],
        )
        self.policy_refusals = counter(
            "policy_refusals_total",
            "Requests a policy check refused before the upstream call.",
            ["provider_name", "check", "status"],
        )
        self.policy_store_errors = counter(
            "policy_store_errors_total",
            "Policy checks whose store was unavailable, by failure mode.",
            ["check", "mode"],
        )
        self.recorder_duration = histogram(
            "recorder_duration_seconds", "Time the recorder took per record.", ["record"], _OVERHEAD
        )
        self.recorder_errors = counter(
            "recorder_errors_total", "Records the recorder failed on.", ["record"]
        )
        self.records_dropped = counter(
            "records_dropped_total",
            "Records that never reached the recorder (queue overflow, recorder "
            "timeout, undelivered at close).",
            ["record", "reason"],
        )
        families.register()

        # The children the per-request hooks update, looked up once each.
        self._in_flight = self.in_flight.labels
        self._upstream_errors = self.upstream_errors.labels
        self._tokens = self.tokens.labels
        self._unpriced = self.unpriced.labels
        self._cost = self.cost.labels
        self._tool_results = self.tool_results.labels
        self._prompts = self.prompts.labels
        self._tool_calls = self.tool_calls.labels
        self._interceptions = self.interceptions.labels
        self._duration = self.duration.labels
        self._first_byte = self.first_byte.labels
        self._overhead = self.overhead.labels
        self._recorder_duration = self.recorder_duration.labels
        self._key_requests = self.key_requests.labels

    # -- hooks --------------------------------------------------------------

    def interception_started(
        self, started: InterceptionStarted, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        actor = self._actor(started.actor.id) if self._actor is not None else ""
        self._live[started.interception_id] = _Live(
            started.provider_name,
            started.route,
            self._model(started.model),
            self._client(started.client),
            actor,
        )
        self._in_flight(started.provider_name, started.route).inc()

    def upstream_responded(self, interception_id: str, status: int, seconds: float) -> None:
        live = self._live.get(interception_id)
        if live is not None and status >= 400:
            self._upstream_errors(live.provider_name, live.route, str(status)).inc()

    def upstream_failed(self, interception_id: str, status: int, reason: str) -> None:
        live = self._live.get(interception_id)
        if live is not None:
            self._upstream_errors(live.provider_name, live.route, str(status)).inc()

    def produced(self, record: Record) -> None:
        live = self._live.get(getattr(record, "interception_id", ""))
        if live is None:
            return
        if isinstance(record, TokenUsage):
            user = [live.actor] if self._per_user else []
            for kind, value in (
                ("input", record.input_tokens),
                ("output", record.output_tokens),
                ("cache_read", record.cache_read_input_tokens),
                ("cache_write", record.cache_write_input_tokens),
                *record.extra.items(),
            ):
                if value:
                    self._tokens(live.provider_name, live.model, kind, *user).inc(value)
        elif isinstance(record, Cost):
            if record.amount is None:
                self._unpriced(live.provider_name, live.model).inc()
            elif record.currency == "USD":
                user = [live.actor] if self._per_user else []
                self._cost(live.provider_name, live.model, *user).inc(float(record.amount))
        elif isinstance(record, ToolResult):
            self._tool_results(live.provider_name, live.model, str(record.is_error).lower()).inc()
        elif isinstance(record, PromptUsage):
            self._prompts(live.provider_name, live.model, live.client).inc()
        elif isinstance(record, ToolUsage):
            self._tool_calls(
                live.provider_name,
                live.model,
                self._tool(record.tool),
                str(record.injected).lower(),
            ).inc()

    def interception_ended(
        self, started: InterceptionStarted, ended: InterceptionEnded, timings: Timings
    ) -> None:
        live = self._live.pop(started.interception_id, None)
        if live is None:
            return
        streaming = str(started.streaming).lower()
        user = [live.actor] if self._per_user else []
        self._interceptions(
            started.provider,
            live.provider_name,
            live.route,
            live.model,
            live.client,
            ended.status,
            *user,
        ).inc()
        self._in_flight(live.provider_name, live.route).dec()
        self._duration(live.provider_name, live.route, streaming).observe(timings.total)
        if timings.first_byte is not None:
            self._first_byte(live.provider_name, live.route, streaming).observe(timings.first_byte)
        self._overhead(live.provider_name, live.route).observe(timings.overhead)

    def recorded(self, record: Record, seconds: float, error: BaseException | None) -> None:
        name = type(record).__name__
        self._recorder_duration(name).observe(seconds)
        if error is not None:
            self.recorder_errors.labels(name).inc()

    def record_dropped(self, record: Record, reason: str) -> None:
        self.records_dropped.labels(type(record).__name__, reason).inc()

    def circuit_changed(self, key: tuple[str, str, str], state: str) -> None:
        labels = (key[0], key[1], self._model(key[2]))
        self.circuit_state.labels(*labels).set(_STATES.get(state, 0))
        if state == "open":
            self.circuit_trips.labels(*labels).inc()

    def circuit_rejected(self, key: tuple[str, str, str]) -> None:
        self.circuit_rejects.labels(key[0], key[1], self._model(key[2])).inc()

    def key_used(self, provider_name: str, credential: str, key_name: str) -> None:
        self._key_requests(provider_name, credential, self._key(key_name)).inc()

    def key_failover(self, provider_name: str, key_name: str, status: int) -> None:
        self.key_failovers.labels(provider_name, self._key(key_name), str(status)).inc()

    def key_cooldown(self, provider_name: str, key_name: str, reason: str, seconds: float) -> None:
        self.key_cooldowns.labels(provider_name, self._key(key_name), reason).inc()

    def policy_refused(self, started: InterceptionStarted, check: str, status: int) -> None:
        self.policy_refusals.labels(started.provider_name, check, str(status)).inc()

    def policy_store_failed(self, check: str, mode: str) -> None:
        self.policy_store_errors.labels(check, mode).inc()

    def passthrough_done(
        self, provider: ProviderConfig, method: str, status: int | None, seconds: float
    ) -> None:
        self.passthrough.labels(provider.name, method, str(status or 0)).inc()
