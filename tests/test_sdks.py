"""The official SDKs get the same parsed results through the bridge as directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from aibridge_asgi import (
    Bridge,
    InterceptionStarted,
    Record,
    TokenUsage,
    ToolUsage,
    create_bridge,
)
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    ReceivedRequest,
    ServerThread,
)
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    anthropic_message,
    chat_completion,
    chat_events,
    gemini_error,
    gemini_events,
    gemini_response,
    response_events,
    response_object,
    sse,
)

from .conftest import HOST_TOKEN, Running, resolve

TEXT = "Here is the answer: 42."
CALL = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_weather_1")
USAGE = Usage(input_tokens=120, output_tokens=45, cache_read=800, cache_write=60, reasoning=15)
PROMPT = [{"role": "user", "content": "What is the answer?"}]

Script = Sequence[FakeResponse | Callable[[ReceivedRequest], FakeResponse]]


# -- one fake upstream and one bridge for the module ---------------------------
#
# As in test_relay: two uvicorn servers cost about 0.35 s per test to stop,
# so the tests share a pair and swap in their own FakeUpstream and recorder.


class _Swappable:
    def __init__(self) -> None:
        self.fake = FakeUpstream()
        self.recorder = InMemoryRecorder()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.fake(scope, receive, send)

    async def record(self, record: Record) -> None:
        await self.recorder.record(record)


@dataclass
class _Shared:
    swap: _Swappable
    upstream: ServerThread
    bridge: Bridge
    server: ServerThread


@pytest.fixture(scope="module")
def shared() -> Iterator[_Shared]:
    swap = _Swappable()
    with ServerThread(swap) as upstream:
        bridge = create_bridge(
            resolve,
            {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY, "gemini": GOOGLE_KEY},
            base_urls={
                "anthropic": upstream.url,
                "openai": upstream.url + "/v1",
                "gemini": upstream.url,
            },
            recorder=swap,
        )
        with ServerThread(bridge) as server:
            yield _Shared(swap, upstream, bridge, server)
            server.call(bridge.aclose())


@pytest.fixture
def fake(shared: _Shared) -> FakeUpstream:
    shared.swap.fake = FakeUpstream()
    return shared.swap.fake


@pytest.fixture
def upstream(shared: _Shared, fake: FakeUpstream) -> ServerThread:
    return shared.upstream


@pytest.fixture
def running(shared: _Shared, fake: FakeUpstream) -> Running:
    shared.swap.recorder = InMemoryRecorder()
    return Running(shared.bridge, shared.server, shared.swap.recorder, "")


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
    ):
        monkeypatch.delenv(name, raising=False)


def both_ways(
    fake: FakeUpstream,
    path: str,
    script: Script,
    via_bridge: Callable[[], dict[str, Any]],
    direct: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run the same calls through the bridge and directly; return the results
    after checking they are equal."""
    for answer in script:
        fake.enqueue(answer, path=path)
    bridged = via_bridge()
    for answer in script:
        fake.enqueue(answer, path=path)
    plain = direct()
    assert bridged.keys() == plain.keys()
    for key in bridged:
        assert bridged[key] == plain[key], key
    return bridged


def check_records(running: Running, count: int, client: str) -> None:
    ends = running.recorder.wait_ended(count)
    running.flush()
    starts = running.recorder.of_type(InterceptionStarted)
    assert len(starts) == count == len(ends)
    assert {e.status for e in ends} == {"completed"}
    for start in starts:
        usages = [
            r
            for r in running.recorder.for_interception(start.interception_id)
            if isinstance(r, TokenUsage)
        ]
        assert len(usages) == 1, start
    tools = running.recorder.of_type(ToolUsage)
    assert len(tools) == count
    assert {(t.tool, t.tool_call_id) for t in tools} == {(CALL.name, CALL.id)}
    assert all(t.args == CALL.arguments for t in tools)
    assert [s.client for s in starts] == [client] * count, [s.user_agent for s in starts]


# -- Anthropic -----------------------------------------------------------------

ANTHROPIC_KW: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": PROMPT,
}
THINKING = "The user asks for the answer. It is 42."


