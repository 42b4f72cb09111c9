"""Client detection on the requests the real clients sent.

The fixtures in ``tests/clients/captured/`` are written by the real-client
suite itself (``AIBRIDGE_CAPTURE_FIXTURES=1 pytest tests/clients``): each
holds the bridged requests one client run made, headers as sent (the host
token and port masked) and the body fields detection reads (the system
prompt cut to its opening, ``metadata``, ``prompt_cache_key``...). Here they
go through :func:`detect_client` as the bridge calls it, with no client
program needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibridge_asgi import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    TokenUsage,
    ToolUsage,
)
from aibridge_asgi.client_table import CLIENTS
from aibridge_asgi.clients import detect_client
from aibridge_asgi.testing import FakeResponse, FakeUpstream
from aibridge_asgi.testing.streams import ToolCall, Usage, anthropic_events, response_events

from .conftest import HOST_TOKEN, Running

CAPTURED = Path(__file__).resolve().parent / "clients" / "captured"

#: Where each capture's session id is: a header, a body field, or nowhere.
Session = tuple[str, str] | None
HEADER, BODY = "header", "body"

EXPECTED: dict[str, tuple[str, Session]] = {
    "claude-code-messages": ("Claude Code", (HEADER, "x-claude-code-session-id")),
    "codex-responses": ("Codex", (HEADER, "session-id")),
    "opencode-anthropic": ("OpenCode", (HEADER, "x-session-id")),
    "opencode-openai": ("OpenCode", (HEADER, "x-session-id")),
    "kilo-code-openai": ("Kilo Code", (HEADER, "x-session-id")),
    "kilo-code-anthropic": ("Kilo Code", (HEADER, "x-session-id")),
    "cline-chat": ("Cline", None),
    "factory-anthropic": ("Factory", None),
    "factory-openai": ("Factory", (BODY, "prompt_cache_key")),
    "pi-messages": ("pi", None),
    "pi-chat": ("pi", None),
    "pi-responses": ("pi", (HEADER, "session_id")),
    "qwen-code-chat": ("Qwen Code", None),
    "qwen-code-responses": ("Qwen Code", (BODY, "prompt_cache_key")),
    # On Anthropic Qwen Code sends `claude-cli/` and `x-app: cli`.
    "qwen-code-messages": ("Qwen Code", None),
    "continue-responses": ("Continue", None),
    "continue-messages": ("Continue", None),
    "copilot-cli-chat": ("Copilot CLI", None),
    "copilot-cli-responses": ("Copilot CLI", (BODY, "prompt_cache_key")),
    "copilot-cli-messages": ("Copilot CLI", None),
    "grok-cli-chat": ("Grok CLI", None),
    "nanocoder-openai": ("Nanocoder", None),
    "nanocoder-anthropic": ("Nanocoder", None),
    "aider-openai": ("Aider", None),
    "aider-anthropic": ("Aider", None),
    "shell-gpt-chat": ("ShellGPT", None),
    "gptme-openai": ("gptme", None),
    "gptme-anthropic": ("gptme", None),
    "gemini-cli-gemini": ("Gemini CLI", None),
    "mistral-vibe-chat": ("Mistral Vibe", (HEADER, "x-affinity")),
    "mistral-vibe-responses": ("Mistral Vibe", (HEADER, "x-affinity")),
    "mistral-vibe-messages": ("Mistral Vibe", (HEADER, "x-affinity")),
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CAPTURED / f"{name}.json").read_text(encoding="utf-8"))
    return data


def test_every_capture_has_an_expectation() -> None:
    assert {p.stem for p in CAPTURED.glob("*.json")} == set(EXPECTED)


def test_every_verified_client_was_captured_at_its_pinned_version() -> None:
    captured = {(load(name)["client"], load(name)["version"]) for name in EXPECTED}
    for client in CLIENTS:
        sdk = client.wire is not None and client.wire.generic
        if any(s.verified_by for s in client.setups) and not sdk:
            assert (client.recorded, client.version) in captured, client.key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detection_on_what_the_client_sent(name: str) -> None:
    client, session = EXPECTED[name]
    capture = load(name)
    assert capture["client"] == client
    assert capture["requests"]
    for request in capture["requests"]:
        headers, body = request["headers"], request["body"]
        if session is None:
            expected = None
        elif session[0] == HEADER:
            expected = headers[session[1]]
        else:
            expected = body[session[1]]
        assert session is None or expected, f"{name}: the client sent no {session}"
        assert detect_client(headers, body) == (client, expected), (name, request["path"])


def test_sdk_user_agents_alone_do_not_name_these_clients() -> None:
    """pi, Copilot CLI and Continue send their SDKs' User-Agents: without the
    body, the records would name the SDK (or nothing), which is why the
    system prompt is read."""
    for name, sdk in (
        ("pi-chat", "openai-node"),
        ("pi-messages", "anthropic-node"),
        ("copilot-cli-chat", "openai-node"),
        ("continue-messages", "unknown"),
        ("qwen-code-messages", "Claude Code"),
    ):
        (request, *_) = load(name)["requests"]
        assert detect_client(request["headers"])[0] == sdk, name


# -- a client nobody knows -----------------------------------------------------------

UNKNOWN_UA = "brand-new-agent/0.0.1 (linux; x64)"


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_an_unknown_client_gets_complete_records_and_its_user_agent_kept(
    api: str, running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    """Nothing of the table matches, yet the records hold everything a host
    needs, and the User-Agent to add an entry for it."""
    call = ToolCall("read_file", {"path": "notes.txt"}, id="call_unknown_01")
    usage = Usage(input_tokens=40, output_tokens=7, cache_read=3)
    headers = {"Authorization": f"Bearer {HOST_TOKEN}", "User-Agent": UNKNOWN_UA}
    prompt = "What does notes.txt say?"
    tool = {"name": "read_file", "description": "Read a file."}
    if api == "anthropic":
        events = anthropic_events("", tool_calls=[call], usage=usage)
        fake.enqueue(FakeResponse.sse(events), path="/v1/messages")
        url = running.url + "/anthropic/v1/messages"
        body: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "stream": True,
            "system": "You are a brand new agent.",
            "messages": [{"role": "user", "content": prompt}],
            "tools": [{**tool, "input_schema": {"type": "object"}}],
        }
    else:
        events = response_events("", tool_calls=[call], usage=usage)
        fake.enqueue(FakeResponse.sse(events), path="/v1/responses")
        url = running.url + "/openai/v1/responses"
        body = {
            "model": "gpt-5",
            "stream": True,
            "instructions": "You are a brand new agent.",
            "input": prompt,
            "tools": [{**tool, "type": "function", "parameters": {"type": "object"}}],
        }
    response = client.post(url, headers=headers, json=body)
    assert response.status_code == 200, response.text
    interception_id = response.headers["x-aibridge-interception-id"]
    running.recorder.wait_sync(lambda r: r.ended(interception_id) is not None)
    running.flush()
    records = running.recorder.for_interception(interception_id)
    (started,) = [r for r in records if isinstance(r, InterceptionStarted)]
    assert (started.client, started.client_session_id) == ("unknown", None)
    assert started.user_agent == UNKNOWN_UA
    assert started.actor.id == "alice"
    assert [p.prompt for p in records if isinstance(p, PromptUsage)] == [prompt]
    (tokens,) = [t for t in records if isinstance(t, TokenUsage)]
    assert (tokens.input_tokens, tokens.output_tokens) == (40, 7)
    assert tokens.cache_read_input_tokens == 3
    tools = [(t.tool, t.tool_call_id, t.args) for t in records if isinstance(t, ToolUsage)]
    assert tools == [("read_file", call.id, {"path": "notes.txt"})]
    (ended,) = [e for e in records if isinstance(e, InterceptionEnded)]
    assert (ended.status, ended.http_status) == ("completed", 200)
