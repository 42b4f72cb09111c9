"""OpenTelemetry traces for the bridge (``pip install aibridge_asgi[otel]``).

The host configures the SDK and exporter; this module only uses
``opentelemetry-api``:

>>> bridge = create_bridge(..., hooks=[OpenTelemetryHooks()])   # doctest: +SKIP

Each interception gets a span named ``{operation} {model}`` (``chat`` for
Messages and Chat Completions, ``responses`` for Responses) with GenAI
semantic-convention attributes; its W3C trace context goes upstream in
``traceparent``. With ``upstream_spans=True`` the upstream call gets a child
``CLIENT`` span of its own (whose context goes upstream instead); with
``record_spans=True``, also one child span per record handed to the recorder
(about five per interception). Each span costs about as much CPU in the SDK
as the rest of a bridged call, so both are off by default.
Incoming ``traceparent``/``tracestate`` headers make the interception span a
child of the caller's trace.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from time import time_ns

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from .hooks import BridgeHooks, Timings
from .records import Cost, InterceptionEnded, InterceptionStarted, Record, TokenUsage
from .routing import RESPONSES

__all__ = ["OpenTelemetryHooks"]

_KEEP_FINISHED = 10_000


@dataclass
class _Live:
    span: Span
    context: Context
    upstream: Span | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    response_ids: list[str] = field(default_factory=list)
    cost: Decimal | None = None
    unpriced: bool = False
    upstream_status: int | None = None


class OpenTelemetryHooks(BridgeHooks):
    """Bridge hooks that emit spans through ``tracer`` (default: the global
    tracer provider's ``aibridge_asgi`` tracer).

    One span per interception; with ``upstream_spans=True`` also a ``POST
    upstream`` child span (kind ``CLIENT``) for the upstream call, and with
    ``record_spans=True`` a ``record <Type>`` span per record the recorder
    handled (its duration, and an error status if it raised).
    """

    def __init__(
        self,
        tracer: Tracer | None = None,
        *,
        upstream_spans: bool = False,
        record_spans: bool = False,
    ) -> None:
        self._tracer = tracer or trace.get_tracer("aibridge_asgi")
        self._upstream_spans = upstream_spans
        self._record_spans = record_spans
        self._live: dict[str, _Live] = {}
        # Span contexts kept until the interception's records are delivered
        # (bounded: without a recorder they never are).
        self._finished: OrderedDict[str, Context] = OrderedDict()

    def interception_started(
        self, started: InterceptionStarted, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in request_headers
            if k in (b"traceparent", b"tracestate", b"baggage")
        }
        parent = propagate.extract(carrier) if carrier else None
        operation = "responses" if started.route == RESPONSES else "chat"
        span = self._tracer.start_span(
            f"{operation} {started.model}".strip(),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.system": started.provider,
                "gen_ai.provider.name": started.provider,
                "gen_ai.request.model": started.model,
                "aibridge.interception_id": started.interception_id,
                "aibridge.provider_name": started.provider_name,
                "aibridge.route": started.route,
                "aibridge.client": started.client,
                "aibridge.streaming": started.streaming,
                "enduser.id": started.actor.id,
            },
        )
        self._live[started.interception_id] = _Live(span, trace.set_span_in_context(span))

    def upstream_headers(self, interception_id: str) -> Sequence[tuple[bytes, bytes]]:
        live = self._live.get(interception_id)
        if live is None:
            return ()
        context = live.context
        if self._upstream_spans:
            live.upstream = self._tracer.start_span(
                "POST upstream", context=context, kind=SpanKind.CLIENT
            )
            context = trace.set_span_in_context(live.upstream)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=context)
        return [(k.lower().encode(), v.encode()) for k, v in carrier.items()]

    def upstream_responded(self, interception_id: str, status: int, seconds: float) -> None:
        live = self._live.get(interception_id)
        if live is not None and live.upstream is not None:
            live.upstream_status = status  # set on the span as it ends (one SDK call)

    def upstream_failed(self, interception_id: str, status: int, reason: str) -> None:
        live = self._live.get(interception_id)
        if live is not None and live.upstream is not None:
            live.upstream.set_attribute("error.type", "timeout" if status == 504 else "connection")
            live.upstream.set_status(Status(StatusCode.ERROR, reason))

    def produced(self, record: Record) -> None:
        if isinstance(record, TokenUsage):
            live = self._live.get(record.interception_id)
            if live is not None:
                live.input_tokens += record.input_tokens
                live.output_tokens += record.output_tokens
                live.cache_read += record.cache_read_input_tokens
                if record.provider_response_id:
                    live.response_ids.append(record.provider_response_id)
        elif isinstance(record, Cost):
            live = self._live.get(record.interception_id)
            if live is not None:
                if record.amount is None:
                    live.unpriced = True
                else:
                    live.cost = (live.cost or Decimal(0)) + record.amount

    def interception_ended(
        self, started: InterceptionStarted, ended: InterceptionEnded, timings: Timings
    ) -> None:
        live = self._live.pop(started.interception_id, None)
        if live is None:
            return
        upstream = live.upstream
        if upstream is not None:
            status = live.upstream_status
            if status is not None:
                upstream.set_attribute("http.response.status_code", status)
                if status >= 400:
                    upstream.set_status(Status(StatusCode.ERROR, f"upstream answered {status}"))
            upstream.end()
        span = live.span
        # One set_attributes call: the SDK takes its lock once, not per attribute.
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.usage.input_tokens": live.input_tokens + live.cache_read,
            "gen_ai.usage.output_tokens": live.output_tokens,
            "gen_ai.usage.cache_read_input_tokens": live.cache_read,
            "aibridge.status": ended.status,
        }
        if live.response_ids:
            attributes["gen_ai.response.id"] = live.response_ids[-1]
        if live.cost is not None:
            # OTel attributes have no decimal type: a float for sums, the
            # exact text alongside.
            attributes["aibridge.cost.usd"] = float(live.cost)
            attributes["aibridge.cost.usd_exact"] = str(live.cost)
        if live.unpriced:
            attributes["aibridge.cost.unpriced"] = True
        if ended.credential is not None and ended.key_name is not None:
            attributes["aibridge.credential"] = ended.credential
            attributes["aibridge.key_name"] = ended.key_name
        if ended.http_status is not None:
            attributes["http.response.status_code"] = ended.http_status
        if ended.status == "failed":
            attributes["error.type"] = str(ended.http_status or "internal")
            span.set_status(Status(StatusCode.ERROR, ended.error or "failed"))
        span.set_attributes(attributes)
        span.end()
        if not self._record_spans:
            return
        self._finished[started.interception_id] = live.context
        if len(self._finished) > _KEEP_FINISHED:
            self._finished.popitem(last=False)

    def recorded(self, record: Record, seconds: float, error: BaseException | None) -> None:
        if not self._record_spans:
            return
        interception_id = getattr(record, "interception_id", "")
        context = self._finished.get(interception_id)
        if context is None:
            live = self._live.get(interception_id)
            context = live.context if live is not None else None
        if context is None:
            return
        end = time_ns()
        span = self._tracer.start_span(
            f"record {type(record).__name__}",
            context=context,
            start_time=end - int(seconds * 1e9),
            attributes={"aibridge.interception_id": interception_id},
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=end)
        if isinstance(record, InterceptionEnded):
            self._finished.pop(interception_id, None)
