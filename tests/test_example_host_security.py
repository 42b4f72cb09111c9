"""The example host's web security (issue 18): sign-in by POST only and from
this site, tokens that expire and can be revoked, bodies read only after the
session check and never past a cap, list views that never load whole
prompts, nothing unbounded in the offline fake, no user-name probing.

The host runs in-process (``httpx.ASGITransport``, or by hand through
:mod:`tests.asgi_harness` where what the app reads matters).
"""

from __future__ import annotations

import asyncio
import importlib
import re
import sqlite3
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from .asgi_harness import scope_for
from .test_example_host import Settings, build_app

# examples/ is on sys.path once test_example_host is imported.
cli = importlib.import_module("minicoder.cli")
_db = importlib.import_module("minicoder.db")
_queries = importlib.import_module("minicoder.queries")
Database = _db.Database
timestamp = _db.timestamp
Filters = _queries.Filters
list_interceptions = _queries.list_interceptions

HOST = "http://host.test"
EVIL = "https://evil.example"


@pytest.fixture
def app(db_target: str) -> Iterator[Any]:
    """The host on a SQLite file, then on PostgreSQL (the ``db_target`` fixture)."""
    app = build_app(Settings(db_path=db_target, url=HOST))
    yield app
    app.state.db.close()


@pytest.fixture
def web(app: Any) -> Iterator[httpx.Client]:
    from starlette.testclient import TestClient

    # Not entered: the lifespan does not run (nothing here needs it).
    client = TestClient(app, base_url=HOST, follow_redirects=False)
    yield client
    client.close()


def user(app: Any, name: str, *, admin: bool = False, **options: Any) -> str:
    db = app.state.db
    return db.new_token(db.create_user(name, admin=admin).id, **options)


# -- signing in ---------------------------------------------------------------------


def test_no_sign_in_by_address_and_no_token_in_the_banner(app: Any, web: httpx.Client) -> None:
    token = user(app, "alice")
    r = web.get("/login", params={"token": token, "next": "/usage"})
    assert r.status_code == 400
    assert "set-cookie" not in r.headers
    assert 'method="post"' in r.text
    settings = Settings(db_path="x.db", url="http://127.0.0.1:8080")
    text = cli.banner(settings, ["anthropic"], token, settings.url)
    urls = re.findall(r"\S+://\S+", text)
    assert urls and not [u for u in urls if token in u]


@pytest.mark.parametrize(
    "headers",
    [{"origin": EVIL}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}],
    ids=["origin", "sec-fetch-site", "null-origin"],
)
def test_cross_site_posts_are_refused_alike(
    app: Any, web: httpx.Client, headers: dict[str, str]
) -> None:
    """Cross-site sign-in (as the attacker), token minting and sign-out: the
    same 403, and nothing happens."""
    attacker = user(app, "mallory")
    victim = user(app, "victim")
    r = web.post("/login", data={"token": victim, "next": "/usage"})
    assert r.status_code == 303  # same site, or no browser at all: fine
    session = r.cookies["minicoder_session"]
    refusals = []
    r = web.post("/login", data={"token": attacker, "next": "/connect"}, headers=headers)
    refusals.append(r)
    assert "set-cookie" not in r.headers
    assert web.cookies["minicoder_session"] == session  # the victim's, in the jar
    before = _tokens(app)
    r = web.post("/connect", data={"client": "claude-code"}, headers=headers)
    refusals.append(r)
    assert _tokens(app) == before
    r = web.post("/logout", headers=headers)
    refusals.append(r)
    assert [x.status_code for x in refusals] == [403, 403, 403]
    assert len({x.text for x in refusals}) == 1
    # The session survived the forged sign-out.
    assert web.get("/usage").status_code == 200
    r = web.post("/logout", headers={"origin": HOST})
    assert r.status_code == 303
    web.cookies.set("minicoder_session", session)  # replayed: ended on the server
    assert web.get("/usage").status_code == 303


def _tokens(app: Any) -> int:
    with app.state.db.connect() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0])


def _post_by_hand(app: Any, path: str, headers: dict[str, str], chunks: list[bytes]) -> Any:
    """POST ``chunks`` as the body; returns (status, body messages read)."""
    read = 0
    sent: list[Any] = []

    async def receive() -> Any:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async def go() -> None:
        await app(scope_for(path, headers), receive, send)

    asyncio.run(go())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, read


