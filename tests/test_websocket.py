"""Responses over WebSocket: a real aiohttp WebSocket client, the bridge under
uvicorn on loopback, the fake upstream's WebSocket on another port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from aibridge_asgi import (
    BridgeHooks,
    Cost,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    ModelThought,
    PromptUsage,
    TokenUsage,
    ToolResult,
    ToolUsage,
)
from aibridge_asgi.testing import (
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
)
from aibridge_asgi.testing.streams import ToolCall, Usage, response_events

from .conftest import FAILING_TOKEN, HOST_TOKEN, Running

PATH = "/openai/v1/responses"
HEADERS = {
    "Authorization": f"Bearer {HOST_TOKEN}",
    "User-Agent": "codex_exec/0.171.0",
    "originator": "codex_exec",
    "session-id": "sess-42",
    "openai-beta": "responses_websockets=2026-02-06",
}


def ws_url(running: Running, path: str = PATH) -> str:
    return running.url.replace("http://", "ws://", 1) + path


def create(prompt: str, **extra: Any) -> str:
    body = {
        "type": "response.create",
        "model": "gpt-5",
        "stream": True,
        "input": [{"type": "message", "role": "user", "content": prompt}],
        **extra,
    }
    return json.dumps(body)


async def read_turn(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    """Frames up to and including a turn's last event."""
    frames: list[str] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frames.append(msg.data)
        kind = json.loads(msg.data)["type"]
        if kind in ("response.completed", "response.failed", "response.incomplete", "error"):
            return frames


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def settle(running: Running, count: int) -> InMemoryRecorder:
    recorder = running.recorder
    recorder.wait_sync(lambda r: len(r.of_type(InterceptionEnded)) >= count, 10)
    running.flush()
    return recorder


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check`` until it holds (another thread's server catches up)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def frames_of(events: list[bytes]) -> list[str]:
    out = []
    for event in events:
        for line in event.decode().splitlines():
            if line.startswith("data:"):
                out.append(line[5:].strip())
    return out


def test_many_turns_on_one_socket_each_with_records(running: Running, fake: FakeUpstream) -> None:
    answers = [
        response_events(f"answer {n}", response_id=f"resp_{n}", usage=Usage(10 + n, 5 + n))
        for n in range(3)
    ]
    for events in answers:
        fake.enqueue(FakeResponse.sse(events))

    async def main() -> list[list[str]]:
        turns = []
        async with (
            aiohttp.ClientSession() as session,
            # permessage-deflate towards the bridge, as Codex asks for it
            session.ws_connect(ws_url(running), headers=HEADERS, compress=15) as ws,
        ):
            assert ws.compress  # the server agreed (with its own window size)
            await ws.send_str(create("", generate=False, input=[]))
            warm = await read_turn(ws)
            assert json.loads(warm[-1])["type"] == "response.completed"
            for n in range(3):
                await ws.send_str(create(f"question {n}"))
                turns.append(await read_turn(ws))
        return turns

    turns = run(main())
    # Every frame reached the client as the upstream sent it.
    assert turns == [frames_of(events) for events in answers]
    recorder = settle(running, 3)
    starts = recorder.of_type(InterceptionStarted)
    ends = recorder.of_type(InterceptionEnded)
    assert len(starts) == 3 and len(ends) == 3  # the warm-up is not an interception
    assert len({s.interception_id for s in starts}) == 3
    for n, start in enumerate(starts):
        assert (start.route, start.streaming, start.model) == ("/responses", True, "gpt-5")
        assert (start.client, start.client_session_id) == ("Codex", "sess-42")
        assert start.actor.id == "alice"
        iid = start.interception_id
        end = recorder.ended(iid)
        assert end is not None and (end.status, end.http_status, end.error) == (
            "completed",
            200,
            None,
        )
        prompts = [p for p in recorder.of_type(PromptUsage) if p.interception_id == iid]
        assert [(p.prompt, p.provider_response_id) for p in prompts] == [
            (f"question {n}", f"resp_{n}")
        ]
        usage = [u for u in recorder.of_type(TokenUsage) if u.interception_id == iid]
        assert [(u.input_tokens, u.output_tokens) for u in usage] == [(10 + n, 5 + n)]
    assert len(recorder.of_type(PromptUsage)) == 3

    # One upstream socket, opened with the provider key; no host token upstream.
    [upstream] = fake.websockets
    assert upstream.header("authorization") == f"Bearer {OPENAI_KEY}"
    assert upstream.header("openai-beta") == "responses_websockets=2026-02-06"
    assert upstream.header("session-id") == "sess-42"
    assert all(HOST_TOKEN not in value for _, value in upstream.headers)
    assert [c.get("generate") for c in upstream.creates()] == [False, None, None, None]
    assert fake.requests == []  # nothing went over HTTP


def test_tool_call_turn_records_tools_and_thoughts(running: Running, fake: FakeUpstream) -> None:
    call = ToolCall("exec_command", {"cmd": "cat notes.txt"}, id="call_ws_1")
    fake.enqueue(
        FakeResponse.sse(response_events("", tool_calls=[call], reasoning="Read the notes first."))
    )
    fake.enqueue(FakeResponse.sse(response_events("The notes say hi.", response_id="resp_2")))
    output = {"type": "function_call_output", "call_id": "call_ws_1", "output": "hi"}

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("Show me notes.txt"))
            first = await read_turn(ws)
            assert "call_ws_1" in first[-1]
            await ws.send_str(create("", input=[output], previous_response_id="resp_fake01"))
            await read_turn(ws)

    run(main())
    recorder = settle(running, 2)
    first, second = recorder.of_type(InterceptionStarted)
    tools = recorder.of_type(ToolUsage)
    assert [(t.interception_id, t.tool, t.tool_call_id, t.args) for t in tools] == [
        (first.interception_id, "exec_command", "call_ws_1", {"cmd": "cat notes.txt"})
    ]
    thoughts = recorder.of_type(ModelThought)
    assert [(t.interception_id, t.content) for t in thoughts] == [
        (first.interception_id, "Read the notes first.")
    ]
    # The tool result turn carries no user prompt, and records the result.
    assert [p.interception_id for p in recorder.of_type(PromptUsage)] == [first.interception_id]
    results = recorder.of_type(ToolResult)
    assert [(r.interception_id, r.tool_call_id) for r in results] == [
        (second.interception_id, "call_ws_1")
    ]
    assert [recorder.ended(s.interception_id).status for s in (first, second)] == [  # type: ignore[union-attr]
        "completed",
        "completed",
    ]


