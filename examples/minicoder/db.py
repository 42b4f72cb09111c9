"""The host's database: users, API tokens, browser sessions, and the tables
the recorder fills.

A SQLite file (the default) or a PostgreSQL server (``--db
postgresql://...``), through the small interface of :mod:`.backends`; no
ORM, the same SQL on both. Every function here blocks, so the web handlers
call them through ``anyio.to_thread.run_sync``; each call borrows its own
connection (a new one for SQLite, a pooled one for PostgreSQL), so any
thread may call any function. SQLite runs in WAL mode: readers never wait
for the recorder's writer and the other way round.

The schema is versioned (:data:`MIGRATIONS`); opening a database applies
the versions it lacks, and so does ``examples/host.py migrate``.

Tokens are never stored in clear. A token is ``<key id>-<secret>``: the key
id is stored as is (to find the row), the secret as its SHA-256, compared in
constant time. Coder's API keys work the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .backends import Backend, Migrations, open_backend
from .queries import forget_columns

SCHEMA_VERSION = 4

#: The tables, in the order they are created. The ``aibridge_*`` tables have
#: the shape of Coder's (coderd/database), plus the columns the bridge's
#: records carry beyond Coder's (route, streaming, status...).
SCHEMA = (
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hashed_secret BLOB NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        token_name TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE web_sessions (
        hashed_id BLOB PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE aibridge_interceptions (
        id TEXT PRIMARY KEY,
        initiator_id TEXT NOT NULL,
        api_key_id TEXT,
        provider TEXT NOT NULL,
        provider_name TEXT NOT NULL,
        model TEXT NOT NULL,
        client TEXT NOT NULL DEFAULT 'unknown',
        client_session_id TEXT,
        route TEXT NOT NULL,
        streaming INTEGER NOT NULL,
        user_agent TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        started_at TEXT NOT NULL,
        ended_at TEXT,
        status TEXT,
        http_status INTEGER,
        error TEXT
    )""",
    "CREATE INDEX idx_aibridge_interceptions_started"
    " ON aibridge_interceptions (started_at DESC, id DESC)",
    "CREATE INDEX idx_aibridge_interceptions_initiator"
    " ON aibridge_interceptions (initiator_id, started_at DESC)",
    """CREATE TABLE aibridge_token_usages (
        id TEXT PRIMARY KEY,
        interception_id TEXT NOT NULL,
        provider_response_id TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_input_tokens INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_token_usages_interception"
    " ON aibridge_token_usages (interception_id)",
    """CREATE TABLE aibridge_user_prompts (
        id TEXT PRIMARY KEY,
        interception_id TEXT NOT NULL,
        provider_response_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_user_prompts_interception"
    " ON aibridge_user_prompts (interception_id)",
    """CREATE TABLE aibridge_tool_usages (
        id TEXT PRIMARY KEY,
        interception_id TEXT NOT NULL,
        provider_response_id TEXT NOT NULL,
        server_url TEXT,
        tool TEXT NOT NULL,
        tool_call_id TEXT NOT NULL DEFAULT '',
        input TEXT NOT NULL,
        injected INTEGER NOT NULL DEFAULT 0,
        invocation_error TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_tool_usages_interception ON aibridge_tool_usages (interception_id)",
    """CREATE TABLE aibridge_model_thoughts (
        interception_id TEXT NOT NULL,
        content TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_model_thoughts_interception"
    " ON aibridge_model_thoughts (interception_id)",
)

#: Added in schema version 2 (run on new databases and on version 1 ones):
#: what each interception cost, and the tool results clients sent back.
#: ``amount`` is the exact decimal as text (``NULL``: the model had no
#: price); ``amount_pico`` the same in millionths of a millionth of the
#: currency unit, an integer SQLite can sum exactly.
SCHEMA_V2 = (
    """CREATE TABLE aibridge_costs (
        interception_id TEXT NOT NULL,
        provider_name TEXT NOT NULL,
        model TEXT NOT NULL,
        amount TEXT,
        amount_pico INTEGER,
        currency TEXT NOT NULL DEFAULT 'USD',
        breakdown TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_costs_interception ON aibridge_costs (interception_id)",
    """CREATE TABLE aibridge_tool_results (
        interception_id TEXT NOT NULL,
        tool_call_id TEXT NOT NULL,
        is_error INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL,
        content TEXT,
        truncated INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_aibridge_tool_results_interception"
    " ON aibridge_tool_results (interception_id)",
    "CREATE INDEX idx_aibridge_interceptions_session ON aibridge_interceptions (client_session_id)",
)

#: The policy's groups (a monthly budget, the models allowed), their
#: members, and budgets of single users (:mod:`.policy`).
POLICY_TABLES = (
    """CREATE TABLE IF NOT EXISTS policy_groups (
        name TEXT PRIMARY KEY,
        monthly_budget TEXT,
        models TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS policy_group_members (
        group_name TEXT NOT NULL REFERENCES policy_groups (name) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        PRIMARY KEY (group_name, user_id)
    )""",
    """CREATE TABLE IF NOT EXISTS policy_user_budgets (
        user_id TEXT PRIMARY KEY,
        monthly_budget TEXT NOT NULL
    )""",
)

#: Added in schema version 3: API tokens expire (``NULL``: never), and the
#: policy's tables. Hosts of the version before added the column and made
#: the tables at start, outside the migrations: these statements pass over
#: what is there (``IF NOT EXISTS``).
SCHEMA_V3 = ("ALTER TABLE api_keys ADD COLUMN expires_at TEXT", *POLICY_TABLES)

#: Added in schema version 4: which credential served each interception
#: (``pool``: the provider's keys; ``byok``: the client's own; ``actor``:
#: the user's, set by the host) and the key's name (never the key), from its
#: end record.
SCHEMA_V4 = (
    "ALTER TABLE aibridge_interceptions ADD COLUMN credential TEXT",
    "ALTER TABLE aibridge_interceptions ADD COLUMN key_name TEXT",
)

#: Every schema version and the statements that reach it from the one
#: before. Add a version at the end; never edit a released one.
MIGRATIONS: Migrations = ((1, SCHEMA), (2, SCHEMA_V2), (3, SCHEMA_V3), (4, SCHEMA_V4))
assert MIGRATIONS[-1][0] == SCHEMA_VERSION

#: The tables holding an interception's records, deleted with it.
CHILD_TABLES = (
    "aibridge_token_usages",
    "aibridge_user_prompts",
    "aibridge_tool_usages",
    "aibridge_model_thoughts",
    "aibridge_costs",
    "aibridge_tool_results",
)

SESSION_LIFETIME = timedelta(days=7)
#: How long a new API token is valid unless told otherwise. An expired token
#: is refused like a wrong one; ``revoke_token`` ends one at once.
TOKEN_LIFETIME = timedelta(days=30)

#: ``InterceptionEnded`` never came for these (the host died first); set on
#: the next start so they do not look in flight forever.
INTERRUPTED = "interrupted"


def timestamp(value: datetime) -> str:
    """A datetime as stored: UTC, fixed width, so that text order is time order."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> str:
    return timestamp(datetime.now(UTC))


def parse_timestamp(value: str) -> datetime:
    """A stored timestamp (or any RFC 3339 time with an offset) as a datetime."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone")
    return parsed


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class User:
    id: str
    username: str
    is_admin: bool


@dataclass(frozen=True)
class TokenOwner:
    """A user, and which of their API keys was used."""

    user: User
    api_key_id: str


class Database:
    """The host's database at ``target`` (a SQLite file path or a
    ``postgresql://`` URL), migrated to :data:`SCHEMA_VERSION` on opening."""

    def __init__(self, target: str | Path, *, migrate: bool = True) -> None:
        #: What ``--db`` said: the SQLite path or the URL (with any password).
        self.target = str(target)
        self.backend: Backend = open_backend(target)
        #: (version before, version after) of the migration run on opening.
        self.migrated: tuple[int, int] | None = None
        if migrate:
            try:
                self.migrated = self.migrate()
            except BaseException:
                self.backend.close()
                raise

    @property
    def path(self) -> str:
        """:attr:`target` (its name when SQLite was the only database)."""
        return self.target

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.backend.kind

    def describe(self) -> str:
        """Where the data is, for people (a path, or a URL without its password)."""
        return self.backend.describe()

    def connect(self) -> contextlib.AbstractContextManager[Any]:
        """A connection in autocommit mode (``execute``, ``executemany``),
        given back on exit."""
        return self.backend.connect()

    def migrate(self) -> tuple[int, int]:
        """Bring the schema to :data:`SCHEMA_VERSION`; (before, after)."""
        try:
            return self.backend.migrate(MIGRATIONS)
        finally:
            forget_columns()

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        self.backend.ping()

    def close(self) -> None:
        """Let go of the database (the pool's connections)."""
        self.backend.close()

    def is_disconnect(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database is unreachable (worth trying
        again) rather than that the statement was wrong."""
        return self.backend.is_disconnect(exc)

    # -- users and tokens ---------------------------------------------------

    def create_user(self, username: str, *, admin: bool = False) -> User:
        """Create ``username``, or return it if it exists (made admin if
        ``admin``; never demoted)."""
        # One statement, so that two processes creating the same user at
        # once (workers starting) both succeed with the same row.
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO users (id, username, is_admin, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (username) DO NOTHING",
                (str(uuid.uuid4()), username, int(admin), now()),
            )
            if admin:
                conn.execute("UPDATE users SET is_admin = 1 WHERE username = ?", (username,))
            user_id = conn.execute(
                "SELECT id FROM users WHERE username = ?", (username,)
            ).fetchone()["id"]
        user = self.user(user_id)
        assert user is not None
        return user

    def user(self, ref: str) -> User | None:
        """The user whose id or username is ``ref``."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT id, username, is_admin FROM users WHERE id = ? OR username = ?",
                (ref, ref),
            ).fetchone()
        return User(row["id"], row["username"], bool(row["is_admin"])) if row else None

    def new_token(
        self,
        user_id: str,
        name: str = "",
        lifetime: timedelta | None = TOKEN_LIFETIME,
        *,
        replace: bool = False,
    ) -> str:
        """Make a new API token for the user; the only time it is seen in
        clear. It expires after ``lifetime`` (``None``: never). ``replace``
        first revokes the user's tokens of the same ``name`` (the demo token
        printed at every start replaces the previous one)."""
        key_id = secrets.token_hex(5)
        secret = secrets.token_urlsafe(24)
        created = datetime.now(UTC)
        expires = None if lifetime is None else timestamp(created + lifetime)
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            if replace:
                conn.execute(
                    "DELETE FROM api_keys WHERE user_id = ? AND token_name = ?", (user_id, name)
                )
            conn.execute(
                "INSERT INTO api_keys"
                " (id, hashed_secret, user_id, token_name, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, _digest(secret), user_id, name, timestamp(created), expires),
            )
            conn.execute("COMMIT")
        return f"{key_id}-{secret}"

    def revoke_token(self, key_id: str, user_id: str | None = None) -> bool:
        """End the token whose key id (the part before the first ``-``) is
        ``key_id`` (only if it is ``user_id``'s, when given); True if one was."""
        key_id = key_id.partition("-")[0]
        with self.connect() as conn:
            if user_id is None:
                cursor = conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
            else:
                cursor = conn.execute(
                    "DELETE FROM api_keys WHERE id = ? AND user_id = ?", (key_id, user_id)
                )
            return cursor.rowcount > 0

    def token_owner(self, token: str) -> TokenOwner | None:
        """Who ``token`` belongs to, or None if it is not a valid token."""
        key_id, _, secret = token.partition("-")
        if not secret:
            return None
        with self.connect() as conn:
            row = conn.execute(
                "SELECT api_keys.hashed_secret, users.id, users.username, users.is_admin"
                " FROM api_keys JOIN users ON users.id = api_keys.user_id"
                " WHERE api_keys.id = ? AND (api_keys.expires_at IS NULL"
                " OR api_keys.expires_at > ?)",
                (key_id, now()),
            ).fetchone()
        if row is None or not hmac.compare_digest(row["hashed_secret"], _digest(secret)):
            return None
        return TokenOwner(User(row["id"], row["username"], bool(row["is_admin"])), key_id)

    # -- browser sessions ---------------------------------------------------

    def create_session(self, user_id: str) -> str:
        """Start a browser session; returns its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        started = datetime.now(UTC)
        with self.connect() as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (timestamp(started),))
            conn.execute(
                "INSERT INTO web_sessions (hashed_id, user_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (
                    _digest(session_id),
                    user_id,
                    timestamp(started),
                    timestamp(started + SESSION_LIFETIME),
                ),
            )
        return session_id

    def session_user(self, session_id: str) -> User | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT users.id, users.username, users.is_admin FROM web_sessions"
                " JOIN users ON users.id = web_sessions.user_id"
                " WHERE web_sessions.hashed_id = ? AND web_sessions.expires_at > ?",
                (_digest(session_id), now()),
            ).fetchone()
        return User(row["id"], row["username"], bool(row["is_admin"])) if row else None

    def end_session(self, session_id: str) -> None:
        with self.connect() as conn:
            conn.execute("DELETE FROM web_sessions WHERE hashed_id = ?", (_digest(session_id),))

    # -- records --------------------------------------------------------------

    def mark_interrupted(self) -> int:
        """Mark interceptions a previous run left without an end (it was
        killed before the recorder got ``InterceptionEnded``). Call at
        startup, before serving; returns how many were marked."""
        with self.connect() as conn:
            cursor = conn.execute(
                "UPDATE aibridge_interceptions SET status = ?,"
                " error = 'the host stopped before this interception ended'"
                " WHERE ended_at IS NULL AND status IS NULL",
                (INTERRUPTED,),
            )
            return cursor.rowcount

    def delete_older_than(self, cutoff: datetime, batch: int = 500) -> int:
        """Delete at most ``batch`` interceptions that started before
        ``cutoff`` (ended or not), with their records, in one short
        transaction. Returns how many; call again until it returns 0."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM aibridge_interceptions WHERE started_at < ?"
                        " ORDER BY started_at LIMIT ?",
                        (timestamp(cutoff), batch),
                    )
                ]
                if ids:
                    marks = ", ".join("?" * len(ids))
                    for table in CHILD_TABLES:
                        conn.execute(f"DELETE FROM {table} WHERE interception_id IN ({marks})", ids)
                    conn.execute(f"DELETE FROM aibridge_interceptions WHERE id IN ({marks})", ids)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(ids)
