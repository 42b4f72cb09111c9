"""The relay over real loopback sockets: exact bytes to the client, exact records."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import pytest

from aibridge_asgi import (
    Bridge,
    Cost,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    ModelThought,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
    create_bridge,
)
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    ServerThread,
)
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

from .conftest import HOST_TOKEN, Running, resolve

ID_HEADER = "x-aibridge-interception-id"
KEEPALIVE = b": keepalive\n\n"
PROMPT = "hello there"

# -- one fake upstream and one bridge for the whole module ----------------------
#
# Starting and stopping two uvicorn servers costs about 0.35 s per test, so
# most tests here share one pair; each test still gets its own FakeUpstream
# and InMemoryRecorder, swapped in behind the servers.


class _Swappable:
    """The shared upstream app and recorder, delegating to this test's ones."""

    def __init__(self) -> None:
        self.fake = FakeUpstream()
        self.recorder = InMemoryRecorder()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.fake(scope, receive, send)

    async def record(self, record: Record) -> None:
        await self.recorder.record(record)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[_Swappable, Bridge, ServerThread]]:
    swap = _Swappable()
    with ServerThread(swap) as upstream:
        bridge = create_bridge(
            resolve,
            {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY},
            base_urls={"anthropic": upstream.url, "openai": upstream.url + "/v1"},
            recorder=swap,
        )
        with ServerThread(bridge) as server:
            yield swap, bridge, server
            server.call(bridge.aclose())


@pytest.fixture
def fake(shared: tuple[_Swappable, Bridge, ServerThread]) -> FakeUpstream:
    """This test's fake upstream (also behind ``start_bridge``'s own upstream)."""
    shared[0].fake = FakeUpstream()
    return shared[0].fake


@pytest.fixture
def running(shared: tuple[_Swappable, Bridge, ServerThread], fake: FakeUpstream) -> Running:
    swap, bridge, server = shared
    swap.recorder = InMemoryRecorder()
    return Running(bridge, server, swap.recorder, "")


# -- the three APIs ------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    name: str
    path: str  # below the bridge
    upstream_path: str
    route: str
    provider: str
    headers: dict[str, str]
    response_id: str
    stream_builder: Callable[..., list[bytes]]
    blocking_builder: Callable[..., dict[str, Any]]
    id_option: str
    prompt_field: str

    def body(self, stream: bool, **extra: Any) -> dict[str, Any]:
        model = "claude-sonnet-4-5" if self.provider == "anthropic" else "gpt-5"
        body: dict[str, Any] = {"model": model, "stream": stream}
        if self.prompt_field == "input":
            body["input"] = [{"role": "user", "content": PROMPT}]
        else:
            body["messages"] = [{"role": "user", "content": PROMPT}]
        if self.provider == "anthropic":
            body["max_tokens"] = 1024
        body.update(extra)
        return body

    def events(self, **kw: Any) -> list[bytes]:
        return self.stream_builder(**{self.id_option: self.response_id, **kw})

    def blocking(self, **kw: Any) -> dict[str, Any]:
        return self.blocking_builder(**{self.id_option: self.response_id, **kw})

    def token_usage(self, iid: str, u: Usage, output: int | None = None) -> TokenUsage:
        out = u.output_tokens if output is None else output
        if self.provider == "anthropic":
            extra = {"ephemeral_5m_input_tokens": u.cache_write, "ephemeral_1h_input_tokens": 0}
            return TokenUsage(
                iid, self.response_id, u.input_tokens, out, u.cache_read, u.cache_write, extra
            )
        if self.route == "/chat/completions":
            extra = {
                "reasoning_tokens": u.reasoning,
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        else:
            extra = {"reasoning_tokens": u.reasoning}
        return TokenUsage(iid, self.response_id, u.input_tokens, out, u.cache_read, 0, extra)


ANTHROPIC = Api(
    "anthropic",
    "/anthropic/v1/messages",
    "/v1/messages",
    "/v1/messages",
    "anthropic",
    {"x-api-key": HOST_TOKEN, "anthropic-version": "2023-06-01"},
    "msg_relay_01",
    anthropic_events,
    anthropic_message,
    "message_id",
    "messages",
)
CHAT = Api(
    "chat",
    "/openai/v1/chat/completions",
    "/v1/chat/completions",
    "/chat/completions",
    "openai",
    {"authorization": f"Bearer {HOST_TOKEN}"},
    "chatcmpl-relay01",
    chat_events,
    chat_completion,
    "completion_id",
    "messages",
)
RESPONSES = Api(
    "responses",
    "/openai/v1/responses",
    "/v1/responses",
    "/responses",
    "openai",
    {"authorization": f"Bearer {HOST_TOKEN}"},
    "resp_relay01",
    response_events,
    response_object,
    "response_id",
    "input",
)
APIS = [ANTHROPIC, CHAT, RESPONSES]
api_param = pytest.mark.parametrize("api", APIS, ids=[a.name for a in APIS])
stream_param = pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])

