"""Kilo Code CLI (`kilo run`) through an OpenAI-compatible (Chat Completions)
provider and through its Anthropic provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aibridge_asgi.client_table import Api

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
#: Kilo fetches its own model list from its cloud whatever the settings; the
#: suite's trap refuses it and Kilo goes on.
KILO_CLOUD = ("api.kilo.ai",)


def provider_section(rig: Rig, provider: Api) -> dict[str, Any]:
    """What the `provider` section of kilo.json should say."""
    token = "{env:AIBRIDGE_TOKEN}"
    if provider == "openai":
        return {
            "aibridge": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "AI Bridge",
                "options": {"baseURL": rig.openai_url, "apiKey": token},
                "models": {"gpt-5": {"name": "gpt-5"}},
            }
        }
    return {
        "anthropic": {
            "options": {"baseURL": rig.anthropic_url + "/v1", "apiKey": token},
            "models": {"claude-sonnet-4-5": {"name": "claude-sonnet-4-5"}},
        }
    }


@pytest.mark.parametrize(
    ("provider", "route"),
    [("openai", "/chat/completions"), ("anthropic", "/v1/messages")],
    ids=["openai", "anthropic"],
)
def test_kilo_code_run(rig: Rig, provider: Api, route: str) -> None:
    # ~/.config/kilo/kilo.json and the environment as configure() gives
    # them, plus the suite's isolation switches.
    config = rig.configure("kilo-code", api=provider)
    assert json.loads(config.file_content or "")["provider"] == provider_section(rig, provider)
    env = rig.install(
        config,
        {
            "KILO_DISABLE_MODELS_FETCH": "1",
            "KILO_DISABLE_AUTOUPDATE": "1",
            "KILO_DISABLE_SHARE": "1",
            "KILO_TELEMETRY_LEVEL": "off",
            "KILO_DISABLE_SESSION_INGEST": "1",
        },
    )
    argv = program_argv(config.run, client_program("kilo"), prompt=PROMPT)
    model = argv[argv.index("-m") + 1]
    script_upstream(rig.fake)
    result = rig.run(argv, env)
    capture(rig, f"kilo-code-{provider}", client="Kilo Code", version="7.7.7")
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Kilo Code",
        provider=provider,
        session_header="x-session-id",
        allowed_outside=KILO_CLOUD,
    )
    assert started.route == route
    assert started.model == model.split("/", 1)[1]
