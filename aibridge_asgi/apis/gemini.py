"""Gemini API (``models/{model}:generateContent`` and
``:streamGenerateContent``), blocking, as SSE (``alt=sse``) and as a streamed
JSON array (without ``alt``).

Every form carries the same ``GenerateContentResponse`` objects, so one
observer reads them all: a whole body, each SSE event's data, or each array
element.

- Model: from the path (the body has none).
- Prompt: the text parts of the last turn of ``contents`` when it is a
  ``user`` turn; ``None`` when it is another role's (``model``, the older
  ``function``) or carries ``functionResponse`` parts (a tool result, not
  something a person typed). Thought parts are left out, and so are parts
  that are only a ``<session_context>`` block (Gemini CLI's environment
  notes, sent before what the person typed).
- Usage: ``usageMetadata``; each streamed chunk's figures are cumulative, so
  the last one seen wins. A streamed chunk of text only (no function call,
  thought, error, block reason or finish reason, once the response id is
  known and no thinking is open) is not parsed as it comes: the newest
  such chunk is read for its usage when the next other chunk arrives or
  the stream ends (a malformed chunk followed by a readable one goes
  unnoticed). A read of such chunks (whole CRLF events, as Google sends
  them) is not even split: only its chunks holding a mark are shown to the
  observer, and the runs between them are kept as bytes, split (from the
  newest) only when their usage is needed, or once they hold more than
  256 KiB (so a long answer of text holds no more than that; a malformed
  chunk among them is then noted even if a readable one follows later).
  Mapped onto :class:`TokenUsage` as:
  ``input_tokens`` = ``promptTokenCount`` - ``cachedContentTokenCount`` +
  ``toolUsePromptTokenCount`` (prompt tokens include the cached ones; tool-use
  prompt tokens are billed as input but not counted in the prompt);
  ``cache_read_input_tokens`` = ``cachedContentTokenCount``;
  ``output_tokens`` = ``candidatesTokenCount`` + ``thoughtsTokenCount``
  (thinking is billed as output, and OpenAI's output counts include
  reasoning likewise); ``extra`` keeps ``reasoning_tokens`` (the thoughts)
  and ``tool_use_prompt_tokens``.
- Tools: every ``functionCall`` part of every candidate (parallel calls
  arrive as several parts), recorded as it arrives; the ``functionResponse``
  parts of the request's last turn are the tool results sent back (an
  ``id`` where the client gives one; ``is_error`` when the response is only
  ``{"error": ...}``, Gemini's convention for a failed call).
- Thoughts: the text of parts marked ``thought: true``, joined per candidate
  and recorded as one :class:`ModelThought` (source ``thinking``) when the
  first part that is not a thought arrives, or the candidate finishes.
- Errors: an ``error`` object in a 200 answer or in the stream, a
  ``promptFeedback.blockReason`` (the prompt was refused), and a final
  ``finishReason`` that is a refusal (``SAFETY``, ``RECITATION``...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..records import TokenUsage
from ..routing import GENERATE_CONTENT, STREAM_GENERATE_CONTENT
from ..sse import Span, SSEEvent, blocks_holding, whole_crlf_events, whole_event
from .base import ApiInterception, ReturnedResult

__all__ = ["GenerateContentInterception", "StreamGenerateContentInterception"]

#: Text parts that open with one of these are client boilerplate, not typed.
_BOILERPLATE = ("<session_context>", "<system-reminder>")

#: A streamed chunk holding none of these (as JSON keys) changes nothing but
#: the running usage once the response id is known and no thought is open.
_READ_MARKS = ('"functionCall"', '"thought"', '"error"', '"promptFeedback"', '"finishReason"')
_READ_MARKS_BYTES = tuple(mark.encode() for mark in _READ_MARKS)
_THOUGHT = _READ_MARKS_BYTES[1]
_CRLF = b"\r\n"
_BLANK = b"\r\n\r\n"
#: Chunks left unread are read for their usage once they hold this much.
UNREAD_CAP = 256 * 1024

#: finishReason values that mean the model refused or was stopped by a filter.
REFUSALS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


class GenerateContentInterception(ApiInterception):
    """Observer for one ``generateContent`` call (a whole JSON body)."""

    route = GENERATE_CONTENT

    def __init__(
        self,
        interception_id: str,
        body: Mapping[str, Any],
        tool_result_content: int | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(interception_id, body, tool_result_content, model)
        self._thoughts: dict[int, list[str]] = {}
        self._finished_reason: str | None = None
        self._blocked = False
        #: Streamed chunks put by unread (see :meth:`on_event`), oldest first:
        #: a chunk's data, or (:meth:`needed_in`) a run of whole CRLF events.
        self._unread: list[str | bytes] = []
        self._unread_size = 0  # their length, bytes or characters
        #: The runs of text of the last read given to :meth:`needed_in`, not
        #: yet in ``_unread``: the one before each chunk still to be shown,
        #: then the one after the last (each possibly empty).
        self._ahead: list[bytes] = []

    def extract_prompt(self, body: Mapping[str, Any]) -> str | None:
        contents = body.get("contents")
        if isinstance(contents, dict):  # a single Content is accepted too
            contents = [contents]
        if not isinstance(contents, list):
            return None
        for content in reversed(contents):
            if not isinstance(content, dict):
                continue
            if content.get("role", "user") != "user":
                return None  # a model turn or a tool result ends the search
            parts = content.get("parts")
            if not isinstance(parts, list):
                return None
            texts: list[str] = []
            for part in parts:
                if not isinstance(part, dict):
                    continue
                if "functionResponse" in part:
                    return None
                text = part.get("text")
                if (
                    isinstance(text, str)
                    and part.get("thought") is not True
                    and not text.lstrip().startswith(_BOILERPLATE)
                ):
                    texts.append(text)
            return "\n".join(texts) if texts else None
        return None

    def extract_tool_results(self, body: Mapping[str, Any]) -> list[ReturnedResult]:
        # The functionResponse parts of the last turn, when it is the user's.
        contents = body.get("contents")
        last = contents[-1] if isinstance(contents, list) and contents else None
        if not isinstance(last, dict) or last.get("role", "user") not in ("user", "function"):
            return []
        parts = last.get("parts")
        found: list[ReturnedResult] = []
        for part in parts if isinstance(parts, list) else ():
            answer = part.get("functionResponse") if isinstance(part, dict) else None
            if isinstance(answer, dict):
                response = answer.get("response")
                failed = isinstance(response, dict) and "error" in response and len(response) == 1
                found.append((answer.get("id"), failed, response))
        return found

    # -- the response objects, whatever their framing -------------------------

    def _chunk(self, raw: str | bytes) -> None:
        try:
            chunk = json.loads(raw)
        except (ValueError, RecursionError):
            self.error = self.error or "malformed chunk from upstream"
            return
        if isinstance(chunk, list):  # a whole streamed array read at once
            for item in chunk:
                if isinstance(item, dict):
                    self._response(item)
        elif isinstance(chunk, dict):
            self._response(chunk)

    def _response(self, chunk: Mapping[str, Any]) -> None:
        error = chunk.get("error")
        if isinstance(error, dict):
            self.upstream_error(error.get("status") or error.get("code"), error.get("message"))
            return
        self.set_response_id(chunk.get("responseId"))
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._blocked = True
            message = feedback.get("blockReasonMessage")
            self.error = f"prompt blocked by the upstream: {feedback['blockReason']}" + (
                f": {message}" if isinstance(message, str) and message else ""
            )
        candidates = chunk.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if isinstance(candidate, dict):
                self._candidate(candidate)

    def _candidate(self, candidate: Mapping[str, Any]) -> None:
        index = self.as_int(candidate.get("index"))
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            if part.get("thought") is not True and index in self._thoughts:
                self._flush_thoughts(index)  # the thinking is over: answer parts follow
            call = part.get("functionCall")
            if isinstance(call, dict):
                args = call.get("args")
                self.tool(call.get("name"), call.get("id"), {} if args is None else args)
            elif part.get("thought") is True and isinstance(part.get("text"), str):
                self._thoughts.setdefault(index, []).append(part["text"])
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self._finished_reason = reason
            self._flush_thoughts(index)
            if reason in REFUSALS:
                self.error = f"the model stopped: finishReason {reason}"

    def _flush_thoughts(self, index: int) -> None:
        pieces = self._thoughts.pop(index, None)
        if pieces:
            self.thought("".join(pieces), "thinking")

    @property
    def complete(self) -> bool:
        return self._finished_reason is not None or self._blocked

    def finish(self) -> None:
        self._take_ahead()
        self._read_unread()
        # Thoughts cut off by a disconnect still count as far as they got.
        for index in sorted(self._thoughts):
            self._flush_thoughts(index)
        super().finish()

    # -- blocking -----------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._chunk(body)
        if self.error is None and not self.complete:
            # A whole answer is complete even if it names no finishReason.
            self._finished_reason = "STOP"

    # -- streaming (a streamGenerateContent answer may reach any of these) ----

    def needed_in(self, chunk: bytes) -> list[Span] | None:
        self._take_ahead()  # the runs of the previous read come first
        if not self.response_id or self._thoughts or not whole_crlf_events(chunk):
            return None
        spans = blocks_holding(chunk, _READ_MARKS_BYTES, _CRLF)
        if spans and any(_THOUGHT in chunk[start:end] for start, end in spans):
            return None  # thinking may open: the text after it is to be read
        at = 0
        for start, end in spans:
            self._ahead.append(chunk[at:start])
            at = end
        self._ahead.append(chunk[at:] if at else chunk)
        return spans

    def _take_ahead(self) -> None:
        """Put every run of the last read with the unread chunks."""
        for run in self._ahead:
            if run:
                self._put_unread(run)
        self._ahead.clear()

    def _put_unread(self, item: str | bytes) -> None:
        self._unread.append(item)
        self._unread_size += len(item)
        if self._unread_size > UNREAD_CAP:
            self._read_unread()  # a long answer of text holds no more than that

    def on_event(self, event: SSEEvent) -> bool:
        ahead = self._ahead
        if len(ahead) > 1:  # a chunk needed_in asked to show: the run before it
            run = ahead.pop(0)
            if run:
                self._put_unread(run)
        elif ahead:  # the next read's, split by the scanner: after all of them
            self._take_ahead()
        data = event.data
        if data is None or not data.strip():
            return True
        if self.response_id and not self._thoughts and not any(m in data for m in _READ_MARKS):
            # Text only (once the id is known and no thinking is pending):
            # all such a chunk can change is the running usage, which the
            # next one replaces. Kept unread until something needs it.
            self._put_unread(data)
            return True
        self._read_unread()
        self._chunk(data)
        return True

    def _read_unread(self) -> None:
        """Take the usage of the chunks put by unread: the newest usage
        object among them (what reading them all in turn would leave).
        Older chunks are never parsed, so a malformed one goes unnoticed
        when a well-formed one with usage came after it."""
        unread, self._unread = self._unread, []
        self._unread_size = 0
        for data in _newest_first(unread):
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError):
                self.error = self.error or "malformed chunk from upstream"
                continue
            items = parsed if isinstance(parsed, list) else [parsed]
            for item in reversed(items):
                usage = item.get("usageMetadata") if isinstance(item, dict) else None
                if isinstance(usage, dict):
                    self._usage = usage
                    return

    def on_element(self, element: bytes) -> None:
        self._chunk(element)

    def token_usage(self, usage: Mapping[str, Any]) -> TokenUsage:
        n = self.as_int
        cached = n(usage.get("cachedContentTokenCount"))
        thoughts = n(usage.get("thoughtsTokenCount"))
        tool_prompt = n(usage.get("toolUsePromptTokenCount"))
        extra: dict[str, int] = {}
        if "thoughtsTokenCount" in usage:
            extra["reasoning_tokens"] = thoughts
        if "toolUsePromptTokenCount" in usage:
            extra["tool_use_prompt_tokens"] = tool_prompt
        return TokenUsage(
            self.interception_id,
            self.response_id,
            input_tokens=max(n(usage.get("promptTokenCount")) - cached, 0) + tool_prompt,
            output_tokens=n(usage.get("candidatesTokenCount")) + thoughts,
            cache_read_input_tokens=cached,
            cache_write_input_tokens=0,
            extra=extra,
        )


def _newest_first(unread: list[str | bytes]) -> Iterator[str]:
    """The data of the unread chunks, newest first; a run of whole CRLF
    events is split from its end, only as far as it is read."""
    for item in reversed(unread):
        if isinstance(item, str):
            yield item
            continue
        end = len(item)
        while end:
            start = item.rfind(_BLANK, 0, end - len(_BLANK)) + len(_BLANK)
            start = 0 if start < len(_BLANK) else start
            data = whole_event(item[start:end], _CRLF).data
            if data is not None and data.strip():
                yield data
            end = start


class StreamGenerateContentInterception(GenerateContentInterception):
    """Observer for one ``streamGenerateContent`` call: SSE with ``alt=sse``,
    else a JSON array relayed as it streams."""

    route = STREAM_GENERATE_CONTENT
    streams_json_array = True
