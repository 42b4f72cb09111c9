"""What a policy costs per request: the four built-ins, in this process.

Runs ``Policy.admit`` then ``Policy.finish`` (what the bridge runs around
every bridged call) for ModelAccess + Budget + RateLimit + ConcurrencyLimit,
first with a MemoryStore, then with a RedisStore on a real redis-server
(started on a free loopback port unless ``--redis URL`` is given), and prints
microseconds per request and Redis round trips per request.

    .venv/bin/python bench/policy.py [--requests N] [--redis URL]

Target (issue 13): under 20 us per request with the memory store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aibridge_asgi import Actor, InterceptionEnded, InterceptionStarted
from aibridge_asgi.policy import (
    Budget,
    ConcurrencyLimit,
    MemoryStore,
    ModelAccess,
    Policy,
    RateLimit,
    RedisStore,
    Store,
)

ACTORS = [Actor(f"user{n}") for n in range(100)]
TALLY: Any = SimpleNamespace(
    input_tokens=1200,
    output_tokens=300,
    cache_read_tokens=0,
    cache_write_tokens=0,
    cost=Decimal("0.0081"),
)


def policy(store: Store) -> Policy:
    return Policy(
        [
            ModelAccess(allow=["claude-*", "gpt-5*"], deny=["*-preview"]),
            Budget(Decimal("1000000"), "month", store),
            RateLimit(requests_per_minute=10**9, tokens_per_minute=10**12, store=store),
            ConcurrencyLimit(1000, store),
        ]
    )


def requests(n: int) -> list[tuple[InterceptionStarted, InterceptionEnded]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        started = InterceptionStarted(
            str(uuid.uuid4()), ACTORS[i % len(ACTORS)], "anthropic", "anthropic",
            "claude-sonnet-4-5", "/v1/messages", True, "claude-code", None, None, now,
        )  # fmt: skip
        out.append((started, InterceptionEnded(started.interception_id, now, "completed", 200)))
    return out


async def measure(p: Policy, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per admitted-and-finished request. CPU time is
    the steadier figure on a shared machine (other processes do not add to it)."""
    calls = requests(n)
    began, cpu = time.perf_counter(), time.process_time()
    for started, ended in calls:
        refusal, pending = await p.admit(started)
        assert refusal is None, refusal
        await p.finish(pending, started, ended, TALLY)
    return (time.perf_counter() - began) / n, (time.process_time() - cpu) / n


def scripts_run(server: Any) -> int:
    """Script calls the server has seen (every store step is one)."""
    info = server.command("INFO", "commandstats").decode()
    calls = 0
    for line in info.splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            calls += int(line.split("calls=")[1].split(",")[0])
    return calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--redis", help="a Redis URL (default: start redis-server)")
    args = parser.parse_args()
    n = args.requests
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    await measure(policy(MemoryStore()), 1000)  # warm up
    memory = min([await measure(policy(MemoryStore()), n) for _ in range(3)])
    empty = min([await measure(Policy([]), n) for _ in range(3)])
    print(
        f"memory store: {memory[1] * 1e6:.1f} us CPU per request "
        f"({memory[0] * 1e6:.1f} us wall; 4 checks; target < 20 us)"
    )
    print(f"  (no checks: {empty[1] * 1e6:.1f} us CPU; the loop itself)")

    server = None
    url = args.redis
    if url is None:
        from tests.redis_server import RedisServer

        server = RedisServer()
        url = server.url
    try:
        store = RedisStore(url)
        p = policy(store)
        await measure(p, 200)
        before = scripts_run(server) if server is not None else None
        m = max(n // 10, 500)
        wall, cpu = await measure(p, m)
        print(
            f"redis store: {wall * 1e6:.0f} us wall per request, sequential on loopback "
            f"({cpu * 1e6:.0f} us CPU in this process)"
        )
        if server is not None and before is not None:
            per = (scripts_run(server) - before) / m
            print(f"  Redis round trips per request: {per:.2f} (one before the call, one after)")
        await store.aclose()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