def test_upstream_closing_mid_response_closes_the_client_with_its_code(
    running: Running, fake: FakeUpstream
) -> None:
    events = response_events("cut short")
    fake.enqueue(FakeResponse.sse(events[:4], cut=True))

    async def main() -> tuple[int | None, str, int]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            frames = 0
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frames += 1
            return ws.close_code, str(msg.extra or ""), frames

    code, reason, frames = run(main())
    assert (code, reason, frames) == (1011, "fake upstream cut", 4)
    recorder = settle(running, 1)
    [end] = recorder.of_type(InterceptionEnded)
    assert end.status == "failed"
    assert end.error is not None and "1011" in end.error
    assert len(recorder.of_type(InterceptionStarted)) == 1


def test_client_closing_mid_response_cancels_and_passes_its_code(
    running: Running, fake: FakeUpstream
) -> None:
    events = response_events("never finished")
    fake.enqueue(FakeResponse.sse(events[:3], hang=float("inf")))

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            for _ in range(3):
                await asyncio.wait_for(ws.receive(), 10)
            await ws.close(code=4000, message=b"user pressed ctrl-c")

    run(main())
    recorder = settle(running, 1)
    [end] = recorder.of_type(InterceptionEnded)
    assert (end.status, end.error) == ("cancelled", "client disconnected")
    [upstream] = fake.websockets
    assert eventually(lambda: upstream.close_code is not None)
    assert upstream.close_code == 4000


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"X-Api-Key": "nope"}],
    ids=["missing", "bearer", "x-api-key"],
)
def test_bad_token_is_refused_at_the_handshake(
    running: Running, fake: FakeUpstream, headers: dict[str, str]
) -> None:
    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(running), headers=headers)
            return refused.value.status

    assert run(main()) == 401
    running.flush()
    assert running.recorder.records == []
    assert fake.websockets == []


def test_refusal_body_is_openai_shaped(running: Running) -> None:
    """The handshake refusal is a plain HTTP answer a client can read."""
    port = running.server.port
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer wrong\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    error = json.loads(body)["error"]
    assert (error["code"], error["message"]) == ("invalid_api_key", "invalid credentials")


@pytest.mark.parametrize(
    "path", ["/openai/v1/chat/completions", "/anthropic/v1/messages", "/openai/v1/models", "/x"]
)
def test_other_paths_still_refuse_the_upgrade(running: Running, path: str) -> None:
    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(running, path), headers=HEADERS)
            return refused.value.status

    assert run(main()) == 426


