"""The Gemini API through the bridge: routes, credentials, the three answer
forms (blocking, SSE, streamed JSON array), records, errors, cancellation;
the sans-IO observer and JSON-array splitter byte by byte."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge_asgi import (
    Cost,
    InterceptionEnded,
    Limits,
    ModelThought,
    PromptUsage,
    ProviderConfig,
    TokenUsage,
    ToolResult,
    ToolUsage,
    create_bridge,
)
from aibridge_asgi.apis.gemini import (
    GenerateContentInterception,
    StreamGenerateContentInterception,
)
from aibridge_asgi.jsonarray import JSONArraySplitter
from aibridge_asgi.routing import GENERATE_CONTENT, STREAM_GENERATE_CONTENT, Route, match_route
from aibridge_asgi.sse import SSEEvent
from aibridge_asgi.testing import GOOGLE_KEY, FakeResponse, FakeUpstream
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    gemini_chunks,
    gemini_error,
    gemini_events,
    gemini_json_array,
    gemini_response,
)

from .conftest import HOST_TOKEN, Running, resolve
from .test_errors import assert_google_error

MODEL = "gemini-2.5-pro"
GENERATE = f"/gemini/v1beta/models/{MODEL}:generateContent"
STREAM = f"/gemini/v1beta/models/{MODEL}:streamGenerateContent"
UP_GENERATE = f"/v1beta/models/{MODEL}:generateContent"
UP_STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
ID_HEADER = "x-aibridge-interception-id"
GOOG = {"x-goog-api-key": HOST_TOKEN}
PROMPT = "What is the weather in Paris?"
BODY: dict[str, Any] = {
    "contents": [
        {"role": "user", "parts": [{"text": "earlier question"}]},
        {"role": "model", "parts": [{"text": "earlier answer"}]},
        {"role": "user", "parts": [{"text": PROMPT}]},
    ],
    "generationConfig": {"temperature": 0.2},
}
USAGE = Usage(input_tokens=120, output_tokens=45, cache_read=800, reasoning=15)
CALLS = [
    ToolCall("get_weather", {"city": "Paris"}, id=""),
    ToolCall("get_time", {"tz": "Europe/Paris"}, id=""),
]
THINKING = "The user wants the weather; I should call the tool."


def ended(running: Running, iid: str) -> InterceptionEnded:
    running.recorder.wait_sync(lambda r: r.ended(iid) is not None, 5.0)
    running.flush()
    end = running.recorder.ended(iid)
    assert end is not None
    return end


def kinds(running: Running, iid: str, cls: type[Any]) -> list[Any]:
    return [r for r in running.recorder.for_interception(iid) if isinstance(r, cls)]


def check_records(running: Running, iid: str, *, route: str, streaming: bool) -> None:
    """What every complete call with USAGE, CALLS and THINKING leaves."""
    end = ended(running, iid)
    assert (end.status, end.http_status, end.error) == ("completed", 200, None)
    started = running.recorder.started(iid)
    assert started is not None
    assert (started.provider, started.provider_name, started.model) == ("google", "gemini", MODEL)
    assert (started.route, started.streaming, started.actor.id) == (route, streaming, "alice")
    (usage,) = kinds(running, iid, TokenUsage)
    assert (usage.input_tokens, usage.output_tokens) == (120, 45)
    assert (usage.cache_read_input_tokens, usage.cache_write_input_tokens) == (800, 0)
    assert usage.extra == {"reasoning_tokens": 15}
    assert usage.provider_response_id == "resp_gemini_fake01"
    assert [p.prompt for p in kinds(running, iid, PromptUsage)] == [PROMPT]
    tools = kinds(running, iid, ToolUsage)
    assert [(t.tool, t.args) for t in tools] == [(c.name, c.arguments) for c in CALLS]
    assert [(t.content, t.source) for t in kinds(running, iid, ModelThought)] == [
        (THINKING, "thinking")
    ]
    # Priced as Gemini 2.5 Pro (the model in the path) at Google's published
    # rates: input 1.25, cached 0.125, output 10 USD per million tokens.
    (cost,) = kinds(running, iid, Cost)
    assert (cost.provider_name, cost.model, cost.currency) == ("gemini", MODEL, "USD")
    million = Decimal(1_000_000)
    assert cost.breakdown == {
        "input": 120 * Decimal("1.25") / million,
        "cache_read": 800 * Decimal("0.125") / million,
        "output": 45 * Decimal(10) / million,
    }
    assert cost.amount == Decimal("0.0007")


# -- routing --------------------------------------------------------------------


def test_routes() -> None:
    gemini = ProviderConfig("gemini", "google", "k")
    providers = {"gemini": gemini}
    for version in ("v1beta", "v1"):
        for method in (GENERATE_CONTENT, STREAM_GENERATE_CONTENT):
            path = f"/gemini/{version}/models/gemini-2.5-flash-lite{method}"
            assert match_route(path, providers) == Route(
                gemini, method, path[len("/gemini") :], "gemini-2.5-flash-lite"
            )
        for rest in ("/models", "/models/gemini-2.5-pro", "/models/gemini-2.5-pro:countTokens"):
            route = match_route(f"/gemini/{version}{rest}", providers)
            assert route == Route(gemini, None, f"/{version}{rest}")
    for unserved in (
        "/gemini/v1beta/models/x:embedContent",
        "/gemini/v1beta/models/a:b:generateContent",
        "/gemini/v1beta/models/:generateContent",
        "/gemini/v1beta/tunedModels/x:generateContent",
        "/gemini/v2/models/x:generateContent",
        "/gemini/v1beta/models/x/y:generateContent",
        "/gemini",
    ):
        assert match_route(unserved, providers) is gemini, unserved


def test_key_map_names_and_base_url() -> None:
    for name in ("gemini", "google"):
        bridge = create_bridge(resolve, {name: "k"}, base_urls={name: "http://up.example"})
        (config,) = bridge.providers.values()
        assert (config.name, config.kind, config.resolved_base_url) == (
            "gemini",
            "google",
            "http://up.example",
        )
        assert config.auth_header() == (b"x-goog-api-key", b"k")
    default = create_bridge(resolve, {"gemini": "k"}).providers["gemini"]
    assert default.resolved_base_url == "https://generativelanguage.googleapis.com"
    with pytest.raises(ValueError, match="both 'gemini' and 'google'"):
        create_bridge(resolve, {"gemini": "k", "google": "k"})


# -- the three answer forms -----------------------------------------------------


def test_blocking_generate_content(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    answer = gemini_response(
        "", model=MODEL, tool_calls=CALLS, thinking=THINKING, usage=USAGE, finish="STOP"
    )
    raw = json.dumps(answer, indent=2).encode()
    fake.enqueue(FakeResponse.json(raw, headers=[("x-goog-request", "r1")]))
    r = client.post(running.url + GENERATE, headers=GOOG, json=BODY)
    assert r.status_code == 200 and r.content == raw
    assert r.headers["x-goog-request"] == "r1"
    up = fake.last(UP_GENERATE)
    assert up.json() == BODY and up.query == ""
    check_records(running, r.headers[ID_HEADER], route=GENERATE_CONTENT, streaming=False)


def test_stream_sse_is_relayed_byte_for_byte(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    events = gemini_events("", model=MODEL, tool_calls=CALLS, thinking=THINKING, usage=USAGE)
    fake.enqueue(FakeResponse.sse(events))
    r = client.post(running.url + STREAM + "?alt=sse", headers=GOOG, json=BODY)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b"".join(events)
    assert fake.last(UP_STREAM).query == "alt=sse"
    check_records(running, r.headers[ID_HEADER], route=STREAM_GENERATE_CONTENT, streaming=True)


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_stream_json_array_is_relayed_byte_for_byte(
    running: Running, client: httpx.Client, fake: FakeUpstream, piece: int
) -> None:
    """Without alt=sse the answer is one JSON array that streams: it reaches
    the client as it arrives, unchanged, and every element is observed
    whatever the upstream's chunking."""
    whole = b"".join(
        gemini_json_array("", model=MODEL, tool_calls=CALLS, thinking=THINKING, usage=USAGE)
    )
    chunks = [whole[i : i + piece] for i in range(0, len(whole), piece)]
    fake.enqueue(FakeResponse(chunks=chunks, content_type="application/json; charset=UTF-8"))
    r = client.post(running.url + STREAM, headers=GOOG, json=BODY)
    assert r.status_code == 200 and r.content == whole
    assert [c["responseId"] for c in r.json()] == ["resp_gemini_fake01"] * len(r.json())
    check_records(running, r.headers[ID_HEADER], route=STREAM_GENERATE_CONTENT, streaming=True)


