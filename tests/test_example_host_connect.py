"""The example host's "Connect your tools" page: the snippets for the host's
own URL in headless Chromium, and minting a token for a client."""

from __future__ import annotations

import contextlib
import html
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx

from aibridge_asgi.clients import configure

from . import test_example_host
from .test_example_host import RunningHost
from .test_example_host_browser import chromium, png_size

start_host = test_example_host.start_host  # the fixture


def _pre_blocks(page: str, kind: str) -> list[str]:
    """The text of the snippets of one kind (file, env, commands)."""
    pattern = rf'<div class="snippet" data-kind="{kind}">.*?<pre>(.*?)</pre>'
    return [html.unescape(block) for block in re.findall(pattern, page, re.S)]


@contextlib.contextmanager
def _signed_in(host: RunningHost, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.url) as browser:
        r = browser.post("/login", data={"token": token, "next": "/usage"})
        assert r.status_code == 303, r.text
        yield browser


def test_connect_page_in_chromium(start_host: Callable[..., RunningHost], tmp_path: Path) -> None:
    host = start_host()
    token = host.user("alice")
    bridge = host.url + "/api/v2/aibridge"

    def page(client: str, profile: str, screenshot: Path | None = None) -> str:
        url = f"{host.url}/connect?client={quote(client)}"
        return chromium(url, tmp_path / profile, screenshot=screenshot, token=token)

    dom = page("claude-code", "p1")
    assert "<h1>Connect your tools</h1>" in dom, dom[:2000]
    assert 'data-client="claude-code"' in dom
    (env,) = _pre_blocks(dom, "env")
    assert f"export ANTHROPIC_BASE_URL={bridge}/anthropic" in env.splitlines()
    assert "export ANTHROPIC_AUTH_TOKEN='<your token>'" in env.splitlines()
    assert 'action="/connect"' in dom and "Create a token for Claude Code" in dom
    assert "compatibility suite runs Claude Code 2.1.332" in dom
    # The bring-your-own-key form: the token in an extra header.
    (byok,) = _pre_blocks(dom, "byok-env")
    assert "export ANTHROPIC_CUSTOM_HEADERS='X-AIBridge-Token: <your token>'" in byok.splitlines()
    assert "export ANTHROPIC_API_KEY='<your own provider key>'" in byok.splitlines()
    # Every client is offered; the ones that cannot connect apart.
    for name in ("Codex CLI", "OpenCode", "Goose", "Zed", "JetBrains AI Assistant"):
        assert f">{name}</a>" in dom
    cannot = dom[dom.index('class="cannot"') :]
    assert ">Windsurf</a>" in cannot and ">Codex CLI</a>" not in cannot

    dom = page("codex", "p2")
    assert 'data-client="codex"' in dom
    (config_file,) = _pre_blocks(dom, "file")
    assert "In <code>~/.codex/config.toml</code>" in dom
    provider = tomllib.loads(config_file)["model_providers"]["aibridge"]
    assert provider["base_url"] == bridge + "/openai/v1"
    assert provider["wire_api"] == "responses"
    assert _pre_blocks(dom, "env") == ["export AIBRIDGE_TOKEN='<your token>'"]
    # Exactly what configure() gives for this host.
    expected = configure("codex", bridge, "<your token>")
    assert config_file == expected.file_content.rstrip()  # type: ignore[union-attr]

    shot = tmp_path / "connect.png"
    page("codex", "p3", screenshot=shot)
    assert png_size(shot) == (1280, 1600)
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one

    # The usage page links to it.
    dom = chromium(f"{host.url}/usage", tmp_path / "p4", token=token)
    assert 'href="/connect"' in dom and "Connect your tools" in dom


