"""Where policy state lives: one process (:class:`MemoryStore`) or many
(:class:`RedisStore`, ``pip install aibridge_asgi[redis]``).

A store offers four atomic operations the built-in checks are made of:

- token buckets (:meth:`Store.take`, :meth:`Store.debit`) for rate limits;
- leases (:meth:`Store.acquire`, :meth:`Store.release`) for concurrency;
- sums (:meth:`Store.total`, :meth:`Store.add`) for budgets.

Every operation is one step: one dictionary update in memory, one Redis
round trip (a Lua script, atomic on the server) in Redis. Time for buckets
and leases is the store's: the Redis server's clock in Redis, so workers
with drifting clocks still agree. A store that cannot answer raises
:class:`StoreUnavailable`; its ``fail_open`` says whether the policy then
admits the request (logged and counted) or refuses it with 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Bucket",
    "MemoryStore",
    "Op",
    "RedisStore",
    "Store",
    "StoreUnavailable",
]

logger = logging.getLogger("aibridge_asgi.policy")

#: A token bucket and what one step asks of it:
#: ``(key, capacity, refill per second, need, cost)``. The request passes
#: when the bucket holds at least ``need``; then ``cost`` is taken out.
Bucket = tuple[str, float, float, float, float]

#: One step of a batch (:meth:`Store.run`), a tuple whose first item names it:
#: ``("below", key, limit)`` passes while the sum under key is below limit
#: (result: the sum); ``("take", buckets)`` (result: the wait, 0 = passed);
#: ``("acquire", key, member, limit, lease)`` (result: held);
#: ``("add", key, amount, ttl)`` (result: the new sum);
#: ``("debit", key, capacity, rate, amount)``; ``("release", key, member)``.
Op = tuple[Any, ...]

# Sums are kept as integers of 10**-9 units (a nano-dollar), exact in both stores.
_NANO = Decimal("1e-9")
_ZERO = Decimal(0)
_SCALE = 10**9


def _to_units(amount: Decimal) -> int:
    return int((amount / _NANO).to_integral_value())


def _from_units(units: int) -> Decimal:
    return (Decimal(units) * _NANO).normalize() if units else Decimal(0)


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time."""

    def __init__(self, message: str, *, fail_open: bool) -> None:
        super().__init__(message)
        self.fail_open = fail_open


@runtime_checkable
class Store(Protocol):
    """What the built-in checks need from a state store."""

    #: Whether the policy admits requests when this store is unavailable.
    fail_open: bool

    def now(self) -> float:
        """The store's idea of the current time, in seconds since the epoch
        (for Redis: the server's clock, as last seen)."""
        ...

    async def take(self, buckets: Sequence[Bucket]) -> float:
        """Refill each bucket for the time passed; if every one holds at
        least its ``need``, take each one's ``cost`` out and return 0.
        Otherwise change nothing and return the seconds until all would."""
        ...

    async def debit(self, key: str, capacity: float, rate: float, amount: float) -> None:
        """Take ``amount`` out of a bucket; it may go below zero (a debt the
        refill pays off before the next request passes)."""
        ...

    async def acquire(self, key: str, member: str, limit: int, lease: float) -> bool:
        """Hold one of ``limit`` slots under ``key`` for ``member``; the slot
        frees itself after ``lease`` seconds if never released."""
        ...

    async def release(self, key: str, member: str) -> None:
        """Give back the slot ``member`` holds."""
        ...

    async def total(self, key: str) -> Decimal:
        """The sum under ``key`` (0 when there is none)."""
        ...

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """Run ``ops`` in order as one atomic step (one Redis round trip),
        stopping after the first that does not pass (a ``below`` at or over
        its limit, a ``take`` that must wait, an ``acquire`` with no slot).
        Returns the results of the ops that ran."""
        ...

    async def add(self, key: str, amount: Decimal, ttl: float) -> Decimal:
        """Add ``amount`` to the sum under ``key`` (kept at least ``ttl``
        seconds from now) and return the new sum."""
        ...


