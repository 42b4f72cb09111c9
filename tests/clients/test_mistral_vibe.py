"""Mistral Vibe (`vibe -p`, PyPI `mistral-vibe`) with a generic provider,
through the bridge's Chat Completions, Responses and Messages routes."""

from __future__ import annotations

import tomllib

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
VERSION = "3.0.3"
#: The suite's switches: no telemetry, no update checks.
QUIET = {"VIBE_ENABLE_TELEMETRY": "false", "VIBE_ENABLE_UPDATE_CHECKS": "false"}


@pytest.mark.parametrize(
    ("api", "protocol", "route"),
    [
        ("openai", "chat", "/chat/completions"),
        ("openai", "responses", "/responses"),
        ("anthropic", "messages", "/v1/messages"),
    ],
    ids=["chat", "responses", "messages"],
)
def test_mistral_vibe_prompt(rig: Rig, api: Api, protocol: str, route: str) -> None:
    config = rig.configure("mistral-vibe", api=api, protocol=protocol)
    (provider,) = tomllib.loads(config.file_content or "")["providers"]
    base_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert (provider["api_base"], provider["api_key_env_var"]) == (base_url, "AIBRIDGE_TOKEN")
    env = rig.install(config, QUIET)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("vibe"), prompt=PROMPT), env)
    capture(rig, f"mistral-vibe-{protocol}", client="Mistral Vibe", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="Mistral Vibe", provider=api, session_header="x-affinity"
    )
    assert started.route == route


def test_mistral_vibe_runs_its_read_file_tool(rig: Rig) -> None:
    config = rig.configure("mistral-vibe", api="openai", protocol="responses")
    argv = program_argv(config.run, client_program("vibe"), prompt=TOOL_PROMPT)
    read_tool_round_trip(
        rig,
        argv,
        rig.install(config, QUIET),
        tool="read_file",
        arg="path",
        client="Mistral Vibe",
        provider="openai",
        session_header="x-affinity",
    )
