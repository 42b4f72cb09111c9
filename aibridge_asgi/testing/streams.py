"""Realistic upstream answers for the bridged APIs, streamed and not.

Each builder returns what the provider would send: a JSON-ready dict for a
blocking answer, or a list of SSE event byte strings for a streamed one (one
list item per event, so tests can re-split them at will). Token counts are
given once, in the bridge's convention (:class:`Usage`), and mapped to each
provider's own fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ToolCall",
    "Usage",
    "anthropic_events",
    "anthropic_message",
    "chat_completion",
    "chat_events",
    "gemini_chunks",
    "gemini_error",
    "gemini_events",
    "gemini_json_array",
    "gemini_response",
    "response_events",
    "response_object",
    "sse",
]


@dataclass(frozen=True)
class Usage:
    """Token counts; ``input_tokens`` excludes cached input."""

    input_tokens: int = 12
    output_tokens: int = 7
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model makes. ``arguments`` is a dict, or a raw
    string sent as is (to test arguments that are not valid JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = "call_1"

    @property
    def arguments_json(self) -> str:
        """The arguments as the provider would send them."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def sse(event: str | None, data: Any) -> bytes:
    """One SSE event: ``event:`` line (if any), ``data:`` line, blank line."""
    payload = data if isinstance(data, str) else _dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _pieces(text: str, n: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- Anthropic Messages --------------------------------------------------------


def _anthropic_usage(usage: Usage, output: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output,
        "service_tier": "standard",
    }


def anthropic_message(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "claude-sonnet-4-5",
    message_id: str = "msg_fake_01",
    tool_calls: Sequence[ToolCall] = (),
    thinking: str | None = None,
    usage: Usage = Usage(),
) -> dict[str, Any]:
    """A blocking Messages answer."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig_fake"})
    if text:
        content.append({"type": "text", "text": text})
    for call in tool_calls:
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(usage, usage.output_tokens),
    }


def anthropic_events(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "claude-sonnet-4-5",
    message_id: str = "msg_fake_01",
    tool_calls: Sequence[ToolCall] = (),
    thinking: str | None = None,
    usage: Usage = Usage(),
    pieces: int = 3,
) -> list[bytes]:
    """A streamed Messages answer, ``message_start`` to ``message_stop``."""
    start = anthropic_message("", model=model, message_id=message_id, usage=usage)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = _anthropic_usage(usage, 1)
    events = [sse("message_start", {"type": "message_start", "message": start})]
    events.append(sse("ping", {"type": "ping"}))
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if thinking is not None:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(thinking, pieces)]
        deltas.append({"type": "signature_delta", "signature": "sig_fake"})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if text:
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(text, pieces)]
        blocks.append(({"type": "text", "text": ""}, deltas))
    for call in tool_calls:
        deltas = [
            {"type": "input_json_delta", "partial_json": p}
            for p in _pieces(call.arguments_json, pieces)
        ]
        blocks.append(({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, deltas))
    for index, (block, deltas) in enumerate(blocks):
        start_event = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(sse("content_block_start", start_event))
        for delta in deltas:
            delta_event = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(sse("content_block_delta", delta_event))
        events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = _anthropic_usage(usage, usage.output_tokens)
    events.append(
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tool_calls else "end_turn",
                    "stop_sequence": None,
                },
                "usage": final_usage,
            },
        )
    )
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


# -- OpenAI Chat Completions ---------------------------------------------------


def _chat_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens + usage.cache_read,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.cache_read + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gpt-5",
    completion_id: str = "chatcmpl-fake01",
    tool_calls: Sequence[ToolCall] = (),
    usage: Usage = Usage(),
) -> dict[str, Any]:
    """A blocking Chat Completions answer."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": _chat_usage(usage),
        "system_fingerprint": "fp_fake",
    }


def chat_events(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gpt-5",
    completion_id: str = "chatcmpl-fake01",
    tool_calls: Sequence[ToolCall] = (),
    usage: Usage = Usage(),
    include_usage: bool = True,
    pieces: int = 3,
) -> list[bytes]:
    """A streamed Chat Completions answer ending in ``data: [DONE]``.

    With ``include_usage`` every chunk carries ``"usage": null`` and a final
    chunk with ``choices: []`` carries the usage, as OpenAI does.
    """

    def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 1_760_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage_value
        return sse(None, body)

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    for piece in _pieces(text, pieces):
        events.append(chunk(choice({"content": piece})))
    for n, call in enumerate(tool_calls):
        first = {
            "index": n,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(chunk(choice({"tool_calls": [first]})))
        for piece in _pieces(call.arguments_json, pieces):
            events.append(
                chunk(choice({"tool_calls": [{"index": n, "function": {"arguments": piece}}]}))
            )
    events.append(chunk(choice({}, "tool_calls" if tool_calls else "stop")))
    if include_usage:
        events.append(chunk([], _chat_usage(usage)))
    events.append(b"data: [DONE]\n\n")
    return events


# -- OpenAI Responses ----------------------------------------------------------


def _responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens + usage.cache_read,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input_tokens + usage.cache_read + usage.output_tokens,
    }


