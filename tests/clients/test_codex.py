"""Codex CLI (`codex exec`) through the bridge's Responses route."""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aibridge_asgi import InterceptionEnded, InterceptionStarted, PromptUsage, TokenUsage
from aibridge_asgi.testing import OPENAI_KEY
from aibridge_asgi.testing.streams import ToolCall

from ..conftest import HOST_TOKEN
from .harness import (
    ACTOR_ID,
    REPLY,
    Rig,
    capture,
    check_run,
    client_program,
    expected_tokens,
    script_upstream,
    tool_usages,
)

PROMPT = "Give me a one-line greeting for the bridge check."
SESSION_HEADER = "session-id"


def codex(
    rig: Rig, prompt: str, user_key: str | None = None, *, websocket: bool = False
) -> tuple[list[str], dict[str, str]]:
    """`codex exec` with the ``~/.codex/config.toml`` and environment that
    ``configure("codex")`` gives (a custom Responses provider pointed at the
    bridge), plus the suite's isolation switches. With ``user_key``, the
    bring-your-own-key form; with ``websocket``, over a WebSocket."""
    expected: dict[str, Any] = {
        "name": "AI Bridge",
        "base_url": rig.openai_url,
        "env_key": "AIBRIDGE_TOKEN",
        "wire_api": "responses",
    }
    if user_key is None:
        config = rig.configure("codex", websocket=websocket)
    else:
        config = rig.configure("codex", byok=True, user_key=user_key, websocket=websocket)
        expected["env_key"] = "OPENAI_API_KEY"
        expected["env_http_headers"] = {"X-AIBridge-Token": "AIBRIDGE_TOKEN"}
    if websocket:
        expected["supports_websockets"] = True
    assert config.file_path == "~/.codex/config.toml"
    assert tomllib.loads(config.file_content or "")["model_providers"]["aibridge"] == expected
    argv = [
        client_program("codex"),
        "exec",
        "--skip-git-repo-check",
        "--color",
        "never",
        "-c",
        "features.enable_request_compression=false",
        "-c",
        "analytics.enabled=false",
        "-c",
        "check_for_update_on_startup=false",
        # Without this, Codex syncs its plugin marketplace from GitHub and chatgpt.com.
        "-c",
        "features.plugins=false",
        prompt,
    ]
    return argv, rig.install(config)


def test_codex_exec_prompt(rig: Rig) -> None:
    script_upstream(rig.fake)
    result = rig.run(*codex(rig, PROMPT))
    capture(rig, "codex-responses", client="Codex", version="0.171.0")
    started = check_run(
        rig, result, prompt=PROMPT, client="Codex", provider="openai", session_header=SESSION_HEADER
    )
    assert started.route == "/responses" and started.streaming
    # The body is plain JSON (request compression is off for custom providers).
    incoming = rig.capture.for_interception(started.interception_id)
    assert "content-encoding" not in incoming.headers
    # Codex prints the session id it sends.
    assert f"session id: {started.client_session_id}" in result.stderr + result.stdout


USER_KEY = "sk-proj-user-own-key-for-byok"


def test_codex_byok(rig: Rig) -> None:
    """Bring your own key: the host token from `env_http_headers`, the user's
    own key from `OPENAI_API_KEY`; the upstream (the user's own account)
    sees that key, the records name the actor."""
    rig.fake.openai_key = USER_KEY
    script_upstream(rig.fake)
    result = rig.run(*codex(rig, PROMPT, user_key=USER_KEY))
    check_run(
        rig,
        result,
        prompt=PROMPT,
        client="Codex",
        provider="openai",
        session_header=SESSION_HEADER,
        byok_key=USER_KEY,
    )
    for request in rig.bridged_requests():
        assert request.header("authorization") == f"Bearer {USER_KEY}"


def _shell_call(tools: list[dict[str, Any]], command: str) -> ToolCall | None:
    """A call to whichever shell tool Codex offers, in that tool's argument shape."""
    names = {t.get("name") for t in tools if t.get("type") == "function"}
    if "exec_command" in names:
        return ToolCall("exec_command", {"cmd": command}, id="call_bridge_shell_01")
    if "shell_command" in names:
        return ToolCall("shell_command", {"command": command}, id="call_bridge_shell_01")
    if "shell" in names:
        return ToolCall("shell", {"command": ["bash", "-lc", command]}, id="call_bridge_shell_01")
    return None


