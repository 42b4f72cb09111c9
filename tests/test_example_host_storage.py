"""The example host's storage: both backends (a SQLite file, a real
PostgreSQL server), their schema migrations, and the ``migrate`` command."""

from __future__ import annotations

import importlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .test_example_host import ROOT, Database

# test_example_host put examples/ on sys.path
backends = importlib.import_module("minicoder.backends")
db_module = importlib.import_module("minicoder.db")
SchemaError = backends.SchemaError
describe, postgres_sql, redact = backends.describe, backends.postgres_sql, backends.redact
MIGRATIONS, SCHEMA, SCHEMA_VERSION = (
    db_module.MIGRATIONS,
    db_module.SCHEMA,
    db_module.SCHEMA_VERSION,
)

RECORD_TABLES = {
    "aibridge_interceptions",
    "aibridge_token_usages",
    "aibridge_user_prompts",
    "aibridge_tool_usages",
    "aibridge_model_thoughts",
    "aibridge_costs",
    "aibridge_tool_results",
}


def _tables(db: Database) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if db.kind == "sqlite"
        else "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    )
    with db.connect() as conn:
        return {row[0] for row in conn.execute(sql)}


def test_an_empty_database_gets_the_current_schema_once(db_target: str) -> None:
    db = Database(db_target)
    assert db.migrated == (0, SCHEMA_VERSION)
    assert RECORD_TABLES | {"users", "api_keys", "web_sessions"} <= _tables(db)
    again = Database(db_target)
    assert again.migrated == (SCHEMA_VERSION, SCHEMA_VERSION)
    db.close()
    again.close()


def test_the_same_statements_work_on_both(db_target: str) -> None:
    """Users, tokens, sessions: the shared SQL, on each database."""
    db = Database(db_target)
    alice = db.create_user("alice")
    assert db.create_user("alice", admin=True) == type(alice)(alice.id, "alice", True)
    token = db.new_token(alice.id, "t")
    owner = db.token_owner(token)
    assert owner is not None and owner.user.username == "alice"
    assert db.token_owner(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    session = db.create_session(alice.id)
    assert db.session_user(session) == db.user("alice")
    db.end_session(session)
    assert db.session_user(session) is None
    db.ping()
    db.close()


def test_workers_creating_the_same_user_at_once_get_the_same_row(db_target: str) -> None:
    db = Database(db_target)
    made: list[str] = []
    threads = [
        threading.Thread(target=lambda: made.append(db.create_user("demo", admin=True).id))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8 and len(set(made)) == 1
    db.close()


def test_hosts_starting_together_migrate_once(postgres_server: object) -> None:
    """Several processes opening a new PostgreSQL database at once: one
    migrates (under an advisory lock), the others find it done."""
    url = postgres_server.new_database()  # type: ignore[attr-defined]
    results: list[tuple[int, int] | None] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            db = Database(url)
            results.append(db.migrated)
            db.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    latest = SCHEMA_VERSION
    assert sorted(results) == [(0, latest)] + [(latest, latest)] * 3  # type: ignore[operator]


def test_a_version_1_sqlite_file_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO users (id, username, is_admin, created_at) VALUES ('u1', 'old', 1, 'x')"
        )
        conn.execute("PRAGMA user_version = 1")
    out = subprocess.run(
        [sys.executable, "examples/host.py", "migrate", "--db", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"{path}: schema version 1 -> {SCHEMA_VERSION}"
    db = Database(path)
    assert db.migrated == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert _tables(db) >= RECORD_TABLES
    assert db.user("old") is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_migrate_command_on_postgresql(postgres_server: object) -> None:
    url = postgres_server.new_database()  # type: ignore[attr-defined]
    command = [sys.executable, "examples/host.py", "migrate"]
    env_run = {"cwd": ROOT, "capture_output": True, "text": True, "check": True}
    first = subprocess.run([*command, "--db", url], **env_run)  # type: ignore[call-overload]
    assert first.stdout.strip() == f"{url}: schema version 0 -> {SCHEMA_VERSION}"
    # AIBRIDGE_HOST_DB is the default for --db
    import os

    second = subprocess.run(  # type: ignore[call-overload]
        command, env={**os.environ, "AIBRIDGE_HOST_DB": url}, **env_run
    )
    assert second.stdout.strip() == f"{url}: schema version {SCHEMA_VERSION}, up to date"


def test_a_newer_schema_is_refused(db_target: str) -> None:
    db = Database(db_target)
    with db.connect() as conn:
        if db.kind == "sqlite":
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        else:
            conn.execute("UPDATE schema_version SET version = ?", [SCHEMA_VERSION + 1])
    db.close()
    with pytest.raises(SchemaError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Database(db_target)


def test_tables_of_someone_else_are_refused(db_target: str) -> None:
    db = Database(db_target, migrate=False)
    with db.connect() as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    db.close()
    with pytest.raises(SchemaError, match="did not create"):
        Database(db_target)


def test_migrations_are_numbered_in_order() -> None:
    numbers = [number for number, _ in MIGRATIONS]
    assert numbers == list(range(1, SCHEMA_VERSION + 1))


def test_postgresql_spellings() -> None:
    assert postgres_sql("SELECT a FROM t WHERE b = ? AND c LIKE '5%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '5%%'"
    )
    assert postgres_sql("BEGIN IMMEDIATE") == "BEGIN"
    assert "EXTRACT(EPOCH FROM CAST(i.started_at AS timestamptz))" in postgres_sql(
        "SELECT CAST(strftime('%s', i.started_at) AS INTEGER)"
    )
    assert postgres_sql("GROUP_CONCAT(DISTINCT i.model)") == "STRING_AGG(DISTINCT i.model, ',')"
    assert "information_schema.columns" in postgres_sql("PRAGMA table_info(users)")


def test_the_password_never_shows() -> None:
    url = "postgresql://host:s3cret@db.internal:5432/minicoder"
    assert redact(url) == "postgresql://host:***@db.internal:5432/minicoder"
    assert "s3cret" not in describe(url)
    assert describe("rel.db") == str(Path("rel.db").resolve())


def test_a_postgresql_server_that_is_not_there(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchemaError, match="cannot reach PostgreSQL at postgresql://x:\\*\\*\\*@"):
        backends.PostgresBackend(f"postgresql://x:pw@127.0.0.1:{port}/db", timeout=1)


def test_a_column_some_files_already_have_is_not_added_twice(db_target: str) -> None:
    """A migration adding a column a file got earlier (before the migration
    was numbered) passes over it, on both databases."""
    db = Database(db_target)
    backend = db.backend
    with db.connect() as conn:
        conn.execute("ALTER TABLE users ADD COLUMN nickname TEXT")
    later = (*MIGRATIONS, (SCHEMA_VERSION + 1, ("ALTER TABLE users ADD COLUMN nickname TEXT",)))
    assert backend.migrate(later) == (SCHEMA_VERSION, SCHEMA_VERSION + 1)
    with db.connect() as conn:
        names = [row["name"] for row in conn.execute("PRAGMA table_info(users)")]
    assert names == ["id", "username", "is_admin", "created_at", "nickname"]
    db.close()
