"""A miniature Coder-like control plane with the bridge mounted.

It keeps its own users and API tokens in SQLite (tokens stored as SHA-256
hashes, never in clear), mounts the bridge at ``/api/v2/aibridge`` with a
resolver that looks tokens up there, and writes every record the bridge
hands over into tables of its own.

With no ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` in the environment it
serves the library's fake upstream in-process (at ``/_fake_upstream``) and
points the bridge at it, so everything works offline.

    python examples/host.py serve [--host 127.0.0.1] [--port 8080] [--db aibridge-host.db]
    python examples/host.py create-user NAME [--db ...]     # prints a new token
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aibridge_asgi import (
    Actor,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
    create_bridge,
)
from aibridge_asgi.testing import ANTHROPIC_KEY, OPENAI_KEY, FakeUpstream

DEFAULT_DB = os.environ.get("AIBRIDGE_HOST_DB", "aibridge-host.db")
BRIDGE_PREFIX = "/api/v2/aibridge"
FAKE_PREFIX = "/_fake_upstream"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    hashed TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aibridge_interceptions (
    id TEXT PRIMARY KEY, initiator_id TEXT NOT NULL, provider TEXT NOT NULL,
    provider_name TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL,
    streaming INTEGER NOT NULL, client TEXT NOT NULL, client_session_id TEXT,
    user_agent TEXT, metadata TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, status TEXT, http_status INTEGER, error TEXT
);
CREATE TABLE IF NOT EXISTS aibridge_token_usages (
    interception_id TEXT NOT NULL, provider_response_id TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL, cache_write_input_tokens INTEGER NOT NULL,
    metadata TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aibridge_user_prompts (
    interception_id TEXT NOT NULL, provider_response_id TEXT NOT NULL,
    prompt TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aibridge_tool_usages (
    interception_id TEXT NOT NULL, provider_response_id TEXT NOT NULL, tool TEXT NOT NULL,
    tool_call_id TEXT NOT NULL, input TEXT NOT NULL, injected INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aibridge_model_thoughts (
    interception_id TEXT NOT NULL, content TEXT NOT NULL, source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def _iso(value: datetime) -> str:
    return value.isoformat()


def hash_token(token: str) -> str:
    """Tokens are stored as their SHA-256 (they are long random strings)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Database:
    """The host's SQLite database. One connection, used from worker threads
    under a lock so the event loop never blocks on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def create_user(self, name: str) -> str:
        """Create ``name`` if needed and return a new token for it."""
        now = _iso(datetime.now().astimezone())
        with self._lock:
            row = self._conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            user_id = row[0] if row else secrets.token_hex(8)
            if row is None:
                self._conn.execute("INSERT INTO users VALUES (?, ?, ?)", (user_id, name, now))
            token = "aib_" + secrets.token_urlsafe(24)
            self._conn.execute(
                "INSERT INTO api_tokens VALUES (?, ?, ?)", (hash_token(token), user_id, now)
            )
        return token

    def actor_for(self, token: str) -> Actor | None:
        rows = self.execute(
            "SELECT users.id, users.name FROM api_tokens"
            " JOIN users ON users.id = api_tokens.user_id WHERE api_tokens.hashed = ?",
            (hash_token(token),),
        )
        return Actor(rows[0][0], {"username": rows[0][1]}) if rows else None

    def write(self, record: Record) -> None:
        """Store one bridge record in its table."""
        with self._lock:
            self._conn.execute(*_insert(record))


def _insert(record: Record) -> tuple[str, tuple[Any, ...]]:
    if isinstance(record, InterceptionStarted):
        return (
            "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, model,"
            " route, streaming, client, client_session_id, user_agent, metadata, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.actor.id,
                record.provider,
                record.provider_name,
                record.model,
                record.route,
                int(record.streaming),
                record.client,
                record.client_session_id,
                record.user_agent,
                json.dumps(dict(record.metadata)),
                _iso(record.started_at),
            ),
        )
    if isinstance(record, InterceptionEnded):
        return (
            "UPDATE aibridge_interceptions SET ended_at = ?, status = ?, http_status = ?, error = ?"
            " WHERE id = ?",
            (
                _iso(record.ended_at),
                record.status,
                record.http_status,
                record.error,
                record.interception_id,
            ),
        )
    if isinstance(record, TokenUsage):
        return (
            "INSERT INTO aibridge_token_usages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.provider_response_id,
                record.input_tokens,
                record.output_tokens,
                record.cache_read_input_tokens,
                record.cache_write_input_tokens,
                json.dumps(dict(record.extra)),
                _iso(record.created_at),
            ),
        )
    if isinstance(record, PromptUsage):
        return (
            "INSERT INTO aibridge_user_prompts VALUES (?, ?, ?, ?)",
            (
                record.interception_id,
                record.provider_response_id,
                record.prompt,
                _iso(record.created_at),
            ),
        )
    if isinstance(record, ToolUsage):
        return (
            "INSERT INTO aibridge_tool_usages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.interception_id,
                record.provider_response_id,
                record.tool,
                record.tool_call_id,
                json.dumps(record.args),
                int(record.injected),
                _iso(record.created_at),
            ),
        )
    assert isinstance(record, ModelThought), record
    return (
        "INSERT INTO aibridge_model_thoughts VALUES (?, ?, ?, ?)",
        (record.interception_id, record.content, record.source, _iso(record.created_at)),
    )


class SQLiteRecorder:
    """Hands each record to the database on a worker thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, record: Record) -> None:
        await anyio.to_thread.run_sync(self.db.write, record)