def test_minting_a_token_for_a_client(start_host: Callable[..., RunningHost]) -> None:
    host = start_host()
    alice = host.user("alice")
    bridge = host.url + "/api/v2/aibridge"

    # Not signed in: to the sign-in page, and back here afterwards.
    r = httpx.get(host.url + "/connect?client=codex")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fconnect%3Fclient%3Dcodex"

    with _signed_in(host, alice) as browser:
        r = browser.get("/connect", params={"client": "codex"})
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        r = browser.post("/connect", data={"client": "codex", "api": "openai"})
        assert r.status_code == 200
        minted = re.search(r'<code id="new-token">([^<]+)</code>', r.text)
        assert minted, r.text
        token = html.unescape(minted.group(1))
        assert token != alice
        # Filled into the snippet, and nowhere a placeholder.
        assert _pre_blocks(r.text, "env") == [f"export AIBRIDGE_TOKEN={token}"]
        (byok_file,) = _pre_blocks(r.text, "byok-file")
        headers = tomllib.loads(byok_file)["model_providers"]["aibridge"]["env_http_headers"]
        assert headers == {"X-AIBridge-Token": "AIBRIDGE_TOKEN"}
        assert f"export AIBRIDGE_TOKEN={token}" in _pre_blocks(r.text, "byok-env")[0]
        assert "&lt;your token&gt;" not in r.text
        assert 'action="/connect"' not in r.text  # one token per click

        # The token is alice's, named after the client, and works on the bridge.
        owner = host.host.db.token_owner(token)
        assert owner is not None and owner.user.username == "alice"
        with host.host.db.connect() as conn:
            names = [row[0] for row in conn.execute("SELECT token_name FROM api_keys")]
        assert sorted(names) == ["", "connect: Codex CLI"]
        r = httpx.post(
            bridge + "/openai/v1/responses",
            headers={"authorization": f"Bearer {token}", "user-agent": "codex_exec/0.171.0"},
            json={"model": "gpt-5", "input": "hello"},
        )
        assert r.status_code == 200, r.text

        # Another API of the same client: its own base URL form.
        r = browser.get("/connect", params={"client": "opencode", "api": "anthropic"})
        (config_file,) = _pre_blocks(r.text, "file")
        assert f'"baseURL": "{bridge}/anthropic/v1"' in config_file
        r = browser.get("/connect", params={"client": "opencode", "api": "openai"})
        (config_file,) = _pre_blocks(r.text, "file")
        assert f'"baseURL": "{bridge}/openai/v1"' in config_file

        # A client with no way to send an extra header: no BYOK form.
        r = browser.get("/connect", params={"client": "goose"})
        assert "Bring your own key: not with this tool" in r.text
        assert _pre_blocks(r.text, "byok-env") == []

        # A client that cannot connect: why, and no token to mint.
        r = browser.get("/connect", params={"client": "windsurf"})
        assert "no setting to send its model traffic" in r.text
        assert 'action="/connect"' not in r.text
        r = browser.post("/connect", data={"client": "windsurf"})
        assert r.status_code == 200 and 'id="new-token"' not in r.text

        # A form posted from another site mints nothing.
        r = browser.post(
            "/connect", data={"client": "codex"}, headers={"origin": "https://evil.example"}
        )
        assert r.status_code == 403
        with host.host.db.connect() as conn:
            assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 2

        # An unknown client name shows the default one.
        r = browser.get("/connect", params={"client": "<script>"})
        assert 'data-client="claude-code"' in r.text and "<script>" not in r.text


def test_connect_page_offers_each_protocol_of_an_api(
    start_host: Callable[..., RunningHost],
) -> None:
    """pi speaks Chat Completions and Responses on OpenAI: one link each,
    each to its own configuration, and the token minted for the one shown."""
    host = start_host()
    bridge = host.url + "/api/v2/aibridge"
    with _signed_in(host, host.user("alice")) as browser:
        r = browser.get("/connect", params={"client": "pi"})
        assert r.status_code == 200
        links = html.unescape(r.text)
        assert "/connect?client=pi&api=openai&protocol=Chat+Completions" in links
        assert "/connect?client=pi&api=openai&protocol=Responses" in links
        assert "/connect?client=pi&api=anthropic" in links
        (config_file,) = _pre_blocks(r.text, "file")
        assert '"api": "anthropic-messages"' in config_file  # the first setup
        for protocol, pi_api in (("Chat Completions", "openai-completions"),
                                 ("Responses", "openai-responses")):  # fmt: skip
            r = browser.get(
                "/connect", params={"client": "pi", "api": "openai", "protocol": protocol}
            )
            (config_file,) = _pre_blocks(r.text, "file")
            assert f'"api": "{pi_api}"' in config_file
            assert f'"baseUrl": "{bridge}/openai/v1"' in config_file
            assert f'name="protocol" value="{protocol}"' in r.text
        r = browser.post(
            "/connect", data={"client": "pi", "api": "openai", "protocol": "Responses"}
        )
        (config_file,) = _pre_blocks(r.text, "file")
        assert '"api": "openai-responses"' in config_file
        assert re.search(r'<code id="new-token">[^<]+</code>', r.text)
