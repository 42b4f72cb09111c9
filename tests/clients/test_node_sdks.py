"""The official SDKs for Node (`openai`, `@anthropic-ai/sdk`), streaming and
not, through small scripts beside this file. (The Python SDKs are covered by
tests/test_sdks.py.)"""

from __future__ import annotations

import shutil

import pytest

from ..conftest import HOST_TOKEN
from .harness import SUITE, Rig, check_run, require_package, script_upstream


def node(package: str) -> str:
    """The node program, once ``package`` is known to be installed."""
    require_package(package)
    path = shutil.which("node")
    assert path, "node is not on PATH"
    return path


@pytest.mark.parametrize(
    ("api", "mode", "route"),
    [
        ("chat", "stream", "/chat/completions"),
        ("chat", "plain", "/chat/completions"),
        ("responses", "stream", "/responses"),
        ("responses", "plain", "/responses"),
    ],
)
def test_openai_node(rig: Rig, api: str, mode: str, route: str) -> None:
    prompt = f"Node OpenAI SDK, {api} API, {mode}: say hello."
    script_upstream(rig.fake)
    # The SDK reads OPENAI_BASE_URL and OPENAI_API_KEY, as configure() sets them.
    env = rig.install(rig.configure("openai-node"))
    script = SUITE / "openai_sdk.mjs"
    result = rig.run([node("openai"), script, api, mode, prompt], env, timeout=60)
    started = check_run(
        rig, result, prompt=prompt, client="openai-node", provider="openai", session_header=None
    )
    assert started.route == route
    assert started.streaming is (mode == "stream")
    incoming = rig.capture.for_interception(started.interception_id)
    assert incoming.headers["authorization"] == f"Bearer {HOST_TOKEN}"


@pytest.mark.parametrize("mode", ["stream", "plain"])
def test_anthropic_node(rig: Rig, mode: str) -> None:
    prompt = f"Node Anthropic SDK, {mode}: say hello."
    script_upstream(rig.fake)
    # The SDK reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY, as configure() sets them.
    env = rig.install(rig.configure("anthropic-node"))
    script = SUITE / "anthropic_sdk.mjs"
    result = rig.run([node("@anthropic-ai/sdk"), script, mode, prompt], env, timeout=60)
    started = check_run(
        rig,
        result,
        prompt=prompt,
        client="anthropic-node",
        provider="anthropic",
        session_header=None,
    )
    assert started.route == "/v1/messages"
    assert started.streaming is (mode == "stream")
    # The 1.x SDK sends its apiKey as a bearer token, not as X-Api-Key.
    incoming = rig.capture.for_interception(started.interception_id)
    assert incoming.headers["authorization"] == f"Bearer {HOST_TOKEN}"
