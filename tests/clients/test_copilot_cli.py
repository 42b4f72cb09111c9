"""GitHub Copilot CLI (`copilot -p`) with a bring-your-own-key provider, in
offline mode, through the bridge's Chat Completions, Responses and Messages
routes."""

from __future__ import annotations

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
VERSION = "1.0.102"


@pytest.mark.parametrize(
    ("api", "protocol", "route"),
    [
        ("openai", "chat", "/chat/completions"),
        ("openai", "responses", "/responses"),
        ("anthropic", "messages", "/v1/messages"),
    ],
    ids=["chat", "responses", "messages"],
)
def test_copilot_cli_prompt(rig: Rig, api: Api, protocol: str, route: str) -> None:
    config = rig.configure("copilot-cli", api=api, protocol=protocol)
    base_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert config.env_vars["COPILOT_PROVIDER_BASE_URL"] == base_url
    assert config.env_vars["COPILOT_OFFLINE"] == "true"
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("copilot"), prompt=PROMPT), env)
    capture(rig, f"copilot-cli-{protocol}", client="Copilot CLI", version=VERSION)
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Copilot CLI",
        provider=api,
        session_header=None,
        session_field="prompt_cache_key" if protocol == "responses" else None,
    )
    assert started.route == route


def test_copilot_cli_runs_its_view_tool(rig: Rig) -> None:
    config = rig.configure("copilot-cli", api="anthropic")
    argv = program_argv(config.run, client_program("copilot"), prompt=TOOL_PROMPT)
    read_tool_round_trip(
        rig,
        argv,
        rig.install(config),
        tool="view",
        arg="path",
        client="Copilot CLI",
        provider="anthropic",
    )