def test_websocket_can_be_turned_off(running: Running, fake: FakeUpstream) -> None:
    running.bridge.websockets.settings.enabled = False

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(running), headers=HEADERS)
            return refused.value.status

    assert run(main()) == 426
    assert fake.websockets == []


def test_huge_frames_are_refused_with_a_clear_close(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    running = start_bridge(limits=Limits(max_body_size=50_000))

    async def main() -> tuple[int | None, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS, max_msg_size=0) as ws,
        ):
            await ws.send_str(create("x" * 60_000))
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            return ws.close_code, str(msg.extra)

    code, reason = run(main())
    assert code == 1009
    assert reason == "message is larger than the limit of 50000 bytes"
    # Nothing of the huge message went upstream, and no interception began.
    assert [s.messages for s in fake.websockets] == [[]]
    running.flush()
    assert running.recorder.of_type(InterceptionStarted) == []


def test_upstream_error_event_fails_the_turn_and_the_socket_stays_usable(
    running: Running, fake: FakeUpstream
) -> None:
    error = {"message": "Rate limit reached", "type": "rate_limit_exceeded", "code": "rate_limit"}
    fake.enqueue(FakeResponse.json({"error": error}, 429))

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("first"))
            [frame] = await read_turn(ws)
            assert json.loads(frame) == {"type": "error", "status": 429, "error": error}
            # A refusal by the bridge itself: no model.
            await ws.send_str(json.dumps({"type": "response.create", "input": "no model"}))
            [refusal] = await read_turn(ws)
            event = json.loads(refusal)
            assert (event["status"], event["error"]["code"]) == (400, "invalid_request")
            await ws.send_str(create("second"))
            frames = await read_turn(ws)
            assert json.loads(frames[-1])["type"] == "response.completed"

    run(main())
    recorder = settle(running, 3)
    ends = [(e.status, e.http_status) for e in recorder.of_type(InterceptionEnded)]
    assert ends == [("failed", 429), ("failed", 400), ("completed", 200)]
    assert "rate_limit" in (recorder.of_type(InterceptionEnded)[0].error or "")
    # The refused message never went upstream.
    assert len(fake.websockets[0].creates()) == 2


@pytest.mark.parametrize(
    ("upstream_status", "status"), [(404, 426), (400, 426), (401, 401), (429, 429), (503, 502)]
)
def test_upstream_refusing_the_upgrade(
    running: Running, fake: FakeUpstream, upstream_status: int, status: int
) -> None:
    """A provider without WebSocket support becomes 426, on which Codex falls
    back to HTTP at once; credentials and rate refusals keep their status."""
    fake.websocket_status = upstream_status

    async def main() -> tuple[int, str | None]:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(running), headers=HEADERS)
            headers = refused.value.headers or {}
            return refused.value.status, headers.get("retry-after")

    # The fake's 429 says "Retry-After: 7"; the client hears it too.
    assert run(main()) == (status, "7" if status == 429 else None)
    running.flush()
    assert running.recorder.records == []


def test_resolver_failure_is_a_503_at_the_handshake(running: Running, fake: FakeUpstream) -> None:
    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                headers = {"Authorization": f"Bearer {FAILING_TOKEN}"}
                await session.ws_connect(ws_url(running), headers=headers)
            return refused.value.status

    assert run(main()) == 503
    assert fake.websockets == []