CALLS = [
    ToolCall("read_file", {"path": "src/main.py"}, id="call_read"),
    ToolCall("bash", {"command": "pytest -q", "timeout": 30}, id="call_bash"),
    ToolCall("grep", {"pattern": "TODO", "paths": ["a", "b"]}, id="call_grep"),
]
CACHED = Usage(input_tokens=100, output_tokens=50, cache_read=4000, cache_write=300, reasoning=20)

# -- helpers -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    error: Exception | None = None

    @property
    def iid(self) -> str:
        return self.headers[ID_HEADER]


def post(client: httpx.Client, running: Running, api: Api, body: dict[str, Any]) -> Reply:
    """Send ``body`` and read every byte of the answer, as it came."""
    content = json.dumps(body).encode()
    return post_raw(client, running, api, content)


def post_raw(client: httpx.Client, running: Running, api: Api, content: bytes) -> Reply:
    headers = {**api.headers, "content-type": "application/json"}
    chunks: list[bytes] = []
    with client.stream("POST", running.url + api.path, headers=headers, content=content) as r:
        error: Exception | None = None
        try:
            for chunk in r.iter_raw():
                chunks.append(chunk)
        except httpx.TransportError as exc:
            error = exc
        return Reply(r.status_code, r.headers, b"".join(chunks), error)


