"""The per-API observers, sans-IO: streams and bodies in, exact records out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibridge_asgi.apis import ApiInterception, interception_for
from aibridge_asgi.apis.openai_chat import with_include_usage
from aibridge_asgi.records import ModelThought, PromptUsage, Record, TokenUsage, ToolUsage
from aibridge_asgi.routing import CHAT_COMPLETIONS, MESSAGES, RESPONSES
from aibridge_asgi.sse import SSEScanner
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    anthropic_message,
    chat_completion,
    chat_events,
    response_events,
    response_object,
    sse,
)

IID = "interception-1"
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
}
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-5",
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
}
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-5", "stream": True, "input": "hello"}
BODIES = {MESSAGES: ANTHROPIC_BODY, CHAT_COMPLETIONS: CHAT_BODY, RESPONSES: RESPONSES_BODY}

# -- helpers -------------------------------------------------------------------


def observe_stream(
    route: str, body: Mapping[str, Any], chunks: Sequence[bytes]
) -> tuple[list[Record], bytes, ApiInterception]:
    """Run ``chunks`` through a scanner and the observer, as the relay does.

    Returns the records, the bytes the client would get, and the observer.
    """
    api = interception_for(route, IID, body)
    scanner = SSEScanner()
    kept: list[bytes] = []
    records: list[Record] = []
    for chunk in chunks:
        for event in scanner.feed(chunk):
            if api.on_event(event):
                kept.append(event.raw)
        records += api.drain()
    last, rest = scanner.finish()
    kept += [event.raw for event in last if api.on_event(event)]
    kept.append(rest)
    api.finish()
    records += api.drain()
    return records, b"".join(kept), api


def observe_body(
    route: str, body: Mapping[str, Any], response: Any
) -> tuple[list[Record], ApiInterception]:
    api = interception_for(route, IID, {**body, "stream": False})
    api.on_body(response if isinstance(response, bytes) else json.dumps(response).encode())
    api.finish()
    return api.drain(), api


def grouped(records: Sequence[Record]) -> dict[str, list[dict[str, Any]]]:
    """Records by type, in order, without their timestamps."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        fields = {k: v for k, v in asdict(record).items() if k != "created_at"}
        out.setdefault(type(record).__name__, []).append(fields)
    return out


def usage(
    rid: str, i: int, o: int, cr: int = 0, cw: int = 0, extra: Mapping[str, int] | None = None
) -> TokenUsage:
    return TokenUsage(IID, rid, i, o, cr, cw, dict(extra or {}))


def prompt(rid: str, text: str = "hello") -> PromptUsage:
    return PromptUsage(IID, rid, text)


def tool(rid: str, name: str, call_id: str, args: Any) -> ToolUsage:
    return ToolUsage(IID, rid, name, call_id, args)


def thought(text: str, source: str) -> ModelThought:
    return ModelThought(IID, text, source)


def anthropic_extra(cache_write: int = 0) -> dict[str, int]:
    return {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0}


