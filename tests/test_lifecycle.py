"""Records: exactly one InterceptionStarted and one InterceptionEnded per
authenticated bridged request, whatever happens, delivered off the response
path; what InterceptionStarted says about the request.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from aibridge_asgi import (
    Actor,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    ProviderConfig,
    Timeouts,
    TokenUsage,
)
from aibridge_asgi.testing import (
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    ServerThread,
    streams,
)

from .conftest import HOST_TOKEN, OTHER_TOKEN, Running
from .test_errors import closed_port

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-5-codex", "input": "hi", "stream": True}


def pair(
    running: Running, response: httpx.Response
) -> tuple[InterceptionStarted, InterceptionEnded]:
    """The start and end records of the interception behind ``response``, checking
    that there is exactly one of each, start first and end last."""
    interception_id = response.headers["x-aibridge-interception-id"]
    return pair_by_id(running, interception_id)


def pair_by_id(
    running: Running, interception_id: str
) -> tuple[InterceptionStarted, InterceptionEnded]:
    running.recorder.wait_sync(lambda r: r.ended(interception_id) is not None)
    running.flush()
    records = running.recorder.for_interception(interception_id)
    starts = [r for r in records if isinstance(r, InterceptionStarted)]
    ends = [r for r in records if isinstance(r, InterceptionEnded)]
    assert len(starts) == 1 and len(ends) == 1, [type(r).__name__ for r in records]
    assert records[0] is starts[0] and records[-1] is ends[0]
    assert starts[0].started_at <= ends[0].ended_at
    return starts[0], ends[0]


@dataclass
class Case:
    name: str
    send: Callable[[], httpx.Response]
    status: str
    http_status: int | None
    error: str = ""  # what InterceptionEnded.error holds (a part of it)
    model: str = ""


def test_started_and_ended_pair_up_whatever_the_outcome(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(limits=Limits(max_body_size=1024), timeouts=Timeouts(read=0.3))
    dead_base = f"http://127.0.0.1:{closed_port()}"
    unreachable = start_bridge(base_urls={"anthropic": dead_base, "openai": dead_base + "/v1"})
    url = running.url

    def post(path: str, **kwargs: Any) -> httpx.Response:
        return client.post(url + path, headers=AUTH, **kwargs)

    def scripted(
        answer: FakeResponse, path: str, body: dict[str, Any]
    ) -> Callable[[], httpx.Response]:
        def send() -> httpx.Response:
            fake.enqueue(answer)
            return post(path, json=body)

        return send

    def chunked() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    cut_stream = streams.anthropic_events("never finished", pieces=4)[:4]
    cases = [
        Case(
            "success",
            lambda: post("/anthropic/v1/messages", json=MESSAGES_BODY),
            "completed",
            200,
            model="claude-sonnet-4-5",
        ),
        Case(
            "streamed success",
            lambda: post("/openai/v1/responses", json=RESPONSES_BODY),
            "completed",
            200,
            model="gpt-5-codex",
        ),
        Case(
            "upstream 429",
            scripted(
                FakeResponse.json(
                    {"error": {"message": "Rate limit reached", "type": "requests"}}, status=429
                ),
                "/openai/v1/chat/completions",
                CHAT_BODY,
            ),
            "failed",
            429,
            "upstream answered 429: Rate limit reached",
            model="gpt-5",
        ),
        Case(
            "upstream timeout",
            scripted(FakeResponse.json({}, delay=0.6), "/anthropic/v1/messages", MESSAGES_BODY),
            "failed",
            504,
            "did not answer in time",
            model="claude-sonnet-4-5",
        ),
        Case(
            "stream cut by upstream",
            scripted(
                FakeResponse.sse(cut_stream, cut=True),
                "/anthropic/v1/messages",
                {**MESSAGES_BODY, "stream": True},
            ),
            "failed",
            200,
            "upstream connection failed",
            model="claude-sonnet-4-5",
        ),
        Case(
            "non-streamed answer cut by upstream",
            scripted(
                FakeResponse(chunks=[b'{"id": "msg_1", "content": ['], cut=True),
                "/anthropic/v1/messages",
                MESSAGES_BODY,
            ),
            "failed",
            502,
            "upstream connection failed",
            model="claude-sonnet-4-5",
        ),
        Case(
            "unreachable upstream",
            lambda: client.post(
                unreachable.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY
            ),
            "failed",
            502,
            "upstream connection failed",
            model="claude-sonnet-4-5",
        ),
        Case(
            "400 not JSON",
            lambda: post("/anthropic/v1/messages", content=b"{"),
            "failed",
            400,
            "not valid JSON",
        ),
        Case(
            "400 no model",
            lambda: post("/openai/v1/chat/completions", json={"messages": []}),
            "failed",
            400,
            "'model' is required",
        ),
        Case(
            "413 declared",
            lambda: post("/anthropic/v1/messages", content=b" " * 2000),
            "failed",
            413,
            "larger than the limit",
        ),
        Case(
            "413 chunked",
            lambda: post("/openai/v1/responses", content=chunked()),
            "failed",
            413,
            "larger than the limit",
        ),
    ]
    problems = []
    for case in cases:
        try:
            response = case.send()
        except httpx.RemoteProtocolError:  # the cut stream
            interception_id = fake_last_interception(running)
        else:
            interception_id = response.headers["x-aibridge-interception-id"]
        target = unreachable if case.name == "unreachable upstream" else running
        started, ended = pair_by_id(target, interception_id)
        got = (ended.status, ended.http_status, started.model)
        if got != (case.status, case.http_status, case.model):
            problems.append((case.name, got, ended.error))
        elif case.status == "completed" and ended.error is not None:
            problems.append((case.name, "error on a completed call", ended.error))
        elif case.status != "completed" and not (ended.error and case.error in ended.error):
            problems.append((case.name, f"error should hold {case.error!r}", ended.error))
    assert not problems, "\n".join(map(repr, problems))
    # Nothing else was recorded: one start and one end per case.
    running.flush()
    starts = running.recorder.of_type(InterceptionStarted) + unreachable.recorder.of_type(
        InterceptionStarted
    )
    ends = running.recorder.of_type(InterceptionEnded) + unreachable.recorder.of_type(
        InterceptionEnded
    )
    assert len(starts) == len(ends) == len(cases)


def fake_last_interception(running: Running) -> str:
    """The id of the latest interception, for a response the client never got whole."""
    running.recorder.wait_sync(lambda r: bool(r.of_type(InterceptionStarted)))
    return running.recorder.of_type(InterceptionStarted)[-1].interception_id


def test_client_leaving_mid_stream_is_cancelled_and_upstream_call_stops(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    events = streams.anthropic_events("a b c d e f g h i j k l", pieces=12)
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.1))
    body = {**MESSAGES_BODY, "stream": True}
    with client.stream(
        "POST", running.url + "/anthropic/v1/messages", headers=AUTH, json=body
    ) as r:
        assert r.status_code == 200
        interception_id = r.headers["x-aibridge-interception-id"]
        first = next(r.iter_raw())
        assert first.startswith(b"event: message_start")
    # Leaving the block closed the connection with the body unread.
    started, ended = pair_by_id(running, interception_id)
    assert (ended.status, ended.http_status, ended.error) == (
        "cancelled",
        200,
        "client disconnected",
    )
    assert started.streaming is True
    deadline = time.monotonic() + 3
    while fake.abandoned != ["/v1/messages"]:
        assert time.monotonic() < deadline, "the upstream call was not cancelled"
        time.sleep(0.02)
    # The usage seen before the client left is still recorded.
    usage = [
        r for r in running.recorder.for_interception(interception_id) if isinstance(r, TokenUsage)
    ]
    assert len(usage) == 1 and usage[0].input_tokens == 12


def test_client_leaving_while_sending_its_body_is_cancelled(
    running: Running, fake: FakeUpstream
) -> None:
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {HOST_TOKEN}\r\n".encode()
            + b"User-Agent: claude-cli/2.1.328 (external, sdk-cli)\r\n"
            + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            + b'{"model": "claude-sonnet-4-5", "messages": ['
        )
        time.sleep(0.1)  # the bridge is reading the body when the client leaves
    running.recorder.wait_sync(lambda r: bool(r.of_type(InterceptionStarted)), timeout=3)
    (started,) = running.recorder.of_type(InterceptionStarted)
    started, ended = pair_by_id(running, started.interception_id)
    assert (ended.status, ended.http_status) == ("cancelled", None)
    assert ended.error == "client disconnected while sending"
    assert started.model == ""
    assert started.client == "Claude Code"
    assert fake.requests == []


def test_a_failing_recorder_breaks_nothing(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    recorder = InMemoryRecorder(fail_with=RuntimeError("recorder down"))
    running = start_bridge(recorder=recorder)
    ids: list[str] = []
    for failing in (True, False):
        recorder.fail_with = RuntimeError("recorder down") if failing else None
        r = client.post(
            running.url + "/anthropic/v1/messages",
            headers=AUTH,
            json={**MESSAGES_BODY, "stream": True},
        )
        assert r.status_code == 200
        assert b"event: message_stop" in r.content
        ids.append(r.headers["x-aibridge-interception-id"])
        r = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT_BODY)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
        ids.append(r.headers["x-aibridge-interception-id"])
        r = client.post(running.url + "/openai/v1/responses", headers=AUTH, content=b"[")
        assert r.status_code == 400
        ids.append(r.headers["x-aibridge-interception-id"])
        running.flush()
    # The failures dropped the first three calls' records; delivery went on.
    assert [e.interception_id for e in recorder.of_type(InterceptionEnded)] == ids[3:]


def test_a_slow_recorder_does_not_delay_responses(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    running = start_bridge(recorder=InMemoryRecorder(delay=0.5))
    began = time.monotonic()
    r = client.post(
        running.url + "/anthropic/v1/messages",
        headers=AUTH,
        json={**MESSAGES_BODY, "stream": True},
    )
    took = time.monotonic() - began
    assert r.status_code == 200
    assert b"event: message_stop" in r.content
    # The answer makes four records, 0.5 s each to deliver: waiting for even
    # one of them would have taken longer than the whole answer did.
    assert took < 0.4, took
    assert running.recorder.records == []
    # They do arrive, in order (the teardown's aclose() waits for the rest).
    running.recorder.wait_sync(lambda rec: len(rec.records) >= 1, timeout=2)
    assert isinstance(running.recorder.records[0], InterceptionStarted)


def test_interception_started_describes_the_request(
    start_bridge: Callable[..., Running], client: httpx.Client, upstream: ServerThread
) -> None:
    azure = ProviderConfig(
        "azure", "openai", "azure-key", base_url=upstream.url + "/v1", key_header="api-key"
    )
    running = start_bridge(providers=[azure])
    session = "8a2f2b3e-39c2-4f55-9a54-d2c1f0e0a001"

    claude = client.post(
        running.url + "/anthropic/v1/messages?beta=true",
        headers={
            "X-Api-Key": HOST_TOKEN,
            "User-Agent": "claude-cli/2.1.328 (external, sdk-cli)",
            "X-Claude-Code-Session-Id": session,
            "x-app": "cli",
        },
        json={**MESSAGES_BODY, "stream": True},
    )
    claude_by_user_id = client.post(
        running.url + "/anthropic/v1/messages",
        headers={"X-Api-Key": HOST_TOKEN, "User-Agent": "claude-cli/2.1.328 (external, cli)"},
        json={
            **MESSAGES_BODY,
            "metadata": {"user_id": json.dumps({"device_id": "d1", "session_id": "s-from-body"})},
        },
    )
    codex = client.post(
        running.url + "/openai/v1/responses",
        headers={
            "Authorization": f"Bearer {OTHER_TOKEN}",
            "User-Agent": "codex_exec/0.169.0 (Ubuntu 24.4.0; x86_64) xterm-256color",
            "originator": "codex_exec",
            "session-id": "0199-codex-session",
            "thread-id": "0199-codex-thread",
        },
        json=RESPONSES_BODY,
    )
    plain = client.post(
        running.url + "/azure/v1/chat/completions",
        headers={**AUTH, "User-Agent": "my-script/1.0"},
        json=CHAT_BODY,
    )
    assert [r.status_code for r in (claude, claude_by_user_id, codex)] == [200, 200, 200]
    assert plain.headers.get("x-aibridge-interception-id")  # the fake refuses Azure's key

    alice = Actor("alice", {"username": "alice"})
    expected = [
        (claude, alice, "anthropic", "anthropic", "claude-sonnet-4-5", "/v1/messages", True,
         "Claude Code", session, "claude-cli/2.1.328 (external, sdk-cli)"),
        (claude_by_user_id, alice, "anthropic", "anthropic", "claude-sonnet-4-5",
         "/v1/messages", False, "Claude Code", "s-from-body",
         "claude-cli/2.1.328 (external, cli)"),
        (codex, Actor("bob"), "openai", "openai", "gpt-5-codex", "/responses", True, "Codex",
         "0199-codex-session", "codex_exec/0.169.0 (Ubuntu 24.4.0; x86_64) xterm-256color"),
        (plain, alice, "openai", "azure", "gpt-5", "/chat/completions", False, "unknown", None,
         "my-script/1.0"),
    ]  # fmt: skip
    for response, actor, kind, name, model, route, streaming, app, sid, agent in expected:
        started, _ = pair(running, response)
        got = (
            started.actor,
            started.provider,
            started.provider_name,
            started.model,
            started.route,
            started.streaming,
            started.client,
            started.client_session_id,
            started.user_agent,
            dict(started.metadata),
        )
        assert got == (
            actor, kind, name, model, route, streaming, app, sid, agent, dict(actor.metadata)
        ), route  # fmt: skip
        assert started.started_at.tzinfo is not None


def test_no_records_for_passthrough_or_refused_requests(
    running: Running, client: httpx.Client
) -> None:
    url = running.url
    assert client.get(url + "/anthropic/v1/models", headers=AUTH).status_code == 200
    assert client.get(url + "/openai/v1/models/gpt-5", headers=AUTH).status_code == 200
    r = client.post(url + "/anthropic/v1/messages/count_tokens", headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 200
    assert client.get(url + "/openai/v1/responses/resp_1", headers=AUTH).status_code == 200
    assert client.post(url + "/anthropic/v1/messages", json=MESSAGES_BODY).status_code == 401
    r = client.post(url + "/anthropic/v1/messages", headers={"X-Api-Key": "x"}, json={})
    assert r.status_code == 401
    assert client.get(url + "/anthropic/v1/messages", headers=AUTH).status_code == 405
    assert client.post(url + "/anthropic/v9/messages", headers=AUTH).status_code == 404
    # One bridged call last: once its records are in, every earlier one would be too.
    marker = client.post(url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT_BODY)
    pair(running, marker)
    ids = {getattr(r, "interception_id", None) for r in running.recorder.records}
    assert ids == {marker.headers["x-aibridge-interception-id"]}
