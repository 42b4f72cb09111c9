"""Kilo Code CLI (`kilo run`) through an OpenAI-compatible (Chat Completions)
provider and through its Anthropic provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ..conftest import HOST_TOKEN
from .harness import Rig, check_run, client_program, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
#: Kilo fetches its own model list from its cloud whatever the settings; the
#: suite's trap refuses it and Kilo goes on.
KILO_CLOUD = ("api.kilo.ai",)


def provider_config(rig: Rig, provider: str) -> tuple[str, dict[str, Any]]:
    """(model as `kilo run -m` takes it, the `provider` section of kilo.json)."""
    token = "{env:AIBRIDGE_TOKEN}"
    if provider == "openai":
        section = {
            "aibridge": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "AI Bridge",
                "options": {"baseURL": rig.openai_url, "apiKey": token},
                "models": {"gpt-5": {"name": "GPT-5"}},
            }
        }
        return "aibridge/gpt-5", section
    section = {
        "anthropic": {
            "options": {"baseURL": rig.anthropic_url + "/v1", "apiKey": token},
            "models": {"claude-sonnet-4-5": {"name": "Claude Sonnet 4.5"}},
        }
    }
    return "anthropic/claude-sonnet-4-5", section


@pytest.mark.parametrize(
    ("provider", "route"), [("openai", "/chat/completions"), ("anthropic", "/v1/messages")]
)
def test_kilo_code_run(rig: Rig, provider: str, route: str) -> None:
    model, section = provider_config(rig, provider)
    config = {"autoupdate": False, "share": "disabled", "provider": section}
    config_file = rig.root / "kilo.json"
    config_file.write_text(json.dumps(config, indent=2))
    env = rig.env(
        {
            "AIBRIDGE_TOKEN": HOST_TOKEN,
            "KILO_CONFIG": str(config_file),
            "KILO_DISABLE_MODELS_FETCH": "1",
            "KILO_DISABLE_AUTOUPDATE": "1",
            "KILO_DISABLE_SHARE": "1",
            "KILO_TELEMETRY_LEVEL": "off",
            "KILO_DISABLE_SESSION_INGEST": "1",
        }
    )
    script_upstream(rig.fake)
    result = rig.run([client_program("kilo"), "run", "-m", model, PROMPT], env)
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
