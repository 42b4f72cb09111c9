"""Gemini CLI (`gemini -p`) through the bridge's Gemini API route."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aibridge_asgi import PromptUsage, ToolResult
from aibridge_asgi.client_table import GEMINI_MODEL
from aibridge_asgi.testing.streams import ToolCall

from ..conftest import HOST_TOKEN
from .harness import REPLY, Rig, capture, check_run, client_program, script_upstream, tool_usages

PROMPT = "Give me a one-line greeting for the bridge check."
STREAM_PATH = f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent"


def gemini_env(rig: Rig) -> dict[str, str]:
    """The environment and settings file ``configure("gemini-cli")`` gives,
    plus the suite's isolation switches."""
    config = rig.configure("gemini-cli")
    assert config.env_vars["GOOGLE_GEMINI_BASE_URL"] == rig.gemini_url
    return rig.install(config, {"GEMINI_CLI_TRUST_WORKSPACE": "true"})


def turns(rig: Rig) -> list[dict[str, Any]]:
    """Bodies of the agent's turns (the streamed calls that offer tools)."""
    return [r.json() for r in rig.fake.requests if r.path == STREAM_PATH]


def test_gemini_cli_prompt(rig: Rig) -> None:
    script_upstream(rig.fake)
    result = rig.run([client_program("gemini"), "-p", PROMPT], gemini_env(rig))
    capture(rig, "gemini-cli-gemini", client="Gemini CLI", version="0.61.0")
    started = check_run(
        rig, result, prompt=PROMPT, client="Gemini CLI", provider="google", session_header=None
    )
    assert started.model == GEMINI_MODEL
    assert started.route == ":streamGenerateContent" and started.streaming
    incoming = rig.capture.for_interception(started.interception_id)
    assert incoming.headers.get("x-goog-api-key") == HOST_TOKEN
    assert incoming.path.endswith(STREAM_PATH)
    upstream = rig.fake.last(STREAM_PATH)
    assert upstream.query == "alt=sse"
    # x-goog-api-client reaches the upstream as sent.
    assert upstream.header("x-goog-api-client") == incoming.headers.get("x-goog-api-client")
    # The prompt record is what the person typed, not the CLI's session context.
    prompts = rig.running.recorder.of_type(PromptUsage)
    assert [p.prompt for p in prompts] == [PROMPT]


def _has_function_response(body: Mapping[str, Any]) -> bool:
    return any(
        isinstance(part, dict) and "functionResponse" in part
        for content in body.get("contents", [])
        for part in content.get("parts", [])
    )


def _offered(body: Mapping[str, Any]) -> set[str]:
    return {
        d.get("name")
        for tool in body.get("tools", [])
        for d in tool.get("functionDeclarations", [])
    }


def test_gemini_cli_runs_its_read_file_tool(rig: Rig) -> None:
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    notes = rig.work / "notes.txt"
    notes.write_text(f"The launch code is {secret}.\n")
    call = ToolCall("read_file", {"file_path": str(notes)})

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        if "read_file" in _offered(body) and not _has_function_response(body):
            return [call]
        return []

    script_upstream(rig.fake, plan=plan)
    prompt = "Read notes.txt and tell me what it says."
    result = rig.run([client_program("gemini"), "-p", prompt], gemini_env(rig))
    check_run(
        rig, result, prompt=prompt, client="Gemini CLI", provider="google", session_header=None
    )
    bodies = turns(rig)
    assert len(bodies) >= 2, f"expected a second turn after the tool call, got {len(bodies)}"
    # The second turn carries the tool result: the file's content, read by Gemini CLI.
    responses = [
        part["functionResponse"]
        for content in bodies[-1]["contents"]
        for part in content.get("parts", [])
        if "functionResponse" in part
    ]
    assert [r["name"] for r in responses] == ["read_file"]
    assert secret in json.dumps(responses[0]["response"])
    # The bridge recorded that tool result with the id Gemini CLI gave it.
    results = rig.running.recorder.of_type(ToolResult)
    assert [(r.tool_call_id, r.is_error) for r in results] == [(responses[0].get("id", ""), False)]
    usages = tool_usages(rig)
    assert [(u.tool, u.args, u.injected) for u in usages] == [
        ("read_file", {"file_path": str(notes)}, False)
    ]
    assert REPLY in result.stdout
