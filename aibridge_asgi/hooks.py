"""Hooks: how metrics, traces and logs see an interception as it happens.

A hook is an object with any of the methods of :class:`BridgeHooks` (subclass
it and override what you need). The bridge calls them on the request path,
so they must be cheap and must not block; an exception in a hook is logged
and otherwise ignored. Optional integrations build on this:
:mod:`aibridge_asgi.metrics` (Prometheus) and :mod:`aibridge_asgi.otel`
(OpenTelemetry).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ProviderConfig
from .records import InterceptionEnded, InterceptionStarted, Record

__all__ = ["BridgeHooks", "Timings"]

logger = logging.getLogger("aibridge_asgi.hooks")


@dataclass(frozen=True, slots=True)
class Timings:
    """Where an interception's time went, in seconds.

    ``total`` runs from the request reaching the bridge to the end of the
    response; ``upstream`` from sending upstream to the last upstream byte;
    ``overhead`` is the rest (the bridge's own cost, plus time the client
    took to read). ``first_byte`` is the time until the client got the first
    body byte, ``None`` if it never did.
    """

    total: float
    upstream: float
    first_byte: float | None

    @property
    def overhead(self) -> float:
        """Time not spent waiting for the upstream."""
        return max(self.total - self.upstream, 0.0)


class BridgeHooks:
    """No-op base class of bridge hooks. Override the methods you need."""

    def interception_started(
        self, started: InterceptionStarted, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """An interception began (the same record the recorder gets).
        ``request_headers`` are the client's, lower-case names."""

    def upstream_headers(self, interception_id: str) -> Sequence[tuple[bytes, bytes]]:
        """Extra headers for the upstream request (e.g. ``traceparent``)."""
        return ()

    def upstream_responded(self, interception_id: str, status: int, seconds: float) -> None:
        """The upstream's status line arrived ``seconds`` after it was called."""

    def upstream_failed(self, interception_id: str, status: int, reason: str) -> None:
        """No usable upstream answer: the bridge answered ``status`` itself
        (502 unreachable, 504 timeout) or the stream broke (status 502)."""

    def produced(self, record: Record) -> None:
        """A usage record was produced (TokenUsage, Cost, PromptUsage,
        ToolUsage, ToolResult, ModelThought); it is on its way to the recorder."""

    def interception_ended(
        self, started: InterceptionStarted, ended: InterceptionEnded, timings: Timings
    ) -> None:
        """The interception is over."""

    def recorded(self, record: Record, seconds: float, error: BaseException | None) -> None:
        """The recorder took ``seconds`` to handle ``record`` (``error`` if it raised).
        Called from the recorder worker, off the request path."""

    def record_dropped(self, record: Record, reason: str) -> None:
        """``record`` did not reach the recorder: ``overflow`` (the record
        queue was full), ``timeout`` (the recorder call took too long),
        ``undelivered`` (still queued when ``aclose()`` ran out of time) or
        ``closed`` (produced after close)."""

    def circuit_changed(self, key: tuple[str, str, str], state: str) -> None:
        """The breaker for (provider name, route, model) went ``closed``,
        ``open`` or ``half_open``."""

    def circuit_rejected(self, key: tuple[str, str, str]) -> None:
        """A call was refused (503) because its breaker is open."""

    def key_used(self, provider_name: str, credential: str, key_name: str) -> None:
        """An upstream attempt goes out with a credential of kind
        ``credential`` (``pool``, ``byok``, ``actor``) named ``key_name``."""

    def key_failover(self, provider_name: str, key_name: str, status: int) -> None:
        """Pooled key ``key_name`` answered ``status``; the request goes to the next key."""

    def key_cooldown(self, provider_name: str, key_name: str, reason: str, seconds: float) -> None:
        """Pooled key ``key_name`` is put aside for ``seconds``; ``reason`` is
        ``rate_limited`` (429) or ``rejected`` (401/403)."""

    def policy_refused(self, started: InterceptionStarted, check: str, status: int) -> None:
        """The policy check named ``check`` (its class name) refused the
        interception with ``status``; nothing was sent upstream."""

    def policy_store_failed(self, check: str, mode: str) -> None:
        """A policy check's store was unavailable; ``mode`` is ``open`` (the
        check was skipped) or ``closed`` (the request was refused, 503)."""

    def passthrough_done(
        self, provider: ProviderConfig, method: str, status: int | None, seconds: float
    ) -> None:
        """A passthrough call finished (``status`` None if no response started)."""


def call(hooks: Sequence[BridgeHooks], name: str, *args: object) -> None:
    """Call method ``name`` on every hook, logging (not raising) failures."""
    for hook in hooks:
        try:
            getattr(hook, name)(*args)
        except Exception:
            logger.exception("hook %s.%s failed", type(hook).__name__, name)