class MemoryStore:
    """Policy state in this process's memory (one worker).

    ``clock`` (seconds since the epoch) is injectable for tests; it is used
    for buckets, leases and key expiry.
    """

    fail_open = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [level, updated]
        self._leases: dict[str, dict[str, float]] = {}  # key -> member -> expiry
        self._sums: dict[str, list[Any]] = {}  # key -> [units, expiry]
        self._writes = 0

    def now(self) -> float:
        """The injected clock's time."""
        return self._clock()

    # Synchronous cores: one dictionary step each, no await inside, so each
    # is atomic on the event loop.

    def _level(self, key: str, capacity: float, rate: float, now: float) -> list[float]:
        state = self._buckets.get(key)
        if state is None:
            state = self._buckets[key] = [capacity, now]
        elif now > state[1]:
            state[0] = min(capacity, state[0] + (now - state[1]) * rate)
            state[1] = now
        return state

    def _take(self, buckets: Sequence[Bucket], now: float) -> float:
        self._writes += 1
        if not self._writes % 4096:
            self._sweep(now)
        states = [self._level(key, cap, rate, now) for key, cap, rate, _, _ in buckets]
        wait = 0.0
        for state, (_, _, rate, need, _) in zip(states, buckets, strict=True):
            if state[0] < need:
                wait = max(wait, (need - state[0]) / rate)
        if wait > 0:
            return wait
        for state, bucket in zip(states, buckets, strict=True):
            state[0] -= bucket[4]
        return 0.0

    def _acquire(self, key: str, member: str, limit: int, lease: float, now: float) -> bool:
        held = self._leases.setdefault(key, {})
        if len(held) >= limit:
            for name in [m for m, expiry in held.items() if expiry <= now]:
                del held[name]
            if len(held) >= limit:
                return False
        held[member] = now + lease
        return True

    def _release(self, key: str, member: str) -> None:
        held = self._leases.get(key)
        if held is not None:
            held.pop(member, None)
            if not held:
                del self._leases[key]

    def _total(self, key: str, now: float) -> Decimal:
        entry = self._sums.get(key)
        if entry is None or entry[1] <= now:
            return _ZERO
        total: Decimal = entry[0]
        return total

    def _add(self, key: str, amount: Decimal, ttl: float, now: float) -> Decimal:
        entry = self._sums.get(key)
        if entry is None or entry[1] <= now:
            entry = self._sums[key] = [_ZERO, 0.0]
        # Rounded as Redis keeps it (whole nano-units), so both stores agree.
        total: Decimal = entry[0] + amount.quantize(_NANO)
        entry[0] = total
        if now + ttl > entry[1]:
            entry[1] = now + ttl
        return total

    def _sweep(self, now: float) -> None:
        """Drop expired sums and long-idle buckets (bounded memory)."""
        self._sums = {k: v for k, v in self._sums.items() if v[1] > now}
        # A bucket idle for an hour is full again for any limit of at least
        # one per hour; forgetting it changes nothing for those.
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}

    # The Store protocol.

    async def take(self, buckets: Sequence[Bucket]) -> float:
        """See :meth:`Store.take`."""
        return self._take(buckets, self._clock())

    async def debit(self, key: str, capacity: float, rate: float, amount: float) -> None:
        """See :meth:`Store.debit`."""
        self._level(key, capacity, rate, self._clock())[0] -= amount

    async def acquire(self, key: str, member: str, limit: int, lease: float) -> bool:
        """See :meth:`Store.acquire`."""
        return self._acquire(key, member, limit, lease, self._clock())

    async def release(self, key: str, member: str) -> None:
        """See :meth:`Store.release`."""
        self._release(key, member)

    async def total(self, key: str) -> Decimal:
        """See :meth:`Store.total`."""
        return self._total(key, self._clock())

    async def add(self, key: str, amount: Decimal, ttl: float) -> Decimal:
        """See :meth:`Store.add`."""
        return self._add(key, amount, ttl, self._clock())

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """See :meth:`Store.run`."""
        now = self._clock()
        out: list[Any] = []
        for op in ops:
            name = op[0]
            if name == "below":
                spent = self._total(op[1], now)
                out.append(spent)
                if spent >= op[2]:
                    break
            elif name == "take":
                wait = self._take(op[1], now)
                out.append(wait)
                if wait > 0:
                    break
            elif name == "acquire":
                held = self._acquire(op[1], op[2], op[3], op[4], now)
                out.append(held)
                if not held:
                    break
            elif name == "add":
                out.append(self._add(op[1], op[2], op[3], now))
            elif name == "debit":
                self._level(op[1], op[2], op[3], now)[0] -= op[4]
                out.append(None)
            elif name == "release":
                self._release(op[1], op[2])
                out.append(None)
            else:
                raise ValueError(f"unknown store op {name!r}")
        return out


