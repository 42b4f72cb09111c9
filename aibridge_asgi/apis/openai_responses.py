"""OpenAI Responses (``POST /responses``), streamed and not.

Usage comes from the terminal ``response.completed`` / ``response.failed`` /
``response.incomplete`` event (cached input is a subset of ``input_tokens``).
Tools: every ``function_call`` and ``custom_tool_call`` output item.
Thoughts: reasoning summaries and assistant messages in the ``commentary``
phase. Items are recorded when ``response.output_item.done`` arrives, so a
client that leaves early still leaves them behind; the terminal event only
adds items not seen before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..records import TokenUsage
from ..routing import RESPONSES
from ..sse import Span, SSEEvent, outside_runs
from .base import ApiInterception, ReturnedResult, parse_args, text_of_parts
from .openai_chat import openai_token_usage

__all__ = ["ResponsesInterception"]

_TERMINAL = ("response.completed", "response.failed", "response.incomplete")
_TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")
_TOOL_CALLS = ("function_call", "custom_tool_call")
# Events worth decoding; text deltas and the like are skipped.
_NEEDED = frozenset(
    {"response.created", "response.in_progress", "response.output_item.done", "error", *_TERMINAL}
)


# Runs of events on_event passes over unread (see sse.outside_runs): the
# deltas that make up most of a stream, by name (no needed name ends in
# ".delta"). Events of other names are shown to on_event, which reads those
# it needs.
_PASSED_RUN = re.compile(
    rb"(?:event: response\.(?:output_text|function_call_arguments|reasoning_summary_text"
    rb"|reasoning_text|custom_tool_call_input|refusal)\.delta\n(?:data: .*+\n)++\n)*+"
)


class ResponsesInterception(ApiInterception):
    """Observer for one Responses call."""

    route = RESPONSES

    def __init__(
        self,
        interception_id: str,
        body: Mapping[str, Any],
        tool_result_content: int | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(interception_id, body, tool_result_content, model)
        self._seen_items: set[str] = set()
        self._terminal: str | None = None

    def extract_prompt(self, body: Mapping[str, Any]) -> str | None:
        items = body.get("input")
        if isinstance(items, str):
            return items
        if not isinstance(items, list):
            return None
        for item in reversed(items):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            role = item.get("role")
            if kind in _TOOL_OUTPUTS:
                return None
            if role in ("system", "developer"):
                continue
            if kind not in (None, "message"):
                return None  # reasoning or a tool call: not a fresh user turn
            if role != "user":
                return None
            return text_of_parts(item.get("content"), ("input_text", "text"))
        return None

    def extract_tool_results(self, body: Mapping[str, Any]) -> list[ReturnedResult]:
        # The outputs at the end of the input, back to the calls they answer
        # (the model's last turn); anything before that was sent earlier.
        items: Any = body.get("input")
        found: list[ReturnedResult] = []
        seen_call = False
        for item in reversed(items if isinstance(items, list) else []):
            kind: Any = item.get("type") if isinstance(item, dict) else None
            if kind in _TOOL_OUTPUTS and not seen_call:
                found.append((item.get("call_id"), False, item.get("output")))
            elif kind in _TOOL_CALLS:
                seen_call = True
            else:
                break
        found.reverse()
        return found

    # -- streaming ----------------------------------------------------------

    def needed_in(self, chunk: bytes) -> list[Span] | None:
        return outside_runs(chunk, _PASSED_RUN)

    def on_event(self, event: SSEEvent) -> bool:
        data = event.data
        if data is None:
            return True
        name = event.event
        if name is not None and name not in _NEEDED:
            return True
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            self.error = self.error or f"malformed {name or 'data'} event from upstream"
            return True
        if not isinstance(payload, dict):
            return True
        kind = payload.get("type", name)
        if kind in ("response.created", "response.in_progress"):
            response = payload.get("response")
            if isinstance(response, dict):
                self.set_response_id(response.get("id"))
        elif kind == "response.output_item.done":
            self._item(payload.get("item"))
        elif kind in _TERMINAL:
            self._terminal = kind
            response = payload.get("response")
            if isinstance(response, dict):
                self._response(response)
        elif kind == "error":
            message = payload.get("message")
            code = payload.get("code")
            error = payload.get("error")
            if isinstance(error, dict):
                message = message or error.get("message")
                code = code or error.get("code") or error.get("type")
            self.upstream_error(code, message)
        return True

    def _response(self, response: Mapping[str, Any]) -> None:
        self.set_response_id(response.get("id"))
        usage = response.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        output = response.get("output")
        for item in output if isinstance(output, list) else ():
            self._item(item)
        status = response.get("status")
        if status == "failed":
            error = response.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.error = f"upstream response failed: {message or 'no reason given'}"

    def _item(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        ident = item.get("id") or item.get("call_id")
        if isinstance(ident, str):
            if ident in self._seen_items:
                return
            self._seen_items.add(ident)
        kind = item.get("type")
        if kind == "function_call":
            arguments = item.get("arguments")
            args = parse_args(arguments) if isinstance(arguments, str) else arguments
            self.tool(item.get("name"), item.get("call_id"), args)
        elif kind == "custom_tool_call":
            self.tool(item.get("name"), item.get("call_id"), item.get("input"))
        elif kind == "reasoning":
            summary = item.get("summary")
            for part in summary if isinstance(summary, list) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    self.thought(part["text"], "reasoning_summary")
        elif kind == "message" and item.get("phase") == "commentary":
            text = text_of_parts(item.get("content"), ("output_text",))
            self.thought(text or "", "commentary")

    @property
    def complete(self) -> bool:
        return self._terminal is not None

    # -- blocking -----------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        try:
            response = json.loads(body)
        except (ValueError, RecursionError):
            self.error = "malformed JSON body from upstream"
            return
        if isinstance(response, dict):
            self._terminal = "response"
            self._response(response)

    def token_usage(self, usage: Mapping[str, Any]) -> TokenUsage:
        return openai_token_usage(
            self,
            usage,
            "input_tokens",
            "output_tokens",
            "input_tokens_details",
            "output_tokens_details",
        )