CHAT_EXTRA_ZERO = {
    "input_audio_tokens": 0,
    "output_audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}


def chat_extra(reasoning: int = 0) -> dict[str, int]:
    return {"reasoning_tokens": reasoning, **CHAT_EXTRA_ZERO}


CALLS = [
    ToolCall("read_file", {"path": "src/app.py", "lines": [1, 20]}, id="call_a"),
    ToolCall("bash", {"command": "ls -la", "unicode": "café ☕"}, id="call_b"),
    ToolCall("search", {"q": "needle"}, id="call_c"),
]
USAGE = Usage(input_tokens=100, output_tokens=50, cache_read=30, cache_write=20, reasoning=10)


# -- Anthropic Messages: usage -------------------------------------------------


def test_anthropic_stream_usage_and_id() -> None:
    records, kept, api = observe_stream(
        MESSAGES, ANTHROPIC_BODY, anthropic_events("Hi", message_id="msg_01", usage=USAGE)
    )
    assert grouped(records) == grouped(
        [prompt("msg_01"), usage("msg_01", 100, 50, 30, 20, anthropic_extra(20))]
    )
    assert api.complete and api.error is None
    assert kept == b"".join(anthropic_events("Hi", message_id="msg_01", usage=USAGE))


def _anthropic_stream(
    start_usage: Mapping[str, Any], *delta_usages: Mapping[str, Any], message_id: str = "msg_02"
) -> list[bytes]:
    start = anthropic_message("", message_id=message_id)
    start["content"] = []
    start["usage"] = dict(start_usage)
    events = [sse("message_start", {"type": "message_start", "message": start})]
    events += anthropic_events("Hi", message_id=message_id)[1:-2]  # ping and the text block
    for u in delta_usages:
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        events.append(
            sse("message_delta", {"type": "message_delta", "delta": delta, "usage": dict(u)})
        )
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


def test_anthropic_message_delta_output_is_cumulative_last_value_wins() -> None:
    start = {
        "input_tokens": 100,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 20,
        "output_tokens": 1,
    }
    events = _anthropic_stream(start, {"output_tokens": 10}, {"output_tokens": 25})
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    assert (
        grouped(records)["TokenUsage"] == grouped([usage("msg_02", 100, 25, 30, 20)])["TokenUsage"]
    )


def test_anthropic_message_delta_repeating_input_and_cache_counts_is_not_summed() -> None:
    start = {
        "input_tokens": 100,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 20,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
    }
    final = {
        **start,
        "output_tokens": 40,
        "server_tool_use": {"web_search_requests": 2},
    }
    events = _anthropic_stream(start, final)
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    extra = {**anthropic_extra(20), "web_search_requests": 2}
    assert (
        grouped(records)["TokenUsage"]
        == grouped([usage("msg_02", 100, 40, 30, 20, extra)])["TokenUsage"]
    )


def test_anthropic_message_delta_updated_counts_replace_the_start_counts() -> None:
    start = {"input_tokens": 100, "cache_read_input_tokens": 0, "output_tokens": 1}
    final = {
        "input_tokens": 180,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4},
        "output_tokens": 60,
        "server_tool_use": {"web_search_requests": 1},
    }
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, _anthropic_stream(start, final))
    extra = {
        "ephemeral_5m_input_tokens": 3,
        "ephemeral_1h_input_tokens": 4,
        "web_search_requests": 1,
    }
    assert (
        grouped(records)["TokenUsage"]
        == grouped([usage("msg_02", 180, 60, 5, 7, extra)])["TokenUsage"]
    )


def test_anthropic_blocking_usage_and_id() -> None:
    message = anthropic_message("Hi", message_id="msg_03", usage=USAGE)
    message["usage"]["server_tool_use"] = {"web_search_requests": 3}
    message["usage"]["cache_creation"] = {
        "ephemeral_5m_input_tokens": 8,
        "ephemeral_1h_input_tokens": 12,
    }
    records, api = observe_body(MESSAGES, ANTHROPIC_BODY, message)
    extra = {
        "ephemeral_5m_input_tokens": 8,
        "ephemeral_1h_input_tokens": 12,
        "web_search_requests": 3,
    }
    assert grouped(records) == grouped([prompt("msg_03"), usage("msg_03", 100, 50, 30, 20, extra)])
    assert api.complete and api.error is None


# -- Anthropic Messages: tools and thinking -------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_anthropic_stream_tool_calls(n: int) -> None:
    calls = CALLS[:n]
    events = anthropic_events("Let me look.", message_id="msg_t", tool_calls=calls, pieces=4)
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    expected = [tool("msg_t", c.name, c.id, c.arguments) for c in calls]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]
    assert len(grouped(records)["TokenUsage"]) == 1


@pytest.mark.parametrize("n", [1, 3])
def test_anthropic_blocking_tool_calls(n: int) -> None:
    calls = CALLS[:n]
    records, _ = observe_body(
        MESSAGES, ANTHROPIC_BODY, anthropic_message("", message_id="msg_t", tool_calls=calls)
    )
    expected = [tool("msg_t", c.name, c.id, c.arguments) for c in calls]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]


def test_anthropic_stream_tool_args_that_are_not_json_stay_a_raw_string() -> None:
    calls = [ToolCall("bash", '{"command": "ls', id="toolu_bad"), CALLS[0]]
    events = anthropic_events("", message_id="msg_r", tool_calls=calls)
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    expected = [
        tool("msg_r", "bash", "toolu_bad", '{"command": "ls'),
        tool("msg_r", CALLS[0].name, CALLS[0].id, CALLS[0].arguments),
    ]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]


