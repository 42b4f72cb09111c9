"""The same wire behaviour through both upstream seams (aiohttp, the default,
and httpx, used when a host injects a client or transport)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from aibridge_asgi import InterceptionEnded, Timeouts
from aibridge_asgi.testing import FakeResponse, FakeUpstream, ServerThread, streams
from aibridge_asgi.upstream import AiohttpUpstream, HttpxUpstream, Upstream

from .conftest import HOST_TOKEN, Running

SEAMS: dict[str, Callable[[Timeouts], Upstream]] = {
    "aiohttp": AiohttpUpstream,
    "httpx": HttpxUpstream,
}
AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(params=sorted(SEAMS))
def seam(request: pytest.FixtureRequest) -> Callable[[Timeouts], Upstream]:
    return SEAMS[request.param]


def test_query_and_headers_pass_exactly(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    running = start_bridge(upstream=seam(Timeouts()))
    query = "client_version=0.1&x=%2F..%2Fa&y=a+b&z=%C3%A9"
    request = client.build_request(
        "POST",
        f"{running.url}/openai/v1/chat/completions?{query}",
        headers={**AUTH, "X-Custom": "spaced\tvalue  x", "anthropic-beta": "a,b , c"},
        json=CHAT,
    )
    del request.headers["user-agent"]
    del request.headers["accept"]
    r = client.send(request)
    assert r.status_code == 200, r.text
    seen = fake.last()
    assert seen.query == query
    assert seen.header("x-custom") == "spaced\tvalue  x"
    assert seen.header("anthropic-beta") == "a,b , c"
    assert seen.header("user-agent") is None
    assert seen.header("accept") is None
    assert seen.header("accept-encoding") == "identity"


def test_unreachable_and_timeout(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    closed = start_bridge(
        upstream=seam(Timeouts()),
        base_urls={"anthropic": "http://127.0.0.1:9", "openai": "http://127.0.0.1:9/v1"},
    )
    r = client.post(closed.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unreachable"

    slow = start_bridge(upstream=seam(Timeouts(read=0.3)))
    fake.enqueue(FakeResponse.json(streams.chat_completion(), delay=1.0))
    r = client.post(slow.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    ends = slow.recorder.wait_ended()
    assert (ends[0].status, ends[0].http_status) == ("failed", 504)


def test_read_timeout_bounds_each_silence_not_the_whole_answer(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    """A stream whose events come 0.15 s apart runs well past a 0.4 s read
    timeout and completes; the same timeout cuts a stream that falls silent
    after its first events."""
    running = start_bridge(upstream=seam(Timeouts(read=0.4)))
    events = streams.chat_events("one two three four five six", pieces=6, include_usage=False)
    fake.enqueue(FakeResponse.sse(events, chunk_delay=0.15))
    began = time.monotonic()
    body = {**CHAT, "stream": True}
    r = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
    assert time.monotonic() - began > 0.4 * 2  # longer than the timeout, twice over
    assert r.status_code == 200 and r.content == b"".join(events)
    ended = running.recorder.wait_ended()[0]
    assert (ended.status, ended.error) == ("completed", None)

    fake.enqueue(FakeResponse.sse(events[:3], hang=5.0))
    got = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),  # cut, as the upstream fell silent
        client.stream(
            "POST", running.url + "/openai/v1/chat/completions", headers=AUTH, json=body
        ) as streamed,
    ):
        for piece in streamed.iter_raw():
            got += piece
    assert got == b"".join(events[:3])
    ended = running.recorder.wait_ended(2)[-1]
    assert ended.status == "failed" and ended.error is not None and "timed out" in ended.error


def test_cut_stream_reaches_the_client_cut(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    running = start_bridge(upstream=seam(Timeouts()))
    events = streams.chat_events(include_usage=True)
    fake.enqueue(FakeResponse.sse(events[:3], cut=True))
    got = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream(
            "POST",
            running.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        ) as r,
    ):
        for chunk in r.iter_raw():
            got += chunk
    assert got == b"".join(events[:3])
    (end,) = running.recorder.wait_ended()
    assert isinstance(end, InterceptionEnded)
    assert end.status == "failed"
    assert end.error is not None and "upstream" in end.error


def test_redirects_are_not_followed(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    client: httpx.Client,
) -> None:
    running = start_bridge(upstream=seam(Timeouts()))
    fake.enqueue(FakeResponse(status=307, headers=[("location", "http://127.0.0.1:9/steal")]))
    r = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    assert r.status_code == 307
    assert r.headers["location"] == "http://127.0.0.1:9/steal"
    assert len(fake.requests) == 1


def test_upstream_cookies_are_not_kept_between_calls(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    fake: FakeUpstream,
    upstream: ServerThread,
    client: httpx.Client,
) -> None:
    """The bridge's own session serves every user: a cookie the upstream
    sets reaches the client that got it, never a later call upstream."""
    # A host name, not an address: cookie jars refuse cookies for addresses.
    base = upstream.url.replace("127.0.0.1", "localhost")
    running = start_bridge(upstream=seam(Timeouts()), base_urls={"openai": base + "/v1"})
    cookie = "__cf_bm=abc123; path=/; HttpOnly"
    fake.enqueue(FakeResponse.json(streams.chat_completion(), headers=[("set-cookie", cookie)]))
    first = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    assert first.status_code == 200
    assert first.headers["set-cookie"] == cookie
    second = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    assert second.status_code == 200
    assert len(fake.requests) == 2
    assert fake.last().header("cookie") is None
