"""The client configuration kit: the table of clients, ``configure()``, the
``python -m aibridge_asgi`` command, detection on the table, and the
generated docs/clients.md."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge_asgi import InterceptionStarted, _syntax, client_docs
from aibridge_asgi.__main__ import main
from aibridge_asgi.client_table import CLIENTS, TOKEN_ENV, Api
from aibridge_asgi.clients import (
    ClientConfig,
    ClientNotSupported,
    UnknownClient,
    configure,
    detect_client,
    find_client,
)
from aibridge_asgi.testing import ANTHROPIC_KEY, GOOGLE_KEY, OPENAI_KEY, FakeUpstream

from .conftest import HOST_TOKEN, Running

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://ai.example.com/api/v2/aibridge"
ODD_TOKEN = "a'b\"c$d`e\\f g;h|i&j*k\n#l{env:X}${Y}"

#: The base URL each client must get, as a suffix of the mount URL: what
#: each client appends itself decides it (docs/clients.md says why).
URL_FORMS: dict[tuple[str, Api], str] = {
    ("claude-code", "anthropic"): "/anthropic",
    ("codex", "openai"): "/openai/v1",
    ("opencode", "anthropic"): "/anthropic/v1",
    ("opencode", "openai"): "/openai/v1",
    ("factory", "anthropic"): "/anthropic",
    ("factory", "openai"): "/openai/v1",
    ("goose", "anthropic"): "/anthropic",
    ("goose", "openai"): "/openai",
    ("cline", "openai"): "/openai/v1",
    ("cline", "anthropic"): "/anthropic",
    ("kilo-code", "openai"): "/openai/v1",
    ("kilo-code", "anthropic"): "/anthropic/v1",
    ("roo-code", "anthropic"): "/anthropic",
    ("roo-code", "openai"): "/openai/v1",
    ("vscode", "openai"): "/openai/v1/chat/completions",
    ("jetbrains", "openai"): "/openai/v1",
    ("zed", "anthropic"): "/anthropic",
    ("zed", "openai"): "/openai/v1",
    ("openai-python", "openai"): "/openai/v1",
    ("anthropic-python", "anthropic"): "/anthropic",
    ("openai-node", "openai"): "/openai/v1",
    ("anthropic-node", "anthropic"): "/anthropic",
    ("gemini-cli", "gemini"): "/gemini",
    ("google-genai-python", "gemini"): "/gemini",
    ("pi", "anthropic"): "/anthropic",
    ("pi", "openai"): "/openai/v1",
    ("qwen-code", "openai"): "/openai/v1",
    ("qwen-code", "anthropic"): "/anthropic",
    ("continue", "openai"): "/openai/v1",
    ("continue", "anthropic"): "/anthropic/v1",
    ("copilot-cli", "openai"): "/openai/v1",
    ("copilot-cli", "anthropic"): "/anthropic",
    ("grok-cli", "openai"): "/openai/v1",
    ("nanocoder", "openai"): "/openai/v1",
    ("nanocoder", "anthropic"): "/anthropic/v1",
    ("aider", "openai"): "/openai/v1",
    ("aider", "anthropic"): "/anthropic",
    ("shell-gpt", "openai"): "/openai/v1",
    ("mistral-vibe", "openai"): "/openai/v1",
    ("mistral-vibe", "anthropic"): "/anthropic",
    ("gptme", "openai"): "/openai/v1",
    ("gptme", "anthropic"): "/anthropic",
}

ISSUE_CLIENTS = (
    "Claude Code",
    "Codex CLI",
    "OpenCode",
    "Factory",
    "Goose",
    "Cline",
    "Kilo Code",
    "Roo Code",
    "VS Code",
    "JetBrains",
    "Zed",
    "Windsurf",
    "Cursor",
    "Amp",
    "Kiro",
    "Gemini CLI",
    "Antigravity",
    "openai-python",
    "anthropic-python",
    "openai-node",
    "anthropic-node",
    "google-genai-python",
    # issue 17
    "pi",
    "Qwen Code",
    "Continue CLI",
    "GitHub Copilot CLI",
    "Grok CLI",
    "Nanocoder",
    "Aider",
    "ShellGPT",
    "Mistral Vibe",
    "gptme",
)

SETUPS = [
    pytest.param(
        client.key,
        setup.api,
        setup.protocol,
        id=f"{client.key}-{setup.api}-{setup.protocol.split(',')[0].split()[0].lower()}",
    )
    for client in CLIENTS
    for setup in client.setups
    if client.supported
]


def parsed_file(config: ClientConfig) -> Any:
    if config.file_content is None:
        return None
    if config.file_syntax == "toml":
        return tomllib.loads(config.file_content)
    if config.file_syntax == "yaml":
        return yaml.safe_load(config.file_content)
    assert config.file_syntax == "json"
    return json.loads(config.file_content)


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def everything(config: ClientConfig) -> list[str]:
    """Every value the configuration hands the client."""
    return [
        *(v for _, v in config.env),
        *(arg for argv in config.commands for arg in argv),
        *(v for _, v in config.settings),
        *strings_in(parsed_file(config)),
    ]


def shell_values(lines: tuple[str, ...], names: list[str]) -> list[str]:
    """What a POSIX shell makes of ``export`` lines: each variable's value."""
    script = "\n".join(lines) + "\n" + "".join(f'printf "%s\\0" "${n}"\n' for n in names)
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