def test_form_bodies_are_capped_and_read_only_after_the_session_check(app: Any) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    # Announced too large: refused before reading anything.
    status, read = _post_by_hand(
        app, "/login", {**form, "content-length": str(800 << 20)}, [b"x" * 1024] * 4
    )
    assert (status, read) == (413, 0)
    # Not announced (chunked): reading stops at the cap.
    status, read = _post_by_hand(app, "/login", form, [b"token=" + b"x" * 4096] * 100)
    assert status == 413 and read <= 3
    # No session: the connect form is not read at all.
    status, read = _post_by_hand(app, "/connect", form, [b"client=claude-code"] * 100)
    assert (status, read) == (403, 0)


# -- tokens ------------------------------------------------------------------------------


def test_tokens_expire_and_can_be_revoked(app: Any, web: httpx.Client, tmp_path: Path) -> None:
    db = app.state.db
    expired = user(app, "old", lifetime=timedelta(seconds=-1))
    assert db.token_owner(expired) is None
    bridge = "/api/v2/aibridge/anthropic/v1/messages"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}
    assert web.post(bridge, json=body, headers={"x-api-key": expired}).status_code == 401
    assert web.post("/login", data={"token": expired}).status_code == 401

    # Revoked through the API: by its owner...
    alice = user(app, "alice")
    spare = user(app, "alice")
    key_id = spare.partition("-")[0]
    auth = {"authorization": f"Bearer {alice}"}
    assert web.get("/api/v2/users/me", headers={"authorization": f"Bearer {spare}"}).is_success
    bob = user(app, "bob")
    other = web.delete(f"/api/v2/users/alice/keys/{key_id}", headers={"x-api-key": bob})
    nobody = web.delete(f"/api/v2/users/nobody/keys/{key_id}", headers={"x-api-key": bob})
    assert other.status_code == nobody.status_code == 403 and other.json() == nobody.json()
    assert web.delete(f"/api/v2/users/me/keys/{key_id}", headers=auth).status_code == 204
    assert (
        web.get("/api/v2/users/me", headers={"authorization": f"Bearer {spare}"}).status_code == 401
    )
    assert web.delete(f"/api/v2/users/me/keys/{key_id}", headers=auth).status_code == 404
    # ... and from the command line.
    assert db.token_owner(alice) is not None
    assert cli.main(["revoke-token", alice, "--db", db.path]) == 0
    assert db.token_owner(alice) is None
    assert cli.main(["revoke-token", alice, "--db", db.path]) == 1


def test_the_demo_token_of_the_last_start_is_the_only_one(app: Any) -> None:
    db = app.state.db
    first = cli.demo_token(db)
    second = cli.demo_token(db)
    assert db.token_owner(first) is None
    owner = db.token_owner(second)
    assert owner is not None and owner.user.username == "demo" and owner.user.is_admin
    with db.connect() as conn:
        (expires,) = conn.execute(
            "SELECT expires_at FROM api_keys WHERE id = ?", (second.partition("-")[0],)
        ).fetchone()
    assert expires is not None and expires <= timestamp(datetime.now(UTC) + timedelta(days=2))


# -- what the views load ----------------------------------------------------------------


