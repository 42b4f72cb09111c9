"""Where the host's tables live: a SQLite file or a PostgreSQL server.

:class:`.db.Database` and the recorder talk to one small interface,
:class:`Backend`: ``connect()`` lends a connection (``execute``,
``executemany``, ``in_transaction``; rows readable by name and by
position), ``migrate()`` brings the schema to the current version,
``ping()`` says whether the database answers, ``close()`` lets go of it.

The SQL is written once, in SQLite's dialect with ``?`` placeholders, using
only what PostgreSQL understands the same way; :func:`postgres_sql`
rewrites the few spellings that differ (placeholders, ``BEGIN IMMEDIATE``,
``GROUP_CONCAT``, epoch seconds of a stored timestamp) and
:func:`postgres_ddl` the column types. Timestamps are stored as fixed-width
UTC text on both, so that text order is time order and cursors look the
same whichever database served them.

* :class:`SQLiteBackend` (the default): one short-lived ``sqlite3``
  connection per ``connect()``, WAL mode. One host process.
* :class:`PostgresBackend` (``--db postgresql://...``): psycopg 3 with a
  connection pool (the ``[postgres]`` extra). Any number of host processes
  and machines share it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger("minicoder.db")

#: Schema versions and the statements that reach each from the one before
#: (in SQLite's dialect): ``[(1, (...)), (2, (...)), ...]``.
Migrations = Sequence[tuple[int, Sequence[str]]]


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What ``Backend.connect()`` lends: ``sqlite3.Connection``'s shape."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


class Backend(Protocol):
    """The storage interface of the host (see the module docstring)."""

    #: ``"sqlite"`` or ``"postgresql"``.
    kind: str

    def connect(self) -> contextlib.AbstractContextManager[Any]: ...
    def migrate(self, migrations: Migrations) -> tuple[int, int]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...
    def is_disconnect(self, exc: BaseException) -> bool: ...


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_backend(target: str | Path) -> Backend:
    """The backend for ``--db``: a ``postgresql://`` URL or a SQLite file path."""
    text = str(target)
    if is_postgres_url(text):
        return PostgresBackend(text)
    return SQLiteBackend(text)


def redact(url: str) -> str:
    """``url`` without its password (for banners and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def describe(target: str | Path) -> str:
    """Where ``--db`` points, for people: the SQLite file's full path, or
    the URL without its password."""
    text = str(target)
    return redact(text) if is_postgres_url(text) else str(Path(text).resolve())


class SchemaError(RuntimeError):
    """The database is unreachable or holds something this host cannot use."""


# -- SQLite -----------------------------------------------------------------------


class SQLiteBackend:
    """A SQLite file; a new connection per ``connect()`` (cheap for SQLite),
    in autocommit mode (transactions are explicit ``BEGIN``/``COMMIT``)."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return describe(self.path)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a commit survives a crash of the process (not a
            # power loss), without an fsync per transaction.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    def migrate(self, migrations: Migrations) -> tuple[int, int]:
        """Apply the migrations past ``PRAGMA user_version``; (before, after)."""
        latest = migrations[-1][0]
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one process migrates at a time
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if (
                    version == 0
                    and conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone()
                ):
                    raise SchemaError(
                        f"{self.path} holds tables this host did not create (an older version"
                        " of the example?); move it away or pass another --db"
                    )
                if version > latest:
                    raise SchemaError(
                        f"{self.path} has schema version {version}; this host knows up to {latest}"
                    )
                for number, statements in migrations:
                    if number > version:
                        for sql in statements:
                            if not _column_exists(conn, sql):
                                conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {latest}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return version, latest

    def ping(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        pass

    def is_disconnect(self, exc: BaseException) -> bool:
        """SQLite has no connection to lose (a busy file is waited for)."""
        return False


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)")


def _column_exists(conn: sqlite3.Connection, sql: str) -> bool:
    """Whether ``sql`` adds a column the table already has (some files got
    a column before the migration that adds it was numbered); SQLite has no
    ``ADD COLUMN IF NOT EXISTS``."""
    match = _ADD_COLUMN.match(sql)
    if match is None:
        return False
    table, column = match.groups()
    return any(row["name"] == column for row in conn.execute(f"PRAGMA table_info({table})"))


# -- PostgreSQL -------------------------------------------------------------------

_TABLE_INFO = re.compile(r"PRAGMA table_info\((\w+)\)")
_EPOCH = re.compile(r"CAST\(strftime\('%s', ([\w.]+)\) AS INTEGER\)")
_GROUP_CONCAT = re.compile(r"GROUP_CONCAT\(DISTINCT ([\w.]+)\)")


@functools.lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """A statement of the host (SQLite dialect, ``?`` placeholders) as
    PostgreSQL (psycopg) takes it."""
    sql = _EPOCH.sub(r"CAST(EXTRACT(EPOCH FROM CAST(\1 AS timestamptz)) AS BIGINT)", sql)
    sql = _GROUP_CONCAT.sub(r"STRING_AGG(DISTINCT \1, ',')", sql)
    sql = sql.replace("BEGIN IMMEDIATE", "BEGIN")
    # (cid, name, type) of a table's columns, in order, as SQLite gives them
    sql = _TABLE_INFO.sub(
        r"SELECT ordinal_position - 1 AS cid, column_name AS name, data_type AS type"
        r" FROM information_schema.columns WHERE table_schema = current_schema()"
        r" AND table_name = '\1' AND column_name <> 'rowid' ORDER BY ordinal_position",
        sql,
    )
    return sql.replace("%", "%%").replace("?", "%s")


