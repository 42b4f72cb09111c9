"""Factory's Droid CLI (`droid exec`) with BYOK custom models, through the
bridge's Anthropic route and its OpenAI (Responses) route."""

from __future__ import annotations

import json

import pytest

from ..conftest import HOST_TOKEN
from .harness import Rig, check_run, client_program, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
#: Droid reports to Factory's API and telemetry whatever the model setup; the
#: suite's trap refuses them and Droid goes on.
FACTORY_SERVICES = ("api.factory.ai", "telemetry.factory.ai", ".run.app")


@pytest.mark.parametrize(
    ("provider", "model", "route"),
    [
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
        ("openai", "gpt-5", "/responses"),
    ],
)
def test_factory_droid_exec(rig: Rig, provider: str, model: str, route: str) -> None:
    base_url = rig.anthropic_url if provider == "anthropic" else rig.openai_url
    settings = {
        "customModels": [
            {
                "model": model,
                "displayName": f"{model} via the bridge",
                "baseUrl": base_url,
                "apiKey": "${AIBRIDGE_TOKEN}",
                "provider": provider,
                "maxOutputTokens": 8192,
            }
        ]
    }
    (rig.home / ".factory").mkdir()
    (rig.home / ".factory" / "settings.json").write_text(json.dumps(settings, indent=2))
    script_upstream(rig.fake)
    result = rig.run(
        [client_program("droid"), "exec", "-m", f"custom:{model}", PROMPT],
        rig.env({"AIBRIDGE_TOKEN": HOST_TOKEN}),
    )
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Factory",
        provider=provider,
        session_header=None,
        allowed_outside=FACTORY_SERVICES,
    )
    assert started.route == route
    assert started.model == model