def _big_prompts(db: Database, user_id: str, count: int, size: int) -> None:
    with db.connect() as conn:
        for n in range(count):
            when = timestamp(datetime.now(UTC) - timedelta(seconds=n))
            conn.execute(
                "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name,"
                " model, route, streaming, started_at) VALUES (?, ?, 'anthropic', 'anthropic',"
                " 'claude-sonnet-4-5', '/v1/messages', 1, ?)",
                (f"i-{n}", user_id, when),
            )
            conn.execute(
                "INSERT INTO aibridge_user_prompts (id, interception_id, provider_response_id,"
                " prompt, created_at) VALUES (?, ?, 'r', ?, ?)",
                (f"p-{n}", f"i-{n}", "word " * (size // 5), when),
            )
            conn.execute(
                "INSERT INTO aibridge_tool_usages (id, interception_id, provider_response_id,"
                " tool, input, created_at) VALUES (?, ?, 'r', 'Write', ?, ?)",
                (f"t-{n}", f"i-{n}", '{"content": "' + "z" * size + '"}', when),
            )


def test_lists_read_the_record_tables_columns_once(app: Any, web: httpx.Client) -> None:
    """A list page looks up the record tables' columns the first time only
    (on PostgreSQL each look-up is an information_schema query)."""
    db = app.state.db
    user(app, "root", admin=True)
    owner = db.user("root")
    assert owner is not None
    _big_prompts(db, owner.id, count=2, size=100)

    class Counting:
        def __init__(self, conn: Any) -> None:
            self.conn, self.lookups = conn, 0

        def execute(self, sql: str, params: Any = (), /) -> Any:
            self.lookups += "PRAGMA table_info" in sql
            return self.conn.execute(sql, params)

    with db.connect() as conn:
        counting = Counting(conn)
        first = list_interceptions(counting, Filters(), limit=10)
        looked_up = counting.lookups
        again = list_interceptions(counting, Filters(), limit=10)
    assert looked_up == 6  # the six record tables, the first time
    assert counting.lookups == looked_up  # none the second
    assert again.results == first.results and len(first.results) == 2
    db.migrate()  # a schema change forgets them
    with db.connect() as conn:
        counting = Counting(conn)
        list_interceptions(counting, Filters(), limit=10)
    assert counting.lookups == 6


def test_lists_never_load_whole_prompts(app: Any, web: httpx.Client) -> None:
    db = app.state.db
    admin = user(app, "root", admin=True)
    owner = db.user("root")
    assert owner is not None
    _big_prompts(db, owner.id, count=8, size=2 << 20)  # eight 2 MB prompts and tool inputs

    tracemalloc.start()
    try:
        with db.connect() as conn:
            page = list_interceptions(conn, Filters(), limit=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak >> 20} MiB to list eight 2 MB prompts"
    prompt = page.results[0]["user_prompts"][0]
    assert len(prompt["prompt"]) == 4096
    assert prompt["prompt_truncated"] is True and prompt["prompt_length"] == len("word ") * (
        (2 << 20) // 5
    )
    tool = page.results[0]["tool_usages"][0]
    assert tool["input_truncated"] is True and isinstance(tool["input"], str)

    r = web.get(
        "/api/v2/aibridge/interceptions", params={"limit": 1000}, headers={"x-api-key": admin}
    )
    assert r.status_code == 200 and len(r.content) < 1 << 20
    assert r.json()["results"][0]["user_prompts"][0]["prompt_truncated"] is True
    assert web.post("/login", data={"token": admin}).status_code == 303
    page_html = web.get("/usage")
    assert page_html.status_code == 200 and len(page_html.content) < 1 << 20
    assert "word word" in page_html.text


def test_offline_fake_upstream_keeps_only_the_latest_requests(app: Any) -> None:
    fake = app.state.host.fake
    assert fake is not None

    async def go() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fake), base_url="http://fake"
        ) as client:
            for _ in range(200):
                await client.post(
                    "/v1/messages",
                    headers={"x-api-key": "wrong"},
                    content=b"x" * 10_000,
                )

    asyncio.run(go())
    assert 0 < len(fake.requests) <= 2 * cli_fake_kept()
    # It is reachable by anyone: a body past the bridge's own limit is
    # refused without being read whole.
    assert fake.max_body_size is not None
    fake.max_body_size = 1 << 20  # (smaller here, to keep the test light)
    read = 0

    async def body_parts() -> Any:
        nonlocal read
        for _ in range(64):
            read += 1
            yield b"y" * (256 << 10)

    async def flood() -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fake), base_url="http://fake"
        ) as client:
            r = await client.post("/v1/messages", content=body_parts())
            return r.status_code

    assert asyncio.run(flood()) == 413
    assert read < 64


def cli_fake_kept() -> int:
    from minicoder.app import FAKE_KEPT_REQUESTS

    return FAKE_KEPT_REQUESTS


# -- who may see whom --------------------------------------------------------------------


def test_non_admins_cannot_probe_user_names(app: Any, web: httpx.Client) -> None:
    user(app, "alice")
    bob = user(app, "bob")
    api = "/api/v2/aibridge/interceptions"
    existing = web.get(api, params={"initiator": "alice"}, headers={"x-api-key": bob})
    missing = web.get(api, params={"initiator": "nobody-here"}, headers={"x-api-key": bob})
    assert existing.status_code == missing.status_code == 403
    assert existing.json() == missing.json()
    assert web.get(api, params={"initiator": "bob"}, headers={"x-api-key": bob}).is_success
    # Admins get the truth.
    root = user(app, "root", admin=True)
    assert (
        web.get(api, params={"initiator": "nobody"}, headers={"x-api-key": root}).status_code == 400
    )


def test_metrics_need_an_admin(app: Any, web: httpx.Client) -> None:
    alice = user(app, "alice")
    root = user(app, "root", admin=True)
    assert web.get("/metrics/").status_code == 401
    assert web.get("/metrics/", headers={"x-api-key": alice}).status_code == 403
    r = web.get("/metrics/", headers={"authorization": f"Bearer {root}"})
    assert r.status_code == 200 and "aibridge_" in r.text


def test_old_database_files_gain_token_expiry(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Database(path)
    with sqlite3.connect(path) as conn:  # a file from before expiry existed
        conn.execute("ALTER TABLE api_keys DROP COLUMN expires_at")
        conn.execute("PRAGMA user_version = 2")  # schema version 3 added it
    db = Database(path)
    token = db.new_token(db.create_user("carol").id)
    assert db.token_owner(token) is not None
