"""The example host's usage page: signing in, and the page in a real headless
Chromium (Debian's ``chromium``; ``scripts/install-browser`` installs it)."""

from __future__ import annotations

import asyncio
import base64
import re
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from aibridge_asgi.testing import FakeResponse, streams

from . import test_example_host
from .test_example_host import RunningHost, messages

# A real browser: deselected by -m 'not slow'.
pytestmark = pytest.mark.slow

start_host = test_example_host.start_host  # the fixture
# The pages in a browser: the database under them is tested elsewhere.
pytestmark = pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)

CHROMIUM = Path("/usr/bin/chromium")


def chromium(
    url: str, profile: Path, *, screenshot: Path | None = None, token: str | None = None
) -> str:
    """Load ``url`` in headless Chromium; return the DOM (or take a screenshot).

    With ``token``, the browser is signed in first the way a person is: the
    token is posted to ``/login`` (never put in an address) and the session
    cookie it sets goes into the browser, through the DevTools protocol."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (scripts/test does)")
    if token is not None:
        return _chromium_signed_in(url, profile, token, screenshot)
    command = [
        str(CHROMIUM),
        *_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={screenshot}" if screenshot else "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


def session_cookie(base_url: str, token: str) -> str:
    """Sign in by posting the token to the form; return the session id."""
    with httpx.Client(base_url=base_url) as browser:
        r = browser.post("/login", data={"token": token, "next": "/usage"})
        assert r.status_code == 303, r.text
        return browser.cookies["minicoder_session"]


def _chromium_signed_in(url: str, profile: Path, token: str, screenshot: Path | None) -> str:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    session_id = session_cookie(origin, token)
    command = [
        str(CHROMIUM),
        *_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        "about:blank",
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                port = int(found.group(1))
        assert port is not None, "Chromium did not open its DevTools port"
        dom, png = asyncio.run(
            asyncio.wait_for(_drive(port, url, origin, session_id, screenshot), 90)
        )
        if screenshot is not None:
            screenshot.write_bytes(png)
        return dom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _drive(port: int, url: str, origin: str, session_id: str, screenshot: Path | None) -> str:
    """Set the cookie, open ``url``, wait for its load, read the DOM."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            events: list[dict[str, Any]] = []
            counter = 0

            async def cmd(method: str, **params: Any) -> dict[str, Any]:
                nonlocal counter
                counter += 1
                await ws.send_json({"id": counter, "method": method, "params": params})
                while True:
                    message = await ws.receive_json()
                    if message.get("id") == counter:
                        assert "error" not in message, message
                        result: dict[str, Any] = message.get("result", {})
                        return result
                    events.append(message)

            await cmd("Page.enable")
            await cmd(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=1600,
                deviceScaleFactor=1,
                mobile=False,
            )
            await cmd(
                "Network.setCookie",
                name="minicoder_session",
                value=session_id,
                url=origin,
                httpOnly=True,
                sameSite="Lax",
            )
            events.clear()
            await cmd("Page.navigate", url=url)
            while not any(e.get("method") == "Page.loadEventFired" for e in events):
                events.append(await ws.receive_json())
            png = b""
            if screenshot is not None:
                shot = await cmd("Page.captureScreenshot", format="png")
                png = base64.b64decode(shot["data"])
            dom = await cmd(
                "Runtime.evaluate",
                expression="document.documentElement.outerHTML",
                returnByValue=True,
            )
            return str(dom["result"]["value"]), png


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


XSS = '<script>alert("x")</script> & friends'


def _traffic(host: RunningHost, client: httpx.Client) -> dict[str, str]:
    """Users and a few interceptions; returns the users' tokens."""
    tokens = {
        "root": host.user("root", admin=True),
        "alice": host.user("alice"),
        "bob": host.user("bob"),
    }
    assert host.host.fake is not None
    host.host.fake.enqueue(
        FakeResponse.sse(
            streams.anthropic_events(
                "Reading it.",
                tool_calls=[streams.ToolCall("Read", {"file_path": "app.py"}, id="toolu_01")],
                usage=streams.Usage(input_tokens=900, output_tokens=150, cache_read=4000),
            )
        )
    )
    long_prompt = "Refactor the payment module so that retries use exponential backoff " * 3
    for token, path, ua, body in (
        (
            tokens["alice"],
            "/anthropic/v1/messages",
            "claude-cli/2.1.0",
            messages("claude-sonnet-4-5", long_prompt, stream=True),
        ),
        (
            tokens["alice"],
            "/anthropic/v1/messages",
            "claude-cli/2.1.0",
            messages("claude-haiku-4-5", "Name this session", stream=False),
        ),
        (
            tokens["bob"],
            "/openai/v1/responses",
            "codex_exec/0.171.0",
            {"model": "gpt-5-codex", "input": XSS, "stream": True},
        ),
    ):
        r = client.post(
            host.bridge_url + path,
            headers={"authorization": f"Bearer {token}", "user-agent": ua},
            json=body,
        )
        assert r.status_code == 200, r.text
    host.flush()
    return tokens