def test_anthropic_tool_call_without_arguments_has_empty_args() -> None:
    events = anthropic_events("", message_id="msg_e", tool_calls=[ToolCall("now", id="toolu_e")])
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    assert (
        grouped(records)["ToolUsage"] == grouped([tool("msg_e", "now", "toolu_e", {})])["ToolUsage"]
    )


def test_anthropic_stream_thinking() -> None:
    events = anthropic_events(
        "Answer.", message_id="msg_th", thinking="First, think.\nThen: act.", pieces=5
    )
    records, _, _ = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    assert (
        grouped(records)["ModelThought"]
        == grouped([thought("First, think.\nThen: act.", "thinking")])["ModelThought"]
    )


def test_anthropic_blocking_thinking_and_tool() -> None:
    message = anthropic_message(
        "Answer.", message_id="msg_th", thinking="Deep thought.", tool_calls=CALLS[:1]
    )
    records, _ = observe_body(MESSAGES, ANTHROPIC_BODY, message)
    assert grouped(records) == grouped(
        [
            prompt("msg_th"),
            thought("Deep thought.", "thinking"),
            tool("msg_th", CALLS[0].name, CALLS[0].id, CALLS[0].arguments),
            usage("msg_th", 12, 7, extra=anthropic_extra()),
        ]
    )


def test_anthropic_error_event_sets_the_error_and_keeps_partial_usage() -> None:
    events = anthropic_events("Hi", message_id="msg_x", usage=USAGE)[:4]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    events.append(sse("error", error))
    records, kept, api = observe_stream(MESSAGES, ANTHROPIC_BODY, events)
    assert api.error is not None and "overloaded_error" in api.error
    assert not api.complete
    assert kept == b"".join(events)
    # message_start's counts (output 1) are all that was seen.
    assert (
        grouped(records)["TokenUsage"]
        == grouped([usage("msg_x", 100, 1, 30, 20, anthropic_extra(20))])["TokenUsage"]
    )


# -- OpenAI Chat Completions ---------------------------------------------------


def test_chat_stream_usage_and_id_when_client_asked_for_usage() -> None:
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    events = chat_events("Hi", completion_id="chatcmpl-1", usage=USAGE)
    records, kept, api = observe_stream(CHAT_COMPLETIONS, body, events)
    assert grouped(records) == grouped(
        [prompt("chatcmpl-1"), usage("chatcmpl-1", 100, 50, 30, 0, chat_extra(10))]
    )
    assert kept == b"".join(events)  # nothing removed: the client asked for usage
    assert api.complete and api.error is None


def test_chat_stream_usage_chunk_is_hidden_when_the_bridge_added_it() -> None:
    events = chat_events("Hi", completion_id="chatcmpl-1", usage=USAGE)
    usage_chunk = events[-2]
    assert b'"choices":[]' in usage_chunk
    records, kept, _ = observe_stream(CHAT_COMPLETIONS, CHAT_BODY, events)
    assert kept == b"".join(events[:-2] + events[-1:])
    assert (
        grouped(records)["TokenUsage"]
        == grouped([usage("chatcmpl-1", 100, 50, 30, 0, chat_extra(10))])["TokenUsage"]
    )


def test_chat_blocking_usage_extras() -> None:
    completion = chat_completion("Hi", completion_id="chatcmpl-2")
    completion["usage"] = {
        "prompt_tokens": 200,
        "completion_tokens": 80,
        "total_tokens": 280,
        "prompt_tokens_details": {"cached_tokens": 150, "audio_tokens": 5},
        "completion_tokens_details": {
            "reasoning_tokens": 40,
            "audio_tokens": 3,
            "accepted_prediction_tokens": 4,
            "rejected_prediction_tokens": 2,
        },
    }
    records, api = observe_body(CHAT_COMPLETIONS, CHAT_BODY, completion)
    extra = {
        "reasoning_tokens": 40,
        "input_audio_tokens": 5,
        "output_audio_tokens": 3,
        "accepted_prediction_tokens": 4,
        "rejected_prediction_tokens": 2,
    }
    assert grouped(records) == grouped(
        [prompt("chatcmpl-2"), usage("chatcmpl-2", 50, 80, 150, 0, extra)]
    )
    assert api.complete