_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+) \(")


def postgres_ddl(sql: str) -> str:
    """A statement of the schema as PostgreSQL's: ``BYTEA`` for
    ``BLOB``, ``BIGINT`` for ``INTEGER`` (token counts and amounts in
    10^-12 USD outgrow 32 bits), and an explicit ``rowid`` (SQLite's
    implicit one: insertion order) on the record tables."""
    sql = sql.replace(" BLOB", " BYTEA").replace(" INTEGER", " BIGINT")
    sql = sql.replace(" ADD COLUMN ", " ADD COLUMN IF NOT EXISTS ")
    match = _CREATE_TABLE.match(sql)
    if (
        match
        and match.group(1).startswith("aibridge_")
        and match.group(1) != ("aibridge_interceptions")
    ):
        sql = sql.replace("(", "(\n        rowid BIGINT GENERATED ALWAYS AS IDENTITY,", 1)
    return sql


#: The key of the advisory lock held while migrating (any constant will do).
_MIGRATION_LOCK = 0x6D696E69636F6472


class PostgresBackend:
    """A PostgreSQL database at ``url``, through a psycopg 3 connection pool
    (``min_size`` connections kept open, at most ``max_size``)."""

    kind = "postgresql"

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 30
    ) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise SchemaError(
                "PostgreSQL needs psycopg 3: pip install 'aibridge-asgi[postgres]'"
            ) from exc
        self.url = url
        self._psycopg = psycopg
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            # A connection is checked as it is lent: after a server restart
            # the stale ones are replaced instead of failing a request.
            check=ConnectionPool.check_connection,
            open=True,
            name="minicoder",
        )
        try:
            self._pool.wait(timeout=timeout)
        except BaseException:
            self._pool.close()
            raise SchemaError(f"cannot reach PostgreSQL at {self.describe()}") from None

    def describe(self) -> str:
        return redact(self.url)

    @contextlib.contextmanager
    def connect(self) -> Iterator[PostgresConnection]:
        with self._pool.connection() as conn:
            yield PostgresConnection(conn)

    def migrate(self, migrations: Migrations) -> tuple[int, int]:
        """Apply the migrations past the version in ``schema_version``;
        (before, after). A new database gets the current schema at once
        (the last migration carries every table); PostgreSQL support began
        at that version. An advisory lock lets one process migrate at a time."""
        latest, _ = migrations[-1]
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATION_LOCK])
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = row[0] or 0
                if version > latest:
                    raise SchemaError(
                        f"{self.describe()} has schema version {version};"
                        f" this host knows up to {latest}"
                    )
                if (
                    version == 0
                    and conn.execute(
                        "SELECT 1 FROM information_schema.tables"
                        " WHERE table_schema = current_schema() AND table_name = 'users'"
                    ).fetchone()
                ):
                    raise SchemaError(
                        f"{self.describe()} holds tables this host did not create;"
                        " use another database"
                    )
                for number, statements in postgres_migrations(migrations):
                    if number > version:
                        for sql in statements:
                            conn.execute(sql)
                if version < latest:
                    conn.execute("DELETE FROM schema_version")
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", [latest])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return version, latest

    def ping(self) -> None:
        with self._pool.connection(timeout=5) as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._pool.close()

    def is_disconnect(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server gone rather than a bad statement."""
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        if isinstance(exc, PoolTimeout):
            return True
        return isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable
        )


#: The first schema version PostgreSQL databases start at.
POSTGRES_BASE_VERSION = 2


def postgres_migrations(migrations: Migrations) -> list[tuple[int, list[str]]]:
    """The migrations as PostgreSQL runs them: every version up to
    :data:`POSTGRES_BASE_VERSION` in one step, later ones one by one."""
    base = [
        postgres_ddl(sql)
        for number, statements in migrations
        if number <= POSTGRES_BASE_VERSION
        for sql in statements
    ]
    later = [
        (number, [postgres_ddl(sql) for sql in statements])
        for number, statements in migrations
        if number > POSTGRES_BASE_VERSION
    ]
    return [(POSTGRES_BASE_VERSION, base), *later]


class Row(dict[str, Any]):
    """A result row, like ``sqlite3.Row``: by column name, by position,
    iterated (and ``tuple()``) as its values; ``dict(row)`` and ``keys()``
    as a dict."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(list(self.values()))

    def __getitem__(self, key: str | int) -> Any:  # type: ignore[override]
        if isinstance(key, int):
            return list(self.values())[key]
        return dict.__getitem__(self, key)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = [column.name for column in cursor.description or ()]
    return lambda values: Row(zip(names, values, strict=True))


def _configure(conn: Any) -> None:
    """Each pooled connection: rows as :class:`Row`, sums of integers as ints."""
    from psycopg.types.numeric import NumericLoader

    class IntegralNumeric(NumericLoader):  # type: ignore[misc]
        # SUM() of BIGINT columns is NUMERIC in PostgreSQL; here it only
        # ever adds integers (tokens, amounts in 10^-12 USD).
        def load(self, data: Any) -> Any:
            value: Decimal = super().load(data)
            return int(value) if value == value.to_integral_value() else value

    conn.adapters.register_loader("numeric", IntegralNumeric)
    conn.row_factory = _row_factory


class PostgresConnection:
    """A pooled psycopg connection with ``sqlite3.Connection``'s shape."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(postgres_sql(sql), list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(postgres_sql(sql), rows)
        return cursor

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append ``rows`` to ``table`` with ``COPY ... FROM STDIN``."""
        with (
            self.raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
