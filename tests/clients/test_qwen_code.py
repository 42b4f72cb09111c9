"""Qwen Code (`qwen <prompt>`) through the bridge's Chat Completions,
Responses and Messages routes. On Anthropic it sends a `claude-cli/`
User-Agent; the records must still name Qwen Code."""

from __future__ import annotations

import json

import pytest

from aibridge_asgi.client_table import Api

from .harness import (
    TOOL_PROMPT,
    Rig,
    capture,
    check_run,
    client_program,
    program_argv,
    read_tool_round_trip,
    script_upstream,
)

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "0.24.4"
#: What the suite adds in ~/.qwen/settings.json: no update checks, no usage statistics.
QUIET = {
    "general": {"enableAutoUpdate": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


@pytest.mark.parametrize(
    ("api", "protocol", "route"),
    [
        ("openai", "chat", "/chat/completions"),
        ("openai", "responses", "/responses"),
        ("anthropic", "messages", "/v1/messages"),
    ],
    ids=["chat", "responses", "messages"],
)
def test_qwen_code_prompt(rig: Rig, api: Api, protocol: str, route: str) -> None:
    config = rig.configure("qwen-code", api=api, protocol=protocol)
    base = "ANTHROPIC" if api == "anthropic" else "OPENAI"
    expected_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert config.env_vars[f"{base}_BASE_URL"] == expected_url
    settings = rig.home / ".qwen" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(QUIET))
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("qwen"), prompt=PROMPT), env)
    capture(rig, f"qwen-code-{protocol}", client="Qwen Code", version=VERSION)
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Qwen Code",
        provider=api,
        session_header=None,
        session_field="prompt_cache_key" if protocol == "responses" else None,
    )
    assert started.route == route
    incoming = rig.capture.for_interception(started.interception_id)
    if protocol == "responses":
        assert (started.client_session_id or "").startswith("qwen-code:")
    if api == "anthropic":
        # The borrowed User-Agent, kept as sent.
        assert (started.user_agent or "").startswith("claude-cli/" + VERSION)
        assert incoming.headers.get("x-app") == "cli"


def test_qwen_code_runs_its_read_file_tool(rig: Rig) -> None:
    config = rig.configure("qwen-code", api="openai", protocol="chat")
    settings = rig.home / ".qwen" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(QUIET))
    argv = program_argv(config.run, client_program("qwen"), prompt=TOOL_PROMPT)
    read_tool_round_trip(
        rig,
        argv,
        rig.install(config),
        tool="read_file",
        arg="file_path",
        client="Qwen Code",
        provider="openai",
    )