def test_chat_usage_without_details() -> None:
    completion = chat_completion("Hi", completion_id="chatcmpl-3")
    completion["usage"] = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    records, _ = observe_body(CHAT_COMPLETIONS, CHAT_BODY, completion)
    assert grouped(records)["TokenUsage"] == grouped([usage("chatcmpl-3", 9, 4)])["TokenUsage"]


@pytest.mark.parametrize("n", [1, 3])
def test_chat_stream_tool_calls(n: int) -> None:
    calls = CALLS[:n]
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    events = chat_events("", completion_id="chatcmpl-t", tool_calls=calls, pieces=4)
    records, _, _ = observe_stream(CHAT_COMPLETIONS, body, events)
    expected = [tool("chatcmpl-t", c.name, c.id, c.arguments) for c in calls]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]
    assert len(grouped(records)["TokenUsage"]) == 1


def test_chat_stream_parallel_tool_calls_interleaved_in_chunks() -> None:
    def chunk(calls: list[dict[str, Any]]) -> bytes:
        delta = {"tool_calls": calls}
        return sse(
            None,
            {
                "id": "chatcmpl-p",
                "object": "chat.completion.chunk",
                "model": "gpt-5",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            },
        )

    def start(i: int, cid: str, name: str) -> dict[str, Any]:
        return {"index": i, "id": cid, "type": "function", "function": {"name": name}}

    def frag(i: int, text: str) -> dict[str, Any]:
        return {"index": i, "function": {"arguments": text}}

    events = [
        chunk([start(0, "call_0", "read"), start(1, "call_1", "write")]),
        chunk([frag(1, '{"path":'), frag(0, '{"path"')]),
        chunk([frag(0, ':"a"}')]),
        chunk([frag(1, '"b","text":"x"}'), start(2, "call_2", "noop")]),
        b"data: [DONE]\n\n",
    ]
    records, _, api = observe_stream(CHAT_COMPLETIONS, CHAT_BODY, events)
    expected = [
        tool("chatcmpl-p", "read", "call_0", {"path": "a"}),
        tool("chatcmpl-p", "write", "call_1", {"path": "b", "text": "x"}),
        tool("chatcmpl-p", "noop", "call_2", {}),
    ]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]
    assert api.complete


def test_chat_stream_tool_args_that_are_not_json_stay_a_raw_string() -> None:
    calls = [ToolCall("bash", "ls -la; {oops", id="call_bad")]
    events = chat_events("", completion_id="chatcmpl-r", tool_calls=calls)
    records, _, _ = observe_stream(CHAT_COMPLETIONS, CHAT_BODY, events)
    assert (
        grouped(records)["ToolUsage"]
        == grouped([tool("chatcmpl-r", "bash", "call_bad", "ls -la; {oops")])["ToolUsage"]
    )


@pytest.mark.parametrize("n", [1, 3])
def test_chat_blocking_tool_calls(n: int) -> None:
    calls = [*CALLS[: n - 1], ToolCall("bash", "not json", id="call_raw")]
    completion = chat_completion("", completion_id="chatcmpl-b", tool_calls=calls)
    records, _ = observe_body(CHAT_COMPLETIONS, CHAT_BODY, completion)
    expected = [tool("chatcmpl-b", c.name, c.id, c.arguments) for c in calls]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]


def test_chat_error_chunk_after_200() -> None:
    events = chat_events("Hi there", completion_id="chatcmpl-e")[:2]
    events.append(
        b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n'
    )
    records, kept, api = observe_stream(CHAT_COMPLETIONS, CHAT_BODY, events)
    assert api.error is not None and "The server had an error" in api.error
    assert not api.complete
    assert kept == b"".join(events)
    assert "TokenUsage" not in grouped(records)


# -- OpenAI Responses ----------------------------------------------------------


def test_responses_stream_usage_and_id() -> None:
    events = response_events("Hi", response_id="resp_1", usage=USAGE)
    records, kept, api = observe_stream(RESPONSES, RESPONSES_BODY, events)
    assert grouped(records) == grouped(
        [prompt("resp_1"), usage("resp_1", 100, 50, 30, 0, {"reasoning_tokens": 10})]
    )
    assert kept == b"".join(events)
    assert api.complete and api.error is None


