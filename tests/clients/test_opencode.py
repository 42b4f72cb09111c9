"""OpenCode (`opencode run`) through its Anthropic provider and its OpenAI
provider (which speaks the Responses API)."""

from __future__ import annotations

import json

import pytest

from ..conftest import HOST_TOKEN
from .harness import Rig, check_run, client_program, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."


@pytest.mark.parametrize(
    ("provider", "model", "route"),
    [
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
        ("openai", "gpt-5", "/responses"),
    ],
)
def test_opencode_run(rig: Rig, provider: str, model: str, route: str) -> None:
    base_url = rig.anthropic_url + "/v1" if provider == "anthropic" else rig.openai_url
    config = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            provider: {
                "options": {"baseURL": base_url, "apiKey": "{env:AIBRIDGE_TOKEN}"},
                "models": {model: {"name": model}},
            }
        },
    }
    config_file = rig.root / "opencode.json"
    config_file.write_text(json.dumps(config, indent=2))
    env = rig.env(
        {
            "AIBRIDGE_TOKEN": HOST_TOKEN,
            "OPENCODE_CONFIG": str(config_file),
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        }
    )
    script_upstream(rig.fake)
    result = rig.run([client_program("opencode"), "run", "-m", f"{provider}/{model}", PROMPT], env)
    # OpenCode quotes a prompt argument that has spaces, so the recorded
    # prompt is the text in double quotes: "contains" is the check.
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="OpenCode",
        provider=provider,
        session_header="x-session-id",
    )
    assert started.route == route
    assert started.model == model
