"""The Continue CLI (`cn -p`) with a local YAML config, through the bridge's
Chat Completions and Messages routes."""

from __future__ import annotations

import pytest
import yaml

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
VERSION = "1.5.47"


@pytest.mark.parametrize(
    ("api", "protocol", "route"),
    [
        ("openai", "responses", "/responses"),
        ("anthropic", "messages", "/v1/messages"),
    ],
    ids=["responses", "messages"],
)
def test_continue_cli_print(rig: Rig, api: Api, protocol: str, route: str) -> None:
    config = rig.configure("continue", api=api, protocol=protocol)
    (model,) = yaml.safe_load(config.file_content or "")["models"]
    base_url = rig.anthropic_url + "/v1" if api == "anthropic" else rig.openai_url
    assert (model["provider"], model["apiBase"]) == (api, base_url)
    assert model["apiKey"] == "${{ secrets.AIBRIDGE_TOKEN }}"
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("cn"), prompt=PROMPT), env)
    capture(rig, f"continue-{protocol}", client="Continue", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="Continue", provider=api, session_header=None
    )
    assert started.route == route


def test_continue_cli_runs_its_read_tool(rig: Rig) -> None:
    config = rig.configure("continue", api="anthropic")
    argv = program_argv(config.run, client_program("cn"), prompt=TOOL_PROMPT)
    read_tool_round_trip(
        rig,
        argv,
        rig.install(config),
        tool="Read",
        arg="filepath",
        client="Continue",
        provider="anthropic",
    )