def anthropic_script() -> Script:
    opts: dict[str, Any] = {"tool_calls": [CALL], "thinking": THINKING, "usage": USAGE}
    return [
        FakeResponse.json(anthropic_message(TEXT, **opts)),
        FakeResponse.sse(anthropic_events(TEXT, **opts)),
        FakeResponse.sse(anthropic_events(TEXT, **opts)),
    ]


def anthropic_calls(client: anthropic.Anthropic) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["create"] = client.messages.create(**ANTHROPIC_KW).model_dump()
    stream = client.messages.create(**ANTHROPIC_KW, stream=True)
    out["events"] = [event.model_dump() for event in stream]
    with client.messages.stream(**ANTHROPIC_KW) as helper:
        out["text"] = "".join(helper.text_stream)
        out["final"] = helper.get_final_message().model_dump()
    return out


async def anthropic_calls_async(client: anthropic.AsyncAnthropic) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["create"] = (await client.messages.create(**ANTHROPIC_KW)).model_dump()
    stream = await client.messages.create(**ANTHROPIC_KW, stream=True)
    out["events"] = [event.model_dump() async for event in stream]
    async with client.messages.stream(**ANTHROPIC_KW) as helper:
        out["text"] = "".join([text async for text in helper.text_stream])
        out["final"] = (await helper.get_final_message()).model_dump()
    return out


def check_anthropic_results(out: dict[str, Any]) -> None:
    assert out["text"] == TEXT
    for message in (out["create"], out["final"]):
        assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
        assert message["content"][0]["thinking"] == THINKING
        assert message["content"][2]["input"] == CALL.arguments
        assert message["usage"]["cache_read_input_tokens"] == USAGE.cache_read
        assert message["usage"]["output_tokens"] == USAGE.output_tokens
    assert out["events"][0]["type"] == "message_start"
    assert out["events"][-1]["type"] == "message_stop"


@pytest.mark.parametrize("credential", ["api_key", "auth_token"])
def test_anthropic_sync(
    running: Running, upstream: ServerThread, fake: FakeUpstream, credential: str
) -> None:
    def via_bridge() -> dict[str, Any]:
        with anthropic.Anthropic(
            base_url=running.url + "/anthropic", max_retries=0, **{credential: HOST_TOKEN}
        ) as client:
            return anthropic_calls(client)

    def direct() -> dict[str, Any]:
        with anthropic.Anthropic(
            base_url=upstream.url, api_key=ANTHROPIC_KEY, max_retries=0
        ) as client:
            return anthropic_calls(client)

    out = both_ways(fake, "/v1/messages", anthropic_script(), via_bridge, direct)
    check_anthropic_results(out)
    check_records(running, 3, "anthropic-python")
    bridged = fake.requests[:3]
    assert all(r.header("x-api-key") == ANTHROPIC_KEY for r in bridged)
    assert all(r.header("authorization") is None for r in bridged)


@pytest.mark.parametrize("credential", ["api_key", "auth_token"])
def test_anthropic_async(
    running: Running, upstream: ServerThread, fake: FakeUpstream, credential: str
) -> None:
    async def via_bridge() -> dict[str, Any]:
        async with anthropic.AsyncAnthropic(
            base_url=running.url + "/anthropic", max_retries=0, **{credential: HOST_TOKEN}
        ) as client:
            return await anthropic_calls_async(client)

    async def direct() -> dict[str, Any]:
        async with anthropic.AsyncAnthropic(
            base_url=upstream.url, api_key=ANTHROPIC_KEY, max_retries=0
        ) as client:
            return await anthropic_calls_async(client)

    out = both_ways(
        fake,
        "/v1/messages",
        anthropic_script(),
        lambda: asyncio.run(via_bridge()),
        lambda: asyncio.run(direct()),
    )
    check_anthropic_results(out)
    check_records(running, 3, "anthropic-python")


def test_anthropic_sdk_sees_upstream_errors_as_direct(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    def call(base_url: str, key: str) -> dict[str, Any]:
        fake.enqueue(FakeResponse.json(body, status=529), path="/v1/messages")
        with (
            anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0) as client,
            pytest.raises(anthropic.APIStatusError) as info,
        ):
            client.messages.create(**ANTHROPIC_KW)
        return {"status": info.value.status_code, "body": info.value.body, "type": info.type}

    bridged = call(running.url + "/anthropic", HOST_TOKEN)
    assert bridged == call(upstream.url, ANTHROPIC_KEY)
    assert bridged["status"] == 529