def _outputs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = body.get("input")
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


def test_codex_runs_its_shell_tool(rig: Rig) -> None:
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    (rig.work / "notes.txt").write_text(f"The launch code is {secret}.\n")
    made: list[ToolCall] = []

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        if _outputs(body):
            return []
        call = _shell_call(body.get("tools", []), "cat notes.txt")
        assert call is not None, f"no shell tool offered: {[t.get('name') for t in body['tools']]}"
        made.append(call)
        return [call]

    script_upstream(rig.fake, plan=plan)
    prompt = "Show me what notes.txt says."
    result = rig.run(*codex(rig, prompt))
    check_run(
        rig, result, prompt=prompt, client="Codex", provider="openai", session_header=SESSION_HEADER
    )
    assert len(made) == 1
    call = made[0]
    turns = [r.json() for r in rig.bridged_requests()]
    assert len(turns) == 2
    # The second request carries the command's output, run by Codex itself.
    outputs = _outputs(turns[1])
    assert [o["call_id"] for o in outputs] == [call.id]
    assert secret in json.dumps(outputs[0]["output"])
    usages = tool_usages(rig)
    assert [(u.tool, u.tool_call_id, u.args, u.injected) for u in usages] == [
        (call.name, call.id, call.arguments, False)
    ]
    assert REPLY in result.stdout


def test_codex_over_websocket_prompt_and_tool_call(rig: Rig) -> None:
    """With ``supports_websockets = true`` Codex runs a prompt and a tool-call
    turn over one WebSocket through the bridge; the upstream sees a
    WebSocket and no HTTP call, and every turn has its records."""
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    (rig.work / "notes.txt").write_text(f"The launch code is {secret}.\n")
    made: list[ToolCall] = []

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        if _outputs(body):
            return []
        call = _shell_call(body.get("tools", []), "cat notes.txt")
        assert call is not None, f"no shell tool offered: {[t.get('name') for t in body['tools']]}"
        made.append(call)
        return [call]

    script_upstream(rig.fake, plan=plan)
    prompt = "Show me what notes.txt says, over the socket."
    result = rig.run(*codex(rig, prompt, websocket=True))
    assert result.returncode == 0, result.describe()
    assert REPLY in result.stdout, result.describe()
    rig.settle()

    # The upstream saw WebSockets only: no Responses call over HTTP.
    assert rig.bridged_requests() == [], [r.path for r in rig.fake.requests]
    sockets = rig.fake.websockets
    assert sockets, "no WebSocket reached the upstream"
    for sock in sockets:
        assert sock.path == "/v1/responses"
        assert sock.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert all(HOST_TOKEN not in value for _, value in sock.headers)
        assert all(HOST_TOKEN not in str(m) for m in sock.messages)
    creates = [c for sock in sockets for c in sock.creates()]
    turns = [c for c in creates if c.get("generate") is not False]
    assert len(turns) == 2, [c.get("generate") for c in creates]
    assert [o["call_id"] for o in _outputs(turns[1])] == [made[0].id]
    assert secret in json.dumps(_outputs(turns[1])[0]["output"])

    # One interception per turn (warm-ups are not), each with its records.
    records = rig.running.recorder
    starts = records.of_type(InterceptionStarted)
    assert len(starts) == 2
    for start in starts:
        assert (start.actor.id, start.client, start.route) == (ACTOR_ID, "Codex", "/responses")
        assert start.streaming
        assert start.client_session_id == sockets[0].header(SESSION_HEADER)
        end = records.ended(start.interception_id)
        assert end is not None and (end.status, end.http_status) == ("completed", 200), end
        usage = [
            u for u in records.of_type(TokenUsage) if u.interception_id == start.interception_id
        ]
        assert [
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_write_input_tokens)
            for u in usage
        ] == [expected_tokens("openai")]
    assert len(records.of_type(InterceptionEnded)) == 2
    prompts = [p for p in records.of_type(PromptUsage) if prompt in p.prompt]
    assert [p.interception_id for p in prompts] == [starts[0].interception_id]
    usages = tool_usages(rig)
    call = made[0]
    assert [(u.tool, u.tool_call_id, u.args, u.interception_id) for u in usages] == [
        (call.name, call.id, call.arguments, starts[0].interception_id)
    ]
    assert rig.outside() == []