def test_responses_blocking_usage_and_id() -> None:
    response = response_object("Hi", response_id="resp_2", usage=USAGE)
    records, api = observe_body(RESPONSES, RESPONSES_BODY, response)
    assert grouped(records) == grouped(
        [prompt("resp_2"), usage("resp_2", 100, 50, 30, 0, {"reasoning_tokens": 10})]
    )
    assert api.complete


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("n", [1, 3])
def test_responses_tool_calls_recorded_once_each(stream: bool, n: int) -> None:
    calls = [*CALLS[: n - 1], ToolCall("apply_patch", "*** Begin Patch\n{", id="call_raw")]
    if stream:
        events = response_events("", response_id="resp_t", tool_calls=calls, pieces=4)
        records, _, _ = observe_stream(RESPONSES, RESPONSES_BODY, events)
    else:
        response = response_object("", response_id="resp_t", tool_calls=calls)
        records, _ = observe_body(RESPONSES, RESPONSES_BODY, response)
    expected = [tool("resp_t", c.name, c.id, c.arguments) for c in calls]
    assert grouped(records)["ToolUsage"] == grouped(expected)["ToolUsage"]
    assert len(grouped(records)["TokenUsage"]) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
def test_responses_reasoning_summary_and_commentary_thoughts(stream: bool) -> None:
    options: dict[str, Any] = {
        "response_id": "resp_th",
        "reasoning": "I should read the file first.",
        "commentary": "Reading the file now.",
    }
    if stream:
        records, _, _ = observe_stream(
            RESPONSES, RESPONSES_BODY, response_events("Done.", **options)
        )
    else:
        records, _ = observe_body(RESPONSES, RESPONSES_BODY, response_object("Done.", **options))
    assert (
        grouped(records)["ModelThought"]
        == grouped(
            [
                thought("I should read the file first.", "reasoning_summary"),
                thought("Reading the file now.", "commentary"),
            ]
        )["ModelThought"]
    )


def test_responses_final_answer_message_is_not_a_thought() -> None:
    records, _, _ = observe_stream(
        RESPONSES, RESPONSES_BODY, response_events("The final answer.", response_id="resp_f")
    )
    assert "ModelThought" not in grouped(records)


@pytest.mark.parametrize("terminal", ["response.failed", "response.incomplete"])
def test_responses_other_terminal_events_still_give_usage(terminal: str) -> None:
    events = response_events("Hi", response_id="resp_x", usage=USAGE, terminal=terminal)
    records, _, api = observe_stream(RESPONSES, RESPONSES_BODY, events)
    assert api.complete
    assert (api.error is not None) == (terminal == "response.failed")
    assert (
        grouped(records)["TokenUsage"]
        == grouped([usage("resp_x", 100, 50, 30, 0, {"reasoning_tokens": 10})])["TokenUsage"]
    )


def test_responses_error_event_mid_stream() -> None:
    events = response_events("Hi there", response_id="resp_e")[:4]
    error = {
        "type": "error",
        "code": "server_error",
        "message": "Something went wrong",
        "param": None,
        "sequence_number": 4,
    }
    events.append(sse("error", error))
    records, kept, api = observe_stream(RESPONSES, RESPONSES_BODY, events)
    assert api.error is not None and "Something went wrong" in api.error
    assert not api.complete
    assert kept == b"".join(events)
    assert "TokenUsage" not in grouped(records)


def test_responses_custom_tool_call_keeps_its_free_form_input() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch"
    response = response_object("", response_id="resp_c")
    response["output"] = [
        {
            "id": "ctc_1",
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": "call_patch",
            "name": "apply_patch",
            "input": patch,
        }
    ]
    records, _ = observe_body(RESPONSES, RESPONSES_BODY, response)
    assert (
        grouped(records)["ToolUsage"]
        == grouped([tool("resp_c", "apply_patch", "call_patch", patch)])["ToolUsage"]
    )


def test_responses_items_done_before_a_cut_are_still_recorded() -> None:
    events = response_events(
        "", response_id="resp_cut", tool_calls=CALLS[:2], reasoning="plan", usage=USAGE
    )
    records, _, api = observe_stream(RESPONSES, RESPONSES_BODY, events[:-1])  # no terminal
    assert not api.complete
    got = grouped(records)
    assert (
        got["ToolUsage"]
        == grouped([tool("resp_cut", c.name, c.id, c.arguments) for c in CALLS[:2]])["ToolUsage"]
    )
    assert got["ModelThought"] == grouped([thought("plan", "reasoning_summary")])["ModelThought"]
    assert "TokenUsage" not in got