# -- OpenAI Chat Completions ---------------------------------------------------

CHAT_KW: dict[str, Any] = {"model": "gpt-5", "messages": PROMPT}


def chat_stream(request: ReceivedRequest) -> FakeResponse:
    """Usage only when asked for, as OpenAI does."""
    options = request.json().get("stream_options") or {}
    asked = options.get("include_usage") is True
    return FakeResponse.sse(chat_events(TEXT, tool_calls=[CALL], usage=USAGE, include_usage=asked))


def chat_script() -> Script:
    return [
        FakeResponse.json(chat_completion(TEXT, tool_calls=[CALL], usage=USAGE)),
        chat_stream,
        chat_stream,
        chat_stream,
    ]


USAGE_KW: dict[str, Any] = {"stream_options": {"include_usage": True}}


def chat_calls(client: openai.OpenAI) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["create"] = client.chat.completions.create(**CHAT_KW).model_dump()
    chunks = client.chat.completions.create(**CHAT_KW, stream=True)
    out["chunks"] = [chunk.model_dump() for chunk in chunks]
    chunks = client.chat.completions.create(**CHAT_KW, stream=True, **USAGE_KW)
    out["chunks_with_usage"] = [chunk.model_dump() for chunk in chunks]
    with client.chat.completions.stream(**CHAT_KW) as helper:
        out["final"] = helper.get_final_completion().model_dump()
    return out


async def chat_calls_async(client: openai.AsyncOpenAI) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["create"] = (await client.chat.completions.create(**CHAT_KW)).model_dump()
    chunks = await client.chat.completions.create(**CHAT_KW, stream=True)
    out["chunks"] = [chunk.model_dump() async for chunk in chunks]
    chunks = await client.chat.completions.create(**CHAT_KW, stream=True, **USAGE_KW)
    out["chunks_with_usage"] = [chunk.model_dump() async for chunk in chunks]
    async with client.chat.completions.stream(**CHAT_KW) as helper:
        out["final"] = (await helper.get_final_completion()).model_dump()
    return out


def check_chat_results(out: dict[str, Any]) -> None:
    for completion in (out["create"], out["final"]):
        message = completion["choices"][0]["message"]
        assert message["content"] == TEXT
        assert message["tool_calls"][0]["function"]["name"] == CALL.name
    assert out["create"]["usage"]["prompt_tokens_details"]["cached_tokens"] == USAGE.cache_read
    assert all(chunk["usage"] is None for chunk in out["chunks"])
    assert out["chunks_with_usage"][-1]["usage"]["completion_tokens"] == USAGE.output_tokens
    assert out["final"]["usage"] is None  # the client did not ask for it


def test_openai_chat_sync(running: Running, upstream: ServerThread, fake: FakeUpstream) -> None:
    def via_bridge() -> dict[str, Any]:
        with openai.OpenAI(
            base_url=running.url + "/openai/v1", api_key=HOST_TOKEN, max_retries=0
        ) as client:
            return chat_calls(client)

    def direct() -> dict[str, Any]:
        with openai.OpenAI(
            base_url=upstream.url + "/v1", api_key=OPENAI_KEY, max_retries=0
        ) as client:
            return chat_calls(client)

    out = both_ways(fake, "/v1/chat/completions", chat_script(), via_bridge, direct)
    check_chat_results(out)
    check_records(running, 4, "openai-python")


def test_openai_chat_async(running: Running, upstream: ServerThread, fake: FakeUpstream) -> None:
    async def via_bridge() -> dict[str, Any]:
        async with openai.AsyncOpenAI(
            base_url=running.url + "/openai/v1", api_key=HOST_TOKEN, max_retries=0
        ) as client:
            return await chat_calls_async(client)

    async def direct() -> dict[str, Any]:
        async with openai.AsyncOpenAI(
            base_url=upstream.url + "/v1", api_key=OPENAI_KEY, max_retries=0
        ) as client:
            return await chat_calls_async(client)

    out = both_ways(
        fake,
        "/v1/chat/completions",
        chat_script(),
        lambda: asyncio.run(via_bridge()),
        lambda: asyncio.run(direct()),
    )
    check_chat_results(out)
    check_records(running, 4, "openai-python")


