"""Which AI client sent a request, and its session id where it sends one.

One table of rules, checked in order; the first match names the client.
Each rule looks at the User-Agent prefix, at a header or, for clients that
send neither (Cline's CLI speaks through a generic AI SDK), at how the system
prompt begins; and it says where that client keeps its session id (a header,
or Claude Code's ``metadata.user_id``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RULES", "ClientRule", "detect_client"]


@dataclass(frozen=True, slots=True)
class ClientRule:
    """How one client is recognised on the wire."""

    name: str
    user_agent_prefixes: tuple[str, ...] = ()
    #: (header, value prefix) pairs; an empty prefix means "header present".
    header_markers: tuple[tuple[str, str], ...] = ()
    session_headers: tuple[str, ...] = ()
    session_in_metadata_user_id: bool = False
    #: How the request's system prompt begins (case-sensitive), for clients
    #: whose headers say nothing about them.
    system_prompt_prefixes: tuple[str, ...] = ()


RULES: Sequence[ClientRule] = (
    ClientRule(
        "Claude Code",
        user_agent_prefixes=("claude-cli/", "claude-code/"),
        header_markers=(("x-claude-code-session-id", ""),),
        session_headers=("x-claude-code-session-id",),
        session_in_metadata_user_id=True,
    ),
    ClientRule(
        "Codex",
        user_agent_prefixes=("codex_exec/", "codex_cli_rs/", "codex_", "codex/"),
        header_markers=(("originator", "codex"),),
        session_headers=("session-id", "session_id"),
    ),
    ClientRule(
        "Kilo Code",
        user_agent_prefixes=("kilo-code/", "kilocode/", "kilo/"),
        header_markers=(("originator", "kilo-code"), ("x-kilocode-taskid", "")),
        # The Kilo CLI (7.x) sends its session as X-Session-Id.
        session_headers=("x-kilocode-taskid", "x-session-id"),
    ),
    ClientRule(
        "Roo Code",
        user_agent_prefixes=("roo-code/", "roocode/"),
        header_markers=(("originator", "roo-code"),),
    ),
    ClientRule(
        "OpenCode",
        user_agent_prefixes=("opencode/",),
        header_markers=(("originator", "opencode"),),
        session_headers=("x-session-id",),
    ),
    # The Cline CLI (3.x) sends the AI SDK's User-Agent and no header of its own.
    ClientRule(
        "Cline",
        user_agent_prefixes=("cline/", "cline-cli/"),
        system_prompt_prefixes=("You are Cline,",),
    ),
    ClientRule("Zed", user_agent_prefixes=("zed/",)),
    ClientRule(
        "VS Code Copilot",
        user_agent_prefixes=("githubcopilotchat/",),
        session_headers=("x-interaction-id",),
    ),
    ClientRule(
        "Goose",
        user_agent_prefixes=("goose/",),
        header_markers=(("goose-session-id", ""),),
        session_headers=("goose-session-id",),
    ),
    ClientRule("Cursor", header_markers=(("x-cursor-client-version", ""),)),
    # Factory's Droid CLI (BYOK custom models); it sends no session id.
    ClientRule("Factory", user_agent_prefixes=("factory-cli/",)),
    # The SDKs' async clients send "AsyncOpenAI/Python ...", "AsyncAnthropic/Python ...".
    ClientRule("openai-python", user_agent_prefixes=("openai/python", "asyncopenai/python")),
    ClientRule(
        "anthropic-python", user_agent_prefixes=("anthropic/python", "asyncanthropic/python")
    ),
    ClientRule("openai-node", user_agent_prefixes=("openai/js",)),
    ClientRule("anthropic-node", user_agent_prefixes=("anthropic/js",)),
)


def _session_from_user_id(body: Mapping[str, Any] | None) -> str | None:
    if not body:
        return None
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str):
        return None
    if user_id.startswith("{"):
        try:
            parsed = json.loads(user_id)
        except ValueError:
            return None
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return session if isinstance(session, str) and session else None
    # Older Claude Code: "user_<hash>_account_<uuid>_session_<uuid>".
    _, sep, session = user_id.rpartition("_session_")
    return session if sep and session else None


def _text_start(content: Any) -> str:
    """The start of a system prompt given as a string or a list of text parts."""
    if isinstance(content, str):
        return content[:200]
    if isinstance(content, list) and content:
        first = content[0]
        if isinstance(first, dict) and isinstance(first.get("text"), str):
            return str(first["text"])[:200]
    return ""


def _system_prompt_start(body: Mapping[str, Any] | None) -> str:
    """How the system prompt begins, in any of the three bridged APIs:
    Messages ``system``, Responses ``instructions``, or a leading
    ``system``/``developer`` message (Chat Completions, Responses input)."""
    if not body:
        return ""
    for key in ("system", "instructions"):
        start = _text_start(body.get(key))
        if start:
            return start
    for key in ("messages", "input"):
        items = body.get(key)
        first = items[0] if isinstance(items, list) and items else None
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            return _text_start(first.get("content"))
    return ""


def detect_client(
    headers: Mapping[str, str], body: Mapping[str, Any] | None = None
) -> tuple[str, str | None]:
    """Return ``(client name, session id or None)``.

    ``headers`` maps lower-case header names to values; ``body`` is the parsed
    request body when there is one. Unrecognised clients are ``"unknown"``.
    """
    user_agent = headers.get("user-agent", "").lower()
    system_start: str | None = None
    for rule in RULES:
        matched = any(user_agent.startswith(p) for p in rule.user_agent_prefixes) or any(
            name in headers and headers[name].lower().startswith(prefix)
            for name, prefix in rule.header_markers
        )
        if not matched and rule.system_prompt_prefixes:
            if system_start is None:
                system_start = _system_prompt_start(body)
            matched = system_start.startswith(rule.system_prompt_prefixes)
        if not matched:
            continue
        for name in rule.session_headers:
            value = headers.get(name)
            if value:
                return rule.name, value
        if rule.session_in_metadata_user_id:
            return rule.name, _session_from_user_id(body)
        return rule.name, None
    return "unknown", None
