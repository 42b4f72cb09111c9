"""The recorder: every record the bridge hands over, written to the
database (SQLite or PostgreSQL).

The bridge awaits :meth:`DatabaseRecorder.record` for one record at a time,
on the event loop. Writing to the database there would stall every request, so
``record()`` only appends the record to a queue and returns; one writer
thread takes whatever has queued up and writes it in a single transaction.
When records arrive faster than a commit takes, they pile up and the next
transaction takes them all: batching happens exactly when it helps, and a
lone record is written at once (no timer). On PostgreSQL a batch costs a
few round trips whatever its size: one multi-row ``INSERT`` per table, then
one statement ending the interceptions that ended.

Nothing is lost on shutdown: :meth:`aclose` lets the writer drain the queue
and commit before it returns. The host's lifespan calls it right after
``bridge.aclose()``, which itself waits for the requests in flight and hands
over their last records. (A ``SIGKILL`` skips all of this: what was still
queued, here or in the bridge, is lost; the next start marks interceptions
left without an end as ``interrupted``.)
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import anyio.to_thread

from aibridge_asgi import (
    Cost,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    PromptUsage,
    Record,
    TokenUsage,
    ToolResult,
    ToolUsage,
)

from .backends import Connection
from .db import Database, timestamp

logger = logging.getLogger("minicoder.recorder")

MAX_BATCH = 500


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def statement(record: Record) -> tuple[str, tuple[Any, ...]]:
    """The SQL that stores one record."""
    if isinstance(record, InterceptionStarted):
        metadata = dict(record.metadata)
        return (
            "INSERT INTO aibridge_interceptions (id, initiator_id, api_key_id, provider,"
            " provider_name, model, client, client_session_id, route, streaming, user_agent,"
            " metadata, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.actor.id,
                metadata.get("api_key_id"),
                record.provider,
                record.provider_name,
                record.model,
                record.client,
                record.client_session_id,
                record.route,
                int(record.streaming),
                record.user_agent,
                _json(metadata),
                timestamp(record.started_at),
            ),
        )
    if isinstance(record, InterceptionEnded):
        return (
            "UPDATE aibridge_interceptions SET ended_at = ?, status = ?, http_status = ?,"
            " error = ?, credential = ?, key_name = ? WHERE id = ?",
            (
                timestamp(record.ended_at),
                record.status,
                record.http_status,
                record.error,
                record.credential,
                record.key_name,
                record.interception_id,
            ),
        )
    if isinstance(record, TokenUsage):
        return (
            "INSERT INTO aibridge_token_usages (id, interception_id, provider_response_id,"
            " input_tokens, output_tokens, cache_read_input_tokens, cache_write_input_tokens,"
            " metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                record.interception_id,
                record.provider_response_id,
                record.input_tokens,
                record.output_tokens,
                record.cache_read_input_tokens,
                record.cache_write_input_tokens,
                _json(dict(record.extra)),
                timestamp(record.created_at),
            ),
        )
    if isinstance(record, PromptUsage):
        return (
            "INSERT INTO aibridge_user_prompts (id, interception_id, provider_response_id,"
            " prompt, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                record.interception_id,
                record.provider_response_id,
                record.prompt,
                timestamp(record.created_at),
            ),
        )
    if isinstance(record, ToolUsage):
        return (
            "INSERT INTO aibridge_tool_usages (id, interception_id, provider_response_id, tool,"
            " tool_call_id, input, injected, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                record.interception_id,
                record.provider_response_id,
                record.tool,
                record.tool_call_id,
                _json(record.args),
                int(record.injected),
                timestamp(record.created_at),
            ),
        )
    if isinstance(record, ModelThought):
        return (
            "INSERT INTO aibridge_model_thoughts (interception_id, content, metadata, created_at)"
            " VALUES (?, ?, ?, ?)",
            (
                record.interception_id,
                record.content,
                _json({"source": record.source}),
                timestamp(record.created_at),
            ),
        )
    if isinstance(record, Cost):
        amount = record.amount
        return (
            "INSERT INTO aibridge_costs (interception_id, provider_name, model, amount,"
            " amount_pico, currency, breakdown, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.provider_name,
                record.model,
                None if amount is None else format(amount, "f"),
                None if amount is None else pico(amount),
                record.currency,
                _json({kind: format(share, "f") for kind, share in record.breakdown.items()}),
                timestamp(record.created_at),
            ),
        )
    if isinstance(record, ToolResult):
        return (
            "INSERT INTO aibridge_tool_results (interception_id, tool_call_id, is_error, size,"
            " content, truncated, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.tool_call_id,
                int(record.is_error),
                record.size,
                record.content,
                int(record.truncated),
                timestamp(record.created_at),
            ),
        )
    raise TypeError(f"not a record: {record!r}")


def pico(amount: Decimal) -> int:
    """``amount`` in units of 10^-12, for exact sums in SQL (prices have at
    most six decimals per million tokens, so this is exact for them)."""
    return int(amount.scaleb(12).to_integral_value(ROUND_HALF_EVEN))


class DatabaseRecorder:
    """A bridge recorder (``create_bridge(recorder=...)``) writing to ``db``
    from one worker thread, in batches."""

    def __init__(
        self, db: Database, *, max_batch: int = MAX_BATCH, retry_for: float = 60.0
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        #: Seconds a batch is retried while the database is unreachable.
        self.retry_for = retry_for
        self._queue: deque[Record] = deque()
        self._changed = threading.Condition()
        self._accepted = 0  # records taken by record()
        self._done = 0  # records written (or given up on)
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Sizes of the transactions written so far (for tests and curiosity).
        self.batches: list[int] = []

    async def record(self, record: Record) -> None:
        """Queue ``record`` for the writer. Never waits for the disk."""
        with self._changed:
            if self._closed:
                logger.error("record %s after close; dropped", type(record).__name__)
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_loop, name="minicoder-recorder", daemon=True
                )
                self._thread.start()
            self._queue.append(record)
            self._accepted += 1
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Records queued and not written yet."""
        with self._changed:
            return self._accepted - self._done

    def flush_sync(self, timeout: float | None = None) -> bool:
        """Block until every record queued so far is written; False on timeout."""
        with self._changed:
            target = self._accepted
            return self._changed.wait_for(lambda: self._done >= target, timeout)

    async def flush(self) -> None:
        """Wait (off the event loop) until every record queued so far is written."""
        await anyio.to_thread.run_sync(self.flush_sync)

    def close(self) -> None:
        """Write everything still queued, then stop the writer. Idempotent."""
        with self._changed:
            self._closed = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join()

    async def aclose(self) -> None:
        """:meth:`close`, without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)

    # -- the writer thread ------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and drained
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))
                ]
            self._write_batch(batch)
            with self._changed:
                self._done += len(batch)
                self.batches.append(len(batch))
                self._changed.notify_all()

    def _write_batch(self, batch: list[Record]) -> None:
        """``batch`` on a connection borrowed for it. While the database is
        unreachable (PostgreSQL restarting, a failover), try again, for up
        to :attr:`retry_for` seconds, before giving the batch up."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.1
        while True:
            try:
                with self.db.connect() as conn:
                    self._write(conn, batch)
                return
            except Exception as exc:
                if time.monotonic() + pause > deadline:
                    logger.error("database unreachable; %d records lost: %r", len(batch), exc)
                    return
                logger.warning("database unreachable (%r); trying again", exc)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _write(self, conn: Connection, batch: list[Record]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) > 1 and self.db.kind == "postgresql":
                _write_rows(conn, batch)
            else:
                for record in batch:
                    cursor = conn.execute(*statement(record))
                    if isinstance(record, InterceptionEnded) and cursor.rowcount == 0:
                        logger.warning("no interception %s to end", record.interception_id)
            conn.execute("COMMIT")
            return
        except Exception as exc:
            if self.db.is_disconnect(exc):
                raise  # not the records' fault: _write_batch tries again
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                logger.exception("could not store %s", type(batch[0]).__name__)
                return
        # One bad record must not cost the others: write them one by one.
        for record in batch:
            self._write(conn, [record])


