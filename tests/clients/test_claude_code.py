"""Claude Code (`claude -p`) through the bridge's Anthropic route."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from aibridge_asgi.testing.streams import ToolCall

from ..conftest import HOST_TOKEN
from .harness import REPLY, Rig, capture, check_run, client_program, script_upstream, tool_usages

PROMPT = "Give me a one-line greeting for the bridge check."
SESSION_HEADER = "x-claude-code-session-id"


def claude_env(rig: Rig, credential_variable: str) -> dict[str, str]:
    """The environment ``configure("claude-code")`` gives, plus the suite's
    isolation switches; with the token moved to ``ANTHROPIC_API_KEY`` for
    the variant the entry's notes name."""
    config = rig.configure("claude-code")
    assert config.env_vars["ANTHROPIC_BASE_URL"] == rig.anthropic_url
    env = rig.install(
        config,
        {
            "CLAUDE_CONFIG_DIR": str(rig.home / ".claude"),
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        },
    )
    if credential_variable != "ANTHROPIC_AUTH_TOKEN":
        env[credential_variable] = env.pop("ANTHROPIC_AUTH_TOKEN")
    return env


def prompt_calls(rig: Rig) -> list[dict[str, Any]]:
    """Bodies of the Messages calls that carry tools (the agent's turns, as
    opposed to side calls such as title generation)."""
    return [
        r.json() for r in rig.fake.requests if r.path == "/v1/messages" and r.json().get("tools")
    ]


@pytest.mark.parametrize("credential_variable", ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"])
def test_claude_code_prompt(rig: Rig, credential_variable: str) -> None:
    script_upstream(rig.fake)
    result = rig.run([client_program("claude"), "-p", PROMPT], claude_env(rig, credential_variable))
    if credential_variable == "ANTHROPIC_AUTH_TOKEN":
        capture(rig, "claude-code-messages", client="Claude Code", version="2.1.332")
    started = check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Claude Code",
        provider="anthropic",
        session_header=SESSION_HEADER,
    )
    # The host token went where the variable puts it.
    incoming = rig.capture.for_interception(started.interception_id)
    if credential_variable == "ANTHROPIC_AUTH_TOKEN":
        assert incoming.headers.get("authorization") == f"Bearer {HOST_TOKEN}"
    else:
        assert incoming.headers.get("x-api-key") == HOST_TOKEN
    # The session id is also in the body's metadata; both name the same session.
    body = next(b for b in prompt_calls(rig) if PROMPT in json.dumps(b["messages"]))
    assert json.loads(body["metadata"]["user_id"])["session_id"] == started.client_session_id
    # anthropic-beta and anthropic-version reach the upstream as sent.
    upstream = rig.bridged_requests()[-1]
    assert upstream.header("anthropic-beta") == incoming.headers.get("anthropic-beta")
    assert upstream.header("anthropic-version") == incoming.headers.get("anthropic-version")


def _has_tool_result(body: Mapping[str, Any]) -> bool:
    for message in body.get("messages", []):
        content = message.get("content")
        if (
            message.get("role") == "user"
            and isinstance(content, list)
            and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)
        ):
            return True
    return False


def test_claude_code_runs_its_read_tool(rig: Rig) -> None:
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    notes = rig.work / "notes.txt"
    notes.write_text(f"The launch code is {secret}.\n")
    call = ToolCall("Read", {"file_path": str(notes)}, id="toolu_bridge_read_01")

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        offered = {t.get("name") for t in body.get("tools", [])}
        if "Read" in offered and not _has_tool_result(body):
            return [call]
        return []

    script_upstream(rig.fake, plan=plan)
    prompt = "Read notes.txt and tell me what it says."
    result = rig.run(
        [client_program("claude"), "-p", prompt], claude_env(rig, "ANTHROPIC_AUTH_TOKEN")
    )
    check_run(
        rig,
        result,
        prompt=prompt,
        client="Claude Code",
        provider="anthropic",
        session_header=SESSION_HEADER,
    )
    turns = prompt_calls(rig)
    assert len(turns) >= 2, f"expected a second turn after the tool call, got {len(turns)}"
    # The second turn carries the tool result: the file's content, read by Claude Code.
    results = [
        part
        for message in turns[-1]["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "tool_result"
    ]
    assert [r["tool_use_id"] for r in results] == [call.id]
    assert secret in json.dumps(results[0]["content"])
    usages = tool_usages(rig)
    assert [(u.tool, u.tool_call_id, u.args, u.injected) for u in usages] == [
        ("Read", call.id, {"file_path": str(notes)}, False)
    ]
    assert REPLY in result.stdout


USER_KEY = "sk-ant-api03-user-own-key-for-byok"


def test_claude_code_byok(rig: Rig) -> None:
    """Bring your own key: the host token in `ANTHROPIC_CUSTOM_HEADERS`, the
    user's own key as `ANTHROPIC_API_KEY`; the upstream (here the user's own
    account) sees that key, the records name the actor."""
    rig.fake.anthropic_key = USER_KEY
    script_upstream(rig.fake)
    config = rig.configure("claude-code", byok=True, user_key=USER_KEY)
    assert config.env_vars["ANTHROPIC_CUSTOM_HEADERS"] == f"X-AIBridge-Token: {HOST_TOKEN}"
    assert config.env_vars["ANTHROPIC_API_KEY"] == USER_KEY
    env = rig.install(
        config,
        {
            "CLAUDE_CONFIG_DIR": str(rig.home / ".claude"),
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        },
    )
    result = rig.run([client_program("claude"), "-p", PROMPT], env)
    check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Claude Code",
        provider="anthropic",
        session_header=SESSION_HEADER,
        byok_key=USER_KEY,
    )
    for request in rig.bridged_requests():
        assert request.header("x-api-key") == USER_KEY