def test_upstream_silent_mid_response_is_closed(running: Running, fake: FakeUpstream) -> None:
    running.bridge.websockets.settings.read_timeout = 0.3
    fake.enqueue(FakeResponse.sse(response_events("stalls")[:2], hang=float("inf")))

    async def main() -> tuple[int | None, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return ws.close_code, str(msg.extra)

    assert run(main()) == (1014, "the upstream provider stopped answering")
    recorder = settle(running, 1)
    [end] = recorder.of_type(InterceptionEnded)
    assert (end.status, end.error) == ("failed", "the upstream provider stopped answering")


def test_aclose_grace_period_cancels_a_hanging_turn(running: Running, fake: FakeUpstream) -> None:
    fake.enqueue(FakeResponse.sse(response_events("hangs")[:2], hang=float("inf")))

    async def main() -> tuple[int | None, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            await asyncio.wait_for(ws.receive(), 10)
            closing = asyncio.get_running_loop().run_in_executor(
                None, running.server.call, running.bridge.aclose(grace_period=0.2)
            )
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
            await closing
            return ws.close_code, str(msg.extra)

    assert run(main()) == (1001, "the AI gateway is shutting down")
    ends = running.recorder.of_type(InterceptionEnded)
    assert [(e.status, e.error) for e in ends] == [
        ("cancelled", "bridge shut down during the call")
    ]
    assert running.bridge.in_flight == 0


def test_unreachable_upstream_closes_with_a_reason(start_bridge: Callable[..., Running]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # nothing listens here once closed
    running = start_bridge(base_urls={"openai": f"http://127.0.0.1:{dead}/v1"})

    async def main() -> tuple[int | None, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            msg = await asyncio.wait_for(ws.receive(), 10)
            return ws.close_code, str(msg.extra)

    assert run(main()) == (1014, "the upstream provider could not be reached")


def test_idle_socket_is_closed(running: Running, fake: FakeUpstream) -> None:
    running.bridge.websockets.settings.idle_timeout = 0.3

    async def main() -> tuple[int | None, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            await read_turn(ws)
            msg = await asyncio.wait_for(ws.receive(), 10)
            return ws.close_code, str(msg.extra)

    assert run(main()) == (1001, "idle for 0.3 seconds")
    assert eventually(lambda: fake.websockets[0].close_code is not None)
    assert fake.websockets[0].close_code == 1001


def test_aclose_lets_the_running_turn_finish_then_closes(
    running: Running, fake: FakeUpstream
) -> None:
    events = response_events("slow answer")
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.05))

    async def main() -> tuple[list[str], int | None, str, int | None]:
        async with aiohttp.ClientSession() as session:
            idle = await session.ws_connect(ws_url(running), headers=HEADERS)
            busy = await session.ws_connect(ws_url(running), headers=HEADERS)
            await busy.send_str(create("take your time"))
            await asyncio.wait_for(busy.receive(), 10)  # the turn is running
            closing = asyncio.get_running_loop().run_in_executor(
                None, running.server.call, running.bridge.aclose()
            )
            frames = await read_turn(busy)
            end = await asyncio.wait_for(busy.receive(), 10)
            idle_end = await asyncio.wait_for(idle.receive(), 10)
            await closing
            await idle.close()
            await busy.close()
            return frames, busy.close_code, str(end.extra), idle_end.data

    frames, code, reason, idle_code = run(main())
    assert json.loads(frames[-1])["type"] == "response.completed"
    assert (code, reason, idle_code) == (1001, "the AI gateway is shutting down", 1001)
    ends = running.recorder.of_type(InterceptionEnded)
    assert [e.status for e in ends] == ["completed"]


def test_warmup_tokens_are_recorded_with_the_next_turn(
    running: Running, fake: FakeUpstream
) -> None:
    fake.warmup_usage = Usage(900, 0)

    async def main() -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("", generate=False, input=[]))
            warm = await read_turn(ws)
            await ws.send_str(create("real turn"))
            await read_turn(ws)
            return str(json.loads(warm[-1])["response"]["id"])

    warm_id = run(main())
    recorder = settle(running, 1)
    [start] = recorder.of_type(InterceptionStarted)
    usage = [
        (u.interception_id, u.provider_response_id, u.input_tokens)
        for u in recorder.of_type(TokenUsage)
    ]
    assert usage == [
        (start.interception_id, "resp_fake01", 12),
        (start.interception_id, warm_id, 900),
    ]
    assert [p.prompt for p in recorder.of_type(PromptUsage)] == ["real turn"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_no_task_or_socket_leaks_after_a_thousand_sockets(
    running: Running, fake: FakeUpstream
) -> None:
    async def tasks_on_server() -> int:
        return len(asyncio.all_tasks())

    async def cycle(session: aiohttp.ClientSession, n: int) -> None:
        async with session.ws_connect(ws_url(running), headers=HEADERS) as ws:
            if n % 10 == 0:  # some with a turn, some closed mid-response
                await ws.send_str(create("hi"))
                await read_turn(ws)
            elif n % 10 == 1:
                await ws.send_str(create("bye"))
                await ws.receive()

    async def main(count: int) -> None:
        async with aiohttp.ClientSession() as session:
            for start in range(0, count, 50):
                await asyncio.gather(*(cycle(session, n) for n in range(start, start + 50)))

    def quiet() -> None:
        """Wait until the servers have finished with every socket."""
        for _ in range(100):
            if running.bridge.websockets.open_sockets == 0 and running.bridge.in_flight == 0:
                break
            asyncio.run(asyncio.sleep(0.05))
        asyncio.run(asyncio.sleep(0.3))  # uvicorn's own per-connection tasks end

    run(main(50))  # warm up pools and lazily created clients
    settle(running, 10)
    quiet()
    tasks_before = running.server.call(tasks_on_server())
    fds_before = _open_fds()
    run(main(1000))
    recorder = settle(running, 10 + 200)
    quiet()
    assert running.bridge.websockets.open_sockets == 0
    assert running.bridge.in_flight == 0
    starts = recorder.of_type(InterceptionStarted)
    assert len(starts) == len(recorder.of_type(InterceptionEnded)) == 210
    assert len(fake.websockets) == 1050
    # Tasks and descriptors back where they were (a little slack for
    # connections the servers' keep-alive has not reaped yet).
    assert running.server.call(tasks_on_server()) <= tasks_before + 2
    assert _open_fds() <= fds_before + 10


def test_openai_python_sdk_websocket_mode_through_the_bridge(
    running: Running, fake: FakeUpstream
) -> None:
    """OpenAI's Python SDK (``client.responses.connect()``) over the bridge."""
    from openai import AsyncOpenAI

    async def main() -> str:
        client = AsyncOpenAI(api_key=HOST_TOKEN, base_url=running.url + "/openai/v1")
        text = ""
        async with client.responses.connect() as connection:
            await connection.response.create(model="gpt-5", input="Hello from the SDK")
            async for event in connection:
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.completed":
                    break
        await client.close()
        return text

    assert run(main()) == fake.reply
    recorder = settle(running, 1)
    [start] = recorder.of_type(InterceptionStarted)
    assert start.client == "openai-python", start.user_agent
    assert [p.prompt for p in recorder.of_type(PromptUsage)] == ["Hello from the SDK"]
    assert fake.websockets[0].header("authorization") == f"Bearer {OPENAI_KEY}"


def test_hooks_see_each_turn_once(start_bridge: Callable[..., Running], fake: FakeUpstream) -> None:
    seen: list[tuple[str, str]] = []

    class Hooks(BridgeHooks):
        def interception_started(self, started: Any, request_headers: Any) -> None:
            assert (b"session-id", b"sess-42") in request_headers
            seen.append(("started", started.interception_id))

        def upstream_responded(self, interception_id: str, status: int, seconds: float) -> None:
            seen.append(("responded", interception_id))

        def interception_ended(self, started: Any, ended: Any, timings: Any) -> None:
            assert timings.first_byte is not None and timings.total >= timings.first_byte
            seen.append(("ended", ended.interception_id))

    running = start_bridge(hooks=[Hooks()])

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("", generate=False, input=[]))
            await read_turn(ws)
            for prompt in ("one", "two"):
                await ws.send_str(create(prompt))
                await read_turn(ws)

    run(main())
    settle(running, 2)
    ids = [s.interception_id for s in running.recorder.of_type(InterceptionStarted)]
    assert seen == [(kind, iid) for iid in ids for kind in ("started", "responded", "ended")]


def test_upstream_not_answering_pings_is_closed(start_bridge: Callable[..., Running]) -> None:
    """The bridge pings the upstream every ``heartbeat`` seconds; an upstream
    that stops answering is closed, and so is the client (1014)."""
    from aiohttp import web

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    running = start_bridge(base_urls={"openai": f"http://127.0.0.1:{port}/v1"})
    running.bridge.websockets.settings.heartbeat = 0.2
    pinged = asyncio.Event()

    async def deaf(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # receives pings, never answers
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.PING:
                pinged.set()
        return ws

    async def main() -> tuple[int | None, str]:
        app = web.Application()
        app.router.add_get("/v1/responses", deaf)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(ws_url(running), headers=HEADERS) as ws,
            ):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert pinged.is_set()
                return ws.close_code, str(msg.extra)
        finally:
            await runner.cleanup()

    code, reason = run(main())
    assert code == 1014
    assert reason == "the upstream provider stopped answering pings"


def test_every_frame_that_could_start_a_response_is_recorded(
    running: Running, fake: FakeUpstream
) -> None:
    """A client cannot slip a turn past the records: an escaped type, a
    binary frame, or a frame the bridge cannot read (not relayed)."""
    escaped = create("escaped").replace('"response.create"', '"response\\u002ecreate"')
    assert "response.create" not in escaped

    async def main() -> list[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(escaped)
            await read_turn(ws)
            await ws.send_bytes(create("binary").encode())
            await read_turn(ws)
            refusals = []
            for junk in ('{"type": "response.create", "model": "gpt-5"', "[1, 2]"):
                await ws.send_str(junk)
                [frame] = await read_turn(ws)
                refusals.append(json.loads(frame)["error"]["message"])
            await ws.send_bytes(b"\xff\xfe")
            [frame] = await read_turn(ws)
            refusals.append(json.loads(frame)["error"]["message"])
            return refusals

    assert run(main()) == [
        "the message is not valid JSON",
        "the message must be a JSON object",
        "the message is not valid JSON",
    ]
    recorder = settle(running, 2)
    assert [p.prompt for p in recorder.of_type(PromptUsage)] == ["escaped", "binary"]
    assert [e.status for e in recorder.of_type(InterceptionEnded)] == ["completed"] * 2
    assert len(fake.websockets[0].messages) == 2  # the unreadable ones never went upstream


def test_pooled_keys_fail_over_at_the_handshake(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    """A pooled key the upstream refuses (401) is put aside and the socket
    opens with the next one; once every key is refused, 429 with Retry-After."""
    running = start_bridge(provider_keys={"openai": ["sk-revoked", OPENAI_KEY]})

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("hello"))
            await read_turn(ws)

    run(main())
    recorder = settle(running, 1)
    [end] = recorder.of_type(InterceptionEnded)
    assert (end.status, end.credential, end.key_name) == ("completed", "pool", "1")
    tried = [s.header("authorization") for s in fake.websockets]
    assert tried == ["Bearer sk-revoked", f"Bearer {OPENAI_KEY}"]

    exhausted = start_bridge(provider_keys={"openai": ["sk-revoked-1", "sk-revoked-2"]})

    async def refused() -> list[tuple[int, str | None]]:
        out = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                with pytest.raises(aiohttp.WSServerHandshakeError) as error:
                    await session.ws_connect(ws_url(exhausted), headers=HEADERS)
                headers = error.value.headers or {}
                out.append((error.value.status, headers.get("retry-after")))
        return out

    first, second = run(refused())
    assert first == (401, None)  # both keys refused on this handshake
    assert second[0] == 429 and second[1] is not None and int(second[1]) >= 1


def test_bring_your_own_key_over_websocket(
    start_bridge: Callable[..., Running], fake: FakeUpstream
) -> None:
    """The BYOK form: the host token in X-AIBridge-Token, the client's own
    key goes upstream instead of the pool's."""
    running = start_bridge(provider_keys={"openai": "sk-pool-key-not-accepted"})
    headers = {
        "X-AIBridge-Token": HOST_TOKEN,
        "Authorization": f"Bearer {OPENAI_KEY}",
        "User-Agent": "codex_exec/0.171.0",
    }

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=headers) as ws,
        ):
            await ws.send_str(create("my own key"))
            await read_turn(ws)

    run(main())
    recorder = settle(running, 1)
    [end] = recorder.of_type(InterceptionEnded)
    assert (end.status, end.credential) == ("completed", "byok")
    [upstream] = fake.websockets
    assert upstream.header("authorization") == f"Bearer {OPENAI_KEY}"
    assert upstream.header("x-aibridge-token") is None
    assert all(HOST_TOKEN not in value for _, value in upstream.headers)


def test_each_turn_is_priced_before_it_ends(running: Running, fake: FakeUpstream) -> None:
    """A Cost follows each TokenUsage (the warm-up's carried tokens too),
    before the turn's InterceptionEnded."""
    fake.warmup_usage = Usage(400, 0)

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(running), headers=HEADERS) as ws,
        ):
            await ws.send_str(create("", generate=False, input=[]))
            await read_turn(ws)
            for prompt in ("one", "two"):
                await ws.send_str(create(prompt))
                await read_turn(ws)

    run(main())
    recorder = settle(running, 2)
    kinds = [
        type(r).__name__
        for r in recorder.records
        if type(r).__name__ in ("TokenUsage", "Cost", "InterceptionEnded")
    ]
    assert kinds == [
        *("TokenUsage", "Cost", "TokenUsage", "Cost", "InterceptionEnded"),
        *("TokenUsage", "Cost", "InterceptionEnded"),
    ]
    costs = recorder.of_type(Cost)
    assert all(c.amount is not None and c.amount > 0 for c in costs), costs
    assert [c.model for c in costs] == ["gpt-5"] * 3
