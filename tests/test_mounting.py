"""Mounting the bridge in a host app, and shutting it down cleanly.

Starlette and FastAPI do not forward lifespan events to mounted apps, so a
host calls ``await bridge.aclose()`` (or uses ``async with bridge:``) on
shutdown; served alone, the bridge closes itself on lifespan shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from aibridge_asgi import (
    Bridge,
    InterceptionEnded,
    InterceptionStarted,
    TokenUsage,
    create_bridge,
)
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    ServerThread,
    streams,
)

from .conftest import HOST_TOKEN, Running, resolve
from .test_errors import assert_anthropic_error, assert_error

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
PREFIX = "/api/v2/aibridge"
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}

# (method, path below the mount, upstream path, body)
ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("POST", "/anthropic/v1/messages", "/v1/messages", MESSAGES_BODY),
    ("POST", "/anthropic/v1/messages", "/v1/messages", {**MESSAGES_BODY, "stream": True}),
    ("POST", "/openai/v1/chat/completions", "/v1/chat/completions", CHAT_BODY),
    ("POST", "/openai/v1/responses", "/v1/responses", {"model": "gpt-5", "input": "x"}),
    ("GET", "/anthropic/v1/models/claude-x", "/v1/models/claude-x", None),
    ("POST", "/anthropic/v1/messages/count_tokens", "/v1/messages/count_tokens", MESSAGES_BODY),
    ("GET", "/openai/v1/models", "/v1/models", None),
    ("GET", "/openai/v1/responses/resp_1/input_items", "/v1/responses/resp_1/input_items", None),
]


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("host ok")


def starlette_host(bridge: Bridge) -> Starlette:
    return Starlette(routes=[Route("/health", health), Mount(PREFIX, app=bridge)])


def fastapi_host(bridge: Bridge) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def fastapi_health() -> PlainTextResponse:
        return PlainTextResponse("host ok")

    app.mount(PREFIX, bridge)
    return app


@pytest.mark.parametrize(
    ("mount", "prefix"),
    [(None, ""), (starlette_host, PREFIX), (fastapi_host, PREFIX)],
    ids=["root", "starlette", "fastapi"],
)
def test_every_route_works_under_the_mount(
    start_bridge: Callable[..., Running],
    client: httpx.Client,
    fake: FakeUpstream,
    mount: Callable[[Bridge], Any] | None,
    prefix: str,
) -> None:
    running = start_bridge(mount=mount, prefix=prefix)
    for method, path, upstream_path, body in ROUTES:
        fake.requests.clear()
        r = client.request(method, f"{running.url}{path}?beta=true", headers=AUTH, json=body)
        assert r.status_code == 200, (path, r.text)
        (seen,) = fake.requests
        assert (seen.method, seen.path, seen.query) == (method, upstream_path, "beta=true")
    running.recorder.wait_ended(4)
    routes = [s.route for s in running.recorder.of_type(InterceptionStarted)]
    assert routes == ["/v1/messages", "/v1/messages", "/chat/completions", "/responses"]

    # The bridge's own errors keep working under the prefix.
    r = client.post(running.url + "/anthropic/v1/nothing", headers=AUTH, json={})
    assert_anthropic_error(r, 404)
    r = client.get(running.url + "/anthropic/v1/messages", headers=AUTH)
    assert_anthropic_error(r, 405)
    r = client.post(running.url + "/openai/v1/chat/completions", json=CHAT_BODY)
    assert_error(r, "openai", 401)
    if prefix:
        # The host's own routes are the host's, beside the mount.
        assert client.get(running.server.url + "/health").text == "host ok"
        r = client.get(running.server.url + "/anthropic/v1/models", headers=AUTH)
        assert r.status_code == 404  # the host's 404: outside the mount
    assert len(fake.requests) == 1


def test_interception_id_header_matches_the_records(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    """Every bridged response after authentication carries its interception id;
    nothing before it (401, 404, 405) and no passthrough response does."""
    fake.enqueue(FakeResponse.json({"error": {"message": "slow down"}}, status=429))
    bridged = [
        client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY),
        client.post(
            running.url + "/openai/v1/responses",
            headers=AUTH,
            json={"model": "gpt-5", "input": "x", "stream": True},
        ),
        client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT_BODY),
        client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, content=b"[]"),
    ]
    assert [r.status_code for r in bridged] == [429, 200, 200, 400]
    ids = [r.headers["x-aibridge-interception-id"] for r in bridged]
    assert len(set(ids)) == len(ids)
    running.recorder.wait_ended(len(ids))
    running.flush()
    assert [s.interception_id for s in running.recorder.of_type(InterceptionStarted)] == ids
    assert [e.interception_id for e in running.recorder.of_type(InterceptionEnded)] == ids
    for r in bridged[1:3]:
        usage = running.recorder.of_type(TokenUsage)
        assert r.headers["x-aibridge-interception-id"] in {u.interception_id for u in usage}

    for r in (
        client.post(running.url + "/anthropic/v1/messages", json=MESSAGES_BODY),
        client.post(running.url + "/anthropic/v2/messages", headers=AUTH, json=MESSAGES_BODY),
        client.get(running.url + "/anthropic/v1/messages", headers=AUTH),
        client.get(running.url + "/anthropic/v1/models", headers=AUTH),
    ):
        assert "x-aibridge-interception-id" not in r.headers, r.request.url


def slow_stream() -> FakeResponse:
    """An Anthropic stream of about 0.6 seconds."""
    events = streams.anthropic_events("one two three four five six", pieces=6)
    return FakeResponse.sse(events, chunk_delay=0.6 / len(events))


def stream_in_thread(
    client: httpx.Client, url: str, results: list[httpx.Response | Exception]
) -> threading.Thread:
    def run() -> None:
        try:
            body = {**MESSAGES_BODY, "stream": True}
            results.append(client.post(url, headers=AUTH, json=body, timeout=10))
        except httpx.HTTPError as exc:  # a cut stream
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def enqueue_signalled(fake: FakeUpstream, answer: FakeResponse) -> threading.Event:
    """Script ``answer``; the event is set when the upstream got the request
    (no polling: the fake calls back)."""
    reached = threading.Event()

    def respond(request: object) -> FakeResponse:
        reached.set()
        return answer

    fake.enqueue(respond)
    return reached


def wait_for_upstream(reached: threading.Event) -> None:
    assert reached.wait(5), "the request never reached upstream"


@pytest.mark.parametrize("how", ["aclose", "async with"])
def test_shutdown_waits_for_the_in_flight_call_and_flushes_records(
    start_bridge: Callable[..., Running],
    client: httpx.Client,
    fake: FakeUpstream,
    how: str,
) -> None:
    recorder = InMemoryRecorder(delay=0.05)  # records still pending at shutdown
    running = start_bridge(mount=starlette_host, prefix=PREFIX, recorder=recorder)
    reached = enqueue_signalled(fake, slow_stream())
    results: list[httpx.Response | Exception] = []
    thread = stream_in_thread(client, running.url + "/anthropic/v1/messages", results)
    wait_for_upstream(reached)

    async def use_and_leave() -> None:
        async with running.bridge:
            pass

    began = time.monotonic()
    running.server.call(running.bridge.aclose() if how == "aclose" else use_and_leave())
    took = time.monotonic() - began
    assert 0.3 < took < 5, took  # it waited for the stream
    # By the time it returned, the client had its whole answer...
    thread.join(1)
    assert not thread.is_alive()
    (response,) = results
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert b"event: message_stop" in response.content
    # ...and every record had reached the recorder, without a flush.
    kinds = [type(r).__name__ for r in recorder.records]
    assert kinds[0] == "InterceptionStarted" and kinds[-1] == "InterceptionEnded", kinds
    assert "TokenUsage" in kinds
    (ended,) = recorder.of_type(InterceptionEnded)
    assert ended.status == "completed"

    # Closed: new calls get a 503 in the provider's shape, and no records.
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert_anthropic_error(r, 503)
    assert len(fake.requests) == 1


def test_aclose_grace_period_cancels_calls_still_running(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """Past the grace period the call is cancelled, and still ends with records."""
    running = start_bridge()
    reached = enqueue_signalled(fake, slow_stream())
    results: list[httpx.Response | Exception] = []
    thread = stream_in_thread(client, running.url + "/anthropic/v1/messages", results)
    wait_for_upstream(reached)
    began = time.monotonic()
    running.server.call(running.bridge.aclose(grace_period=0.2))
    assert time.monotonic() - began < 0.8
    thread.join(5)
    (started,) = running.recorder.of_type(InterceptionStarted)
    ended = running.recorder.ended(started.interception_id)
    assert ended is not None, [type(r).__name__ for r in running.recorder.records]
    assert ended.status == "cancelled"
    assert len(running.recorder.of_type(InterceptionEnded)) == 1


@pytest.mark.parametrize("host", ["bridge alone", "starlette host with lifespan"])
def test_lifespan_shutdown_flushes_records(
    upstream: ServerThread, client: httpx.Client, host: str
) -> None:
    recorder = InMemoryRecorder(delay=0.1)
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY},
        base_urls={"anthropic": upstream.url, "openai": upstream.url + "/v1"},
        recorder=recorder,
    )
    prefix = ""
    app: Any = bridge
    if host != "bridge alone":

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await bridge.aclose()

        app = Starlette(routes=[Mount(PREFIX, app=bridge)], lifespan=lifespan)
        prefix = PREFIX
    server = ServerThread(app, lifespan="on").start()
    try:
        r = client.post(
            server.url + prefix + "/openai/v1/chat/completions", headers=AUTH, json=CHAT_BODY
        )
        assert r.status_code == 200
        assert recorder.of_type(InterceptionEnded) == []  # the recorder is slow
    finally:
        server.stop()
    kinds = [type(x).__name__ for x in recorder.records]
    assert kinds[0] == "InterceptionStarted" and kinds[-1] == "InterceptionEnded", kinds
    assert recorder.records[-1].interception_id == r.headers["x-aibridge-interception-id"]
