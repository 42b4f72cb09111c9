"""Anthropic Messages (``POST /v1/messages``), streamed and not.

Usage: ``message_start`` gives the first counts, each ``message_delta``
replaces the fields it carries (they are cumulative: the last value wins).
Tools: every ``tool_use`` block, arguments joined from ``input_json_delta``
fragments. Thoughts: every ``thinking`` block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..records import TokenUsage
from ..routing import MESSAGES
from ..sse import Span, SSEEvent, outside_runs
from .base import JSON_STRING, ApiInterception, ReturnedResult, parse_args, text_of_parts

__all__ = ["MessagesInterception"]

# content_block_delta events we need to parse; text deltas are skipped
# without decoding JSON (the substring test can only err towards parsing).
_NEEDED_DELTAS = ('"input_json_delta"', '"thinking_delta"')
_NEEDED_DELTA_BYTES = tuple(n.encode() for n in _NEEDED_DELTAS)

# Runs of events on_event passes over without effect (see sse.outside_runs).
# Pings, whatever their data, always. In a read where no needed delta's name
# occurs, every content_block_delta with one data line: on_event skips it
# unparsed.
_PING_EVENT = rb"event: ping\n(?:data: .*+\n)++\n"
_PASSED_RUN = re.compile(rb"(?:" + _PING_EVENT + rb"|event: content_block_delta\ndata: .*+\n\n)*+")
# Where a needed delta's name occurs, only text deltas of the exact shape
# Anthropic sends (compact JSON, the text one valid JSON string): on_event
# either skips one or, when its text spells a needed delta's name, parses it
# and finds a text delta, which it ignores.
_PASSED_RUN_STRICT = re.compile(
    rb"(?:" + _PING_EVENT + rb"|event: content_block_delta\n"
    rb'data: \{"type":"content_block_delta","index":\d++,'
    rb'"delta":\{"type":"text_delta","text":' + JSON_STRING + rb"\}\}\n\n"
    rb")*+"
)


class MessagesInterception(ApiInterception):
    """Observer for one Anthropic Messages call."""

    route = MESSAGES

    def __init__(
        self,
        interception_id: str,
        body: Mapping[str, Any],
        tool_result_content: int | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(interception_id, body, tool_result_content, model)
        self._blocks: dict[int, dict[str, Any]] = {}
        self._stopped = False

    def extract_prompt(self, body: Mapping[str, Any]) -> str | None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        for message in reversed(messages):
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "tool_result" for p in content
            ):
                return None
            return text_of_parts(content, ("text",))
        return None

    def extract_tool_results(self, body: Mapping[str, Any]) -> list[ReturnedResult]:
        # The last message, when it is the user's, answers the model's last turn.
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return []
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            return []
        content = last.get("content")
        return [
            (part.get("tool_use_id"), part.get("is_error") is True, part.get("content"))
            for part in (content if isinstance(content, list) else ())
            if isinstance(part, dict) and part.get("type") == "tool_result"
        ]

    # -- streaming ----------------------------------------------------------

    def needed_in(self, chunk: bytes) -> list[Span] | None:
        tool, thinking = _NEEDED_DELTA_BYTES
        strict = tool in chunk or thinking in chunk
        return outside_runs(chunk, _PASSED_RUN_STRICT if strict else _PASSED_RUN)

    def on_event(self, event: SSEEvent) -> bool:
        data = event.data
        if data is None:
            return True
        name = event.event
        if name == "ping":
            return True
        if name == "content_block_delta" and not any(n in data for n in _NEEDED_DELTAS):
            return True
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            self.error = self.error or f"malformed {name or 'data'} event from upstream"
            return True
        if not isinstance(payload, dict):
            return True
        kind = payload.get("type", name)
        if kind == "message_start":
            message = payload.get("message") or {}
            self.set_response_id(message.get("id"))
            self._merge_usage(message.get("usage"))
        elif kind == "content_block_start":
            self._start_block(payload.get("index"), payload.get("content_block"))
        elif kind == "content_block_delta":
            self._delta(payload.get("index"), payload.get("delta"))
        elif kind == "content_block_stop":
            self._stop_block(payload.get("index"))
        elif kind == "message_delta":
            self._merge_usage(payload.get("usage"))
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            self.upstream_error(error.get("type"), error.get("message"))
        return True

    def _merge_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if self._usage is None:
            self._usage = {}
        for key, value in usage.items():
            if value is not None:
                self._usage[key] = value

    def _start_block(self, index: Any, block: Any) -> None:
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "tool_use":
            initial = block.get("input")
            self._blocks[index] = {
                "type": "tool_use",
                "name": block.get("name"),
                "id": block.get("id"),
                "initial": initial if initial not in (None, {}) else None,
                "json": [],
            }
        elif kind == "thinking":
            self._blocks[index] = {"type": "thinking", "text": [block.get("thinking") or ""]}

    def _delta(self, index: Any, delta: Any) -> None:
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "input_json_delta" and block["type"] == "tool_use":
            fragment = delta.get("partial_json")
            if isinstance(fragment, str):
                block["json"].append(fragment)
        elif kind == "thinking_delta" and block["type"] == "thinking":
            text = delta.get("thinking")
            if isinstance(text, str):
                block["text"].append(text)

    def _stop_block(self, index: Any) -> None:
        block = self._blocks.pop(index, None) if isinstance(index, int) else None
        if block is not None:
            self._emit_block(block)

    def _emit_block(self, block: dict[str, Any]) -> None:
        if block["type"] == "tool_use":
            joined = "".join(block["json"])
            args = parse_args(joined) if joined or block["initial"] is None else block["initial"]
            self.tool(block["name"], block["id"], args)
        else:
            self.thought("".join(block["text"]), "thinking")

    @property
    def complete(self) -> bool:
        return self._stopped

    def finish(self) -> None:
        # Blocks cut off by a disconnect still count as far as they got.
        for index in sorted(self._blocks):
            self._emit_block(self._blocks[index])
        self._blocks.clear()
        super().finish()

    # -- blocking -----------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            self.error = "malformed JSON body from upstream"
            return
        if not isinstance(message, dict):
            return
        self.set_response_id(message.get("id"))
        self._merge_usage(message.get("usage"))
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                self.tool(block.get("name"), block.get("id"), block.get("input", {}))
            elif block.get("type") == "thinking":
                thinking = block.get("thinking")
                self.thought(thinking if isinstance(thinking, str) else "", "thinking")
        self._stopped = True

    def token_usage(self, usage: Mapping[str, Any]) -> TokenUsage:
        n = self.as_int
        extra: dict[str, int] = {}
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            for key in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
                if key in creation:
                    extra[key] = n(creation[key])
        server = usage.get("server_tool_use")
        if isinstance(server, dict):
            for key in ("web_search_requests", "web_fetch_requests"):
                if key in server:
                    extra[key] = n(server[key])
        return TokenUsage(
            self.interception_id,
            self.response_id,
            input_tokens=n(usage.get("input_tokens")),
            output_tokens=n(usage.get("output_tokens")),
            cache_read_input_tokens=n(usage.get("cache_read_input_tokens")),
            cache_write_input_tokens=n(usage.get("cache_creation_input_tokens")),
            extra=extra,
        )