def grouped(records: Sequence[Record]) -> dict[str, list[dict[str, Any]]]:
    """Usage, prompt, tool and thought records by type, without timestamps
    (costs are checked in tests/test_costs.py)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if isinstance(record, InterceptionStarted | InterceptionEnded | Cost):
            continue
        fields = {k: v for k, v in asdict(record).items() if k != "created_at"}
        out.setdefault(type(record).__name__, []).append(fields)
    return out


def ended(running: Running, iid: str) -> InterceptionEnded:
    running.recorder.wait_sync(lambda r: r.ended(iid) is not None)
    end = running.recorder.ended(iid)
    assert end is not None
    return end


def records_of(running: Running, iid: str) -> list[Record]:
    ended(running, iid)
    return running.recorder.for_interception(iid)


def expected_records(iid: str, api: Api, scenario: dict[str, Any]) -> list[Record]:
    rid = api.response_id
    records: list[Record] = [PromptUsage(iid, rid, PROMPT)]
    records.append(api.token_usage(iid, scenario.get("usage", Usage())))
    for call in scenario.get("tool_calls", ()):
        records.append(ToolUsage(iid, rid, call.name, call.id, call.arguments))
    if "thinking" in scenario:
        records.append(ModelThought(iid, scenario["thinking"], "thinking"))
    if "reasoning" in scenario:
        records.append(ModelThought(iid, scenario["reasoning"], "reasoning_summary"))
    if "commentary" in scenario:
        records.append(ModelThought(iid, scenario["commentary"], "commentary"))
    return records


def scenarios_for(api: Api) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "text": {"text": "Hello there, how can I help?"},
        "one-tool": {"text": "Let me look.", "tool_calls": CALLS[:1]},
        "parallel-tools": {"text": "", "tool_calls": CALLS},
        "cache": {"text": "Cached answer.", "usage": CACHED},
    }
    if api is ANTHROPIC:
        out["thoughts"] = {"text": "Done.", "thinking": "The user wants X.\nSo do Y."}
    if api is RESPONSES:
        out["thoughts"] = {
            "text": "Done.",
            "reasoning": "**Planning** read then edit.",
            "commentary": "I'll read the file first.",
            "tool_calls": CALLS[:1],
        }
    return out


CASES = [
    pytest.param(api, name, scenario, id=f"{api.name}-{name}")
    for api in APIS
    for name, scenario in scenarios_for(api).items()
]

# -- success, streamed and blocking --------------------------------------------


@stream_param
@pytest.mark.parametrize(("api", "name", "scenario"), CASES)
def test_relay_success(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    api: Api,
    name: str,
    scenario: dict[str, Any],
    stream: bool,
) -> None:
    extra: dict[str, Any] = {}
    if api is CHAT and stream:
        extra["stream_options"] = {"include_usage": True}
    body = api.body(stream, **extra)
    content = json.dumps(body).encode()
    if stream:
        events = api.events(**scenario, pieces=3)
        fake.enqueue(FakeResponse.sse(events), path=api.upstream_path)
        upstream_bytes = b"".join(events)
    else:
        upstream_bytes = json.dumps(api.blocking(**scenario)).encode()
        fake.enqueue(FakeResponse.json(upstream_bytes), path=api.upstream_path)

    reply = post_raw(client, running, api, content)

    assert reply.status == 200
    assert reply.error is None
    assert reply.body == upstream_bytes
    expected_type = "text/event-stream" if stream else "application/json"
    assert reply.headers["content-type"] == expected_type
    assert fake.last(api.upstream_path).body == content
    iid = reply.iid
    records = records_of(running, iid)
    assert grouped(records) == grouped(expected_records(iid, api, scenario))
    start = running.recorder.started(iid)
    assert start is not None
    assert (start.route, start.provider, start.streaming, start.model) == (
        api.route,
        api.provider,
        stream,
        body["model"],
    )
    end = running.recorder.ended(iid)
    assert end is not None
    assert (end.status, end.http_status, end.error) == ("completed", 200, None)
    assert isinstance(records[0], InterceptionStarted)
    assert isinstance(records[-1], InterceptionEnded)


# -- errors after a 200 --------------------------------------------------------

MID_STREAM_ERRORS = {
    "anthropic": sse(
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ),
    "chat": b'data: {"error":{"message":"The server had an error while processing your '
    b'request.","type":"server_error","param":null,"code":null}}\n\n',
    "responses": sse(
        "error",
        {
            "type": "error",
            "code": "server_error",
            "message": "The server had an error while processing your request.",
            "param": None,
            "sequence_number": 5,
        },
    ),
}


@api_param
def test_mid_stream_error_event_after_200(
    running: Running, client: httpx.Client, fake: FakeUpstream, api: Api
) -> None:
    events = [*api.events(text="Partial answer", usage=CACHED)[:5], MID_STREAM_ERRORS[api.name]]
    fake.enqueue(FakeResponse.sse(events), path=api.upstream_path)
    extra = {"stream_options": {"include_usage": True}} if api is CHAT else {}
    reply = post(client, running, api, api.body(True, **extra))
    assert reply.status == 200
    assert reply.error is None
    assert reply.body == b"".join(events)
    iid = reply.iid
    end = ended(running, iid)
    assert (end.status, end.http_status) == ("failed", 200)
    assert end.error is not None
    expected_word = "overloaded_error" if api is ANTHROPIC else "server had an error"
    assert expected_word in end.error
    usages = grouped(running.recorder.for_interception(iid)).get("TokenUsage", [])
    if api is ANTHROPIC:  # message_start's counts were seen
        assert usages == grouped([api.token_usage(iid, CACHED, output=1)])["TokenUsage"]
    else:
        assert usages == []


# -- upstream errors -----------------------------------------------------------


def error_body(api: Api, status: int) -> dict[str, Any]:
    if api is ANTHROPIC:
        kind = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}
        return {
            "type": "error",
            "error": {"type": kind.get(status, "api_error"), "message": f"upstream said {status}"},
        }
    return {
        "error": {
            "message": f"upstream said {status}",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": None,
        }
    }


@stream_param
@pytest.mark.parametrize("status", [400, 401, 429, 500, 503, 529])
@api_param
def test_upstream_error_status_and_body_reach_the_client_intact(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    api: Api,
    status: int,
    stream: bool,
) -> None:
    body_bytes = json.dumps(error_body(api, status), indent=1).encode()  # not compact
    headers = [("retry-after", "7"), ("request-id", "req_123")]
    fake.enqueue(
        FakeResponse.json(body_bytes, status=status, headers=headers), path=api.upstream_path
    )
    reply = post(client, running, api, api.body(stream))
    assert reply.status == status
    assert reply.body == body_bytes
    assert reply.headers["retry-after"] == "7"
    assert reply.headers["request-id"] == "req_123"
    iid = reply.iid
    end = ended(running, iid)
    assert (end.status, end.http_status) == ("failed", status)
    assert end.error is not None and f"upstream said {status}" in end.error
    kinds = grouped(running.recorder.for_interception(iid))
    assert "TokenUsage" not in kinds
    assert "ToolUsage" not in kinds


# -- a cut stream --------------------------------------------------------------


@api_param
def test_truncated_stream_gives_the_client_what_arrived_then_an_error(
    running: Running, client: httpx.Client, fake: FakeUpstream, api: Api
) -> None:
    events = api.events(text="This answer will be cut", usage=CACHED, tool_calls=CALLS[:1])
    arrived = [*events[:4], events[4][:17]]  # four events and the start of a fifth
    fake.enqueue(FakeResponse.sse(arrived, cut=True), path=api.upstream_path)
    extra = {"stream_options": {"include_usage": True}} if api is CHAT else {}
    reply = post(client, running, api, api.body(True, **extra))
    assert reply.status == 200
    assert reply.body == b"".join(arrived)
    assert reply.error is not None, "the client must see that the answer is incomplete"
    iid = reply.iid
    end = ended(running, iid)
    assert end.status == "failed"
    assert end.error
    usages = grouped(running.recorder.for_interception(iid)).get("TokenUsage", [])
    if api is ANTHROPIC:
        assert usages == grouped([api.token_usage(iid, CACHED, output=1)])["TokenUsage"]
    else:
        assert usages == []


# -- odd but valid streams -----------------------------------------------------


def odd(events: Sequence[bytes], api: Api) -> list[bytes]:
    """Stray trailing spaces, comments, pings, unknown events; CRLF line ends."""
    out: list[bytes] = [b": stream opened\n\n"]
    for n, event in enumerate(events):
        out.append(event.replace(b"\n\n", b"   \n\n"))
        if n == 1:
            out.append(b": a comment line\n\n")
            if api is ANTHROPIC:
                out.append(b'event: ping\ndata: {"type": "ping"}\n\n')
            if api is not CHAT:
                out.append(b'event: some_new_event\ndata: {"type":"some_new_event","x":1}\n\n')
        if n == 2:
            out.append(b":\n")  # comment line that is part of the next event
    return [e.replace(b"\n", b"\r\n") for e in out]


@api_param
def test_stream_with_spaces_comments_pings_unknown_events_and_crlf(
    running: Running, client: httpx.Client, fake: FakeUpstream, api: Api
) -> None:
    scenario: dict[str, Any] = {"text": "Odd stream.", "tool_calls": CALLS[:2], "usage": CACHED}
    if api is ANTHROPIC:
        scenario["thinking"] = "thinking hard"
    if api is RESPONSES:
        scenario["reasoning"] = "reasoning summary"
    events = odd(api.events(**scenario), api)
    fake.enqueue(FakeResponse.sse(events), path=api.upstream_path)
    extra = {"stream_options": {"include_usage": True}} if api is CHAT else {}
    reply = post(client, running, api, api.body(True, **extra))
    assert reply.status == 200
    assert reply.body == b"".join(events)
    iid = reply.iid
    assert ended(running, iid).status == "completed"
    records = running.recorder.for_interception(iid)
    assert grouped(records) == grouped(expected_records(iid, api, scenario))


def test_events_split_at_odd_places_are_relayed_exactly(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    raw = b"".join(ANTHROPIC.events(text="split", tool_calls=CALLS[:1])).replace(b"\n", b"\r\n")
    cuts = [0, 5, 6, 40, 41, raw.index(b"\r\n\r\n") + 1, raw.index(b"\r\n\r\n") + 3, 600, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(cuts)]
    fake.enqueue(FakeResponse.sse(chunks), path=ANTHROPIC.upstream_path)
    reply = post(client, running, ANTHROPIC, ANTHROPIC.body(True))
    assert reply.body == raw
    iid = reply.iid
    assert ended(running, iid).status == "completed"
    assert len(grouped(running.recorder.for_interception(iid))["ToolUsage"]) == 1


# -- chat: include_usage -------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_chat_stream_without_include_usage_hides_the_usage_chunk(
    running: Running, client: httpx.Client, fake: FakeUpstream, end: bytes
) -> None:
    events = [
        e.replace(b"\n", end)
        for e in CHAT.events(text="Hi!", tool_calls=CALLS[:2], usage=CACHED, include_usage=True)
    ]
    usage_chunk = events[-2]
    assert b'"choices":[]' in usage_chunk
    fake.enqueue(FakeResponse.sse(events), path=CHAT.upstream_path)
    body = CHAT.body(True)
    reply = post(client, running, CHAT, body)
    assert reply.status == 200
    assert reply.body == b"".join(e for e in events if e is not usage_chunk)
    sent = fake.last(CHAT.upstream_path).json()
    assert sent == {**body, "stream_options": {"include_usage": True}}
    iid = reply.iid
    assert ended(running, iid).status == "completed"
    got = grouped(running.recorder.for_interception(iid))
    assert got["TokenUsage"] == grouped([CHAT.token_usage(iid, CACHED)])["TokenUsage"]
    assert len(got["ToolUsage"]) == 2


def test_chat_stream_with_include_usage_asked_removes_nothing(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    events = CHAT.events(text="Hi!", usage=CACHED, include_usage=True)
    fake.enqueue(FakeResponse.sse(events), path=CHAT.upstream_path)
    content = (
        b'{"model": "gpt-5", "stream": true, "stream_options": {"include_usage": true},'
        b' "messages": [{"role": "user", "content": "hello there"}]}'
    )
    reply = post_raw(client, running, CHAT, content)
    assert reply.body == b"".join(events)
    assert fake.last(CHAT.upstream_path).body == content
    iid = reply.iid
    got = grouped(records_of(running, iid))
    assert got["TokenUsage"] == grouped([CHAT.token_usage(iid, CACHED)])["TokenUsage"]


def test_chat_include_usage_added_keeps_the_client_bytes(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    content = (
        '{ "model" : "gpt-5",\n  "stream": true,\n  "messages": [{"role": "user", '
        '"content": "caf\u00e9 \\"quoted\\" \\u2603"}],\n  "stream_options": {"x": 1} }'
    ).encode()
    fake.enqueue(FakeResponse.sse(CHAT.events(text="ok")), path=CHAT.upstream_path)
    reply = post_raw(client, running, CHAT, content)
    assert reply.status == 200
    sent = fake.last(CHAT.upstream_path).body
    assert json.loads(sent) == {
        **json.loads(content),
        "stream_options": {"x": 1, "include_usage": True},
    }
    it = iter(sent)
    assert all(b in it for b in content), "every client byte is still there, in order"


# -- keep-alive ----------------------------------------------------------------


def test_keepalive_comments_fill_silences_between_events(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(limits=Limits(keepalive_interval=0.2))
    events = ANTHROPIC.events(text="slow", usage=CACHED)
    chunks = [b"".join(events[:2]), b"".join(events[2:5]), b"".join(events[5:])]
    fake.enqueue(FakeResponse.sse(chunks, chunk_delay=0.7), path=ANTHROPIC.upstream_path)
    reply = post(client, running, ANTHROPIC, ANTHROPIC.body(True))
    assert reply.status == 200
    ka = b"(?:" + re.escape(KEEPALIVE) + b")"
    pattern = (
        (ka + b"*" + re.escape(chunks[0]) + ka + b"+" + re.escape(chunks[1]) + ka + b"+")
        + re.escape(chunks[2])
        + ka
        + b"*"
    )
    assert re.fullmatch(pattern, reply.body), reply.body.count(KEEPALIVE)
    assert reply.body.replace(KEEPALIVE, b"") == b"".join(events)
    assert reply.body.count(KEEPALIVE) >= 4  # 0.7 s gaps, 0.2 s interval
    iid = reply.iid
    assert ended(running, iid).status == "completed"
    got = grouped(running.recorder.for_interception(iid))
    assert got["TokenUsage"] == grouped([ANTHROPIC.token_usage(iid, CACHED)])["TokenUsage"]


def test_no_keepalive_when_turned_off(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(limits=Limits(keepalive_interval=None))
    events = ANTHROPIC.events(text="slow")
    chunks = [b"".join(events[:2]), b"".join(events[2:])]
    fake.enqueue(FakeResponse.sse(chunks, chunk_delay=0.3), path=ANTHROPIC.upstream_path)
    reply = post(client, running, ANTHROPIC, ANTHROPIC.body(True))
    assert reply.body == b"".join(events)


# -- client disconnect ---------------------------------------------------------


@api_param
def test_client_disconnect_cancels_upstream_and_keeps_partial_usage(
    running: Running, client: httpx.Client, fake: FakeUpstream, api: Api
) -> None:
    events = api.events(text="a long slow answer that the client abandons", usage=CACHED)
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.25), path=api.upstream_path)
    headers = {**api.headers, "content-type": "application/json"}
    body = json.dumps(api.body(True)).encode()
    with client.stream("POST", running.url + api.path, headers=headers, content=body) as r:
        assert r.status_code == 200
        iid = r.headers[ID_HEADER]
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if len(got) >= len(events[0]):
                break
        assert got == events[0]
    left = time.monotonic()
    while api.upstream_path not in fake.abandoned and time.monotonic() - left < 1.0:
        time.sleep(0.01)
    assert fake.abandoned == [api.upstream_path], "the upstream call was not closed within 1 s"
    end = ended(running, iid)
    assert end.status == "cancelled"
    assert end.http_status == 200
    usages = grouped(running.recorder.for_interception(iid)).get("TokenUsage", [])
    if api is ANTHROPIC:
        assert usages == grouped([api.token_usage(iid, CACHED, output=1)])["TokenUsage"]
    else:
        assert usages == []
    assert (
        grouped(running.recorder.for_interception(iid))["PromptUsage"]
        == grouped([PromptUsage(iid, api.response_id, PROMPT)])["PromptUsage"]
    )


# -- refusals ------------------------------------------------------------------


def test_responses_background_is_refused_with_501_in_openai_shape(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    reply = post(client, running, RESPONSES, RESPONSES.body(False, background=True))
    assert reply.status == 501
    assert reply.headers["content-type"] == "application/json"
    error = json.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and "background" in error["message"]
    assert fake.requests == []
    end = ended(running, reply.iid)
    assert (end.status, end.http_status) == ("failed", 501)


def test_websocket_upgrade_outside_responses_gets_a_plain_http_error(running: Running) -> None:
    """Only /v1/responses speaks WebSocket (tests/test_websocket.py); other
    bridged paths answer the upgrade with HTTP 426."""
    port = running.server.port
    request = (
        f"GET /openai/v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {HOST_TOKEN}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    status_line = data.split(b"\r\n", 1)[0]
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", status_line)
    assert match, status_line
    assert int(match.group(1)) == 426, status_line
