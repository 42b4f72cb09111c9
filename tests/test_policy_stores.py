"""The policy stores' contract, held by MemoryStore and by RedisStore on a
real redis-server: buckets, leases, sums, expiry, atomicity under
concurrency, the server's clock, and both failure modes when Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest

from aibridge_asgi.policy import MemoryStore, RedisStore, Store, StoreUnavailable

from .redis_server import RedisServer, free_port


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_796_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def make_store(
    request: pytest.FixtureRequest,
) -> Callable[[Clock], Store]:
    if request.param == "memory":
        return lambda clock: MemoryStore(clock)
    url = request.getfixturevalue("redis_url")
    # A generous timeout: 200 calls share 50 connections on a busy machine.
    return lambda clock: RedisStore(url, clock=clock, timeout=10)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_bucket_admits_a_burst_of_capacity_then_refills(
    make_store: Callable[[Clock], Store],
) -> None:
    clock = Clock()
    store = make_store(clock)
    bucket = [("rpm:alice", 3.0, 3 / 60, 1.0, 1.0)]  # 3 per minute

    async def go() -> None:
        assert [await store.take(bucket) for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await store.take(bucket)
        assert wait == pytest.approx(20.0)  # one token per 20 s
        clock.now += 19.0
        assert await store.take(bucket) == pytest.approx(1.0)
        clock.now += 1.0
        assert await store.take(bucket) == 0.0
        assert await store.take(bucket) == pytest.approx(20.0)
        # Another actor's bucket is untouched.
        assert await store.take([("rpm:bob", 3.0, 3 / 60, 1.0, 1.0)]) == 0.0
        # Never refills past its capacity.
        clock.now += 3600
        assert [await store.take(bucket) for _ in range(4)][-1] == pytest.approx(20.0)

    run(go())


def test_a_refused_take_changes_no_bucket(make_store: Callable[[Clock], Store]) -> None:
    clock = Clock()
    store = make_store(clock)
    rpm = ("rpm:a", 10.0, 10 / 60, 1.0, 1.0)
    tpm = ("tpm:a", 100.0, 100 / 60, 1.0, 0.0)

    async def go() -> None:
        await store.debit("tpm:a", 100.0, 100 / 60, 130.0)  # 30 tokens in debt
        wait = await store.take([rpm, tpm])
        assert wait == pytest.approx(31 / (100 / 60))
        # The request bucket was not charged for the refused call.
        clock.now += 18.7
        assert await store.take([rpm, tpm]) == 0.0
        for _ in range(9):
            assert await store.take([rpm]) == 0.0
        assert await store.take([rpm]) > 0

    run(go())


def test_leases_hold_slots_until_released_or_expired(make_store: Callable[[Clock], Store]) -> None:
    clock = Clock()
    store = make_store(clock)

    async def go() -> None:
        assert await store.acquire("inflight:a", "i1", 2, 60)
        assert await store.acquire("inflight:a", "i2", 2, 60)
        assert not await store.acquire("inflight:a", "i3", 2, 60)
        assert await store.acquire("inflight:b", "i4", 2, 60)
        await store.release("inflight:a", "i1")
        assert await store.acquire("inflight:a", "i3", 2, 60)
        assert not await store.acquire("inflight:a", "i5", 2, 60)
        clock.now += 61  # a dead worker's slots free themselves
        assert await store.acquire("inflight:a", "i5", 2, 60)
        await store.release("inflight:a", "never-held")

    run(go())


def test_sums_are_exact_and_expire(make_store: Callable[[Clock], Store]) -> None:
    clock = Clock()
    store = make_store(clock)

    async def go() -> None:
        assert await store.total("budget:x") == 0
        assert await store.add("budget:x", Decimal("0.000003"), 100) == Decimal("0.000003")
        assert await store.add("budget:x", Decimal("12.5"), 100) == Decimal("12.500003")
        assert await store.total("budget:x") == Decimal("12.500003")

    run(go())
    # Expiry: memory follows its clock; Redis follows the server's TTL.
    if isinstance(store, MemoryStore):
        clock.now += 101
        assert run(store.total("budget:x")) == 0


def test_concurrent_adds_and_takes_are_atomic(make_store: Callable[[Clock], Store]) -> None:
    clock = Clock()
    store = make_store(clock)

    async def go() -> None:
        totals = await asyncio.gather(
            *(store.add("budget:race", Decimal("0.01"), 100) for _ in range(200))
        )
        # Every add saw a distinct running total: none was lost.
        assert sorted(totals) == [Decimal("0.01") * n for n in range(1, 201)]
        waits = await asyncio.gather(
            *(store.take([("rpm:race", 60.0, 1.0, 1.0, 1.0)]) for _ in range(200))
        )
        assert sum(1 for w in waits if w == 0) == 60
        held = await asyncio.gather(
            *(store.acquire("inflight:race", f"m{n}", 5, 60) for n in range(50))
        )
        assert sum(held) == 5

    run(go())


# -- Redis only -------------------------------------------------------------------


def test_redis_uses_the_server_clock(redis_url: str) -> None:
    """Without an injected clock the scripts read TIME on the server, and
    now() follows the server's clock as last seen."""
    import time

    store = RedisStore(redis_url)

    async def go() -> None:
        assert await store.take([("rpm:t", 1.0, 1 / 60, 1.0, 1.0)]) == 0.0
        wait = await store.take([("rpm:t", 1.0, 1 / 60, 1.0, 1.0)])
        assert 59.0 < wait <= 60.0
        assert abs(store.now() - time.time()) < 1.0
        await store.aclose()

    run(go())