# -- Redis -------------------------------------------------------------------

# One script runs a whole batch (Store.run) atomically on the server: the
# ops are in ARGV as  name, then their arguments; their keys in KEYS, in
# order. The last ARGV is the time ("" = the server's TIME). Returns each
# op's result as a string, then the time used.
_OPS = """
local now = tonumber(ARGV[#ARGV])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function level(key, cap, rate)
  local s = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(s[1]), tonumber(s[2])
  if l == nil then return cap end
  if now > at then l = math.min(cap, l + (now - at) * rate) end
  return l
end
local function keep(key, l, cap, rate)
  redis.call('HSET', key, 'l', fmt(l), 't', fmt(now))
  redis.call('PEXPIRE', key, math.ceil((cap - l) / rate * 1000) + 1000)
end
local out, i, k, last = {}, 1, 1, #ARGV - 1
while i <= last do
  local op = ARGV[i]
  if op == 'below' then
    local v = redis.call('GET', KEYS[k]) or '0'
    out[#out + 1] = v
    k, i = k + 1, i + 2
    if tonumber(v) >= tonumber(ARGV[i - 1]) then break end
  elseif op == 'take' then
    local n, levels, wait = tonumber(ARGV[i + 1]), {}, 0
    for j = 0, n - 1 do
      local b = i + 2 + j * 4
      local cap, rate, need = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
      levels[j] = level(KEYS[k + j], cap, rate)
      if levels[j] < need then wait = math.max(wait, (need - levels[j]) / rate) end
    end
    if wait == 0 then
      for j = 0, n - 1 do
        local b = i + 2 + j * 4
        local cap, rate = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
        keep(KEYS[k + j], levels[j] - tonumber(ARGV[b + 3]), cap, rate)
      end
    end
    out[#out + 1] = fmt(wait)
    k, i = k + n, i + 2 + n * 4
    if wait > 0 then break end
  elseif op == 'acquire' then
    local key, lease = KEYS[k], tonumber(ARGV[i + 3])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
    local held = 0
    if redis.call('ZCARD', key) < tonumber(ARGV[i + 2]) then
      redis.call('ZADD', key, fmt(now + lease), ARGV[i + 1])
      redis.call('PEXPIRE', key, math.ceil(lease * 1000))
      held = 1
    end
    out[#out + 1] = tostring(held)
    k, i = k + 1, i + 4
    if held == 0 then break end
  elseif op == 'add' then
    local total = redis.call('INCRBY', KEYS[k], ARGV[i + 1])
    local ttl = math.ceil(tonumber(ARGV[i + 2]) * 1000)
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
    out[#out + 1] = tostring(total)
    k, i = k + 1, i + 3
  elseif op == 'debit' then
    local cap, rate = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    keep(KEYS[k], level(KEYS[k], cap, rate) - tonumber(ARGV[i + 3]), cap, rate)
    out[#out + 1] = ''
    k, i = k + 1, i + 4
  elseif op == 'release' then
    redis.call('ZREM', KEYS[k], ARGV[i + 1])
    out[#out + 1] = ''
    k, i = k + 1, i + 2
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
out[#out + 1] = fmt(now)
return out
"""


def _num(x: float) -> str:
    return repr(float(x))