# -- the table ------------------------------------------------------------------


def test_every_client_of_the_issue_has_an_entry() -> None:
    for name in ISSUE_CLIENTS:
        find_client(name)
    assert len(CLIENTS) == len(ISSUE_CLIENTS)


def test_names_are_unique() -> None:
    def fold(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())

    names = [n for c in CLIENTS for n in {fold(x) for x in (c.key, c.name, c.recorded, *c.aliases)}]
    assert len(names) == len(set(names)), "a name find_client() cannot tell apart"
    assert len({c.recorded for c in CLIENTS}) == len(CLIENTS)


def test_wire_markers_do_not_overlap() -> None:
    """Two clients' User-Agent prefixes where one starts the other would
    make detection depend on the table's order."""
    prefixes = [(c.key, p.lower()) for c in CLIENTS if c.wire for p in c.wire.user_agent_prefixes]
    for key, prefix in prefixes:
        for other, longer in prefixes:
            assert other == key or not longer.startswith(prefix), (key, prefix, other)


def test_supported_clients_say_how_and_the_others_why_not() -> None:
    for client in CLIENTS:
        if client.unsupported is None:
            assert client.setups, client.key
            for setup in client.setups:
                assert setup.env or setup.file or setup.commands or setup.settings
                assert setup.verified_by or client.untested, client.key
        else:
            assert not client.setups and client.unsupported.endswith("."), client.key
    assert {c.key for c in CLIENTS if not c.supported} == {
        "windsurf",
        "cursor",
        "amp",
        "kiro",
        "antigravity",
    }


def _named_tests() -> set[str]:
    named = {t for c in CLIENTS for s in c.setups for t in s.verified_by}
    notes = " ".join(n for c in CLIENTS for s in c.setups for n in (*s.notes, *c.notes))
    named.update(re.findall(r"tests/[\w/]+\.py::[\w\[\]/.-]+", notes))
    return named


def _here(test_id: str) -> bool:
    """Whether ``test_id`` names a test of this module (no need to collect it)."""
    name, _, param = test_id.split("::", 1)[1].partition("[")
    test = globals().get(name)
    if not callable(test) or not name.startswith("test_"):
        return False
    if not param:
        return True
    ids = [str(v) for mark in getattr(test, "pytestmark", []) for v in mark.args[1]]
    return param.rstrip("]") in ids


def test_every_named_test_exists() -> None:
    named = _named_tests()
    here = {t for t in named if t.startswith("tests/test_client_kit.py::")}
    assert all(_here(t) for t in here), sorted(t for t in here if not _here(t))
    files = sorted({t.split("::", 1)[0] for t in named - here})
    assert files and all(f.startswith("tests/clients/") for f in files)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    missing = named - here - set(result.stdout.split())
    assert not missing, f"the table names tests that do not exist: {sorted(missing)}"


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_pypi_name(name)] = version.strip()
    return pins


