"""How fast the example host's recorder can write a batch to PostgreSQL,
by driver and by method (the choice behind examples/minicoder/backends.py).

    .venv/bin/python bench/host_db.py [--url postgresql://...] [--batches 20] [--size 500]

Without ``--url`` it starts a throwaway server (tests/postgres_server.py).
Each method writes ``--batches`` transactions of ``--size`` token-usage rows
(the recorder's largest batch is 500 records); prints rows per second and
the time of one batch. Then reads: the first page of the management API's
listing, as the host runs it, on a table of every row written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "tests")]

INSERT = (
    "INSERT INTO aibridge_token_usages (id, interception_id, provider_response_id,"
    " input_tokens, output_tokens, cache_read_input_tokens, cache_write_input_tokens,"
    " metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS = [
    *("id", "interception_id", "provider_response_id", "input_tokens", "output_tokens"),
    *("cache_read_input_tokens", "cache_write_input_tokens", "metadata", "created_at"),
]


def rows(n: int) -> list[tuple[Any, ...]]:
    return [
        (str(uuid.uuid4()), str(uuid.uuid4()), "msg_1", 10, 20, 300, 4, "{}", "2026-01-01T00:00Z")
        for _ in range(n)
    ]


def report(name: str, seconds: float, batches: int, size: int) -> None:
    print(
        f"{name:<34} {batches * size / seconds:>10,.0f} rows/s"
        f" {seconds / batches * 1000:>8.1f} ms/batch"
    )


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_psycopg(url: str, batches: int, size: int) -> None:
    from minicoder.backends import postgres_sql
    from minicoder.db import Database

    db = Database(url)
    with db.connect() as conn:
        raw = conn.raw

        def per_row() -> None:
            for _ in range(batches):
                conn.execute("BEGIN")
                for row in rows(size):
                    conn.execute(INSERT, row)
                conn.execute("COMMIT")

        def executemany() -> None:
            for _ in range(batches):
                conn.execute("BEGIN")
                conn.executemany(INSERT, rows(size))
                conn.execute("COMMIT")

        def multirow() -> None:
            head, _, one = INSERT.partition(" VALUES ")
            for _ in range(batches):
                batch = rows(size)
                conn.execute("BEGIN")
                conn.execute(
                    head + " VALUES " + ", ".join([one] * len(batch)), [p for r in batch for p in r]
                )
                conn.execute("COMMIT")

        def copy() -> None:
            for _ in range(batches):
                batch = rows(size)
                with raw.transaction():
                    cur = raw.cursor()
                    with cur.copy(
                        f"COPY aibridge_token_usages ({', '.join(COLUMNS)}) FROM STDIN"
                    ) as cp:
                        for r in batch:
                            cp.write_row(r)

        assert postgres_sql(INSERT)
        for name, fn in (
            ("psycopg: one INSERT per row", per_row),
            ("psycopg: executemany (pipeline)", executemany),
            ("psycopg: multi-row INSERT", multirow),
            ("psycopg: COPY", copy),
        ):
            report(name, timed(fn), batches, size)
    db.close()


async def bench_asyncpg(url: str, batches: int, size: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    sql = INSERT
    for i in range(1, 10):
        sql = sql.replace("?", f"${i}", 1)
    try:
        start = time.perf_counter()
        for _ in range(batches):
            async with conn.transaction():
                await conn.executemany(sql, rows(size))
        report("asyncpg: executemany", time.perf_counter() - start, batches, size)
        start = time.perf_counter()
        for _ in range(batches):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "aibridge_token_usages",
                    records=rows(size),
                    columns=COLUMNS,
                )
        report("asyncpg: COPY", time.perf_counter() - start, batches, size)
    finally:
        await conn.close()


def bench_sqlite(batches: int, size: int) -> None:
    import tempfile

    from minicoder.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "b.db")
        with db.connect() as conn:

            def per_row() -> None:
                for _ in range(batches):
                    conn.execute("BEGIN IMMEDIATE")
                    for row in rows(size):
                        conn.execute(INSERT, row)
                    conn.execute("COMMIT")

            report("sqlite3: one INSERT per row", timed(per_row), batches, size)


def bench_recorder(target: str, name: str, interceptions: int = 2000) -> None:
    """The host's recorder end to end: interceptions of six records each
    (start, prompt, tool, thought, tokens, end) queued at once, timed
    until written."""
    from datetime import UTC, datetime

    from minicoder.db import Database
    from minicoder.recorder import DatabaseRecorder

    from aibridge_asgi import (
        Actor,
        InterceptionEnded,
        InterceptionStarted,
        ModelThought,
        PromptUsage,
        TokenUsage,
        ToolUsage,
    )

    db = Database(target)
    recorder = DatabaseRecorder(db)
    now = datetime.now(UTC)
    records: list[Any] = []
    for _ in range(interceptions):
        i = str(uuid.uuid4())
        actor = Actor("u-1", {"api_key_id": "k1"})
        records += [
            InterceptionStarted(
                i,
                actor,
                "anthropic",
                "anthropic",
                "claude-sonnet-4-5",
                "/v1/messages",
                True,
                "Claude Code",
                "s-1",
                "claude-cli/2",
                now,
                {},
            ),
            PromptUsage(i, "msg_1", "Fix the test"),
            ToolUsage(i, "msg_1", "Read", "toolu_1", {"file_path": "a.py"}),
            ModelThought(i, "Look at a.py", "thinking"),
            TokenUsage(i, "msg_1", 10, 20, 300, 4, {}),
            InterceptionEnded(i, now, "completed", 200),
        ]

    async def run() -> None:
        for record in records:
            await recorder.record(record)

    start = time.perf_counter()
    asyncio.run(run())
    recorder.flush_sync()
    seconds = time.perf_counter() - start
    recorder.close()
    db.close()
    print(
        f"{'recorder, ' + name:<34} {len(records) / seconds:>10,.0f} records/s"
        f" ({interceptions / seconds:,.0f} interceptions/s, mean batch"
        f" {sum(recorder.batches) / len(recorder.batches):.0f})"
    )


def bench_reads(url: str, n: int = 200) -> None:
    from minicoder import queries
    from minicoder.db import Database

    db = Database(url)
    start = time.perf_counter()
    for _ in range(n):
        with db.connect() as conn:
            queries.list_interceptions(conn, queries.Filters(), limit=50)
    seconds = time.perf_counter() - start
    print(f"{'listing, first page (pooled conn)':<34} {n / seconds:>10,.0f} pages/s")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from postgres_server import PostgresServer

        server = PostgresServer().start()
        url = server.new_database()
    try:
        bench_sqlite(args.batches, args.size)
        bench_psycopg(url, args.batches, args.size)
        try:
            asyncio.run(bench_asyncpg(url, args.batches, args.size))
        except ImportError:
            print("asyncpg: not installed")
        bench_reads(url)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            bench_recorder(str(Path(tmp) / "r.db"), "SQLite")
        bench_recorder(url, "PostgreSQL (COPY)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