def test_redis_keys_have_ttls_and_the_prefix(redis_url: str, redis_server: RedisServer) -> None:
    store = RedisStore(redis_url, prefix="gw1:")

    async def go() -> None:
        await store.take([("rpm:alice", 60.0, 1.0, 1.0, 1.0)])
        await store.acquire("inflight:alice", "i1", 4, 3600)
        await store.add("budget:month:2026-11-01:alice", Decimal(1), 86400 * 3)
        await store.aclose()

    run(go())
    keys = redis_server.command("KEYS", "*").decode()
    assert "gw1:rpm:alice" in keys and "gw1:inflight:alice" in keys
    assert "gw1:budget:month:2026-11-01:alice" in keys
    for key, most in [
        ("gw1:rpm:alice", 2000),  # refills in 1 s (+1 s margin)
        ("gw1:inflight:alice", 3_600_000),
        ("gw1:budget:month:2026-11-01:alice", 86400 * 3000),
    ]:
        ttl = int(redis_server.command("PTTL", key).decode().strip(":\r\n"))
        assert 0 < ttl <= most, (key, ttl)


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_down_raises_store_unavailable(fail: str) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", fail=fail, timeout=0.3)  # type: ignore[arg-type]

    async def go() -> None:
        for op in (
            store.take([("rpm:a", 1.0, 1.0, 1.0, 1.0)]),
            store.acquire("k", "m", 1, 10),
            store.release("k", "m"),
            store.total("k"),
            store.add("k", Decimal(1), 10),
            store.debit("k", 1.0, 1.0, 1.0),
        ):
            with pytest.raises(StoreUnavailable) as info:
                await op
            assert info.value.fail_open is (fail == "open")
        await store.aclose()

    run(go())


def test_redis_store_recovers_when_redis_comes_back() -> None:
    """After an outage the store tries again (after retry_interval) and works."""
    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", retry_interval=0.05, timeout=0.3)

    async def down() -> None:
        with pytest.raises(StoreUnavailable):
            await store.total("k")
        # Within retry_interval the store does not even try.
        with pytest.raises(StoreUnavailable):
            await store.total("k")

    async def up() -> None:
        await asyncio.sleep(0.06)
        assert await store.add("k", Decimal(2), 10) == 2
        assert await store.total("k") == 2
        await store.aclose()

    asyncio.run(down())
    server = RedisServer(port)
    try:
        asyncio.run(up())
    finally:
        server.stop()