def test_json_array_element_past_the_cap_is_relayed_but_not_buffered(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """An element that never ends cannot grow the bridge: past
    ``Limits.max_event_size`` it stops reading the answer (the bytes still
    reach the client unchanged) and says so in the record (issue 18)."""
    running = start_bridge(limits=Limits(max_event_size=4096))
    # An element that never ends (the body stops inside it): however the
    # reads are split, the splitter holds more than the cap at the last one.
    huge = b'[{"candidates": [{"content": {"parts": [{"text": "' + b"z" * 20_000
    chunks = [huge[i : i + 1000] for i in range(0, len(huge), 1000)]
    fake.enqueue(FakeResponse(chunks=chunks, content_type="application/json; charset=UTF-8"))
    r = client.post(running.url + STREAM, headers=GOOG, json=BODY)
    assert r.status_code == 200 and r.content == huge
    end = ended(running, r.headers[ID_HEADER])
    assert end.error is not None and "longer than 4096 bytes" in end.error


def test_json_array_reaches_the_client_before_it_ends(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    """The upstream sends the first element, then waits: the client gets it
    (a bridge that read the whole array first would never answer)."""
    pieces = gemini_json_array("streamed text in parts", model=MODEL, pieces=3)
    fake.enqueue(FakeResponse(chunks=pieces[:1], hang=float("inf")))
    with client.stream("POST", running.url + STREAM, headers=GOOG, json=BODY) as r:
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if len(got) >= len(pieces[0]):
                break
        assert got == pieces[0]
    assert ended(running, r.headers[ID_HEADER]).status == "cancelled"


# -- passthrough ----------------------------------------------------------------


def test_passthrough_routes(running: Running, client: httpx.Client, fake: FakeUpstream) -> None:
    r = client.get(running.url + "/gemini/v1beta/models?pageSize=5", headers=GOOG)
    assert r.status_code == 200 and ID_HEADER not in r.headers
    assert "models/gemini-2.5-pro" in [m["name"] for m in r.json()["models"]]
    assert fake.last().query == "pageSize=5"
    r = client.get(running.url + f"/gemini/v1beta/models/{MODEL}", headers=GOOG)
    assert r.json()["name"] == f"models/{MODEL}"
    r = client.post(
        running.url + f"/gemini/v1beta/models/{MODEL}:countTokens", headers=GOOG, json=BODY
    )
    assert r.status_code == 200 and r.json()["totalTokens"] > 0
    assert ID_HEADER not in r.headers
    for request in fake.requests:
        assert request.header("x-goog-api-key") == GOOGLE_KEY
    running.flush()
    assert running.recorder.records == []


# -- credentials ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["x-goog-api-key", "bearer", "query"])
def test_host_token_in_each_place_never_upstream_nor_logged(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    headers = {
        "x-goog-api-key": GOOG,
        "bearer": {"Authorization": f"Bearer {HOST_TOKEN}"},
        "query": {},
    }[where]
    query = f"?alt=sse&key={HOST_TOKEN}&$trace=1" if where == "query" else "?alt=sse"
    caplog.set_level(logging.DEBUG)
    fake.enqueue(FakeResponse.sse(gemini_events("hi", model=MODEL)))
    r = client.post(running.url + STREAM + query, headers=headers, json=BODY)
    assert r.status_code == 200, r.text
    fake.enqueue(FakeResponse.json({"models": []}))
    r2 = client.get(running.url + "/gemini/v1beta/models" + query, headers=headers)
    assert r2.status_code == 200
    assert ended(running, r.headers[ID_HEADER]).status == "completed"
    for request in fake.requests:
        assert request.header("x-goog-api-key") == GOOGLE_KEY
        assert request.header("authorization") is None
        assert request.query == ("alt=sse&$trace=1" if where == "query" else "alt=sse")
        assert HOST_TOKEN not in json.dumps(request.headers) + request.query
        assert HOST_TOKEN.encode() not in request.body
    # Every log line of the bridge's side (the test's own httpx client logs its URL).
    for record in caplog.records:
        if record.name.startswith(("httpx", "httpcore")):
            continue
        assert HOST_TOKEN not in record.getMessage()
        assert HOST_TOKEN not in json.dumps(getattr(record, "aibridge", {}), default=str)
    for record in running.recorder.records:
        assert HOST_TOKEN not in repr(record)


def test_key_parameter_is_removed_however_it_is_spelled(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    """Every ``key`` parameter goes, escaped name or value included; the
    first non-empty one is the token; other parameters keep their bytes."""
    token = HOST_TOKEN.replace("-", "%2D")
    for query, kept in (
        (f"k%65y={token}&alt=sse", "alt=sse"),
        (f"key=&key={HOST_TOKEN}&alt=sse&keys=1&a%20b=c+d", "alt=sse&keys=1&a%20b=c+d"),
        (f"alt=sse&key={HOST_TOKEN}&key=other", "alt=sse"),
    ):
        fake.enqueue(FakeResponse.sse(gemini_events("hi", model=MODEL)))
        r = client.post(running.url + STREAM + "?" + query, json=BODY)
        assert r.status_code == 200, (query, r.text)
        assert fake.last(UP_STREAM).query == kept
        assert "other" not in fake.last(UP_STREAM).query


def test_query_key_with_other_tokens_wrong_or_missing(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    r = client.post(running.url + STREAM + "?key=wrong", json=BODY)
    body = assert_google_error(r, 401)
    assert "wrong" not in json.dumps(body)
    r = client.post(running.url + STREAM + "?alt=sse", json=BODY)
    assert "x-goog-api-key" in assert_google_error(r, 401)["error"]["message"]
    r = client.post(running.url + GENERATE, headers={"x-goog-api-key": "nope"}, json=BODY)
    assert_google_error(r, 401)
    # x-goog-api-key is only a credential header on Gemini routes, and never forwarded.
    r = client.get(running.url + "/anthropic/v1/models", headers=GOOG)
    assert r.status_code == 401
    assert fake.requests == []


# -- errors in Google's shape ----------------------------------------------------


def test_errors_in_google_shape(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(limits=Limits(max_body_size=512))
    for path in (
        "/gemini/v1beta/models/x:embedContent",
        "/gemini/v1beta/tunedModels",
        "/gemini/v3/models/x:generateContent",
    ):
        assert_google_error(client.post(running.url + path, headers=GOOG, json=BODY), 404)
    r = client.get(running.url + GENERATE, headers=GOOG)
    assert_google_error(r, 405)
    big = {**BODY, "pad": "x" * 600}
    for path in (GENERATE, STREAM, f"/gemini/v1beta/models/{MODEL}:countTokens"):
        assert_google_error(client.post(running.url + path, headers=GOOG, json=big), 413)
    for raw in (b"", b"not json", b"[1]"):
        r = client.post(running.url + GENERATE, headers=GOOG, content=raw)
        assert_google_error(r, 400)
    assert fake.requests == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_and_slow_upstream_in_google_shape(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    from aibridge_asgi import Timeouts

    port = _closed_port()
    down = start_bridge(base_urls={"gemini": f"http://127.0.0.1:{port}"})
    for method, path in (("POST", STREAM), ("POST", GENERATE), ("GET", "/gemini/v1beta/models")):
        r = client.request(method, down.url + path, headers=GOOG, json=BODY)
        assert str(port) not in json.dumps(assert_google_error(r, 502))
    slow = start_bridge(timeouts=Timeouts(read=0.3))
    for path in (STREAM, GENERATE):
        fake.enqueue(FakeResponse.json({"late": True}, delay=0.8))
        assert_google_error(client.post(slow.url + path, headers=GOOG, json=BODY), 504)


def test_upstream_errors_relayed_and_recorded(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    raw = json.dumps(
        gemini_error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
        indent=2,
    ).encode()
    for path in (STREAM, STREAM + "?alt=sse", GENERATE):
        fake.enqueue(FakeResponse.json(raw, status=429, headers=[("retry-after", "7")]))
        r = client.post(running.url + path, headers=GOOG, json=BODY)
        assert (r.status_code, r.content, r.headers["retry-after"]) == (429, raw, "7")
        end = ended(running, r.headers[ID_HEADER])
        assert (end.status, end.http_status) == ("failed", 429)
        assert end.error is not None and "Resource has been exhausted" in end.error


def test_refusals_and_errors_inside_a_200(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "responseId": "resp_blocked",
    }
    fake.enqueue(FakeResponse.json(blocked))
    r = client.post(running.url + GENERATE, headers=GOOG, json=BODY)
    end = ended(running, r.headers[ID_HEADER])
    assert (end.status, end.http_status) == ("failed", 200)
    assert end.error == "prompt blocked by the upstream: PROHIBITED_CONTENT"
    (usage,) = kinds(running, r.headers[ID_HEADER], TokenUsage)
    assert usage.input_tokens == 9

    fake.enqueue(FakeResponse.sse(gemini_events("partial", model=MODEL, finish="SAFETY")))
    r = client.post(running.url + STREAM + "?alt=sse", headers=GOOG, json=BODY)
    assert ended(running, r.headers[ID_HEADER]).error == "the model stopped: finishReason SAFETY"

    pieces = gemini_json_array("partial", model=MODEL)[:-1]  # no final element, no "]"
    error = gemini_error(503, "The model is overloaded.", "UNAVAILABLE")
    pieces += [b",\r\n" + json.dumps(error).encode() + b"\n", b"]"]
    fake.enqueue(FakeResponse(chunks=pieces))
    r = client.post(running.url + STREAM, headers=GOOG, json=BODY)
    end = ended(running, r.headers[ID_HEADER])
    assert end.status == "failed"
    assert end.error == "upstream error event: UNAVAILABLE: The model is overloaded."

    fake.enqueue(FakeResponse(chunks=gemini_json_array("cut", model=MODEL)[:1], cut=False))
    r = client.post(running.url + STREAM, headers=GOOG, json=BODY)
    assert ended(running, r.headers[ID_HEADER]).error == (
        "upstream stream ended before its final event"
    )


# -- cancellation ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["sse", "json"])
def test_cancelled_stream_keeps_partial_usage(
    running: Running, client: httpx.Client, fake: FakeUpstream, form: str
) -> None:
    chunks = gemini_chunks("a long answer the client abandons", model=MODEL, usage=USAGE)
    if form == "sse":
        pieces = gemini_events("a long answer the client abandons", model=MODEL, usage=USAGE)
        fake.enqueue(FakeResponse.sse(pieces, chunk_delay=0.3))
        query = "?alt=sse"
    else:
        pieces = gemini_json_array("a long answer the client abandons", model=MODEL, usage=USAGE)
        fake.enqueue(FakeResponse(chunks=pieces, chunk_delay=0.3))
        query = ""
    with client.stream("POST", running.url + STREAM + query, headers=GOOG, json=BODY) as r:
        iid = r.headers[ID_HEADER]
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if len(got) >= len(pieces[0]):
                break
        assert got == pieces[0]
    left = time.monotonic()
    while UP_STREAM not in fake.abandoned and time.monotonic() - left < 1.5:
        time.sleep(0.01)
    assert fake.abandoned == [UP_STREAM]
    end = ended(running, iid)
    assert (end.status, end.http_status) == ("cancelled", 200)
    (usage,) = kinds(running, iid, TokenUsage)
    first = chunks[0]["usageMetadata"]
    assert usage.output_tokens == first["candidatesTokenCount"] + first["thoughtsTokenCount"]
    assert usage.input_tokens == 120
    assert [p.prompt for p in kinds(running, iid, PromptUsage)] == [PROMPT]


# -- the observer, sans IO -------------------------------------------------------


def _observer(body: dict[str, Any], stream: bool = True) -> GenerateContentInterception:
    cls = StreamGenerateContentInterception if stream else GenerateContentInterception
    return cls("iid", body, model=MODEL)


def test_prompt_is_the_last_user_turn_text() -> None:
    def prompt(contents: Any) -> str | None:
        return _observer({"contents": contents}).extract_prompt({"contents": contents})

    assert prompt(BODY["contents"]) == PROMPT
    session = {"text": "<session_context>\nThis is the Gemini CLI.\n</session_context>"}
    assert prompt([{"role": "user", "parts": [session, {"text": "say hi"}]}]) == "say hi"
    assert prompt([{"parts": [{"text": "a"}, {"text": "b"}]}]) == "a\nb"  # role defaults to user
    assert prompt({"parts": [{"text": "one Content, not a list"}]}) == "one Content, not a list"
    thought = {"text": "hidden", "thought": True}
    assert prompt([{"role": "user", "parts": [thought, {"text": "shown"}]}]) == "shown"
    tool_result = {"functionResponse": {"name": "get_weather", "response": {"t": 20}}}
    assert prompt([*BODY["contents"], {"role": "user", "parts": [tool_result]}]) is None
    trailing_model = [*BODY["contents"], {"role": "model", "parts": [{"text": "x"}]}]
    assert prompt(trailing_model) is None
    old_style = {"role": "function", "parts": [{"text": "tool output"}]}
    assert prompt([*BODY["contents"], old_style]) is None
    assert prompt([{"role": "user", "parts": [{"inlineData": {"data": "AA=="}}]}]) is None
    for odd in (None, "text", [1, None, {"role": "user"}], [{"role": "user", "parts": "x"}]):
        assert prompt(odd) is None


def test_function_responses_are_tool_results() -> None:
    call = {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {}}}]}
    answers = {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "id": "read_file-1",
                    "name": "read_file",
                    "response": {"output": "hi"},
                }
            },
            {"functionResponse": {"name": "glob", "response": {"error": "no such dir"}}},
        ],
    }
    api = GenerateContentInterception("iid", {"contents": [*BODY["contents"], call, answers]}, 4)
    results = [r for r in api.drain() if isinstance(r, ToolResult)]
    assert [(r.tool_call_id, r.is_error, r.content, r.truncated) for r in results] == [
        ("read_file-1", False, '{"ou', True),
        ("", True, '{"er', True),
    ]
    assert results[0].size == len('{"output":"hi"}')
    # Results of earlier turns were recorded with those turns.
    earlier = {"contents": [answers, call, {"role": "user", "parts": [{"text": "thanks"}]}]}
    assert not [r for r in _observer(earlier).drain() if isinstance(r, ToolResult)]


def test_usage_mapping_and_last_chunk_wins() -> None:
    api = _observer(BODY)
    metadata = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 800,
        "candidatesTokenCount": 30,
        "thoughtsTokenCount": 15,
        "toolUsePromptTokenCount": 40,
        "totalTokenCount": 1085,
    }
    api.on_event(SSEEvent(b"", None, json.dumps({"usageMetadata": {"promptTokenCount": 1000}})))
    api.on_event(SSEEvent(b"", None, json.dumps({"usageMetadata": metadata})))
    api.finish()
    (usage,) = [r for r in api.drain() if isinstance(r, TokenUsage)]
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (
        240,
        45,
        800,
    )
    assert usage.extra == {"reasoning_tokens": 15, "tool_use_prompt_tokens": 40}


def test_parallel_tool_calls_thoughts_and_candidates() -> None:
    api = _observer(BODY)
    parts = [
        {"text": "thinking ", "thought": True},
        {"text": "more", "thought": True},
        {"text": "answer"},
        {"functionCall": {"name": "a", "args": {"x": 1}, "id": "fc_1"}},
        {"functionCall": {"name": "b"}},
    ]
    chunk = {
        "candidates": [
            {"index": 0, "content": {"role": "model", "parts": parts[:2]}},
            {"index": 1, "content": {"role": "model", "parts": [{"text": "c1", "thought": True}]}},
        ],
        "responseId": "r1",
    }
    api.on_element(json.dumps(chunk).encode())
    last = {"candidates": [{"content": {"parts": parts[2:]}, "finishReason": "STOP"}]}
    api.on_element(json.dumps(last).encode())
    assert api.complete and api.error is None
    api.finish()
    records = api.drain()
    tools = [(r.tool, r.tool_call_id, r.args) for r in records if isinstance(r, ToolUsage)]
    assert tools == [("a", "fc_1", {"x": 1}), ("b", "", {})]
    thoughts = [r.content for r in records if isinstance(r, ModelThought)]
    assert thoughts == ["thinking more", "c1"]
    assert [r.provider_response_id for r in records if isinstance(r, PromptUsage)] == ["r1"]


def test_malformed_and_odd_chunks_do_not_break_the_observer() -> None:
    api = _observer(BODY)
    for data in (
        "not json",
        "[]",
        "3",
        '{"candidates": "x"}',
        '{"candidates": [1, {"content": 2}]}',
    ):
        api.on_event(SSEEvent(b"", None, data))
    api.on_event(SSEEvent(b": keepalive\n\n", None, None))
    assert api.error == "malformed chunk from upstream" and not api.complete
    blocking = _observer(BODY, stream=False)
    blocking.on_body(json.dumps(gemini_response("hi", model=MODEL)).encode())
    assert blocking.complete and blocking.error is None


# -- the JSON-array splitter, for any split ---------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_space = st.sampled_from(["", " ", "\n", "\r\n", "\n  "])


@settings(max_examples=300, deadline=None)
@given(
    elements=st.lists(_json, max_size=5),
    gaps=st.lists(_space, min_size=12, max_size=12),
    indent=st.sampled_from([None, 2]),
    ascii_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_splitter_gives_each_element_whatever_the_split(
    elements: list[Any], gaps: list[str], indent: int | None, ascii_only: bool, cuts: list[int]
) -> None:
    texts = [json.dumps(e, indent=indent, ensure_ascii=ascii_only).encode() for e in elements]
    body = gaps[0].encode() + b"[" + gaps[1].encode()
    for n, text in enumerate(texts):
        if n:
            body += gaps[(2 * n) % 12].encode() + b"," + gaps[(2 * n + 1) % 12].encode()
        body += text
    body += gaps[11].encode() + b"]"
    splitter = JSONArraySplitter()
    got: list[bytes] = []
    start = 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        got += splitter.feed(body[start:cut])
        start = cut
    assert got == texts
    assert [json.loads(t) for t in got] == elements
    assert splitter.closed and splitter.is_array
    assert splitter.finish() == b""


def test_splitter_edge_cases() -> None:
    s = JSONArraySplitter()
    assert s.feed(b'[{"a":"\\') == []  # a backslash at the very end of a read
    assert s.feed(b'""}]') == [b'{"a":"\\""}']
    assert s.closed and s.feed(b"trailing bytes") == []
    s = JSONArraySplitter()
    assert s.feed(b'{"error": {"code": 500}}') == [] and not s.is_array
    assert s.finish() == b'{"error": {"code": 500}}'
    s = JSONArraySplitter()
    assert s.feed(b'[{"a": [1, 2') == [] and not s.closed
    assert s.finish() == b'{"a": [1, 2'


# -- chunks left unread ----------------------------------------------------------


class _ReadsEveryChunk(StreamGenerateContentInterception):
    """The observer as it was: every streamed chunk parsed as it comes."""

    def on_event(self, event: SSEEvent) -> bool:
        if event.data is not None and event.data.strip():
            self._chunk(event.data)
        return True


def _plain_records(api: GenerateContentInterception) -> list[dict[str, Any]]:
    out = []
    for record in api.drain():
        fields = {k: getattr(record, k) for k in record.__dataclass_fields__}  # type: ignore[attr-defined]
        fields.pop("created_at", None)
        out.append({"type": type(record).__name__, **fields})
    return out


@st.composite
def _gemini_streams(draw: st.DrawFn) -> list[str]:
    """Streamed chunks (their data) of an answer with or without thinking and
    tool calls, usage that may be missing or odd in some chunks, an error
    or a blocked prompt now and then, and possibly cut short."""
    calls = [ToolCall(f"tool{n}", {"n": n}, id=f"c{n}") for n in range(draw(st.integers(0, 2)))]
    chunks = gemini_chunks(
        draw(st.text(min_size=1, max_size=40)),
        tool_calls=calls,
        thinking=draw(st.none() | st.text(min_size=1, max_size=30)),
        usage=Usage(draw(st.integers(1, 500)), draw(st.integers(1, 500))),
        pieces=draw(st.integers(1, 8)),
        finish=draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"])),
    )
    if calls and draw(st.booleans()):  # the calls, then the finish in a chunk of its own
        last = chunks[-1]
        reason = last["candidates"][0].pop("finishReason", None)
        closing = {"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": reason}
        chunks.append({**last, "candidates": [closing]})
    for chunk in chunks:
        odd = draw(st.sampled_from(["keep", "keep", "drop", "null", "text"]))
        if odd == "drop":
            chunk.pop("usageMetadata", None)
        elif odd != "keep":
            chunk["usageMetadata"] = None if odd == "null" else "n/a"
    datas = [json.dumps(c, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
             for c in chunks]  # fmt: skip
    if draw(st.booleans()):  # some text before any thinking: thoughts arrive with the id known
        intro = {"candidates": [{"content": {"parts": [{"text": "so"}], "role": "model"}}]}
        datas.insert(0, json.dumps({**intro, "responseId": "resp_gemini_fake01"}))
    extra = draw(st.sampled_from([None, "error", "blocked", "list"]))
    at = draw(st.integers(0, len(datas)))
    if extra == "error":
        datas.insert(at, json.dumps(gemini_error(503, "overloaded", "UNAVAILABLE")))
    elif extra == "blocked":
        datas.insert(at, json.dumps({"promptFeedback": {"blockReason": "OTHER"}}))
    elif extra == "list" and datas:
        datas[at - 1 if at else 0] = "[" + datas[at - 1 if at else 0] + "]"
    return datas[: draw(st.integers(1, len(datas)))]


@settings(max_examples=300, deadline=None)
@given(datas=_gemini_streams())
def test_chunks_left_unread_change_nothing(datas: list[str]) -> None:
    """Leaving text chunks unread (but for the newest usage) gives the same
    records, error, end state and usage as parsing every chunk."""
    lazy, eager = _observer(BODY), _ReadsEveryChunk("iid", BODY, model=MODEL)
    lazy_records: list[dict[str, Any]] = []
    eager_records: list[dict[str, Any]] = []
    for data in datas:
        event = SSEEvent(f"data: {data}\r\n\r\n".encode(), None, data)
        lazy.on_event(event)
        eager.on_event(event)
        lazy_records += _plain_records(lazy)
        eager_records += _plain_records(eager)
    assert (lazy.complete, lazy.error, lazy.overloaded) == (
        eager.complete,
        eager.error,
        eager.overloaded,
    )
    lazy.finish()
    eager.finish()
    assert lazy_records + _plain_records(lazy) == eager_records + _plain_records(eager)


def test_text_chunks_are_left_unread_until_needed() -> None:
    chunks = gemini_chunks("one two three four", pieces=4, usage=Usage(20, 9))
    api = _observer(BODY)
    for chunk in chunks[:-1]:
        api.on_event(SSEEvent(b"", None, json.dumps(chunk)))
    assert len(api._unread) == 2  # all but the first (the id) wait
    api.on_event(SSEEvent(b"", None, "{not json"))  # unread too, and newest
    api.finish()
    [usage] = [r for r in api.drain() if isinstance(r, TokenUsage)]
    # The malformed newest chunk is noted; the usage is the newest readable one.
    assert api.error == "malformed chunk from upstream"
    assert usage.output_tokens == chunks[-2]["usageMetadata"]["candidatesTokenCount"]