def test_versions_are_the_pinned_ones() -> None:
    """npm clients in package.json; PyPI clients in their own lock,
    tests/clients/python/<package>.txt, the SDKs in requirements.txt."""
    package = json.loads((ROOT / "tests/clients/package.json").read_text())
    npm = {**package["dependencies"], **package.get("optionalDependencies", {})}
    sdks = _pins(ROOT / "tests/clients/requirements.txt")
    for client in CLIENTS:
        if any(s.verified_by for s in client.setups):
            assert client.pinned and client.version, client.key
        if client.pinned:
            registry, name = client.pinned.split(":", 1)
            if registry == "npm":
                pinned = npm.get(name)
            else:
                lock = ROOT / "tests/clients/python" / f"{name}.txt"
                pinned = (_pins(lock) if lock.exists() else sdks).get(_pypi_name(name))
            assert pinned == client.version, client.key


def test_the_docs_page_is_generated_from_the_table() -> None:
    committed = (ROOT / "docs/clients.md").read_text(encoding="utf-8")
    assert committed == client_docs.render(), (
        "docs/clients.md differs from the table:"
        " python -m aibridge_asgi docs-clients --output docs/clients.md"
    )


# -- configure() ----------------------------------------------------------------


@pytest.mark.parametrize(("key", "api", "protocol"), SETUPS)
def test_each_entry_gets_its_base_url_form(key: str, api: Api, protocol: str) -> None:
    config = configure(key, BASE, ODD_TOKEN, api=api, protocol=protocol)
    assert (config.api, config.protocol, config.client) == (api, protocol, key)
    urls = {v for v in everything(config) if "ai.example.com" in v}
    assert urls == {BASE + URL_FORMS[(key, api)]}
    # A trailing slash on the mount URL changes nothing.
    assert configure(key, BASE + "/", ODD_TOKEN, api=api, protocol=protocol) == config


def test_every_setup_has_an_expected_url_form() -> None:
    assert {(k, a) for k, a, _ in (p.values for p in SETUPS)} == set(URL_FORMS)


@pytest.mark.parametrize(("key", "api", "protocol"), SETUPS)
def test_tokens_with_odd_characters_survive(key: str, api: Api, protocol: str) -> None:
    config = configure(key, BASE, ODD_TOKEN, api=api, protocol=protocol)
    values = everything(config)
    assert ODD_TOKEN in values, "the token reaches the client"
    if config.env:
        names = [name for name, _ in config.env]
        assert shell_values(config.env_lines, names) == [value for _, value in config.env]
    for line, argv in zip(config.command_lines, config.commands, strict=True):
        assert shlex.split(line) == list(argv)
    if config.run:
        assert shlex.split(config.run_line) == list(config.run)
    # Config files refer to the environment for the token; they hold no secret.
    if config.file_content is not None:
        assert ODD_TOKEN not in config.file_content
        assert "a'b" not in config.file_content
        # Zed and Gemini CLI read the token from their own variable, not the file.
        assert config.env_vars.get(TOKEN_ENV) == ODD_TOKEN or key in ("zed", "gemini-cli")


@pytest.mark.parametrize(
    ("key", "api", "protocol"), [p.values for p in SETUPS if p.values[0] != "cline"]
)
def test_files_stay_valid_whatever_the_values(key: str, api: Api, protocol: str) -> None:
    """A mount URL and model with quotes, backslashes, a newline and
    non-ASCII: the TOML, JSON or YAML file still parses to exactly those values."""
    base = "https://ai.example.com/odd\"\\path'ü"
    model = 'm"o\\d\te\nl-ü\x7f'
    config = configure(key, base, ODD_TOKEN, api=api, model=model, protocol=protocol)
    if config.file_content is None:
        return
    data = parsed_file(config)
    found = set(strings_in(data))
    if key != "gemini-cli":  # its base URL is in the environment, its model in the file
        assert base + URL_FORMS[(key, api)] in found
    if key != "zed":
        assert model in found or any(model in s for s in found)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(
            st.text(max_size=30),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.booleans(),
            st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=3),
        ),
        max_size=5,
    )
)
def test_toml_writer_round_trips(table: dict[str, Any]) -> None:
    assert tomllib.loads(_syntax.dump_toml(table)) == table


_YAML_SCALARS = st.one_of(
    st.text(max_size=30), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans()
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.recursive(
            _YAML_SCALARS,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
            ),
            max_leaves=8,
        ),
        max_size=5,
    )
)
def test_yaml_writer_round_trips(document: dict[str, Any]) -> None:
    assert yaml.safe_load(_syntax.dump_yaml(document)) == document


@given(st.text(max_size=40))
def test_export_lines_round_trip_through_shlex(value: str) -> None:
    line = _syntax.export_line("X", value)
    assert shlex.split(line) == ["export", f"X={value}"]