def test_anthropic_tool_block_cut_short_is_recorded_as_far_as_it_got() -> None:
    call = ToolCall("write_file", {"path": "src/app.py", "text": "x" * 30}, id="toolu_cut")
    events = anthropic_events("", message_id="msg_cut", tool_calls=[call], pieces=4)
    stop = next(n for n, e in enumerate(events) if e.startswith(b"event: content_block_stop"))
    records, _, api = observe_stream(MESSAGES, ANTHROPIC_BODY, events[: stop - 1])
    assert not api.complete
    (got,) = grouped(records)["ToolUsage"]
    assert (got["tool"], got["tool_call_id"]) == ("write_file", "toolu_cut")
    assert isinstance(got["args"], str) and call.arguments_json.startswith(got["args"])
    assert got["args"]


# -- PromptUsage ---------------------------------------------------------------

REMINDER = "<system-reminder>\nToday's date is 2025-10-01.\n</system-reminder>"


def anthropic_request(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages}


def chat_request(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "gpt-5", "messages": messages}


def responses_request(items: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "input": items}


PROMPT_CASES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "anthropic-claude-code": (
        MESSAGES,
        anthropic_request(
            [
                {"role": "user", "content": "an earlier question"},
                {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": REMINDER},
                        {"type": "text", "text": "fix the failing test"},
                    ],
                },
                {"role": "system", "content": "Environment: linux, cwd /repo"},
            ]
        ),
        "fix the failing test",
    ),
    "anthropic-string": (
        MESSAGES,
        anthropic_request([{"role": "user", "content": "what is 2+2?"}]),
        "what is 2+2?",
    ),
    "anthropic-parts-joined": (
        MESSAGES,
        anthropic_request(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "part one"},
                        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                        {"type": "text", "text": "part two"},
                    ],
                }
            ]
        ),
        "part one\npart two",
    ),
    "anthropic-tool-result": (
        MESSAGES,
        anthropic_request(
            [
                {"role": "user", "content": "list the files"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}
                    ],
                },
                {"role": "system", "content": "Environment: linux"},
            ]
        ),
        None,
    ),
    "chat-claude-code-shape": (
        CHAT_COMPLETIONS,
        chat_request(
            [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "an earlier question"},
                {"role": "assistant", "content": "an answer"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": REMINDER},
                        {"type": "text", "text": "fix the failing test"},
                    ],
                },
                {"role": "system", "content": "Environment: linux"},
            ]
        ),
        "fix the failing test",
    ),
    "chat-string": (
        CHAT_COMPLETIONS,
        chat_request([{"role": "user", "content": "what is 2+2?"}]),
        "what is 2+2?",
    ),
    "chat-parts-joined": (
        CHAT_COMPLETIONS,
        chat_request(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "part one"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                        {"type": "text", "text": "part two"},
                    ],
                }
            ]
        ),
        "part one\npart two",
    ),
    "chat-tool-result": (
        CHAT_COMPLETIONS,
        chat_request(
            [
                {"role": "user", "content": "list the files"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "ls", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "a.py"},
            ]
        ),
        None,
    ),
    "responses-claude-code-shape": (
        RESPONSES,
        responses_request(
            [
                {"role": "user", "content": "an earlier question"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "an answer"}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": REMINDER},
                        {"type": "input_text", "text": "fix the failing test"},
                    ],
                },
                {"role": "system", "content": "Environment: linux"},
            ]
        ),
        "fix the failing test",
    ),
    "responses-string": (RESPONSES, responses_request("what is 2+2?"), "what is 2+2?"),
    "responses-string-content": (
        RESPONSES,
        responses_request([{"role": "user", "content": "what is 2+2?"}]),
        "what is 2+2?",
    ),
    "responses-parts-joined": (
        RESPONSES,
        responses_request(
            [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "part one"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                        {"type": "input_text", "text": "part two"},
                    ],
                }
            ]
        ),
        "part one\npart two",
    ),
    "responses-tool-result": (
        RESPONSES,
        responses_request(
            [
                {"role": "user", "content": "list the files"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "ls",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "a.py"},
            ]
        ),
        None,
    ),
}

