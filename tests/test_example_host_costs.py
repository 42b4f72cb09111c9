"""The example host's money and sessions, over HTTP on loopback: costs in the
interceptions list, the sessions API, the spend report (JSON and CSV), the
usage page's cost columns, and retention."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib
import io
import re
import sqlite3
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibridge_asgi import Actor, Cost, InterceptionEnded, InterceptionStarted, ToolResult
from aibridge_asgi.testing import FakeResponse, streams

from . import test_example_host
from .test_example_host import RunningHost, messages

start_host = test_example_host.start_host  # the fixture
# test_example_host put examples/ on sys.path
Retention = importlib.import_module("minicoder.app").Retention
SCHEMA = importlib.import_module("minicoder.db").SCHEMA
SCHEMA_VERSION = importlib.import_module("minicoder.db").SCHEMA_VERSION
Database = importlib.import_module("minicoder.db").Database
SQLiteRecorder = importlib.import_module("minicoder.recorder").SQLiteRecorder
D = Decimal
M = 1_000_000
CLAUDE_CODE = "claude-cli/2.1.328 (external, sdk-cli)"
SESSION = "9b2d6c1e-4f7a-4e0b-8c55-2a7d3e91f0aa"


@dataclass
class Money:
    host: RunningHost
    admin: str
    alice: str
    bob: str
    ids: dict[str, str]
    amounts: dict[str, Decimal]


def sonnet(i: int, o: int, read: int = 0, write: int = 0) -> Decimal:
    """Claude Sonnet 4.5's list prices: $3/M in, $15/M out, $0.30/M cache
    reads, $3.75/M 5-minute cache writes."""
    return (D(i) * 3 + D(o) * 15 + D(read) * D("0.3") + D(write) * D("3.75")) / M


@pytest.fixture
def money(start_host: Callable[..., RunningHost], client: httpx.Client) -> Money:
    host = start_host()
    admin, alice, bob = host.user("root", admin=True), host.user("alice"), host.user("bob")
    fake = host.host.fake
    assert fake is not None
    ids: dict[str, str] = {}
    amounts: dict[str, Decimal] = {}

    def send(name: str, token: str, path: str, body: dict[str, Any], **headers: str) -> None:
        r = client.post(
            host.bridge_url + path,
            headers={"authorization": f"Bearer {token}", **headers},
            json=body,
        )
        assert r.status_code == 200, r.text
        ids[name] = r.headers["x-aibridge-interception-id"]

    claude = {"user-agent": CLAUDE_CODE, "x-claude-code-session-id": SESSION}
    # alice, Claude Code, one session of two turns: a prompt, then a tool result
    fake.enqueue(
        FakeResponse.json(
            streams.anthropic_message(
                "Let me look.",
                tool_calls=[streams.ToolCall("Read", {"file_path": "a.py"}, id="toolu_1")],
                usage=streams.Usage(1000, 200, cache_read=5000, cache_write=300),
            )
        )
    )
    send(
        "first",
        alice,
        "/anthropic/v1/messages",
        messages("claude-sonnet-4-5", "Fix a.py", stream=False),
        **claude,
    )
    amounts["first"] = sonnet(1000, 200, 5000, 300)
    fake.enqueue(
        FakeResponse.sse(
            streams.anthropic_events("Fixed.", usage=streams.Usage(40, 60, cache_read=6300))
        )
    )
    second = messages("claude-sonnet-4-5", "", stream=True)
    second["messages"] = [
        {"role": "user", "content": "Fix a.py"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)\n"}],
        },
    ]
    send("second", alice, "/anthropic/v1/messages", second, **claude)
    amounts["second"] = sonnet(40, 60, 6300)
    # alice, an OpenAI SDK, no session id: a session of its own; GPT-5
    fake.enqueue(
        FakeResponse.json(
            streams.chat_completion("ok", usage=streams.Usage(800, 100, cache_read=1200))
        )
    )
    send(
        "chat",
        alice,
        "/openai/v1/chat/completions",
        {"model": "gpt-5", "messages": [{"role": "user", "content": "Hi GPT"}]},
    )
    amounts["chat"] = (D(800) * D("1.25") + D(1200) * D("0.125") + D(100) * 10) / M
    # alice, a model with no price
    send(
        "unpriced",
        alice,
        "/openai/v1/chat/completions",
        {"model": "house-model", "messages": [{"role": "user", "content": "?"}]},
    )
    # bob, Claude Haiku 4.5 ($1/M in, $5/M out), his own session
    fake.enqueue(FakeResponse.json(streams.anthropic_message("hi", usage=streams.Usage(2000, 400))))
    send(
        "bob",
        bob,
        "/anthropic/v1/messages",
        messages("claude-haiku-4-5", "Say hi", stream=False),
        **{"user-agent": CLAUDE_CODE, "x-claude-code-session-id": "bob-session"},
    )
    amounts["bob"] = (D(2000) * 1 + D(400) * 5) / M
    host.flush()
    return Money(host, admin, alice, bob, ids, amounts)


def get(http: httpx.Client, money: Money, token: str, path: str, **params: Any) -> httpx.Response:
    return http.get(
        money.host.url + "/api/v2/aibridge" + path,
        params=params,
        headers={"authorization": f"Bearer {token}"},
    )


def test_interceptions_carry_their_exact_cost_and_tool_results(
    money: Money, client: httpx.Client
) -> None:
    body = get(client, money, money.alice, "/interceptions").json()
    by_id = {item["id"]: item for item in body["results"]}
    first = by_id[money.ids["first"]]
    assert first["cost"] == {
        "amount": str(money.amounts["first"]),
        "currency": "USD",
        "priced": True,
    }
    (record,) = first["costs"]
    assert D(record["amount"]) == money.amounts["first"]
    assert {k: D(v) for k, v in record["breakdown"].items()} == {
        "input": D("0.003"),
        "output": D("0.003"),
        "cache_read": D("0.0015"),
        "cache_write_5m": D("0.001125"),
    }
    second = by_id[money.ids["second"]]
    assert second["tool_results"] == [
        {
            "interception_id": money.ids["second"],
            "tool_call_id": "toolu_1",
            "is_error": False,
            "size": 9,
            "content": None,
            "truncated": False,
            "created_at": second["tool_results"][0]["created_at"],
        }
    ]
    unpriced = by_id[money.ids["unpriced"]]
    assert unpriced["cost"] == {"amount": None, "currency": "USD", "priced": False}


def test_sessions_group_interceptions_newest_first(money: Money, client: httpx.Client) -> None:
    r = get(client, money, money.alice, "/sessions")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3  # the Claude Code session, the chat call, the unpriced call
    sessions = {s["id"]: s for s in body["results"]}
    assert set(sessions) == {SESSION, money.ids["chat"], money.ids["unpriced"]}
    # newest first: the unpriced call came last, the session first
    assert [s["id"] for s in body["results"]] == [money.ids["unpriced"], money.ids["chat"], SESSION]
    claude = sessions[SESSION]
    assert claude["interceptions"] == 2
    assert claude["first_prompt"] == "Fix a.py"
    assert claude["clients"] == ["Claude Code"] and claude["models"] == ["claude-sonnet-4-5"]
    assert claude["tokens_in"] == 1000 + 5000 + 300 + 40 + 6300
    assert claude["tokens_out"] == 260
    assert D(claude["cost"]) == money.amounts["first"] + money.amounts["second"]
    assert claude["initiator"]["username"] == "alice"
    assert claude["started_at"] < claude["ended_at"]
    assert sessions[money.ids["unpriced"]]["unpriced_interceptions"] == 1
    assert sessions[money.ids["unpriced"]]["cost"] == "0"

    # paging: one at a time, the same order
    seen, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = get(client, money, money.alice, "/sessions", **params).json()
        seen += [s["id"] for s in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [s["id"] for s in body["results"]]

    # filters
    only = get(client, money, money.alice, "/sessions", model="gpt-5").json()
    assert [s["id"] for s in only["results"]] == [money.ids["chat"]]
    assert get(client, money, money.alice, "/sessions", client="claude code").json()["count"] == 1
    # visibility: admins see everyone, or one user; others only themselves
    assert get(client, money, money.admin, "/sessions").json()["count"] == 4
    bobs = get(client, money, money.admin, "/sessions", user="bob").json()
    assert [s["id"] for s in bobs["results"]] == ["bob-session"]
    assert get(client, money, money.alice, "/sessions", user="bob").status_code == 403
    assert get(client, money, money.bob, "/sessions").json()["count"] == 1
    assert get(client, money, money.alice, "/sessions", cursor="nope").status_code == 400
    assert client.get(money.host.url + "/api/v2/aibridge/sessions").status_code == 401


def test_a_session_lists_its_interceptions_with_everything(
    money: Money, client: httpx.Client
) -> None:
    r = get(client, money, money.alice, f"/sessions/{SESSION}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == SESSION
    first, second = body["interceptions"]  # oldest first
    assert (first["id"], second["id"]) == (money.ids["first"], money.ids["second"])
    assert [p["prompt"] for p in first["user_prompts"]] == ["Fix a.py"]
    assert [t["tool"] for t in first["tool_usages"]] == ["Read"]
    assert [t["tool_call_id"] for t in second["tool_results"]] == ["toolu_1"]
    assert D(second["cost"]["amount"]) == money.amounts["second"]
    # a session of one interception, by its id
    alone = get(client, money, money.alice, f"/sessions/{money.ids['chat']}").json()
    assert [i["id"] for i in alone["interceptions"]] == [money.ids["chat"]]
    # someone else's session is not there for alice; admins see it
    assert get(client, money, money.alice, "/sessions/bob-session").status_code == 404
    assert get(client, money, money.admin, "/sessions/bob-session").status_code == 200
    assert get(client, money, money.bob, f"/sessions/{SESSION}").status_code == 404


def test_spend_by_user_model_and_day_exactly(money: Money, client: httpx.Client) -> None:
    a = money.amounts
    alice_total = a["first"] + a["second"] + a["chat"]
    r = get(client, money, money.admin, "/spend", group_by="user")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["currency"] == "USD" and body["group_by"] == "user"
    rows = {row["key"]: row for row in body["results"]}
    assert D(rows["alice"]["amount"]) == alice_total
    assert rows["alice"]["interceptions"] == 4 and rows["alice"]["unpriced_interceptions"] == 1
    assert D(rows["bob"]["amount"]) == a["bob"]
    assert D(body["total"]) == alice_total + a["bob"]
    # exact decimals: no float rounding, no exponent
    assert rows["alice"]["amount"] == str(alice_total.normalize())

    by_model = {
        row["key"]: D(row["amount"])
        for row in get(client, money, money.admin, "/spend", group_by="model").json()["results"]
    }
    assert by_model == {
        "claude-sonnet-4-5": a["first"] + a["second"],
        "gpt-5": a["chat"],
        "house-model": 0,
        "claude-haiku-4-5": a["bob"],
    }
    today = datetime.now(UTC).date().isoformat()
    days = get(client, money, money.admin, "/spend", group_by="day").json()["results"]
    assert [(d["key"], D(d["amount"])) for d in days] == [(today, alice_total + a["bob"])]

    # from/to: a date covers its whole day; yesterday has nothing
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert get(client, money, money.admin, "/spend", to=yesterday).json()["results"] == []
    assert (
        len(
            get(client, money, money.admin, "/spend", **{"from": today, "to": today}).json()[
                "results"
            ]
        )
        == 2
    )
    # non-admins: only their own
    mine = get(client, money, money.bob, "/spend", group_by="model").json()
    assert [(r["key"], D(r["amount"])) for r in mine["results"]] == [("claude-haiku-4-5", a["bob"])]
    assert get(client, money, money.bob, "/spend", user="alice").status_code == 403
    # bad parameters
    for params in (
        {"group_by": "week"},
        {"format": "xml"},
        {"from": "soon"},
        {"x": "1"},
        {"from": today, "to": yesterday},
    ):
        r = get(client, money, money.admin, "/spend", **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["message"]


def test_spend_as_csv(money: Money, client: httpx.Client) -> None:
    r = get(client, money, money.admin, "/spend", group_by="user", format="csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["user", "amount_usd", "interceptions", "unpriced_interceptions"]
    a = money.amounts
    assert rows[1:] == [
        ["alice", str((a["first"] + a["second"] + a["chat"]).normalize()), "4", "1"],
        ["bob", str(a["bob"].normalize()), "1", "0"],
    ]
    days = list(
        csv.reader(
            io.StringIO(
                get(client, money, money.admin, "/spend", group_by="day", format="csv").text
            )
        )
    )
    assert days[0][0] == "day" and days[1][0] == datetime.now(UTC).date().isoformat()


def test_usage_page_shows_costs(money: Money, client: httpx.Client) -> None:
    r = client.post(
        money.host.url + "/login",
        data={"token": money.admin, "next": "/usage"},
        follow_redirects=True,
    )
    assert r.status_code == 200
    page = r.text
    a = money.amounts
    alice_total = a["first"] + a["second"] + a["chat"]
    total = alice_total + a["bob"]
    assert f"${total.quantize(D('0.0001'))}" in page  # the total, to 1/100 of a cent
    assert f"${alice_total.quantize(D('0.0001'))}" in page  # the alice row
    assert f"${a['bob'].quantize(D('0.0001'))}" in page  # the bob row and the haiku row
    assert "no price" in page  # the unpriced interception
    assert 'href="/sessions"' in page


def old_records(interception_id: str, started: datetime) -> list[Any]:
    return [
        InterceptionStarted(
            interception_id,
            Actor("u-1"),
            "anthropic",
            "anthropic",
            "claude-haiku-4-5",
            "/v1/messages",
            False,
            "curl",
            None,
            None,
            started,
        ),
        ToolResult(interception_id, "toolu_1", False, 3),
        Cost(interception_id, "anthropic", "claude-haiku-4-5", D("0.5")),
        InterceptionEnded(interception_id, started + timedelta(seconds=1), "completed", 200),
    ]


def test_retention_deletes_old_interceptions_in_batches(db_target: str) -> None:
    db = Database(db_target)
    recorder = SQLiteRecorder(db)
    now = datetime.now(UTC)

    async def main() -> tuple[int, int]:
        for n in range(5):
            for record in old_records(f"old-{n}", now - timedelta(days=61, minutes=n)):
                await recorder.record(record)
        for record in old_records("recent", now - timedelta(days=59)):
            await recorder.record(record)
        await recorder.flush()
        retention = Retention(db, days=60, interval=3600, batch=2, pause=0)
        first = await retention.run_once()
        again = await retention.run_once()
        await recorder.aclose()
        return first, again

    assert asyncio.run(main()) == (5, 0)
    with db.connect() as conn:
        for table in ("aibridge_interceptions",):
            assert [tuple(r) for r in conn.execute(f"SELECT id FROM {table}")] == [("recent",)]
        for table in ("aibridge_costs", "aibridge_tool_results"):
            rows = conn.execute(f"SELECT interception_id FROM {table}").fetchall()
            assert [tuple(r) for r in rows] == [("recent",)]
    db.close()


def test_the_host_runs_retention_in_the_background(
    start_host: Callable[..., RunningHost], client: httpx.Client
) -> None:
    host = start_host()
    retention = host.host.retention
    assert retention is not None and retention.days == 60  # the default

    async def old() -> None:
        for record in old_records("ancient", datetime.now(UTC) - timedelta(days=90)):
            await host.host.recorder.record(record)
        await host.host.recorder.flush()
        await retention.run_once()

    host.server.call(old())
    with host.host.db.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM aibridge_interceptions").fetchone()[0] == 0
    assert retention.deleted >= 1


def test_a_version_1_database_gains_the_new_tables(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    Database(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"aibridge_costs", "aibridge_tool_results"} <= tables


# -- the pages, over HTTP and in Chromium ----------------------------------------


@contextlib.contextmanager
def signed_in(money: Money, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=money.host.url) as browser:
        r = browser.post("/login", data={"token": token, "next": "/usage"})
        assert r.status_code == 303
        yield browser


def test_sessions_pages_over_http(money: Money) -> None:
    a = money.amounts
    with signed_in(money, money.alice) as browser:
        page = browser.get("/sessions").text
        rows = re.findall(r'<tr data-session="([^"]+)">(.*?)</tr>', page, re.S)
        assert [session for session, _ in rows] == [
            money.ids["unpriced"],
            money.ids["chat"],
            SESSION,
        ]
        claude = dict(rows)[SESSION]
        assert "Fix a.py" in claude and "claude-sonnet-4-5" in claude
        assert f"${(a['first'] + a['second']).quantize(D('0.0001'))}" in claude
        assert "no price" in dict(rows)[money.ids["unpriced"]]
        assert "bob" not in page
        detail = browser.get(f"/sessions/{SESSION}")
        assert detail.status_code == 200
        text = detail.text
        assert text.count('class="card interception"') == 2
        assert "Fix a.py" in text and "toolu_1" in text and "<code>Read</code>" in text
        assert f"${(a['first'] + a['second']).quantize(D('0.0001'))}" in text
        assert "cache read $0.0015" in text  # the breakdown of the first interception
        assert browser.get("/sessions/bob-session").status_code == 404
        assert "default-src 'none'" in detail.headers["content-security-policy"]
    with signed_in(money, money.admin) as browser:
        assert "bob-session" in browser.get("/sessions").text
        only_bob = browser.get("/sessions", params={"user": "bob"}).text
        assert re.findall(r'<tr data-session="([^"]+)">', only_bob) == ["bob-session"]
    assert httpx.get(money.host.url + "/sessions").status_code == 303  # sign in first


def green_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    """How many pixels of a PNG screenshot have exactly this colour."""
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    depth, color = data[24], data[25]
    assert depth == 8 and color in (2, 6), (depth, color)
    channels = 3 if color == 2 else 4
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytearray(stride)
    found = 0
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for x in range(stride):
            left = row[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                row[x] = (row[x] + left) & 0xFF
            elif kind == 2:
                row[x] = (row[x] + up) & 0xFF
            elif kind == 3:
                row[x] = (row[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                row[x] = (row[x] + pred) & 0xFF
        for x in range(0, stride, channels):
            found += tuple(row[x : x + 3]) == rgb
        previous = row
    return found


@pytest.mark.slow  # a real browser
@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)  # the pages, not the database
def test_cost_pages_in_chromium(money: Money, tmp_path: Path) -> None:
    from .test_example_host_browser import chromium

    a = money.amounts
    total = sum(a.values(), D(0))
    usage = f"{money.host.url}/usage"
    admin = money.admin  # signed in through the form, never by address
    dom = chromium(usage, tmp_path / "p1", token=admin)
    assert f"${total.quantize(D('0.0001'))}" in dom  # the total
    by_user = dom[dom.index('id="by-user"') : dom.index('id="by-model"')]
    assert f"${(a['first'] + a['second'] + a['chat']).quantize(D('0.0001'))}" in by_user
    latest = dom[dom.index('id="latest"') :]
    assert latest.count('class="cost"') == 4 and "no price" in latest
    assert '<svg class="chart cost"' in dom

    # The screenshot shows the cost bars (drawn in the cost colour).
    shot = tmp_path / "usage.png"
    chromium(usage, tmp_path / "p2", screenshot=shot, token=admin)
    assert green_pixels(shot, (0x2F, 0x9E, 0x5B)) > 50

    dom = chromium(f"{money.host.url}/sessions", tmp_path / "p3", token=admin)
    assert "<h1>Sessions" in dom
    assert len(re.findall(r'<tr data-session="', dom)) == 4
    assert f"${(a['first'] + a['second']).quantize(D('0.0001'))}" in dom
    dom = chromium(f"{money.host.url}/sessions/{SESSION}", tmp_path / "p4", token=admin)
    assert dom.count('class="card interception"') == 2
    assert "toolu_1" in dom
