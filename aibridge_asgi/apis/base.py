"""What every bridged API shares: the per-request interception object.

An :class:`ApiInterception` is sans-IO. The bridge gives it the parsed
request, then each SSE event or the whole JSON body of the response, and
collects the records it produces. It never sees a socket.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..records import ModelThought, PromptUsage, Record, TokenUsage, ToolResult, ToolUsage
from ..sse import Span, SSEEvent

__all__ = [
    "JSON_STRING",
    "ApiInterception",
    "ReturnedResult",
    "clean_text",
    "parse_args",
    "text_of_parts",
]

#: A JSON string, quotes included, exactly as RFC 8259 allows it (no raw
#: control character, only the defined escapes), as a bytes pattern: inside
#: it every quote is escaped, so no ``"name"`` marker can begin or end there.
JSON_STRING = rb'"[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+"'

#: A tool result found in a request: (tool call id, is_error, content).
ReturnedResult = tuple[Any, bool, Any]

_SYSTEM_REMINDER = "<system-reminder>"
_OVERLOAD_WORDS = (
    "overloaded",
    "rate_limit",
    "server_error",
    "capacity",
    "unavailable",
    "resource_exhausted",
)


def parse_args(raw: str) -> Any:
    """Tool arguments as JSON, or the raw string when it is not valid JSON."""
    if raw == "":
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw


def text_of_parts(content: Any, text_types: tuple[str, ...]) -> str | None:
    """Join the text parts of a message's content (a string or a part list).

    Parts that are only a ``<system-reminder>`` block (Claude Code adds them
    to every turn) are left out so that prompt logs show what the person
    typed.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in text_types:
            text = part.get("text")
            if isinstance(text, str) and not text.lstrip().startswith(_SYSTEM_REMINDER):
                texts.append(text)
    return "\n".join(texts) if texts else None


