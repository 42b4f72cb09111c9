"""The Grok CLI (`grok -p`, npm `@vibe-kit/grok-cli`) through the bridge's
Chat Completions route (it does not stream)."""

from __future__ import annotations

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
VERSION = "0.0.34"


def test_grok_cli_prompt(rig: Rig) -> None:
    config = rig.configure("grok-cli")
    assert config.env_vars["GROK_BASE_URL"] == rig.openai_url
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("grok"), prompt=PROMPT), env)
    capture(rig, "grok-cli-chat", client="Grok CLI", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="Grok CLI", provider="openai", session_header=None
    )
    assert started.route == "/chat/completions"
    assert not started.streaming
    # xAI's search_parameters reach the upstream as the client sent them.
    body = rig.capture.for_interception(started.interception_id).json()
    upstream = [r.json() for r in rig.bridged_requests()][-1]
    assert "search_parameters" in body
    assert upstream["search_parameters"] == body["search_parameters"]


def test_grok_cli_runs_its_view_file_tool(rig: Rig) -> None:
    config = rig.configure("grok-cli")
    argv = program_argv(config.run, client_program("grok"), prompt=TOOL_PROMPT)
    read_tool_round_trip(
        rig,
        argv,
        rig.install(config),
        tool="view_file",
        arg="path",
        client="Grok CLI",
        provider="openai",
    )