class RedisStore:
    """Policy state in Redis, shared by every worker that uses the same
    server (``pip install aibridge_asgi[redis]``).

    Each :meth:`run` is one round trip: one Lua script, atomic on the
    server, reading the time from the server (``TIME``).

    :param url: a ``redis://`` URL (or pass ``client``, a
        ``redis.asyncio.Redis`` of the host's; the store does not close it).
    :param prefix: put before every key (see docs/policy.md for the layout).
    :param fail: ``"open"`` (default) admits requests while Redis is
        unreachable, logging and counting each; ``"closed"`` refuses them
        with 503.
    :param timeout: seconds to wait for a connection or an answer.
    :param retry_interval: after a failure, seconds during which the store
        answers "unavailable" at once instead of trying again (so an outage
        costs requests no time).
    :param max_connections: connections per process (requests beyond wait).
    :param clock: for tests: use this clock instead of the server's.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str = "aibridge:",
        fail: Literal["open", "closed"] = "open",
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        max_connections: int = 50,
        clock: Callable[[], float] | None = None,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            import redis.exceptions
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisStore needs redis-py: pip install 'aibridge_asgi[redis]'"
            ) from exc
        if fail not in ("open", "closed"):
            raise ValueError(f"fail must be 'open' or 'closed', not {fail!r}")
        if (url is None) == (client is None):
            raise ValueError("give RedisStore either url or client")
        if url is not None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # Blocking: a burst of requests waits (up to timeout) for one of
            # max_connections instead of failing.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            client = aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.prefix = prefix
        self.fail_open = fail == "open"
        self._retry_interval = retry_interval
        self._clock = clock
        self._offset = 0.0  # server clock minus ours, as last seen
        self._down_until = 0.0
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
            TimeoutError,
        )
        self._script = client.register_script(_OPS)

    def now(self) -> float:
        """The server's clock as last seen (or the injected clock)."""
        if self._clock is not None:
            return self._clock()
        return time.time() + self._offset

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """See :meth:`Store.run`."""
        prefix = self.prefix
        keys: list[str] = []
        args: list[object] = []
        for op in ops:
            name = op[0]
            args.append(name)
            if name == "below":
                keys.append(prefix + op[1])
                args.append(str(_to_units(op[2])))
            elif name == "take":
                args.append(len(op[1]))
                for key, cap, rate, need, cost in op[1]:
                    keys.append(prefix + key)
                    args += [_num(cap), _num(rate), _num(need), _num(cost)]
            elif name == "acquire":
                keys.append(prefix + op[1])
                args += [op[2], int(op[3]), _num(op[4])]
            elif name == "add":
                keys.append(prefix + op[1])
                args += [str(_to_units(op[2])), _num(op[3])]
            elif name == "debit":
                keys.append(prefix + op[1])
                args += [_num(op[2]), _num(op[3]), _num(op[4])]
            elif name == "release":
                keys.append(prefix + op[1])
                args.append(op[2])
            else:
                raise ValueError(f"unknown store op {name!r}")
        args.append("" if self._clock is None else f"{self._clock():.6f}")
        if self._down_until and time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis is unavailable", fail_open=self.fail_open)
        try:
            raw = await self._script(keys=keys, args=args)
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_interval
            raise StoreUnavailable(
                f"Redis is unavailable ({type(exc).__name__})", fail_open=self.fail_open
            ) from None
        self._down_until = 0.0
        if self._clock is None:
            self._offset = float(raw[-1]) - time.time()
        out: list[Any] = []
        for op, value in zip(ops, raw, strict=False):
            name = op[0]
            if name in ("below", "add"):
                out.append(_from_units(int(value)))
            elif name == "take":
                out.append(float(value))
            elif name == "acquire":
                out.append(value in (b"1", "1", 1))
            else:
                out.append(None)
        return out

    async def take(self, buckets: Sequence[Bucket]) -> float:
        """See :meth:`Store.take`."""
        wait: float = (await self.run([("take", buckets)]))[0]
        return wait

    async def debit(self, key: str, capacity: float, rate: float, amount: float) -> None:
        """See :meth:`Store.debit`."""
        await self.run([("debit", key, capacity, rate, amount)])

    async def acquire(self, key: str, member: str, limit: int, lease: float) -> bool:
        """See :meth:`Store.acquire`."""
        held: bool = (await self.run([("acquire", key, member, limit, lease)]))[0]
        return held

    async def release(self, key: str, member: str) -> None:
        """See :meth:`Store.release`."""
        await self.run([("release", key, member)])

    async def total(self, key: str) -> Decimal:
        """See :meth:`Store.total`."""
        # An infinite limit: the op always passes and reports the sum.
        spent: Decimal = (await self.run([("below", key, Decimal("1e30"))]))[0]
        return spent

    async def add(self, key: str, amount: Decimal, ttl: float) -> Decimal:
        """See :meth:`Store.add`."""
        total: Decimal = (await self.run([("add", key, amount, ttl)]))[0]
        return total

    async def aclose(self) -> None:
        """Close the connection pool (if the store created it)."""
        if self._owns_client:
            await self.client.aclose()


def ceil_seconds(wait: float) -> int:
    """A wait as whole seconds for Retry-After, never less than the wait."""
    return max(1, math.ceil(wait - 1e-9))
