"""End to end, as a newcomer would: start the host with ``scripts/serve``
(offline, embedded fake upstream), create a user, point the real Claude Code
and Codex binaries at it, then read their interceptions back through the
management API and see them on the usage page in headless Chromium.

The binaries come from tests/clients (``scripts/install-clients``). When they
are missing this test fails: it does not skip.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_example_host import ROOT, HostProcess, spawn_host
from .test_example_host_browser import chromium, png_size

# Real client binaries: deselected by -m 'not slow'.
pytestmark = pytest.mark.slow

BIN = ROOT / "tests" / "clients" / "node_modules" / ".bin"
CLAUDE = BIN / "claude"
CODEX = BIN / "codex"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

CLAUDE_PROMPT = "e2e via Claude Code: say hello to the bridge"
CODEX_PROMPT = "e2e via Codex: say hello to the bridge"
FAKE_REPLY = "Hello from the fake upstream."


def _require_clients() -> None:
    missing = [str(path) for path in (CLAUDE, CODEX) if not path.exists()]
    if missing:
        pytest.fail(
            "the real AI clients are not installed: "
            + ", ".join(missing)
            + "; run scripts/install-clients (scripts/test does)"
        )


def _client_env(home: Path, **values: str) -> dict[str, str]:
    """A clean environment: no provider keys or base URLs from the caller's."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(HOME=str(home), NO_COLOR="1", **values)
    return env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{output[-4000:]}"
    return result.stdout


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """``./scripts/serve`` (the README's first command), offline, on a free port."""
    env = {"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""}
    host = spawn_host(
        [str(ROOT / "scripts" / "serve"), "--port", "0", "--db", str(tmp_path / "host.db")],
        env=env,
        timeout=300,  # the first run may create the virtual environment
    )
    yield host
    host.stop()


def test_claude_code_and_codex_through_the_example_host(
    served: HostProcess, tmp_path: Path
) -> None:
    _require_clients()
    assert "OFFLINE DEMO MODE" in served.banner
    base = served.url + "/api/v2/aibridge"

    # A user of our own, made the way the README says.
    db = tmp_path / "host.db"
    token = subprocess.run(
        [str(VENV_PYTHON), "examples/host.py", "create-user", "erin", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    work = tmp_path / "work"
    work.mkdir()

    # Claude Code, print mode.
    home = tmp_path / "claude-home"
    home.mkdir()
    out = _run(
        [str(CLAUDE), "-p", CLAUDE_PROMPT],
        _client_env(
            home,
            CLAUDE_CONFIG_DIR=str(home / ".claude"),
            ANTHROPIC_BASE_URL=base + "/anthropic",
            ANTHROPIC_AUTH_TOKEN=token,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        ),
        work,
    )
    assert FAKE_REPLY in out

    # Codex, non-interactive, with a custom provider on the Responses API.
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    provider = (
        f'model_providers.aibridge={{name="aibridge",base_url="{base}/openai/v1",'
        'env_key="AIBRIDGE_TOKEN",wire_api="responses"}'
    )
    out = _run(
        [
            *(str(CODEX), "exec", "--skip-git-repo-check", "-C", str(work)),
            *("-c", "model_provider=aibridge", "-c", provider, CODEX_PROMPT),
        ],
        _client_env(home, CODEX_HOME=str(home / ".codex"), AIBRIDGE_TOKEN=token),
        work,
    )
    assert FAKE_REPLY in out

    # Back through the management API, as erin.
    items: list[dict[str, Any]] = []
    cursor = None
    while True:  # every page
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        r = httpx.get(
            base + "/interceptions", params=params, headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        items += r.json()["results"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert items, "no interceptions recorded"
    assert {item["initiator"]["username"] for item in items} == {"erin"}
    prompted = {prompt["prompt"]: item for item in items for prompt in item["user_prompts"]}
    claude = prompted[CLAUDE_PROMPT]
    codex = prompted[CODEX_PROMPT]
    assert (claude["client"], claude["provider"], claude["route"]) == (
        "Claude Code",
        "anthropic",
        "/v1/messages",
    )
    assert (codex["client"], codex["provider"], codex["route"]) == (
        "Codex",
        "openai",
        "/responses",
    )
    for item in (claude, codex):
        assert (item["status"], item["in_flight"]) == ("completed", False)
        assert item["token_usages"], item
    # The filters agree.
    r = httpx.get(
        base + "/interceptions",
        params={"client": "Codex"},
        headers={"x-api-key": token},
    )
    assert codex["id"] in [item["id"] for item in r.json()["results"]]
    assert claude["id"] not in [item["id"] for item in r.json()["results"]]

    # And on the usage page, in a real browser.
    page = f"{served.url}/usage"
    dom = chromium(page, tmp_path / "profile", token=token)
    rows = dict(re.findall(r'<tr data-interception="([^"]+)">(.*?)</tr>', dom, re.S))
    for item, client, prompt in (
        (claude, "Claude Code", CLAUDE_PROMPT),
        (codex, "Codex", CODEX_PROMPT),
    ):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[item["id"]], re.S)
        assert cells[1:5] == ["erin", client, item["model"], prompt]
        assert "completed" in cells[9]
    shot = tmp_path / "usage.png"
    chromium(page, tmp_path / "profile-shot", screenshot=shot, token=token)
    assert png_size(shot) == (1280, 1600)
