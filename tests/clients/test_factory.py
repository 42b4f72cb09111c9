"""Factory's Droid CLI (`droid exec`) with BYOK custom models, through the
bridge's Anthropic route and its OpenAI (Responses) route."""

from __future__ import annotations

import json

import pytest

from aibridge_asgi.client_table import Api

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "0.225.2"
#: Droid reports to Factory's API and telemetry whatever the model setup; the
#: suite's trap refuses them and Droid goes on.
FACTORY_SERVICES = ("api.factory.ai", "telemetry.factory.ai", ".run.app")


@pytest.mark.parametrize(
    ("provider", "model", "route"),
    [
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
        ("openai", "gpt-5", "/responses"),
    ],
    ids=["anthropic", "openai"],
)
def test_factory_droid_exec(rig: Rig, provider: Api, model: str, route: str) -> None:
    # ~/.factory/settings.json and the environment as configure() gives them.
    config = rig.configure("factory", api=provider)
    assert config.model == model
    base_url = rig.anthropic_url if provider == "anthropic" else rig.openai_url
    (custom,) = json.loads(config.file_content or "")["customModels"]
    assert (custom["provider"], custom["baseUrl"]) == (provider, base_url)
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("droid"), prompt=PROMPT), env)
    capture(rig, f"factory-{provider}", client="Factory", version=VERSION)
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Factory",
        provider=provider,
        session_header=None,
        session_field="prompt_cache_key" if provider == "openai" else None,
        allowed_outside=FACTORY_SERVICES,
    )
    assert started.route == route
    assert (started.user_agent or "").startswith(f"factory-cli/{VERSION}")
    assert started.model == model
