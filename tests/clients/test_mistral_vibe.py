"""Mistral Vibe (`vibe -p`, PyPI `mistral-vibe`) with a generic provider,
through the bridge's Chat Completions, Responses and Messages routes."""

from __future__ import annotations

import glob
import shutil
import subprocess
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


def _has_python_312() -> bool:
    """Whether this machine has a Python >= 3.12 to install Mistral Vibe with
    (looked for where scripts/install-clients looks)."""
    found = [shutil.which(name) for name in ("python3.13", "python3.12")]
    found += glob.glob("/root/.pyenv/versions/3.1[2-9]*/bin/python3")
    for python in filter(None, found):
        check = [python, "-c", "import sys, venv; sys.exit(sys.version_info < (3, 12))"]
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return True
    return False


# Mistral Vibe requires Python >= 3.12 and the registries offer no interpreter:
# on a machine without one it cannot be installed at all (install-clients says
# so). Where one exists, a missing install fails like every other client.
pytestmark = pytest.mark.skipif(
    not _has_python_312(), reason="Mistral Vibe needs Python >= 3.12; none on this machine"
)


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