RESPONSE_FOR: dict[str, Callable[[], Any]] = {
    MESSAGES: lambda: anthropic_message("ok", message_id="msg_p"),
    CHAT_COMPLETIONS: lambda: chat_completion("ok", completion_id="chatcmpl-p"),
    RESPONSES: lambda: response_object("ok", response_id="resp_p"),
}
EVENTS_FOR: dict[str, Callable[[], list[bytes]]] = {
    MESSAGES: lambda: anthropic_events("ok", message_id="msg_p"),
    CHAT_COMPLETIONS: lambda: chat_events("ok", completion_id="chatcmpl-p"),
    RESPONSES: lambda: response_events("ok", response_id="resp_p"),
}
RESPONSE_IDS = {MESSAGES: "msg_p", CHAT_COMPLETIONS: "chatcmpl-p", RESPONSES: "resp_p"}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_prompt_usage_is_the_last_user_message(case: str, stream: bool) -> None:
    route, body, expected = PROMPT_CASES[case]
    if stream:
        records, _, _ = observe_stream(route, {**body, "stream": True}, EVENTS_FOR[route]())
    else:
        records, _ = observe_body(route, body, RESPONSE_FOR[route]())
    prompts = grouped(records).get("PromptUsage", [])
    if expected is None:
        assert prompts == []
    else:
        assert prompts == grouped([prompt(RESPONSE_IDS[route], expected)])["PromptUsage"]


# -- Chat: upstream_body -------------------------------------------------------


def chat_upstream(raw: bytes) -> bytes:
    api = interception_for(CHAT_COMPLETIONS, IID, json.loads(raw))
    return api.upstream_body(raw)


def is_subsequence(small: bytes, big: bytes) -> bool:
    it = iter(big)
    return all(b in it for b in small)


def with_usage(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    return {**body, "stream_options": options}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"gpt-5","stream":true,"stream_options":{},"messages":[]}',
        b'{"model":"gpt-5","stream":true,"stream_options":{ },"messages":[]}',
        b'{"model":"gpt-5","stream":true,"stream_options":{"obfuscation":false},"messages":[]}',
        b'{\n  "model": "gpt-5",\n  "stream_options": {\n    "obfuscation": false\n  },\n'
        b'  "stream": true\n}\n',
        b'  {  "stream" : true , "model" : "gpt-5"  }  ',
        b'{"stream":true,"model":"gpt-5"}',
    ],
    ids=["absent", "empty", "empty-spaced", "other-keys", "pretty", "spaced", "no-messages"],
)
def test_chat_upstream_body_only_adds_include_usage(raw: bytes) -> None:
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert is_subsequence(raw, out)
    assert len(out) > len(raw)


def test_chat_upstream_body_turns_include_usage_false_into_true() -> None:
    raw = b'{"model":"gpt-5","stream":true,"stream_options":{"include_usage" : false}}'
    out = chat_upstream(raw)
    assert out == raw.replace(b'"include_usage" : false', b'"include_usage" : true')


@pytest.mark.parametrize("value", [b"null", b"0", b'"yes"'])
def test_chat_upstream_body_include_usage_not_true_is_replaced(value: bytes) -> None:
    raw = b'{"model":"gpt-5","stream":true,"stream_options":{"include_usage":' + value + b"}}"
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert out.startswith(b'{"model":"gpt-5","stream":true,"stream_options":{"include_usage":')


@pytest.mark.parametrize("value", [b"null", b"[]", b'"x"'])
def test_chat_upstream_body_stream_options_not_an_object(value: bytes) -> None:
    raw = b'{"model":"gpt-5","stream":true,"stream_options":' + value + b',"n":1}'
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert out.startswith(b'{"model":"gpt-5","stream":true,"stream_options":')
    assert out.endswith(b',"n":1}')


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true}}',
        b'{"model":"gpt-5","stream":false,"stream_options":{"include_usage":false}}',
        b'{"model":"gpt-5","messages":[]}',
        b'{"model":"gpt-5","stream":false}',
    ],
    ids=["already-true", "not-streaming", "stream-absent", "stream-false"],
)
def test_chat_upstream_body_unchanged(raw: bytes) -> None:
    assert chat_upstream(raw) == raw


