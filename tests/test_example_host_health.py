"""The example host's /healthz and /readyz, on both databases; /readyz
turns 503 when the database stops answering (a real PostgreSQL server
stopped under the host) and ready again when it is back."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from . import test_example_host
from .postgres_server import PostgresServer
from .test_example_host import RunningHost

start_host = test_example_host.start_host  # the fixture


def test_healthz_and_readyz(start_host: Callable[..., RunningHost], client: httpx.Client) -> None:
    host = start_host()
    r = client.get(host.url + "/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    assert r.headers["cache-control"] == "no-store"
    r = client.get(host.url + "/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}
    assert client.head(host.url + "/readyz").status_code == 200


@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)  # unused: its own server
def test_readyz_says_when_the_database_is_gone(
    start_host: Callable[..., RunningHost], client: httpx.Client
) -> None:
    server = PostgresServer().start()  # its own server: this test stops it
    try:
        host = start_host(server.new_database())
        assert client.get(host.url + "/readyz").status_code == 200
        server.stop_server()
        r = client.get(host.url + "/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"database": "unreachable"}}
        assert "postgresql://" not in r.text
        # Still alive: a load balancer keeps it, an orchestrator does not restart it.
        assert client.get(host.url + "/healthz").status_code == 200
        server.start_server()
        deadline = 0
        while client.get(host.url + "/readyz", timeout=30).status_code != 200:
            deadline += 1
            assert deadline < 100
    finally:
        server.stop()


def test_records_wait_out_a_database_restart() -> None:
    """PostgreSQL restarting under the recorder: the batches written while
    it is down are tried again, and nothing is lost."""
    import asyncio
    import time

    from .test_example_host import Database, SQLiteRecorder, _records

    server = PostgresServer().start()
    try:
        db = Database(server.new_database())
        recorder = SQLiteRecorder(db, retry_for=60)

        async def record(name: str) -> None:
            for item in _records(name):
                await recorder.record(item)

        asyncio.run(record("before"))
        assert recorder.flush_sync(timeout=10)
        server.stop_server()
        asyncio.run(record("during"))
        time.sleep(0.5)
        assert recorder.pending > 0  # the writer is waiting for the database
        server.start_server()
        assert recorder.flush_sync(timeout=30)
        recorder.close()
        with db.connect() as conn:
            rows = conn.execute("SELECT id, status FROM aibridge_interceptions ORDER BY id")
            assert [tuple(r) for r in rows] == [("before", "completed"), ("during", "completed")]
            [(prompts,)] = conn.execute("SELECT COUNT(*) FROM aibridge_user_prompts").fetchall()
            assert prompts == 2
        db.close()
    finally:
        server.stop()


def test_readyz_checks_redis_when_the_workers_share_it(
    db_target: str, client: httpx.Client
) -> None:
    """With ``--redis`` the policy state lives in Redis: /readyz checks it
    too, and says which of the two is down."""
    from aibridge_asgi.testing import ServerThread

    from .redis_server import RedisServer
    from .test_example_host import Settings, _Later, build_app

    redis = RedisServer()  # its own server: this test stops it
    later = _Later()
    server = ServerThread(later, lifespan="on")
    app = build_app(Settings(db_path=db_target, url=server.url, redis_url=redis.url))
    later.app = app
    try:
        server.start()
        r = client.get(server.url + "/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"database": "ok", "redis": "ok"}
        redis.stop()
        r = client.get(server.url + "/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "redis": "unreachable"},
        }
    finally:
        server.stop()
        redis.stop()