def test_codex_config_is_the_documented_provider() -> None:
    config = configure("codex", BASE, "tok")
    assert config.file_path == "~/.codex/config.toml"
    assert parsed_file(config) == {
        "model": "gpt-5",
        "model_provider": "aibridge",
        "model_providers": {
            "aibridge": {
                "name": "AI Bridge",
                "base_url": BASE + "/openai/v1",
                "env_key": TOKEN_ENV,
                "wire_api": "responses",
            }
        },
    }
    assert config.env_lines == (f"export {TOKEN_ENV}=tok",)


def test_model_and_api_choice() -> None:
    config = configure("opencode", BASE, "tok", api="openai", model="gpt-5-codex")
    assert config.run == ("opencode", "run", "-m", "openai/gpt-5-codex", "your prompt")
    assert parsed_file(config)["provider"]["openai"]["models"] == {
        "gpt-5-codex": {"name": "gpt-5-codex"}
    }
    assert configure("goose", BASE, "t").api == "anthropic"  # the first one listed
    with pytest.raises(ValueError, match="cannot use the anthropic API"):
        configure("codex", BASE, "t", api="anthropic")


def test_unknown_unsupported_and_bad_base_urls() -> None:
    with pytest.raises(UnknownClient, match="known: claude-code"):
        configure("notepad", BASE, "t")
    with pytest.raises(ClientNotSupported, match="base URL setting"):
        configure("kiro", BASE, "t")
    for bad in (
        BASE + "/openai/v1",
        BASE + "/anthropic",
        BASE + "/gemini",
        "ftp://x/y",
        "host/api",
        BASE + "?a=1",
    ):
        with pytest.raises(ValueError):
            configure("claude-code", bad, "t")
    # Names as people type them.
    assert find_client("Claude Code").key == find_client("claude").key == "claude-code"
    assert find_client("VS Code Copilot").key == "vscode"


# -- detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"user-agent": "claude-cli/2.1.332 (external, sdk-cli)"}, "Claude Code"),
        ({"user-agent": "codex_exec/0.171.0 (Ubuntu)"}, "Codex"),
        ({"user-agent": "x", "originator": "codex_cli_rs"}, "Codex"),
        ({"user-agent": "opencode/1.18.33 ai-sdk/provider-utils/4"}, "OpenCode"),
        ({"user-agent": "kilo/7.7.7"}, "Kilo Code"),
        ({"x-kilocode-taskid": "t1"}, "Kilo Code"),
        ({"user-agent": "Roo-Code/3.0"}, "Roo Code"),
        ({"user-agent": "factory-cli/0.215.0"}, "Factory"),
        ({"user-agent": "goose/1.0"}, "Goose"),
        ({"user-agent": "Zed/0.200"}, "Zed"),
        ({"user-agent": "GitHubCopilotChat/0.30"}, "VS Code Copilot"),
        ({"x-cursor-client-version": "1.0"}, "Cursor"),
        ({"user-agent": "OpenAI/Python 3.57.0"}, "openai-python"),
        ({"user-agent": "AsyncAnthropic/Python 2.14.0"}, "anthropic-python"),
        ({"user-agent": "OpenAI/JS 7.59.0"}, "openai-node"),
        ({"user-agent": "Anthropic/JS 1.14.0"}, "anthropic-node"),
        ({"user-agent": "curl/8"}, "unknown"),
    ],
)
def test_detection_reads_the_table(headers: dict[str, str], expected: str) -> None:
    assert detect_client(headers)[0] == expected


def test_detection_order_prompt_then_own_markers_then_sdk() -> None:
    cline = {"messages": [{"role": "system", "content": "You are Cline, a coder."}]}
    # Cline's VS Code extension speaks through the OpenAI SDK for Node.
    assert detect_client({"user-agent": "OpenAI/JS 7.0"}, cline) == ("Cline", None)
    # A system prompt wins over a User-Agent, which may be borrowed (Qwen
    # Code sends Claude Code's on Anthropic) ...
    qwen = {"system": [{"type": "text", "text": "You are Qwen Code, a CLI agent."}]}
    claude_ua = {"user-agent": "claude-cli/0.24.4 (external, cli)", "x-app": "cli"}
    assert detect_client(claude_ua, qwen) == ("Qwen Code", None)
    # ... and a client's own User-Agent still names it when the prompt is not one
    # the table knows.
    other = {"system": "You are a helpful assistant."}
    assert detect_client({"user-agent": "factory-cli/1"}, other) == ("Factory", None)
    assert detect_client(claude_ua, other) == ("Claude Code", None)
    headers = {"user-agent": "kilo/7.7.7", "x-session-id": "ses_9"}
    assert detect_client(headers) == ("Kilo Code", "ses_9")


