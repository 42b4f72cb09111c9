"""gptme (`gptme --non-interactive`, PyPI `gptme`) through the bridge's
Responses and Messages routes."""

from __future__ import annotations

import pytest

from aibridge_asgi.client_table import Api

from .harness import Rig, capture, check_run, client_program, program_argv, script_upstream

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "0.35.1"
#: tiktoken (through gptme) fetches its encodings from OpenAI's blob storage;
#: the trap refuses and gptme goes on without them.
TIKTOKEN = ("openaipublic.blob.core.windows.net",)


@pytest.mark.parametrize(
    ("api", "route"),
    [("openai", "/responses"), ("anthropic", "/v1/messages")],
    ids=["openai", "anthropic"],
)
def test_gptme_prompt(rig: Rig, api: Api, route: str) -> None:
    config = rig.configure("gptme", api=api)
    base = "ANTHROPIC" if api == "anthropic" else "OPENAI"
    expected_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert config.env_vars[f"{base}_BASE_URL"] == expected_url
    env = rig.install(config)
    script_upstream(rig.fake)
    result = rig.run(program_argv(config.run, client_program("gptme"), prompt=PROMPT), env)
    capture(rig, f"gptme-{api}", client="gptme", version=VERSION)
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="gptme",
        provider=api,
        session_header=None,
        allowed_outside=TIKTOKEN,
    )
    assert started.route == route
