"""OpenAI Chat Completions (``POST /chat/completions``), streamed and not.

A client that streams without asking for usage gets
``stream_options.include_usage`` added upstream (the only change made to its
bytes), and the usage-only chunk that this produces is kept from it.
Usage: ``input_tokens`` = ``prompt_tokens`` - ``cached_tokens``.
Tools: every call of every choice, keyed by ``index``, arguments joined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, AnyStr

from ..records import TokenUsage
from ..routing import CHAT_COMPLETIONS
from ..sse import DATA_EVENT, Span, SSEEvent, blocks_holding, outside_runs
from .base import JSON_STRING, ApiInterception, ReturnedResult, parse_args, text_of_parts

__all__ = ["ChatCompletionsInterception", "member_spans", "with_include_usage"]

_INCLUDE_USAGE = b'"include_usage":true'
_WS = b" \t\r\n"
# What makes on_event read a chunk once the response id is known.
_READ_MARKS = ('"tool_calls"', '"error"', "[DONE]")
_USAGE = '"usage"'
_NULL_USAGE = ('"usage":null', '"usage": null')
_OBJECT_USAGE = ('"usage":{', '"usage": {')
_KNOWN_USAGE = (*_NULL_USAGE, *_OBJECT_USAGE)
_READ_NEEDLES = tuple(mark.encode() for mark in _READ_MARKS)
_OBJECT_USAGE_B = tuple(x.encode() for x in _OBJECT_USAGE)
_USAGE_B = _USAGE.encode()
# The compact null form providers send first: most reads need no other count.
_NULL_USAGE_B, *_OTHER_USAGE_B = (x.encode() for x in _KNOWN_USAGE)
# A run of text chunks of the exact shape OpenAI sends them (compact JSON,
# every string a valid JSON string, the usage null or absent): once the id
# is known on_event either skips one or, when a string spells a mark,
# parses it and finds plain text, which changes nothing. A read of such
# runs needs no search for marks (see sse.outside_runs); any other shape
# goes to the search below.
_PASSED_RUN = re.compile(
    rb'(?:data: \{"id":' + JSON_STRING + rb',"object":"chat\.completion\.chunk",'
    rb'"created":\d++,"model":' + JSON_STRING + rb","
    rb'(?:"system_fingerprint":' + JSON_STRING + rb",)?+"
    rb'"choices":\[\{"index":\d++,"delta":\{"content":' + JSON_STRING + rb"\},"
    rb'"logprobs":null,"finish_reason":null\}\](?:,"usage":null)?+\}\n\n)*+'
)


def _usage_forms(text: AnyStr, forms: Sequence[AnyStr]) -> int:
    """How many ``"usage"`` keys of ``text`` have one of the known ``forms``."""
    return sum(text.count(form) for form in forms)


def _odd_usage(text: str) -> bool:
    """Whether some ``"usage"`` key in ``text`` is neither null nor an object."""
    n = text.count(_USAGE)
    return n != 0 and n != _usage_forms(text, _KNOWN_USAGE)


def member_spans(raw: bytes) -> dict[str, tuple[int, int]]:
    """Byte spans of the values of the top-level members of a JSON object.

    ``raw`` must be valid JSON (the caller parsed it already). Later
    duplicates win, as in :func:`json.loads`.
    """
    spans: dict[str, tuple[int, int]] = {}
    depth = 0
    key: str | None = None
    want_key = False
    value_start = 0
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x22:  # a string: find its closing quote
            j = i + 1
            while True:
                j = raw.index(b'"', j)
                k = j - 1
                while raw[k] == 0x5C:
                    k -= 1
                if (j - 1 - k) % 2 == 0:
                    break
                j += 1
            if depth == 1 and want_key:
                key = json.loads(raw[i : j + 1])
                want_key = False
            i = j + 1
            continue
        if c in b"{[":
            depth += 1
            if depth == 1:
                want_key = True
        elif c in b"}]":
            if depth == 1 and key is not None:
                spans[key] = _trimmed(raw, value_start, i)
            depth -= 1
        elif depth == 1:
            if c == 0x3A:  # ":"
                value_start = i + 1
            elif c == 0x2C:  # ","
                if key is not None:
                    spans[key] = _trimmed(raw, value_start, i)
                key = None
                want_key = True
        i += 1
    return spans


def _trimmed(raw: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and raw[start] in _WS:
        start += 1
    while end > start and raw[end - 1] in _WS:
        end -= 1
    return start, end


def _after_brace(raw: bytes, start: int, end: int, member: bytes) -> bytes:
    """Insert ``member`` as the first member of the object at raw[start:end]."""
    inner = raw[start + 1 : end - 1]
    sep = b"," if inner.strip(_WS) else b""
    return raw[: start + 1] + member + sep + raw[start + 1 :]


def with_include_usage(raw: bytes, body: Mapping[str, Any]) -> bytes:
    """``raw`` with ``stream_options.include_usage`` set to true, nothing else changed."""
    options = body.get("stream_options")
    spans = member_spans(raw)
    if "stream_options" not in spans:
        start, end = _trimmed(raw, 0, len(raw))
        return _after_brace(raw, start, end, b'"stream_options":{' + _INCLUDE_USAGE + b"}")
    start, end = spans["stream_options"]
    if not isinstance(options, dict):
        return raw[:start] + b"{" + _INCLUDE_USAGE + b"}" + raw[end:]
    inner = member_spans(raw[start:end])
    if "include_usage" in inner:
        s, e = inner["include_usage"]
        return raw[: start + s] + b"true" + raw[start + e :]
    return raw[:start] + _after_brace(raw[start:end], 0, end - start, _INCLUDE_USAGE) + raw[end:]


class ChatCompletionsInterception(ApiInterception):
    """Observer for one Chat Completions call."""

    route = CHAT_COMPLETIONS

    def __init__(
        self,
        interception_id: str,
        body: Mapping[str, Any],
        tool_result_content: int | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(interception_id, body, tool_result_content, model)
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        #: True when the bridge adds include_usage and hides the usage chunk.
        self.adds_usage = body.get("stream") is True and not asked
        self._calls: dict[tuple[int, int], dict[str, Any]] = {}
        self._done = False

    def extract_prompt(self, body: Mapping[str, Any]) -> str | None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        for message in reversed(messages):
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            if role in ("system", "developer"):
                continue
            if role != "user":
                return None  # a tool result or an assistant turn ends the search
            return text_of_parts(message.get("content"), ("text",))
        return None

    def extract_tool_results(self, body: Mapping[str, Any]) -> list[ReturnedResult]:
        # The tool messages after the last assistant turn.
        messages: Any = body.get("messages")
        found: list[ReturnedResult] = []
        for message in reversed(messages if isinstance(messages, list) else []):
            if not isinstance(message, dict) or message.get("role") != "tool":
                break
            found.append((message.get("tool_call_id"), False, message.get("content")))
        found.reverse()
        return found

    def upstream_body(self, raw: bytes) -> bytes:
        return with_include_usage(raw, self.body) if self.adds_usage else raw

    # -- streaming ----------------------------------------------------------

    def needed_in(self, chunk: bytes) -> list[Span] | None:
        # Once the id is known, on_event reads the chunks whose data holds a
        # tool call, an error, [DONE] or a usage that is not null. Only data
        # matters here (names, ids and comments do not), so any read of
        # whole LF-terminated events will do: a mark found outside the data
        # only costs on_event a look. Each test is one pass over the read.
        if (
            not self.response_id
            or not chunk.endswith(b"\n\n")
            or chunk.startswith(b"\n")
            or b"\r" in chunk
        ):
            return None
        spans = outside_runs(chunk, _PASSED_RUN, DATA_EVENT)
        if spans is not None and len(spans) < 8:
            # The chunks left are few: show them, whatever they hold.
            return spans
        marks = _READ_NEEDLES
        usage = chunk.count(_USAGE_B)
        if usage:
            known = chunk.count(_NULL_USAGE_B)
            if usage != known:
                if usage != known + _usage_forms(chunk, _OTHER_USAGE_B):
                    return None  # an odd usage: on_event reads it (see _odd_usage)
                marks = _READ_NEEDLES + _OBJECT_USAGE_B
        return blocks_holding(chunk, marks)

    def on_event(self, event: SSEEvent) -> bool:
        data = event.data
        if data is None:
            return True
        if data.strip() == "[DONE]":
            self._done = True
            return True
        if (
            self.response_id
            and not any(mark in data for mark in _READ_MARKS)
            # Every chunk says "usage": null once usage is asked for.
            and not any(mark in data for mark in _OBJECT_USAGE)
            and not _odd_usage(data)
        ):
            return True
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            self.error = self.error or "malformed chunk from upstream"
            return True
        if not isinstance(chunk, dict):
            return True
        if "error" in chunk:
            error = chunk.get("error")
            if isinstance(error, dict):
                self.upstream_error(error.get("code") or error.get("type"), error.get("message"))
            else:
                self.upstream_error(None, error)
            return True
        self.set_response_id(chunk.get("id"))
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
            if self.adds_usage and choices == []:
                return False
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._add_call(choice.get("index", 0), call)
        return True

    def _add_call(self, choice_index: Any, call: Mapping[str, Any]) -> None:
        key = (self.as_int(choice_index), self.as_int(call.get("index", 0)))
        entry = self._calls.get(key)
        if entry is None:
            entry = self._calls[key] = {"id": None, "name": None, "args": [], "custom": False}
        if call.get("id"):
            entry["id"] = call["id"]
        # Function tools carry JSON "arguments"; custom tools free-form "input".
        function = call.get("function")
        custom = call.get("custom")
        if isinstance(custom, dict):
            entry["custom"] = True
            function, field = custom, "input"
        else:
            field = "arguments"
        if isinstance(function, dict):
            if function.get("name"):
                entry["name"] = function["name"]
            fragment = function.get(field)
            if isinstance(fragment, str):
                entry["args"].append(fragment)

    @property
    def complete(self) -> bool:
        return self._done

    def finish(self) -> None:
        for key in sorted(self._calls):
            entry = self._calls[key]
            joined = "".join(entry["args"])
            self.tool(entry["name"], entry["id"], joined if entry["custom"] else parse_args(joined))
        self._calls.clear()
        super().finish()

    # -- blocking -----------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        try:
            completion = json.loads(body)
        except (ValueError, RecursionError):
            self.error = "malformed JSON body from upstream"
            return
        if not isinstance(completion, dict):
            return
        self.set_response_id(completion.get("id"))
        usage = completion.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = completion.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            for call in calls if isinstance(calls, list) else ():
                if not isinstance(call, dict):
                    continue
                custom = call.get("custom")
                if isinstance(custom, dict):
                    self.tool(custom.get("name"), call.get("id"), custom.get("input"))
                    continue
                function = call.get("function")
                if isinstance(function, dict):
                    arguments = function.get("arguments")
                    self.tool(
                        function.get("name"),
                        call.get("id"),
                        parse_args(arguments) if isinstance(arguments, str) else arguments,
                    )
        self._done = True

    def token_usage(self, usage: Mapping[str, Any]) -> TokenUsage:
        return openai_token_usage(
            self,
            usage,
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )


def openai_token_usage(
    interception: ApiInterception,
    usage: Mapping[str, Any],
    input_key: str,
    output_key: str,
    input_details_key: str,
    output_details_key: str,
) -> TokenUsage:
    """Map an OpenAI usage object (cached tokens are a subset of input)."""
    n = interception.as_int
    in_details = usage.get(input_details_key)
    out_details = usage.get(output_details_key)
    in_details = in_details if isinstance(in_details, dict) else {}
    out_details = out_details if isinstance(out_details, dict) else {}
    cached = n(in_details.get("cached_tokens"))
    extra: dict[str, int] = {}
    for source, key, name in (
        (out_details, "reasoning_tokens", "reasoning_tokens"),
        (in_details, "audio_tokens", "input_audio_tokens"),
        (out_details, "audio_tokens", "output_audio_tokens"),
        (out_details, "accepted_prediction_tokens", "accepted_prediction_tokens"),
        (out_details, "rejected_prediction_tokens", "rejected_prediction_tokens"),
    ):
        if key in source:
            extra[name] = n(source[key])
    return TokenUsage(
        interception.interception_id,
        interception.response_id,
        input_tokens=max(n(usage.get(input_key)) - cached, 0),
        output_tokens=n(usage.get(output_key)),
        cache_read_input_tokens=cached,
        cache_write_input_tokens=0,
        extra=extra,
    )