def build_app(db_path: str = DEFAULT_DB, public_url: str = "http://127.0.0.1:8080") -> Starlette:
    """The host: its own routes, the bridge at /api/v2/aibridge."""
    db = Database(db_path)
    keys = {
        "anthropic": os.environ.get("ANTHROPIC_API_KEY", ""),
        "openai": os.environ.get("OPENAI_API_KEY", ""),
    }
    offline = not any(keys.values())
    routes: list[Route | Mount] = []
    base_urls: dict[str, str] = {}
    if offline:
        fake_url = public_url + FAKE_PREFIX
        keys = {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY}
        base_urls = {"anthropic": fake_url, "openai": fake_url + "/v1"}
        routes.append(Mount(FAKE_PREFIX, app=FakeUpstream()))

    bridge = create_bridge(
        resolve_token=db.actor_for,  # a plain function: runs in a worker thread
        provider_keys=keys,
        base_urls=base_urls,
        recorder=SQLiteRecorder(db),
        token_headers=["Coder-Session-Token"],
    )

    async def whoami(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() or request.headers.get("x-api-key", "")
        actor = await anyio.to_thread.run_sync(db.actor_for, token) if token else None
        if actor is None:
            return JSONResponse({"message": "unauthorized"}, status_code=401)
        return JSONResponse({"id": actor.id, **actor.metadata})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Starlette does not forward lifespan to mounted apps: close the
        # bridge here so in-flight calls finish and every record is written.
        await bridge.aclose()

    routes.append(Route("/api/v2/users/me", whoami))
    routes.append(Mount(BRIDGE_PREFIX, app=bridge))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.db = db
    app.state.bridge = bridge
    app.state.offline = offline
    return app


def _banner(url: str, token: str, offline: bool) -> str:
    base = url + BRIDGE_PREFIX
    mode = (
        "OFFLINE: no ANTHROPIC_API_KEY / OPENAI_API_KEY set, so the bridge talks to the\n"
        "built-in FAKE upstream. Answers are canned. Set the keys to use the real providers."
        if offline
        else "Using the real providers (keys from the environment)."
    )
    bar = "=" * 78
    provider = (
        f'model_providers.aibridge={{name="aibridge",base_url="{base}/openai/v1",'
        'env_key="OPENAI_API_KEY",wire_api="responses"}'
    )
    return f"""{bar}
{mode}

Anthropic base URL: {base}/anthropic
OpenAI base URL:    {base}/openai/v1
Demo token (user 'demo'): {token}

Claude Code:
  ANTHROPIC_BASE_URL={base}/anthropic ANTHROPIC_AUTH_TOKEN={token} claude
Codex:
  OPENAI_API_KEY={token} codex -c '{provider}' -c model_provider=aibridge
{bar}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the host")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--db", default=DEFAULT_DB)
    create = sub.add_parser("create-user", help="create a user and print a new token")
    create.add_argument("name")
    create.add_argument("--db", default=DEFAULT_DB)
    args = parser.parse_args(argv)

    if args.command == "create-user":
        print(Database(args.db).create_user(args.name))
        return 0

    import uvicorn

    url = f"http://{args.host}:{args.port}"
    app = build_app(args.db, url)
    token = app.state.db.create_user("demo")
    print(_banner(url, token, app.state.offline), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
