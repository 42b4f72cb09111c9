"""pi (`pi -p`, npm `@mariozechner/pi-coding-agent`) through the bridge's
Messages, Chat Completions and Responses routes, with a tool-call turn."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from aibridge_asgi.client_table import Api
from aibridge_asgi.testing.streams import ToolCall

from .harness import (
    REPLY,
    Rig,
    capture,
    check_run,
    client_program,
    program_argv,
    script_upstream,
    tool_usages,
)

PROMPT = "Give me a one-line greeting for the bridge check."
VERSION = "0.73.1"


def pi(rig: Rig, api: Api, protocol: str, prompt: str) -> tuple[list[str], dict[str, str]]:
    """`pi -p` with the ``~/.pi/agent/models.json`` and environment that
    ``configure("pi")`` gives for that API and protocol."""
    config = rig.configure("pi", api=api, protocol=protocol)
    assert config.file_path == "~/.pi/agent/models.json"
    provider = json.loads(config.file_content or "")["providers"]["aibridge"]
    base_url = rig.anthropic_url if api == "anthropic" else rig.openai_url
    assert (provider["baseUrl"], provider["apiKey"]) == (base_url, "AIBRIDGE_TOKEN")
    assert config.env_vars["PI_OFFLINE"] == "1"
    argv = program_argv(config.run, client_program("pi"), prompt=prompt)
    return argv, rig.install(config)


@pytest.mark.parametrize(
    ("api", "protocol", "route", "session_header"),
    [
        ("anthropic", "messages", "/v1/messages", None),
        ("openai", "chat", "/chat/completions", None),
        ("openai", "responses", "/responses", "session_id"),
    ],
    ids=["messages", "chat", "responses"],
)
def test_pi_print(
    rig: Rig, api: Api, protocol: str, route: str, session_header: str | None
) -> None:
    script_upstream(rig.fake)
    result = rig.run(*pi(rig, api, protocol, PROMPT))
    capture(rig, f"pi-{protocol}", client="pi", version=VERSION)
    started = check_run(
        rig, result, prompt=PROMPT, client="pi", provider=api, session_header=session_header
    )
    assert started.route == route
    if protocol == "responses":
        # Its Responses body names the same session as prompt_cache_key.
        body = rig.capture.for_interception(started.interception_id).json()
        assert body["prompt_cache_key"] == started.client_session_id


def test_pi_runs_its_read_tool(rig: Rig) -> None:
    secret = f"bridge-notes-{uuid.uuid4().hex[:12]}"
    notes = rig.work / "notes.txt"
    notes.write_text(f"The launch code is {secret}.\n")
    call = ToolCall("read", {"path": "notes.txt"}, id="toolu_bridge_read_01")

    def plan(path: str, body: Mapping[str, Any]) -> Sequence[ToolCall]:
        sent = json.dumps(body.get("messages", []))
        return [] if call.id in sent else [call]

    script_upstream(rig.fake, plan=plan)
    prompt = "Read notes.txt and tell me what it says."
    result = rig.run(*pi(rig, "anthropic", "messages", prompt))
    check_run(rig, result, prompt=prompt, client="pi", provider="anthropic", session_header=None)
    turns = [r.json() for r in rig.bridged_requests()]
    assert len(turns) == 2, f"expected a second turn after the tool call, got {len(turns)}"
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
    assert [(u.tool, u.tool_call_id, u.args) for u in usages] == [
        ("read", call.id, {"path": "notes.txt"})
    ]
    assert REPLY in result.stdout
