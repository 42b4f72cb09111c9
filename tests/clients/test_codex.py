"""Codex CLI (`codex exec`) through the bridge's Responses route."""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aibridge_asgi.testing.streams import ToolCall

from .harness import REPLY, Rig, check_run, client_program, script_upstream, tool_usages

PROMPT = "Give me a one-line greeting for the bridge check."
SESSION_HEADER = "session-id"


def codex(rig: Rig, prompt: str, user_key: str | None = None) -> tuple[list[str], dict[str, str]]:
    """`codex exec` with the ``~/.codex/config.toml`` and environment that
    ``configure("codex")`` gives (a custom Responses provider pointed at the
    bridge), plus the suite's isolation switches. With ``user_key``, the
    bring-your-own-key form."""
    expected: dict[str, Any] = {
        "name": "AI Bridge",
        "base_url": rig.openai_url,
        "env_key": "AIBRIDGE_TOKEN",
        "wire_api": "responses",
    }
    if user_key is None:
        config = rig.configure("codex")
    else:
        config = rig.configure("codex", byok=True, user_key=user_key)
        expected["env_key"] = "OPENAI_API_KEY"
        expected["env_http_headers"] = {"X-AIBridge-Token": "AIBRIDGE_TOKEN"}
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
