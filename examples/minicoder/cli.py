"""The command line: ``serve``, ``create-user``, ``revoke-token`` and ``migrate``.

    python examples/host.py serve [--host 127.0.0.1] [--port 8080] [--db FILE|URL]
                                  [--workers N] [--redis URL] [--rpm N]
    python examples/host.py create-user NAME [--admin] [--days N] [--db FILE|URL]
    python examples/host.py revoke-token KEY_ID [--db FILE|URL]
    python examples/host.py migrate [--db FILE|URL]

``--db`` is a SQLite file or a ``postgresql://`` URL; it defaults to
``$AIBRIDGE_HOST_DB``, else ``aibridge-host.db`` in the current directory.
``serve``, ``create-user`` and ``revoke-token`` bring the schema up to date
first; ``migrate`` only does that (run it before starting new versions of
several hosts). ``create-user`` prints the new token alone on stdout
(creating the user if needed; ``--admin`` makes them an admin); it expires
after ``--days`` (default 30; 0: never). ``revoke-token`` ends a token at
once: give the token or its key id (the part before the first ``-``).
``--port 0`` picks a free port; the banner says which. ``--workers N``
runs N processes on the one socket (give them PostgreSQL: docs/deployment.md);
give them ``--redis URL`` so that budgets and rate limits (``--rpm``, requests
per minute per user) hold across all of them (one worker keeps that state in
memory).

The demo token ``serve`` prints replaces the one of the previous start, and
expires after a day.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import os
import socket
import sys
from datetime import timedelta

from .app import BRIDGE_PREFIX, DEFAULT_DB, Settings, build_app
from .backends import describe, redact
from .db import Database
from .logs import log_config

#: How ``serve --workers N`` hands the settings to its worker processes.
SETTINGS_ENV = "MINICODER_SETTINGS"

DEMO_TOKEN_NAME = "printed at startup"
DEMO_TOKEN_LIFETIME = timedelta(days=1)
BAR = "=" * 78
LOUD = "!" * 78


def banner(settings: Settings, providers: list[str], token: str, public_url: str) -> str:
    """What ``serve`` prints before serving: where things are, and how to
    point Claude Code and Codex at them."""
    base = public_url + BRIDGE_PREFIX
    if settings.offline:
        mode = f"""{LOUD}
!!  OFFLINE DEMO MODE: no ANTHROPIC_API_KEY / OPENAI_API_KEY / GEMINI_API_KEY set.
!!  The bridge talks to the library's FAKE upstream, served by this process:
!!  every answer is canned ("Hello from the fake upstream.").
!!  Set a provider key and restart to use the real provider.
{LOUD}"""
    else:
        lines = []
        for name in ("anthropic", "openai", "gemini"):
            if name not in providers:
                lines.append(f"  {name}: off (no {name.upper()}_API_KEY)")
                continue
            url = getattr(settings, f"{name}_base_url")
            lines.append(f"  {name}: REAL provider" + (f" at {url}" if url else ""))
        mode = "Providers (keys from the environment):\n" + "\n".join(lines)
    codex_provider = (
        f'model_providers.aibridge={{name="aibridge",base_url="{base}/openai/v1",'
        'env_key="AIBRIDGE_TOKEN",wire_api="responses"}'
    )
    return f"""{BAR}
minicoder: an example host with the AI bridge mounted at {BRIDGE_PREFIX}
{BAR}
{mode}

Host URL:           {public_url}
Anthropic base URL: {base}/anthropic
OpenAI base URL:    {base}/openai/v1
Gemini base URL:    {base}/gemini
Database:           {describe(settings.db_path)}
Demo token:         {token}
                    (user 'demo', admin; replaced at every start, valid for a day)

Claude Code:
  ANTHROPIC_BASE_URL={base}/anthropic ANTHROPIC_AUTH_TOKEN={token} claude

Codex:
  AIBRIDGE_TOKEN={token} codex -c model_provider=aibridge \\
    -c '{codex_provider}'

Usage page: {public_url}/usage  (sign in there by pasting the token)
Management API:
  curl -H 'Authorization: Bearer {token}' {base}/interceptions
More users:
  python examples/host.py create-user NAME [--admin] --db {describe(settings.db_path)}
{BAR}"""


def demo_token(db: Database) -> str:
    """A new token for the admin user ``demo``; the previous start's demo
    token stops working (one demo token at a time), and it expires."""
    demo = db.create_user("demo", admin=True)
    return db.new_token(demo.id, DEMO_TOKEN_NAME, DEMO_TOKEN_LIFETIME, replace=True)


def _listen(host: str, port: int) -> tuple[socket.socket, str]:
    """Bind the listening socket ourselves, so that ``--port 0`` works and
    the URL is known before the app is built."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return sock, f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"