def _output_items(
    text: str, tool_calls: Sequence[ToolCall], reasoning: str | None, commentary: str | None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reasoning is not None:
        items.append(
            {
                "id": "rs_fake_01",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": reasoning}],
            }
        )
    if commentary is not None:
        items.append(
            {
                "id": "msg_fake_commentary",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": commentary, "annotations": []}],
            }
        )
    if text:
        items.append(
            {
                "id": "msg_fake_01",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for n, call in enumerate(tool_calls):
        items.append(
            {
                "id": f"fc_fake_{n}",
                "type": "function_call",
                "status": "completed",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments_json,
            }
        )
    return items


def response_object(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gpt-5",
    response_id: str = "resp_fake01",
    tool_calls: Sequence[ToolCall] = (),
    reasoning: str | None = None,
    commentary: str | None = None,
    usage: Usage = Usage(),
    status: str = "completed",
) -> dict[str, Any]:
    """A blocking Responses answer (also the payload of the terminal event)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1_760_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": _output_items(text, tool_calls, reasoning, commentary),
        "parallel_tool_calls": True,
        "store": False,
        "usage": _responses_usage(usage) if status != "in_progress" else None,
    }


def response_events(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gpt-5",
    response_id: str = "resp_fake01",
    tool_calls: Sequence[ToolCall] = (),
    reasoning: str | None = None,
    commentary: str | None = None,
    usage: Usage = Usage(),
    pieces: int = 3,
    terminal: str = "response.completed",
) -> list[bytes]:
    """A streamed Responses answer, ``response.created`` to the terminal event."""
    seq = 0
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        nonlocal seq
        events.append(sse(kind, {"type": kind, "sequence_number": seq, **fields}))
        seq += 1

    pending = response_object("", model=model, response_id=response_id, status="in_progress")
    pending["output"] = []
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    items = _output_items(text, tool_calls, reasoning, commentary)
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "reasoning":
            emit("response.output_item.added", output_index=index, item={**item, "summary": []})
            summary = item["summary"][0]
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            emit("response.reasoning_summary_part.added", **where, part={**summary, "text": ""})
            for piece in _pieces(summary["text"], pieces):
                emit("response.reasoning_summary_text.delta", **where, delta=piece)
            emit("response.reasoning_summary_text.done", **where, text=summary["text"])
            emit("response.reasoning_summary_part.done", **where, part=summary)
        elif kind == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "content": [], "status": "in_progress"},
            )
            part = item["content"][0]
            part_text = part["text"]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            emit("response.content_part.added", **where, part={**part, "text": ""})
            for piece in _pieces(part_text, pieces):
                emit(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                )
            emit("response.output_text.done", **where, text=part_text)
            emit("response.content_part.done", **where, part=part)
        else:
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in _pieces(item["arguments"], pieces):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        emit("response.output_item.done", output_index=index, item=item)
    status = {
        "response.completed": "completed",
        "response.failed": "failed",
        "response.incomplete": "incomplete",
    }[terminal]
    final = response_object(
        text,
        model=model,
        response_id=response_id,
        tool_calls=tool_calls,
        reasoning=reasoning,
        commentary=commentary,
        usage=usage,
        status=status,
    )
    if status == "failed":
        final["error"] = {"code": "server_error", "message": "The model failed to finish."}
    emit(terminal, response=final)
    return events


# -- Gemini API ----------------------------------------------------------------


def _gemini_usage(usage: Usage) -> dict[str, Any]:
    # Gemini counts cached tokens inside promptTokenCount and thoughts apart
    # from candidatesTokenCount; Usage.output_tokens holds both (as billed).
    prompt = usage.input_tokens + usage.cache_read
    candidates = usage.output_tokens - usage.reasoning
    out: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + usage.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if usage.cache_read:
        out["cachedContentTokenCount"] = usage.cache_read
    if usage.reasoning:
        out["thoughtsTokenCount"] = usage.reasoning
    return out


def _gemini_chunk(
    parts: list[dict[str, Any]],
    *,
    model: str,
    response_id: str,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        chunk["usageMetadata"] = usage
    chunk["modelVersion"] = model
    chunk["responseId"] = response_id
    return chunk


def _gemini_call_part(call: ToolCall) -> dict[str, Any]:
    args = call.arguments if isinstance(call.arguments, dict) else {"input": call.arguments}
    return {"functionCall": {"name": call.name, "args": args}, "thoughtSignature": "c2lnX2Zha2U="}


def gemini_response(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gemini-2.5-pro",
    response_id: str = "resp_gemini_fake01",
    tool_calls: Sequence[ToolCall] = (),
    thinking: str | None = None,
    usage: Usage = Usage(),
    finish: str = "STOP",
) -> dict[str, Any]:
    """A blocking ``generateContent`` answer. Tool calls carry no ``id``
    (the Gemini API sends none); ``arguments`` that are a string go as
    ``{"input": ...}`` (Gemini's arguments are always an object)."""
    parts: list[dict[str, Any]] = []
    if thinking is not None:
        parts.append({"text": thinking, "thought": True})
    if text:
        parts.append({"text": text})
    parts.extend(_gemini_call_part(c) for c in tool_calls)
    return _gemini_chunk(
        parts, model=model, response_id=response_id, finish=finish, usage=_gemini_usage(usage)
    )


def gemini_chunks(
    text: str = "Hello from the fake upstream.",
    *,
    model: str = "gemini-2.5-pro",
    response_id: str = "resp_gemini_fake01",
    tool_calls: Sequence[ToolCall] = (),
    thinking: str | None = None,
    usage: Usage = Usage(),
    pieces: int = 3,
    finish: str = "STOP",
) -> list[dict[str, Any]]:
    """The ``GenerateContentResponse`` objects of a streamed answer: thought
    pieces, text pieces, then the tool calls (all in one chunk, as parallel
    calls arrive), the last chunk with ``finishReason``. Every chunk carries
    ``usageMetadata`` so far (cumulative; the last one is the total)."""
    bodies: list[list[dict[str, Any]]] = []
    if thinking is not None:
        bodies += [[{"text": p, "thought": True}] for p in _pieces(thinking, pieces)]
    bodies += [[{"text": p}] for p in _pieces(text, pieces)]
    if tool_calls:
        bodies.append([_gemini_call_part(c) for c in tool_calls])
    if not bodies:
        bodies.append([{"text": ""}])
    chunks: list[dict[str, Any]] = []
    for n, parts in enumerate(bodies):
        last = n == len(bodies) - 1
        so_far = Usage(
            input_tokens=usage.input_tokens,
            cache_read=usage.cache_read,
            reasoning=usage.reasoning,
            output_tokens=usage.output_tokens if last else usage.reasoning + n + 1,
        )
        chunks.append(
            _gemini_chunk(
                parts,
                model=model,
                response_id=response_id,
                finish=finish if last else None,
                usage=_gemini_usage(so_far),
            )
        )
    return chunks


def gemini_events(text: str = "Hello from the fake upstream.", **options: Any) -> list[bytes]:
    """A ``streamGenerateContent?alt=sse`` answer: one ``data:`` event per
    chunk of :func:`gemini_chunks`, CRLF line ends as Google sends them."""
    return [f"data: {_dumps(c)}\r\n\r\n".encode() for c in gemini_chunks(text, **options)]


def gemini_json_array(text: str = "Hello from the fake upstream.", **options: Any) -> list[bytes]:
    """A ``streamGenerateContent`` answer without ``alt=sse``: one JSON array
    sent in pieces as Google frames it (``[{...}``, ``,\\r\\n{...}``, ``]``),
    the elements pretty-printed, one list item per piece."""
    chunks = gemini_chunks(text, **options)
    out: list[bytes] = []
    for n, chunk in enumerate(chunks):
        head = "[" if n == 0 else ",\r\n"
        out.append((head + json.dumps(chunk, indent=2) + "\n").encode())
    out.append(b"]" if chunks else b"[]")
    return out


def gemini_error(status: int, message: str, code_name: str) -> dict[str, Any]:
    """A Gemini API error body: ``{"error": {"code", "message", "status"}}``."""
    return {"error": {"code": status, "message": message, "status": code_name}}