def clean_text(value: Any) -> Any:
    """``value`` with lone UTF-16 surrogates (which JSON can spell as
    ``"\\ud800"``) replaced by U+FFFD, in strings, lists and dicts: every
    text a record carries must encode as UTF-8, or a recorder could fail on it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    return value


def tool_result(
    interception_id: str, call_id: Any, is_error: bool, content: Any, keep: int | None
) -> ToolResult:
    """A :class:`ToolResult` record; ``content`` is kept (up to ``keep``
    characters) only when ``keep`` is not None."""
    if isinstance(content, str):
        text = content
    elif content is None:
        text = ""
    else:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)
    text = clean_text(text)
    kept: str | None = None
    truncated = False
    if keep is not None:
        kept = text[: max(keep, 0)]
        truncated = len(kept) < len(text)
    return ToolResult(
        interception_id,
        clean_text(call_id) if isinstance(call_id, str) else "",
        is_error,
        len(text.encode("utf-8")),
        kept,
        truncated,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ApiInterception:
    """Per-request observer of one bridged API. Subclasses fill in the hooks.

    Records are appended to an internal list as soon as they are known;
    the bridge drains it with :meth:`drain` after each piece of input so
    that a client that leaves early still leaves its records behind.
    """

    #: The route name recorded in ``InterceptionStarted.route``.
    route = ""

    def __init__(
        self,
        interception_id: str,
        body: Mapping[str, Any],
        tool_result_content: int | None = None,
        model: str | None = None,
    ) -> None:
        self.interception_id = interception_id
        self.body = body
        if model is None:
            model = body.get("model")
        #: The model the client asked for (as recorded in InterceptionStarted):
        #: the body's ``model``, or the path's where the API puts it there (Gemini).
        self.model: str = clean_text(model) if isinstance(model, str) else ""
        self.response_id = ""
        #: Set when the upstream reported an error inside a 200 response,
        #: or when the response could not be understood.
        self.error: str | None = None
        #: Set when that error says the upstream is overloaded or rate limited
        #: (it then counts against the circuit breaker).
        self.overloaded = False
        self._records: list[Record] = []
        self._prompt = clean_text(self.extract_prompt(body))
        self._prompt_recorded = self._prompt is None
        self._usage: dict[str, Any] | None = None
        self._finished = False
        for call_id, is_error, content in self.extract_tool_results(body):
            self._records.append(
                tool_result(interception_id, call_id, is_error, content, tool_result_content)
            )

    # -- request side -------------------------------------------------------

    def extract_prompt(self, body: Mapping[str, Any]) -> str | None:
        """The text of the last user message, or ``None``."""
        raise NotImplementedError

    def extract_tool_results(self, body: Mapping[str, Any]) -> list[ReturnedResult]:
        """The tool results the client sends back in this turn (the ones
        after the model's last turn; earlier ones were recorded before)."""
        return []

    def upstream_body(self, raw: bytes) -> bytes:
        """The request body to send upstream (by default the client's bytes)."""
        return raw

    # -- response side ------------------------------------------------------

    def on_event(self, event: SSEEvent) -> bool:
        """Observe one SSE event; return False to keep it from the client."""
        raise NotImplementedError

    def needed_in(self, chunk: bytes) -> list[Span] | None:
        """The events of ``chunk`` that :meth:`on_event` must see, as spans
        in stream order; ``[]`` when it would pass over every one (no record,
        no state change, each relayed), ``None`` when it cannot tell without
        seeing them all. A relay may then show just those events and send
        ``chunk`` on without splitting it. ``chunk`` is one read of the
        stream, taken when no partial event is pending. An answer for a
        chunk holding a CR is only given when every line of it ends in CRLF
        (:func:`~aibridge_asgi.sse.whole_crlf_events`). By default ``None``.
        """
        return None

    def on_body(self, body: bytes) -> None:
        """Observe a whole non-streamed JSON response body."""
        raise NotImplementedError

    #: True for APIs that stream a JSON array (not SSE) unless told otherwise
    #: (Gemini's ``streamGenerateContent`` without ``alt=sse``).
    streams_json_array = False

    def on_element(self, element: bytes) -> None:
        """Observe one element of a streamed JSON array answer."""
        raise NotImplementedError

    @property
    def complete(self) -> bool:
        """Whether the upstream response reached its normal end."""
        raise NotImplementedError

    def finish(self) -> None:
        """The response is over (or abandoned): emit what is still owed."""
        if self._finished:
            return
        self._finished = True
        self._record_prompt()
        if self._usage is not None:
            self._records.append(self.token_usage(self._usage))

    # -- helpers for subclasses --------------------------------------------

    def set_response_id(self, response_id: Any) -> None:
        """Remember the upstream's response id; the prompt is recorded then."""
        if isinstance(response_id, str) and response_id and not self.response_id:
            self.response_id = clean_text(response_id)
            self._record_prompt()

    def _record_prompt(self) -> None:
        if not self._prompt_recorded and self._prompt is not None:
            self._prompt_recorded = True
            self._records.append(PromptUsage(self.interception_id, self.response_id, self._prompt))

    def token_usage(self, usage: Mapping[str, Any]) -> TokenUsage:
        """Map the API's usage object onto a :class:`TokenUsage`."""
        raise NotImplementedError

    def tool(self, name: Any, call_id: Any, args: Any) -> None:
        """Record one tool call."""
        self._records.append(
            ToolUsage(
                self.interception_id,
                self.response_id,
                clean_text(name) if isinstance(name, str) else "",
                clean_text(call_id) if isinstance(call_id, str) else "",
                clean_text(args),
            )
        )

    def thought(self, content: str, source: str) -> None:
        """Record one piece of model reasoning (empty text is skipped)."""
        if content:
            self._records.append(ModelThought(self.interception_id, clean_text(content), source))

    def upstream_error(self, code: Any, message: Any) -> None:
        """Note an error the upstream reported inside a 200 answer."""
        code_text = str(code) if code else "error"
        self.error = f"upstream error event: {code_text}: {message or ''}".rstrip(": ")
        if any(word in code_text.lower() for word in _OVERLOAD_WORDS):
            self.overloaded = True

    def drain(self) -> list[Record]:
        """Return and forget the records produced so far."""
        records = self._records
        self._records = []
        return records

    @staticmethod
    def as_int(value: Any) -> int:
        """An int from a usage field, 0 for anything else."""
        return _int(value)