# -- the command line -------------------------------------------------------------


def run_main(*argv: str, stdin: str = "", tty: bool = False) -> tuple[int, str, str]:
    class Input(io.StringIO):
        def isatty(self) -> bool:
            return tty

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=Input(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return home


def test_cli_prints_the_configuration(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aibridge_asgi", "configure", "codex", "--base-url", BASE],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), TOKEN_ENV: "tok'1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert 'base_url = "https://ai.example.com/api/v2/aibridge/openai/v1"' in result.stdout
    assert "export AIBRIDGE_TOKEN='tok'\"'\"'1'" in result.stdout
    assert not (home / ".codex").exists()  # printing writes nothing

    code, out, _ = run_main(
        "configure", "claude-code", "--base-url", BASE, "--token", ODD_TOKEN, "--format", "env"
    )
    assert code == 0
    assert shell_values(tuple(out.splitlines()), ["ANTHROPIC_AUTH_TOKEN"]) == [ODD_TOKEN]
    code, out, _ = run_main("configure", "zed", "--api", "openai", "--base-url", BASE,
                            "--token", "t", "--format", "json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["file"]["path"] == "~/.config/zed/settings.json"
    assert data["env"] == {"OPENAI_API_KEY": "t"}


def test_cli_picks_a_protocol(home: Path) -> None:
    args = ("configure", "pi", "--base-url", BASE, "--token", "t", "--format", "json")
    code, out, _ = run_main(*args, "--api", "openai", "--protocol", "responses")
    assert code == 0
    data = json.loads(out)
    assert (data["api"], data["protocol"]) == ("openai", "Responses")
    provider = json.loads(data["file"]["content"])["providers"]["aibridge"]
    assert (provider["api"], provider["baseUrl"]) == ("openai-responses", BASE + "/openai/v1")
    code, out, _ = run_main(*args, "--api", "openai")  # the first OpenAI setup
    assert code == 0 and json.loads(out)["protocol"] == "Chat Completions"
    code, _, err = run_main(*args, "--api", "openai", "--protocol", "messages")
    assert code == 2 and "does not speak 'messages'" in err
    code, _, err = run_main(*args, "--api", "anthropic", "--protocol", "responses")
    assert code == 2 and "(it speaks Messages)" in err


def test_cli_errors(home: Path) -> None:
    code, _, err = run_main("configure", "codex", "--base-url", BASE)
    assert code == 2 and TOKEN_ENV in err
    code, _, err = run_main("configure", "windsurf", "--base-url", BASE, "--token", "t")
    assert code == 2 and "no setting to send its model traffic" in err
    code, _, err = run_main("configure", "codex", "--base-url", BASE + "/openai/v1", "--token", "t")
    assert code == 2 and "mount URL" in err


def test_cli_writes_and_never_overwrites_without_asking(home: Path) -> None:
    target = home / ".codex" / "config.toml"
    args = ("configure", "codex", "--base-url", BASE, "--token", "t", "--write")
    code, out, err = run_main(*args)
    assert code == 0 and f"wrote {target}" in err
    first = target.read_text()
    assert tomllib.loads(first)["model_providers"]["aibridge"]["base_url"] == BASE + "/openai/v1"
    assert "export AIBRIDGE_TOKEN=t" in out and "# file" not in out  # the rest to do

    # The same content again: nothing to do.
    code, _, err = run_main(*args)
    assert code == 0 and "up to date" in err

    # A different file: refused without a terminal to ask at...
    other = ("configure", "codex", "--base-url", "https://other.example/ai", "--token", "t")
    code, _, err = run_main(*other, "--write")
    assert code == 1 and "--force" in err
    assert target.read_text() == first
    # ... and when the answer is no.
    code, _, err = run_main(*other, "--write", stdin="n\n", tty=True)
    assert code == 1 and "merge the changes above into it?" in err
    assert '+base_url = "https://other.example/ai/openai/v1"' in err  # the diff, first
    assert target.read_text() == first
    assert list(target.parent.iterdir()) == [target]

    # Yes at the terminal: replaced, the old one kept beside it.
    code, _, err = run_main(*other, "--write", stdin="y\n", tty=True)
    assert code == 0 and "config.toml.bak" in err
    assert "https://other.example/ai/openai/v1" in target.read_text()
    assert (target.parent / "config.toml.bak").read_text() == first

    # --force: replaced again; the earlier backup is not lost.
    second = target.read_text()
    code, _, _ = run_main(*args, "--force")
    assert code == 0 and target.read_text() == first
    assert (target.parent / "config.toml.bak").read_text() == first
    assert (target.parent / "config.toml.bak.1").read_text() == second


CODEX_BY_HAND = """\
# My Codex settings, written by hand.
model = "o3"  # the model I like
approval_policy = "on-request"

[profiles.work]
model = "gpt-5-codex"  # for work

[model_providers.aibridge]
name = "old gateway"  # renamed by the kit
base_url = "https://old.example/v1"
"""


def test_cli_merges_into_an_existing_toml_file_keeping_comments(home: Path) -> None:
    target = home / ".codex" / "config.toml"
    target.parent.mkdir()
    target.write_text(CODEX_BY_HAND)
    args = ("configure", "codex", "--base-url", BASE, "--token", "t", "--write")
    code, _, err = run_main(*args)
    assert code == 1 and "not changed" in err
    assert '-base_url = "https://old.example/v1"' in err  # the diff is shown first
    assert target.read_text() == CODEX_BY_HAND
    code, _, err = run_main(*args, stdin="y\n", tty=True)
    assert code == 0 and "merged into" in err
    merged = target.read_text()
    for kept in (
        "# My Codex settings, written by hand.",
        "# the model I like",  # the kit sets the model; the comment stays
        'approval_policy = "on-request"',
        "[profiles.work]",
        'model = "gpt-5-codex"  # for work',
        "# renamed by the kit",
    ):
        assert kept in merged
    assert merged.index("[profiles.work]") < merged.index("[model_providers.aibridge]")
    parsed = tomllib.loads(merged)
    assert parsed["model_providers"]["aibridge"]["base_url"] == BASE + "/openai/v1"
    assert parsed["approval_policy"] == "on-request"
    assert parsed["profiles"]["work"]["model"] == "gpt-5-codex"
    # What the kit would write alone is all there.
    fresh = configure("codex", BASE, "t").file_content
    assert fresh is not None
    for key, value in tomllib.loads(fresh).items():
        if not isinstance(value, dict):
            assert parsed[key] == value
    assert (target.parent / "config.toml.bak").read_text() == CODEX_BY_HAND
    code, _, err = run_main(*args)
    assert code == 0 and "up to date" in err


def test_cli_merges_json_by_key_and_refuses_to_merge_jsonc(home: Path) -> None:
    target = home / ".config" / "zed" / "settings.json"
    target.parent.mkdir(parents=True)
    mine = {"theme": "One Dark", "language_models": {"anthropic": {"api_url": "x"}}}
    target.write_text(json.dumps(mine, indent=4))
    args = ("configure", "zed", "--api", "openai", "--base-url", BASE, "--token", "t")
    code, _, err = run_main(*args, "--write", "--force")
    assert code == 0 and "merged into" in err
    merged = json.loads(target.read_text())
    assert list(merged) == ["theme", "language_models"]
    assert merged["language_models"]["anthropic"] == {"api_url": "x"}
    assert merged["language_models"]["openai"]["api_url"] == BASE + "/openai/v1"
    # JSON with comments cannot be merged without losing them: the kit says
    # so and asks to replace instead.
    target.write_text('{\n  // mine\n  "theme": "One Dark"\n}\n')
    code, _, err = run_main(*args, "--write", stdin="n\n", tty=True)
    assert code == 1 and "cannot be merged" in err and "replace it?" in err
    assert "// mine" in target.read_text()


def test_cli_write_for_a_client_without_a_file(home: Path) -> None:
    code, out, err = run_main(
        "configure", "claude-code", "--base-url", BASE, "--token", "t", "--write"
    )
    assert code == 0 and "nothing written" in err
    assert "export ANTHROPIC_BASE_URL=https://ai.example.com/api/v2/aibridge/anthropic" in out
    assert list(home.iterdir()) == []


def test_cli_lists_the_clients() -> None:
    code, out, _ = run_main("clients")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(CLIENTS) + 1
    assert re.search(r"^codex +Codex CLI +OpenAI \(Responses\) +verified$", out, re.M)
    assert re.search(r"^windsurf +Windsurf +- +not possible$", out, re.M)
    code, out, _ = run_main("clients", "--format", "json")
    assert [c["key"] for c in json.loads(out)] == [c.key for c in CLIENTS]


def test_cli_docs(tmp_path: Path) -> None:
    code, out, _ = run_main("docs-clients")
    assert code == 0 and out == client_docs.render()
    page = tmp_path / "clients.md"
    assert run_main("docs-clients", "--output", str(page), "--check")[0] == 1
    assert run_main("docs-clients", "--output", str(page))[0] == 0
    assert run_main("docs-clients", "--output", str(page), "--check")[0] == 0


# -- the Python SDKs with only the configured environment ------------------------------


def _clean_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_CLOUD_PROJECT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("key", ["openai-python", "anthropic-python", "google-genai-python"])
def test_python_sdk_from_configured_env(
    key: str, running: Running, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK built with no arguments, from the environment configure() gives."""
    _clean_sdk_env(monkeypatch)
    config = configure(key, running.url, HOST_TOKEN)
    for name, value in config.env:
        monkeypatch.setenv(name, value)
    if key == "openai-python":
        chat = openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}]
        )
        text = chat.choices[0].message.content
        key_header = ("authorization", f"Bearer {OPENAI_KEY}")
    elif key == "google-genai-python":
        from google import genai

        sdk = genai.Client()  # kept in a name: the SDK closes its HTTP client when collected
        answer = sdk.models.generate_content(model="gemini-2.5-pro", contents="hi")
        text = answer.text
        key_header = ("x-goog-api-key", GOOGLE_KEY)
    else:
        message = anthropic.Anthropic(max_retries=0).messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        text = message.content[0].text  # type: ignore[union-attr]
        key_header = ("x-api-key", ANTHROPIC_KEY)
    assert text == fake.reply
    assert fake.last().header(key_header[0]) == key_header[1]
    running.recorder.wait_ended(1)
    (started,) = running.recorder.of_type(InterceptionStarted)
    assert (started.client, started.actor.id) == (key, "alice")


def test_the_byok_form(home: Path) -> None:
    """Bring your own key: the host token in an extra header, the user's key
    where the client sends its key; refused for clients with no extra header."""
    config = configure("claude-code", BASE, ODD_TOKEN, byok=True, user_key="sk-user")
    assert config.byok and config.as_dict()["byok"] is True
    assert shell_values(config.env_lines, ["ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_API_KEY"]) == [
        f"X-AIBridge-Token: {ODD_TOKEN}",
        "sk-user",
    ]
    assert "ANTHROPIC_AUTH_TOKEN" not in config.env_vars
    assert "bring your own key" in config.render().splitlines()[0]
    renamed = configure("opencode", BASE, "tok", byok=True, byok_header="X-Gateway")
    content = json.loads(renamed.file_content or "")
    options = content["provider"]["anthropic"]["options"]
    assert options["headers"] == {"X-Gateway": "{env:AIBRIDGE_TOKEN}"}
    assert options["apiKey"] == "{env:AIBRIDGE_PROVIDER_KEY}"
    assert renamed.env_vars["AIBRIDGE_PROVIDER_KEY"] == "<your own provider key>"
    sdk = configure("openai-python", BASE, "tok", byok=True, byok_header="X-Gateway")
    assert any('"X-Gateway"' in note for note in sdk.notes)
    assert not any("X-AIBridge-Token" in note for note in sdk.notes)
    with pytest.raises(ClientNotSupported, match="extra header"):
        configure("goose", BASE, "tok", byok=True)
    code, out, _ = run_main(
        "configure", "codex", "--base-url", BASE, "--token", "tok", "--byok", "--format", "json"
    )
    assert code == 0
    provider = tomllib.loads(json.loads(out)["file"]["content"])["model_providers"]["aibridge"]
    assert provider["env_http_headers"] == {"X-AIBridge-Token": "AIBRIDGE_TOKEN"}
    assert provider["env_key"] == "OPENAI_API_KEY"