# -- OpenAI Responses ----------------------------------------------------------

RESPONSES_KW: dict[str, Any] = {"model": "gpt-5", "input": "What is the answer?"}
REASONING = "**Answering** The answer is well known."


def with_part_events(events: Sequence[bytes]) -> list[bytes]:
    """``events`` plus the part events OpenAI sends around a message's text
    and a reasoning summary (``response.content_part.added`` ...), which the
    builder leaves out; sequence numbers renumbered."""
    payloads = [json.loads(e.split(b"data: ", 1)[1]) for e in events]
    out: list[dict[str, Any]] = []
    for payload in payloads:
        kind = payload["type"]
        item = payload.get("item") or {}
        where = {"item_id": item.get("id"), "output_index": payload.get("output_index")}
        if kind == "response.output_item.done" and item.get("type") == "message":
            part = item["content"][0]
            out.append(
                {"type": "response.content_part.done", **where, "content_index": 0, "part": part}
            )
        if kind == "response.output_item.done" and item.get("type") == "reasoning":
            part = item["summary"][0]
            out.append(
                {
                    "type": "response.reasoning_summary_part.done",
                    **where,
                    "summary_index": 0,
                    "part": part,
                }
            )
        out.append(payload)
        if kind == "response.output_item.added" and item.get("type") == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                {"type": "response.content_part.added", **where, "content_index": 0, "part": part}
            )
        if kind == "response.output_item.added" and item.get("type") == "reasoning":
            part = {"type": "summary_text", "text": ""}
            out.append(
                {
                    "type": "response.reasoning_summary_part.added",
                    **where,
                    "summary_index": 0,
                    "part": part,
                }
            )
    for n, payload in enumerate(out):
        payload["sequence_number"] = n
    return [sse(p["type"], p) for p in out]


RESPONSES_OPTS: dict[str, Any] = {"tool_calls": [CALL], "reasoning": REASONING, "usage": USAGE}


def responses_script() -> Script:
    events = with_part_events(response_events(TEXT, **RESPONSES_OPTS))
    return [
        FakeResponse.json(response_object(TEXT, **RESPONSES_OPTS)),
        FakeResponse.sse(events),
        FakeResponse.sse(events),
    ]


def test_builder_responses_stream_is_accepted_by_the_sdk_stream_helper(
    upstream: ServerThread, fake: FakeUpstream
) -> None:
    # testing.streams.response_events should be what OpenAI sends; the SDK's
    # stream helper needs response.content_part.added before text deltas.
    fake.enqueue(FakeResponse.sse(response_events(TEXT, **RESPONSES_OPTS)), path="/v1/responses")
    with (
        openai.OpenAI(base_url=upstream.url + "/v1", api_key=OPENAI_KEY, max_retries=0) as client,
        client.responses.stream(**RESPONSES_KW) as helper,
    ):
        assert helper.get_final_response().output_text == TEXT


def responses_calls(client: openai.OpenAI) -> dict[str, Any]:
    out: dict[str, Any] = {}
    response = client.responses.create(**RESPONSES_KW)
    out["create"] = response.model_dump()
    out["create_text"] = response.output_text
    events = client.responses.create(**RESPONSES_KW, stream=True)
    out["events"] = [event.model_dump() for event in events]
    with client.responses.stream(**RESPONSES_KW) as helper:
        final = helper.get_final_response()
        out["final"] = final.model_dump()
        out["final_text"] = final.output_text
    return out


async def responses_calls_async(client: openai.AsyncOpenAI) -> dict[str, Any]:
    out: dict[str, Any] = {}
    response = await client.responses.create(**RESPONSES_KW)
    out["create"] = response.model_dump()
    out["create_text"] = response.output_text
    events = await client.responses.create(**RESPONSES_KW, stream=True)
    out["events"] = [event.model_dump() async for event in events]
    async with client.responses.stream(**RESPONSES_KW) as helper:
        final = await helper.get_final_response()
        out["final"] = final.model_dump()
        out["final_text"] = final.output_text
    return out


