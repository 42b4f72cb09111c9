"""Circuit breakers: stop calling an upstream that keeps failing.

One breaker per (provider instance, route, model). It opens after
``failure_threshold`` failures in a row (overload and rate-limit statuses,
timeouts, connection failures, mid-stream overload errors), refuses calls
for ``open_seconds`` (the client gets 503 with ``Retry-After``), then lets
``half_open_probes`` calls through: a success closes it, a failure opens it
again. Other answers (a 400, a completed call) count as successes: the
upstream is alive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = ["BreakerKey", "BreakerState", "CircuitBreakerConfig", "CircuitBreakers"]

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]
#: (provider instance name, route, model)
BreakerKey: TypeAlias = tuple[str, str, str]


def _trip_statuses() -> frozenset[int]:
    return frozenset({429, 503, 504, 529})


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """When breakers open and how long they stay open."""

    failure_threshold: int = 5
    open_seconds: float = 30.0
    half_open_probes: int = 1
    trip_statuses: frozenset[int] = field(default_factory=_trip_statuses)


@dataclass
class _Breaker:
    state: BreakerState = "closed"
    failures: int = 0
    open_until: float = 0.0
    probes: int = 0


class CircuitBreakers:
    """The breakers of one bridge. Not thread-safe: used on one event loop."""

    def __init__(
        self,
        config: CircuitBreakerConfig,
        on_change: Callable[[BreakerKey, BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self._breakers: dict[BreakerKey, _Breaker] = {}

    def state(self, key: BreakerKey) -> BreakerState:
        """The breaker's state (``closed`` for one never used)."""
        breaker = self._breakers.get(key)
        return "closed" if breaker is None else breaker.state

    def acquire(self, key: BreakerKey) -> int | None:
        """``None`` if a call may go upstream (then report it with
        :meth:`record`), else the seconds to put in ``Retry-After``."""
        breaker = self._breakers.get(key)
        if breaker is None or breaker.state == "closed":
            return None
        now = self._clock()
        if breaker.state == "open":
            if now < breaker.open_until:
                return max(1, math.ceil(breaker.open_until - now))
            self._set(key, breaker, "half_open")
            breaker.probes = 0
        if breaker.probes >= self.config.half_open_probes:
            return max(1, math.ceil(self.config.open_seconds / 10))
        breaker.probes += 1
        return None

    def record(self, key: BreakerKey, failed: bool | None) -> None:
        """Report a call's outcome: True a failure, False a success, None no
        verdict (the client left before the upstream answered)."""
        breaker = self._breakers.get(key)
        if breaker is None:
            if not failed:
                return
            breaker = self._breakers[key] = _Breaker()
        if breaker.state == "half_open":
            breaker.probes = max(0, breaker.probes - 1)
        if failed is None:
            return
        if not failed:
            breaker.failures = 0
            if breaker.state != "closed":
                self._set(key, breaker, "closed")
            return
        breaker.failures += 1
        if breaker.state == "half_open" or breaker.failures >= self.config.failure_threshold:
            breaker.open_until = self._clock() + self.config.open_seconds
            if breaker.state != "open":
                self._set(key, breaker, "open")

    def is_failure_status(self, status: int) -> bool:
        """Whether an upstream status counts against the breaker."""
        return status in self.config.trip_statuses

    def _set(self, key: BreakerKey, breaker: _Breaker, state: BreakerState) -> None:
        breaker.state = state
        if self._on_change is not None:
            self._on_change(key, state)
