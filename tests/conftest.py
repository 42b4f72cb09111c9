"""Shared fixtures: a fake upstream and a bridge, each on its own loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibridge_asgi import Actor, Bridge, create_bridge
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    OPENAI_KEY,
    FakeUpstream,
    InMemoryRecorder,
    ServerThread,
)

from .postgres_server import PostgresServer
from .redis_server import RedisServer

HOST_TOKEN = "host-token-alice-0123456789"
OTHER_TOKEN = "host-token-bob-9876543210"
FAILING_TOKEN = "token-that-breaks-the-resolver"


def resolve(token: str) -> Actor | None:
    """The host's resolver used by most tests (a plain function: runs in a thread)."""
    if token == FAILING_TOKEN:
        raise RuntimeError("database is down")
    return {
        HOST_TOKEN: Actor("alice", {"username": "alice"}),
        OTHER_TOKEN: Actor("bob"),
    }.get(token)


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def upstream(fake: FakeUpstream) -> Iterator[ServerThread]:
    with ServerThread(fake) as server:
        yield server


@dataclass
class Running:
    """A bridge served on a loopback port, mounted at ``prefix``."""

    bridge: Bridge
    server: ServerThread
    recorder: InMemoryRecorder
    prefix: str

    @property
    def url(self) -> str:
        return self.server.url + self.prefix

    def flush(self) -> None:
        self.server.call(self.bridge.flush())


@pytest.fixture
def start_bridge(upstream: ServerThread) -> Iterator[Callable[..., Running]]:
    servers: list[tuple[ServerThread, Bridge]] = []

    def start(
        *,
        recorder: InMemoryRecorder | None = None,
        mount: Callable[[Bridge], Any] | None = None,
        prefix: str = "",
        **options: Any,
    ) -> Running:
        options.setdefault(
            "provider_keys",
            {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY, "gemini": GOOGLE_KEY},
        )
        options.setdefault(
            "base_urls",
            {"anthropic": upstream.url, "openai": upstream.url + "/v1", "gemini": upstream.url},
        )
        options.setdefault("resolve_token", resolve)
        recorder = recorder if recorder is not None else InMemoryRecorder()
        bridge = create_bridge(recorder=recorder, **options)
        app = mount(bridge) if mount is not None else bridge
        server = ServerThread(app).start()
        servers.append((server, bridge))
        return Running(bridge, server, recorder, prefix)

    yield start
    for server, bridge in servers:
        server.call(bridge.aclose())
        server.stop()


@pytest.fixture
def running(start_bridge: Callable[..., Running]) -> Running:
    return start_bridge()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session (scripts/install-redis)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.command("FLUSHALL")
    return redis_server.url


# -- the example host's databases -------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole run (tests/postgres_server.py)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's host database lives: a new SQLite file, or a new
    database on the session's PostgreSQL server (``--db`` of the host)."""
    if request.param == "sqlite":
        return str(tmp_path / "host.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()