def check_responses_results(out: dict[str, Any]) -> None:
    assert out["create_text"] == out["final_text"] == TEXT
    for response in (out["create"], out["final"]):
        assert [item["type"] for item in response["output"]] == [
            "reasoning",
            "message",
            "function_call",
        ]
        assert response["usage"]["input_tokens_details"]["cached_tokens"] == USAGE.cache_read
    assert out["events"][-1]["type"] == "response.completed"


def test_openai_responses_sync(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    def via_bridge() -> dict[str, Any]:
        with openai.OpenAI(
            base_url=running.url + "/openai/v1", api_key=HOST_TOKEN, max_retries=0
        ) as client:
            return responses_calls(client)

    def direct() -> dict[str, Any]:
        with openai.OpenAI(
            base_url=upstream.url + "/v1", api_key=OPENAI_KEY, max_retries=0
        ) as client:
            return responses_calls(client)

    out = both_ways(fake, "/v1/responses", responses_script(), via_bridge, direct)
    check_responses_results(out)
    check_records(running, 3, "openai-python")


def test_openai_responses_async(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    async def via_bridge() -> dict[str, Any]:
        async with openai.AsyncOpenAI(
            base_url=running.url + "/openai/v1", api_key=HOST_TOKEN, max_retries=0
        ) as client:
            return await responses_calls_async(client)

    async def direct() -> dict[str, Any]:
        async with openai.AsyncOpenAI(
            base_url=upstream.url + "/v1", api_key=OPENAI_KEY, max_retries=0
        ) as client:
            return await responses_calls_async(client)

    out = both_ways(
        fake,
        "/v1/responses",
        responses_script(),
        lambda: asyncio.run(via_bridge()),
        lambda: asyncio.run(direct()),
    )
    check_responses_results(out)
    check_records(running, 3, "openai-python")


def test_openai_sdk_sees_upstream_errors_as_direct(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    error = {
        "message": "Rate limit reached for gpt-5.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }

    def call(base_url: str, key: str) -> dict[str, Any]:
        fake.enqueue(FakeResponse.json({"error": error}, status=429), path="/v1/responses")
        with (
            openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as client,
            pytest.raises(openai.RateLimitError) as info,
        ):
            client.responses.create(**RESPONSES_KW, stream=True)
        exc = info.value
        return {"status": exc.status_code, "body": exc.body, "code": exc.code, "msg": exc.message}

    bridged = call(running.url + "/openai/v1", HOST_TOKEN)
    assert bridged == call(upstream.url + "/v1", OPENAI_KEY)
    assert bridged["code"] == "rate_limit_exceeded"


# -- Gemini (google-genai) -----------------------------------------------------

GEMINI_MODEL = "gemini-2.5-pro"
GEMINI_PATH = f"/v1/models/{GEMINI_MODEL}"  # google-genai 3 calls v1
GEMINI_CALL = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="")


def gemini_script(fake: FakeUpstream) -> None:
    opts: dict[str, Any] = {
        "model": GEMINI_MODEL,
        "tool_calls": [GEMINI_CALL],
        "thinking": THINKING,
        "usage": USAGE,
    }
    answer = gemini_response(TEXT, **opts)
    fake.enqueue(FakeResponse.json(answer), path=GEMINI_PATH + ":generateContent")
    fake.enqueue(
        FakeResponse.sse(gemini_events(TEXT, **opts)), path=GEMINI_PATH + ":streamGenerateContent"
    )


def _dump(response: genai_types.GenerateContentResponse) -> dict[str, Any]:
    # sdk_http_response holds the transport's headers (dates, the bridge's id).
    return response.model_dump(mode="json", exclude={"sdk_http_response"})


def gemini_calls(client: genai.Client) -> dict[str, Any]:
    prompt = "What is the answer?"
    out: dict[str, Any] = {}
    out["generate"] = _dump(client.models.generate_content(model=GEMINI_MODEL, contents=prompt))
    out["stream"] = [
        _dump(c) for c in client.models.generate_content_stream(model=GEMINI_MODEL, contents=prompt)
    ]
    return out


async def gemini_calls_async(client: genai.Client) -> dict[str, Any]:
    prompt = "What is the answer?"
    out: dict[str, Any] = {}
    answer = await client.aio.models.generate_content(model=GEMINI_MODEL, contents=prompt)
    out["generate"] = _dump(answer)
    stream = await client.aio.models.generate_content_stream(model=GEMINI_MODEL, contents=prompt)
    out["stream"] = [_dump(c) async for c in stream]
    return out


def _gemini_client(base_url: str, key: str) -> genai.Client:
    options = genai_types.HttpOptions(base_url=base_url, retry_options=None)
    return genai.Client(api_key=key, http_options=options)


def check_gemini(out: dict[str, Any], running: Running, fake: FakeUpstream) -> None:
    parts = out["generate"]["candidates"][0]["content"]["parts"]
    assert [p.get("thought") for p in parts] == [True, None, None]
    assert parts[2]["function_call"]["args"] == GEMINI_CALL.arguments
    assert out["generate"]["usage_metadata"]["cached_content_token_count"] == USAGE.cache_read
    streamed = "".join(
        p.get("text") or ""
        for chunk in out["stream"]
        for p in chunk["candidates"][0]["content"]["parts"]
        if not p.get("thought")
    )
    assert streamed == TEXT
    ends = running.recorder.wait_ended(2)
    running.flush()
    assert [e.status for e in ends] == ["completed", "completed"]
    starts = running.recorder.of_type(InterceptionStarted)
    assert [(s.route, s.model, s.client) for s in starts] == [
        (":generateContent", GEMINI_MODEL, "google-genai-python"),
        (":streamGenerateContent", GEMINI_MODEL, "google-genai-python"),
    ]
    usages = running.recorder.of_type(TokenUsage)
    assert [(u.input_tokens, u.output_tokens, u.cache_read_input_tokens) for u in usages] == [
        (USAGE.input_tokens, USAGE.output_tokens, USAGE.cache_read)
    ] * 2
    tools = running.recorder.of_type(ToolUsage)
    assert [(t.tool, t.args) for t in tools] == [(GEMINI_CALL.name, GEMINI_CALL.arguments)] * 2
    bridged = fake.requests[:2]
    assert [r.header("x-goog-api-key") for r in bridged] == [GOOGLE_KEY] * 2
    assert [r.query for r in bridged] == ["", "alt=sse"]


def test_google_genai_sdk(running: Running, upstream: ServerThread, fake: FakeUpstream) -> None:
    """google-genai gets the same parsed results through the bridge as directly."""
    gemini_script(fake)
    bridged = gemini_calls(_gemini_client(running.url + "/gemini", HOST_TOKEN))
    gemini_script(fake)
    assert bridged == gemini_calls(_gemini_client(upstream.url, GOOGLE_KEY))
    check_gemini(bridged, running, fake)


def test_google_genai_sdk_async(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    gemini_script(fake)
    bridged = asyncio.run(gemini_calls_async(_gemini_client(running.url + "/gemini", HOST_TOKEN)))
    gemini_script(fake)
    assert bridged == asyncio.run(gemini_calls_async(_gemini_client(upstream.url, GOOGLE_KEY)))
    check_gemini(bridged, running, fake)


def test_google_genai_sdk_reads_the_errors(
    running: Running, upstream: ServerThread, fake: FakeUpstream
) -> None:
    """Upstream errors reach the SDK as they would directly; the bridge's own
    errors (a bad host token) parse as Google errors too."""
    body = gemini_error(429, "Resource has been exhausted.", "RESOURCE_EXHAUSTED")

    def call(base_url: str, key: str) -> tuple[int, str | None, str | None]:
        fake.enqueue(FakeResponse.json(body, status=429), path=GEMINI_PATH + ":generateContent")
        client = _gemini_client(base_url, key)  # kept: the SDK closes it when collected
        with pytest.raises(genai_errors.ClientError) as info:
            client.models.generate_content(model=GEMINI_MODEL, contents="x")
        return (info.value.code, info.value.status, info.value.message)

    bridged = call(running.url + "/gemini", HOST_TOKEN)
    assert (
        bridged
        == call(upstream.url, GOOGLE_KEY)
        == (429, "RESOURCE_EXHAUSTED", body["error"]["message"])
    )
    client = _gemini_client(running.url + "/gemini", "not-a-host-token")
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model=GEMINI_MODEL, contents="x")
    assert (info.value.code, info.value.status) == (401, "UNAUTHENTICATED")
    assert info.value.message == "invalid credentials"
