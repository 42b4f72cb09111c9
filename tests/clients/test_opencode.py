"""OpenCode (`opencode run`) through its Anthropic provider and its OpenAI
provider (which speaks the Responses API)."""

from __future__ import annotations

import json

import pytest

from aibridge_asgi.client_table import Api

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."


@pytest.mark.parametrize(
    ("provider", "model", "route"),
    [
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
        ("openai", "gpt-5", "/responses"),
    ],
    ids=["anthropic", "openai"],
)
def test_opencode_run(rig: Rig, provider: Api, model: str, route: str) -> None:
    # The global config file and environment configure() gives, plus the
    # suite's isolation switches.
    config = rig.configure("opencode", api=provider)
    assert config.model == model
    base_url = rig.anthropic_url + "/v1" if provider == "anthropic" else rig.openai_url
    options = json.loads(config.file_content or "")["provider"][provider]["options"]
    assert options == {"baseURL": base_url, "apiKey": "{env:AIBRIDGE_TOKEN}"}
    env = rig.install(
        config,
        {
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        },
    )
    assert config.run[:3] == ("opencode", "run", "-m")
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("opencode"), prompt=PROMPT), env)
    capture(rig, f"opencode-{provider}", client="OpenCode", version="1.18.33")
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


USER_KEY = "sk-user-own-key-for-opencode-byok"


def test_opencode_byok(rig: Rig) -> None:
    """Bring your own key: the gateway token in the provider's
    `options.headers`, the user's own key as `apiKey`."""
    config = rig.configure("opencode", api="anthropic", byok=True, user_key=USER_KEY)
    options = json.loads(config.file_content or "")["provider"]["anthropic"]["options"]
    assert options["headers"] == {"X-AIBridge-Token": "{env:AIBRIDGE_TOKEN}"}
    env = rig.install(
        config,
        {
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        },
    )
    rig.fake.anthropic_key = USER_KEY
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("opencode"), prompt=PROMPT), env)
    check_run(
        rig,
        result,
        prompt=PROMPT,
        client="OpenCode",
        provider="anthropic",
        session_header="x-session-id",
        byok_key=USER_KEY,
    )