def app_from_env() -> object:
    """The app of one worker of ``serve --workers N`` (a uvicorn factory)."""
    return build_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if args.workers > 1 and not args.redis:
        logging.getLogger("minicoder").warning(
            "%d workers without --redis: each keeps its own budgets and rate limits",
            args.workers,
        )
    sock, url = _listen(args.host, args.port)
    settings = Settings.from_env(db_path=args.db, url=url)
    if args.retention_days is not None:
        days = args.retention_days
        settings = dataclasses.replace(settings, retention_days=days if days > 0 else None)
    settings = dataclasses.replace(settings, requests_per_minute=args.rpm, redis_url=args.redis)
    if args.workers > 1:
        return _serve_workers(args, sock, settings)
    app = build_app(settings)
    host = app.state.host
    token = demo_token(host.db)
    print(banner(settings, host.providers, token, url), flush=True)
    if settings.offline:
        logging.getLogger("minicoder").warning(
            "OFFLINE DEMO MODE: answers come from the built-in fake upstream"
        )
    config = uvicorn.Config(
        app,
        log_level="info",
        log_config=log_config(),
        lifespan="on",
        # On SIGTERM/Ctrl+C, let running calls finish this long, then cancel
        # them (they end "cancelled"); the lifespan then writes every record.
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        # A second Ctrl+C skips the lifespan: still write what the recorder has.
        host.recorder.close()
    return 0


def _serve_workers(args: argparse.Namespace, sock: socket.socket, settings: Settings) -> int:
    """N uvicorn worker processes on one socket, each building its own app
    (its own bridge, recorder and database pool). What only one process
    should do is done here first: migrating, marking what an earlier run
    left in flight, the demo token. uvicorn restarts a worker that dies;
    SIGTERM to the parent stops them all, each finishing its calls and
    writing its records."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    log = logging.getLogger("minicoder")
    db = Database(settings.db_path)
    if db.kind == "sqlite":
        log.warning(
            "%d workers on one SQLite file: fine on one machine; use PostgreSQL to"
            " share the records between machines",
            args.workers,
        )
    interrupted = db.mark_interrupted()
    if interrupted:
        log.warning("%d interceptions of an earlier run never ended", interrupted)
    token = demo_token(db)
    db.close()
    keys = {
        "anthropic": settings.anthropic_key,
        "openai": settings.openai_key,
        "gemini": settings.gemini_key,
    }
    providers = list(keys) if settings.offline else [name for name, key in keys.items() if key]
    print(banner(settings, providers, token, settings.url), flush=True)
    print(f"Workers: {args.workers}; policy state in {settings.redis_url or 'memory'}", flush=True)
    settings = dataclasses.replace(settings, mark_interrupted=False)
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    config = uvicorn.Config(
        "minicoder.cli:app_from_env",
        factory=True,
        workers=args.workers,
        log_level="info",
        log_config=log_config(),
        lifespan="on",
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()  # type: ignore[call-arg]
    else:
        Multiprocess(config, sockets=[sock]).run()
    return 0


def create_user(args: argparse.Namespace) -> int:
    db = Database(args.db)
    user = db.create_user(args.name, admin=args.admin)
    lifetime = timedelta(days=args.days) if args.days > 0 else None
    print(db.new_token(user.id, "create-user", lifetime))
    role = "admin" if user.is_admin else "user"
    where = db.describe()
    print(f"token for {role} {user.username!r} (id {user.id}) in {where}", file=sys.stderr)
    db.close()
    return 0


def migrate(args: argparse.Namespace) -> int:
    db = Database(args.db)
    assert db.migrated is not None
    before, after = db.migrated
    if before == after:
        print(f"{db.describe()}: schema version {after}, up to date")
    else:
        print(f"{db.describe()}: schema version {before} -> {after}")
    db.close()
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    db = Database(args.db)
    if db.revoke_token(args.key_id):
        print(f"revoked token {args.key_id.partition('-')[0]}", file=sys.stderr)
        return 0
    print(f"no token {args.key_id.partition('-')[0]!r} in {args.db}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="examples/host.py",
        description="minicoder: a Coder-like host with the AI bridge mounted.",
    )
    default_db = os.environ.get("AIBRIDGE_HOST_DB", DEFAULT_DB)
    db_help = f"SQLite file or postgresql:// URL (default {redact(default_db)})"
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the host")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    run.add_argument("--db", default=default_db, help=db_help)
    run.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        help="seconds running calls get to finish on shutdown (default 10)",
    )
    run.add_argument(
        "--retention-days",
        type=int,
        default=None,
        help="delete interceptions older than this many days (default 60; 0 keeps them)",
    )
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument(
        "--redis", default=None, help="redis:// URL for policy state shared by the workers"
    )
    run.add_argument(
        "--rpm", type=int, default=0, help="requests per minute per user (default 0: no limit)"
    )
    run.set_defaults(handler=serve)
    create = sub.add_parser("create-user", help="create a user; print a new token")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="the user may see everyone's usage")
    create.add_argument("--db", default=default_db, help=db_help)
    create.add_argument(
        "--days", type=float, default=30, help="days the token is valid (default 30; 0: never)"
    )
    create.set_defaults(handler=create_user)
    revoke = sub.add_parser("revoke-token", help="end a token at once")
    revoke.add_argument("key_id", help="the token, or its key id (before the first '-')")
    revoke.add_argument("--db", default=default_db, help=db_help)
    revoke.set_defaults(handler=revoke_token)
    upgrade = sub.add_parser("migrate", help="bring the database's schema up to date")
    upgrade.add_argument("--db", default=default_db, help=db_help)
    upgrade.set_defaults(handler=migrate)
    args = parser.parse_args(argv)
    return int(args.handler(args))