def test_chat_upstream_body_leaves_tricky_bytes_alone() -> None:
    raw = (
        '{ "model" :\t"gpt-5" ,\r\n "messages" : [ {"role":"user","content":'
        '"he said \\"stream_options\\": {\\"include_usage\\": false} \\\\"} ],'
        ' "metadata": {"stream_options": {"include_usage": false}, "k": "}{]["},'
        ' "caf\\u00e9": "caf\u00e9 \\ud83d\\ude00 \u2603", "x\\"y": "\\\\\\"",'
        ' "stream" : true , "empty": {} , "list": [1, {"a": [2]}]\n}\n'
    ).encode()
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert json.loads(out)["metadata"] == {"stream_options": {"include_usage": False}, "k": "}{]["}
    assert is_subsequence(raw, out)
    # Only a run of inserted bytes: the client's bytes stay contiguous around it.
    i = next(n for n in range(len(raw)) if raw[n] != out[n])
    tail = len(raw) - i
    assert out[len(out) - tail :] == raw[i:]


def test_chat_upstream_body_with_stream_options_in_a_nested_object_only() -> None:
    raw = b'{"model":"gpt-5","extra":{"stream_options":{}},"stream":true}'
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert json.loads(out)["extra"] == {"stream_options": {}}


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in ("stream", "stream_options")),
        json_values,
        max_size=5,
    ),
    options=st.none()
    | st.dictionaries(
        st.text(max_size=6).filter(lambda k: k != "include_usage"), json_values, max_size=2
    ),
    indent=st.none() | st.integers(0, 3),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
    ensure_ascii=st.booleans(),
)
def test_chat_upstream_body_property(
    extra: dict[str, Any],
    options: dict[str, Any] | None,
    indent: int | None,
    separators: tuple[str, str],
    ensure_ascii: bool,
) -> None:
    body: dict[str, Any] = {**extra, "stream": True}
    if options is not None:
        body["stream_options"] = options
    raw = json.dumps(body, indent=indent, separators=separators, ensure_ascii=ensure_ascii).encode()
    out = chat_upstream(raw)
    assert json.loads(out) == with_usage(raw)
    assert is_subsequence(raw, out)
    assert chat_upstream(out) == out  # now asked for: left alone
    assert with_include_usage(raw, body) == out


# -- split independence --------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, dict[str, Any], bytes]:
    calls = draw(
        st.lists(
            st.builds(
                ToolCall,
                name=st.sampled_from(["read", "bash"]),
                arguments=st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
                | st.text(max_size=8),
                id=st.sampled_from(["c1", "c2", "c3"]),
            ),
            max_size=3,
            unique_by=lambda c: c.id,
        )
    )
    text = draw(st.text(max_size=12))
    u = Usage(*draw(st.tuples(*[st.integers(0, 1000)] * 5)))
    pieces = draw(st.integers(1, 4))
    route = draw(st.sampled_from([MESSAGES, CHAT_COMPLETIONS, RESPONSES]))
    if route == MESSAGES:
        thinking = draw(st.none() | st.text(max_size=12))
        events = anthropic_events(text, tool_calls=calls, thinking=thinking, usage=u, pieces=pieces)
    elif route == CHAT_COMPLETIONS:
        events = chat_events(text, tool_calls=calls, usage=u, pieces=pieces)
    else:
        events = response_events(
            text,
            tool_calls=calls,
            reasoning=draw(st.none() | st.text(max_size=12)),
            commentary=draw(st.none() | st.text(max_size=12)),
            usage=u,
            pieces=pieces,
        )
    raw = b"".join(events)
    if draw(st.booleans()):
        raw = raw.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r"])))
    return route, BODIES[route], raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), cuts=st.lists(st.integers(0, 10**5), max_size=25))
def test_records_do_not_depend_on_how_the_stream_is_split(
    scenario: tuple[str, dict[str, Any], bytes], cuts: list[int]
) -> None:
    route, body, raw = scenario
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    whole, whole_kept, whole_api = observe_stream(route, body, [raw])
    split, split_kept, split_api = observe_stream(route, body, chunks)
    assert grouped(split) == grouped(whole)
    assert split_kept == whole_kept
    assert (split_api.complete, split_api.error) == (whole_api.complete, whole_api.error)
    assert whole_api.complete and whole_api.error is None
    assert len(grouped(whole)["TokenUsage"]) == 1
