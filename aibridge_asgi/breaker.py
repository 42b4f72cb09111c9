"""Circuit breakers: stop calling an upstream that keeps failing.

One breaker per (provider instance, route, model). It opens after
``failure_threshold`` failures in a row (overload and rate-limit statuses,
timeouts, connection failures, mid-stream overload errors), refuses calls
for ``open_seconds`` (the client gets 503 with ``Retry-After``), then lets
``half_open_probes`` calls through: a success closes it, a failure opens it
again. Other answers (a 400, a completed call) count as successes: the
upstream is alive.

The model comes from the client, so the set of breakers is bounded: a
breaker exists only once a call failed, and at most ``max_breakers`` are
kept; past that, the least recently used one is forgotten (closed ones
first), so made-up model names cannot grow the bridge's memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
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
    #: Breakers kept at most (least recently used forgotten, closed first).
    max_breakers: int = 256


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
        self._breakers: OrderedDict[BreakerKey, _Breaker] = OrderedDict()

    def __len__(self) -> int:
        """How many breakers hold state."""
        return len(self._breakers)

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
        self._breakers.move_to_end(key)
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
            self._make_room()
            breaker = self._breakers[key] = _Breaker()
        else:
            self._breakers.move_to_end(key)
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

    def _make_room(self) -> None:
        """Forget breakers past ``max_breakers``: the least recently used
        closed one (a few failures, not yet open), else the least recently
        used of all."""
        limit = max(self.config.max_breakers, 1)
        while len(self._breakers) >= limit:
            oldest = next(iter(self._breakers))
            victim = oldest
            for n, (key, breaker) in enumerate(self._breakers.items()):
                if n >= 16:  # look at a few of the oldest only: O(1) per call
                    break
                if breaker.state == "closed":
                    victim = key
                    break
            del self._breakers[victim]

    def is_failure_status(self, status: int) -> bool:
        """Whether an upstream status counts against the breaker."""
        return status in self.config.trip_statuses

    def _set(self, key: BreakerKey, breaker: _Breaker, state: BreakerState) -> None:
        breaker.state = state
        if self._on_change is not None:
            self._on_change(key, state)