#: The old name, from when SQLite was the only database.
SQLiteRecorder = DatabaseRecorder

_INSERT = re.compile(r"INSERT INTO (\w+) \(([^)]*)\) VALUES")


def _write_rows(conn: Any, batch: list[Record]) -> None:
    """``batch`` on PostgreSQL in a few statements (inside the caller's
    transaction): the rows of each table in one ``COPY`` (interceptions
    first), then every end in one ``UPDATE ... FROM (VALUES ...)``. The
    same as running the records' statements in order: the only statement
    reading another's rows is the end of an interception. (COPY writes a
    batch of 500 rows about 4 times faster than one multi-row INSERT;
    bench/host_db.py.)"""
    inserts: dict[str, list[tuple[Any, ...]]] = {}
    ends: list[tuple[Any, ...]] = []
    for record in batch:
        sql, params = statement(record)
        if isinstance(record, InterceptionEnded):
            ends.append(params)
        else:
            inserts.setdefault(sql, []).append(params)
    for sql in sorted(inserts, key=lambda sql: "INTO aibridge_interceptions " not in sql):
        match = _INSERT.match(sql)
        assert match is not None, sql
        conn.copy_rows(match.group(1), match.group(2).split(", "), inserts[sql])
    if ends:
        values = ", ".join(["(?, ?, CAST(? AS BIGINT), ?, ?, ?, ?)"] * len(ends))
        cursor = conn.execute(
            "UPDATE aibridge_interceptions AS i SET ended_at = e.ended_at, status = e.status,"
            " http_status = e.http_status, error = e.error, credential = e.credential,"
            " key_name = e.key_name"
            f" FROM (VALUES {values})"
            " AS e (ended_at, status, http_status, error, credential, key_name, id)"
            " WHERE i.id = e.id",
            [p for row in ends for p in row],
        )
        if cursor.rowcount < len(ends):
            logger.warning("%d interceptions to end were not found", len(ends) - cursor.rowcount)