def test_usage_page_in_chromium(
    start_host: Callable[..., RunningHost], client: httpx.Client, tmp_path: Path
) -> None:
    host = start_host()
    tokens = _traffic(host, client)

    # An admin sees everyone. (Signed in through the form: the session
    # cookie goes into the browser; no token in any address.)
    dom = chromium(f"{host.url}/usage", tmp_path / "p1", token=tokens["root"])
    assert "<h1>AI usage" in dom, dom[:2000]
    latest = dom[dom.index('id="latest"') :]
    rows = re.findall(r"<tr data-interception=\"[^\"]+\">(.*?)</tr>", latest, re.S)
    assert len(rows) == 3
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    # newest first: started, user, client, model, prompt, tools, tokens, cost, duration, status
    assert [c[1:4] for c in cells] == [
        ["bob", "Codex", "gpt-5-codex"],
        ["alice", "Claude Code", "claude-haiku-4-5"],
        ["alice", "Claude Code", "claude-sonnet-4-5"],
    ]
    assert cells[0][4] == '&lt;script&gt;alert("x")&lt;/script&gt; &amp; friends'
    assert cells[1][4] == "Name this session"
    assert cells[2][4].startswith("Refactor the payment module so that retries use exponential")
    assert cells[2][4].endswith("…") and len(cells[2][4]) == 90
    assert (cells[2][5], cells[2][6]) == ("Read", "4,900 / 150")
    assert all("$0.0" in c[7] for c in cells)  # every model here has a price
    assert all("completed" in c[9] for c in cells)
    assert "<script>" not in dom  # the prompt was escaped, not run
    by_user = dom[dom.index('id="by-user"') : dom.index('id="by-model"')]
    assert "alice" in by_user and "bob" in by_user
    by_model = dom[dom.index('id="by-model"') : dom.index('id="latest"')]
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5-codex"):
        assert model in by_model
    assert '<svg class="chart"' in dom
    assert "3 requests · 4,924 tokens in · 164 tokens out" in dom  # 4,900 + 2 x 12

    shot = tmp_path / "usage.png"
    chromium(f"{host.url}/usage", tmp_path / "p2", screenshot=shot, token=tokens["root"])
    assert png_size(shot) == (1280, 1600)
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one

    # A user sees only their own rows.
    dom = chromium(f"{host.url}/usage", tmp_path / "p3", token=tokens["alice"])
    latest = dom[dom.index('id="latest"') :]
    assert len(re.findall(r"<tr data-interception=", latest)) == 2
    assert "bob" not in dom and "gpt-5-codex" not in dom and "friends" not in dom

    # Filtering by model, from the page's own links.
    dom = chromium(f"{host.url}/usage?model=gpt-5-codex", tmp_path / "p4", token=tokens["root"])
    latest = dom[dom.index('id="latest"') :]
    assert len(re.findall(r"<tr data-interception=", latest)) == 1

    # No session: the sign-in form.
    dom = chromium(f"{host.url}/usage", tmp_path / "p5")
    assert "<h1>Sign in</h1>" in dom
    assert 'name="token"' in dom


def test_sign_in_sets_a_session_cookie_not_the_token(
    start_host: Callable[..., RunningHost],
) -> None:
    host = start_host()
    token = host.user("alice")
    with httpx.Client(base_url=host.url) as browser:
        r = browser.get("/usage")
        assert (r.status_code, r.headers["location"]) == (303, "/login?next=%2Fusage")
        r = browser.post("/login", data={"token": "wrong-token", "next": "/usage"})
        assert r.status_code == 401
        assert "not valid" in r.text
        r = browser.post("/login", data={"token": token, "next": "//evil.example/"})
        assert (r.status_code, r.headers["location"]) == (303, "/usage")  # no open redirect
        cookie = r.headers["set-cookie"]
        assert "minicoder_session=" in cookie
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        session_id = browser.cookies["minicoder_session"]
        assert token not in cookie and session_id != token
        r = browser.get("/usage")
        assert r.status_code == 200
        assert "alice" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        # The same cookie opens the management API (read only).
        assert browser.get("/api/v2/aibridge/interceptions").status_code == 200
        # Signing out ends the session on the server, not just in the browser.
        r = browser.post("/logout")
        assert (r.status_code, r.headers["location"]) == (303, "/login")
    r = httpx.get(host.url + "/usage", cookies={"minicoder_session": session_id})
    assert r.status_code == 303
    with host.host.db.connect() as conn:
        stored = conn.execute("SELECT hashed_id FROM web_sessions").fetchall()
    assert all(session_id.encode() not in row[0] for row in stored)
