"""Aider (`aider --message`, PyPI `aider-chat`) through the bridge's Chat
Completions and Messages routes."""

from __future__ import annotations

import pytest

from aibridge_asgi.client_table import Api

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "0.86.2"
#: The suite's switches: no analytics, update or release-notes checks, no
#: git repository, no questions, and LiteLLM's bundled model list instead of
#: the one it would download.
QUIET = {
    "AIDER_ANALYTICS_DISABLE": "true",
    "AIDER_CHECK_UPDATE": "false",
    "AIDER_SHOW_RELEASE_NOTES": "false",
    "AIDER_GIT": "false",
    "AIDER_YES_ALWAYS": "true",
    "AIDER_PRETTY": "false",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
#: Aider fetches LiteLLM's model list from GitHub whatever the settings; the
#: trap refuses it and Aider goes on with the list it ships.
GITHUB_RAW = ("raw.githubusercontent.com",)


@pytest.mark.parametrize(
    ("api", "route"),
    [("openai", "/chat/completions"), ("anthropic", "/v1/messages")],
    ids=["openai", "anthropic"],
)
def test_aider_message(rig: Rig, api: Api, route: str) -> None:
    config = rig.configure("aider", api=api)
    base = "ANTHROPIC" if api == "anthropic" else "OPENAI"
    expected_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert config.env_vars[f"{base}_API_BASE"] == expected_url
    env = rig.install(config, QUIET)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("aider"), prompt=PROMPT), env)
    capture(rig, f"aider-{api}", client="Aider", version=VERSION)
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Aider",
        provider=api,
        session_header=None,
        allowed_outside=GITHUB_RAW,
    )
    assert started.route == route
