"""Hardening against bad input from clients, over real loopback sockets.

Each hostile request gets a clear answer (a provider-shaped 4xx from the
bridge, or a refusal by the HTTP server in front of it), nothing smuggled
reaches the upstream, and afterwards the bridge still serves a normal
request and every interception that started has ended exactly once.

Raw sockets are used wherever httpx would refuse (or normalise) what is
sent. The raw-socket cases run under both of uvicorn's HTTP parsers
(httptools and h11), since hosts run either.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from aibridge_asgi import (
    Actor,
    Bridge,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    Timeouts,
    create_bridge,
)
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeUpstream,
    InMemoryRecorder,
    ServerThread,
)
from aibridge_asgi.upstream import AiohttpUpstream, HttpxUpstream, Upstream

from .conftest import HOST_TOKEN, OTHER_TOKEN, Running, resolve
from .test_errors import ANTHROPIC_TYPES, assert_error

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
MESSAGES_RAW = json.dumps(MESSAGES_BODY).encode()

# (bridge path, provider kind, a body template with one %s for a JSON value)
BRIDGED_TEMPLATES: list[tuple[str, str, bytes]] = [
    (
        "/anthropic/v1/messages",
        "anthropic",
        b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":%s}]}',
    ),
    (
        "/openai/v1/chat/completions",
        "openai",
        b'{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":%s}]}',
    ),
    ("/openai/v1/responses", "openai", b'{"model":"gpt-5","input":%s}'),
]

SERVER_IMPLS = ["httptools", "h11"]

SEAMS: dict[str, Callable[[Timeouts], Upstream]] = {
    "aiohttp": AiohttpUpstream,
    "httpx": HttpxUpstream,
}


# -- helpers shared with the other hardening modules ------------------------------


@dataclass
class RawResponse:
    """What a raw HTTP exchange got back; ``status`` is None when the server
    closed the connection without answering."""

    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send ``data`` as is on a fresh loopback connection; read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may refuse early; its answer is still readable then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        response = http.client.HTTPResponse(sock, method="POST")
        try:
            response.begin()
            return RawResponse(response.status, response.getheaders(), response.read())
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
            return RawResponse(None)


def http_request(
    target: bytes,
    headers: Sequence[bytes],
    body: bytes = b"",
    method: bytes = b"POST",
    *,
    content_type: bytes | None = b"application/json",
) -> bytes:
    """An HTTP/1.1 request with a Content-Length; ``headers`` are whole lines
    (without their CRLF), sent exactly as given."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bearer(token: bytes | str) -> bytes:
    return b"Authorization: Bearer " + (token.encode() if isinstance(token, str) else token)


def assert_all_ended(running: Running, timeout: float = 5.0) -> tuple[int, int]:
    """Every InterceptionStarted has exactly one InterceptionEnded, and no end
    comes without its start. Returns (starts, ends)."""
    deadline = time.monotonic() + timeout
    while True:
        running.flush()
        starts = Counter(r.interception_id for r in running.recorder.of_type(InterceptionStarted))
        ends = Counter(r.interception_id for r in running.recorder.of_type(InterceptionEnded))
        if starts == ends or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert all(n == 1 for n in starts.values()), "an interception started twice"
    assert all(n == 1 for n in ends.values()), "an interception ended twice"
    assert set(starts) == set(ends), {
        "started, never ended": sorted(set(starts) - set(ends)),
        "ended, never started": sorted(set(ends) - set(starts)),
    }
    assert running.server.call(_in_flight(running.bridge)) == 0
    return sum(starts.values()), sum(ends.values())


async def _in_flight(bridge: Bridge) -> int:
    return bridge.in_flight


def assert_healthy(running: Running) -> None:
    """The bridge still serves a normal request, and every started
    interception has ended exactly once."""
    with httpx.Client(timeout=10) as client:
        r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "Hello from the fake upstream."
    assert_all_ended(running)


def assert_shaped(response: httpx.Response, kind: str, status: int) -> dict[str, Any]:
    """An error the bridge answered itself, in provider ``kind``'s shape (also
    for statuses the shared helper in test_errors does not list: 408, 415)."""
    if status in ANTHROPIC_TYPES:
        return assert_error(response, kind, status)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], body
    if kind == "anthropic":
        assert body["type"] == "error" and isinstance(error["type"], str), body
    else:
        assert set(body) == {"error"} and {"type", "param", "code"} <= set(error), body
    return body


def bridge_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR (or worse) records the bridge logged: a traceback for bad input
    would show here."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("aibridge_asgi") and r.levelno >= logging.ERROR
    ]


@pytest.fixture
def serve(upstream: ServerThread, fake: FakeUpstream) -> Iterator[Callable[..., Running]]:
    """Like ``start_bridge``, with the uvicorn HTTP parser chosen (``http=``)
    and an optional ASGI wrapper around the bridge (``wrap=``)."""
    started: list[tuple[ServerThread, Bridge]] = []

    def start(
        *,
        http: str = "httptools",
        wrap: Callable[[Bridge], Any] | None = None,
        recorder: InMemoryRecorder | None = None,
        **options: Any,
    ) -> Running:
        options.setdefault("provider_keys", {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY})
        options.setdefault("base_urls", {"anthropic": upstream.url, "openai": upstream.url + "/v1"})
        options.setdefault("resolve_token", resolve)
        recorder = recorder if recorder is not None else InMemoryRecorder()
        bridge = create_bridge(recorder=recorder, **options)
        server = ServerThread(wrap(bridge) if wrap else bridge, http=http).start()
        started.append((server, bridge))
        return Running(bridge, server, recorder, "")

    yield start
    for server, bridge in started:
        server.call(bridge.aclose())
        server.stop()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- bodies ---------------------------------------------------------------------------


INVALID_UTF8 = {
    "a stray continuation byte": b'{"model":"claude-x","messages":[],"x":"\x80"}',
    "an invalid start byte": b'{"model":"claude-x\xff","messages":[]}',
    "an overlong slash": b'{"model":"claude-x","x":"\xc0\xaf"}',
    "an encoded surrogate": b'{"model":"claude-x","x":"\xed\xa0\x80"}',
    "a truncated sequence at the end": b'{"model":"claude-x","x":"\xe2\x98"}',
    "latin-1 text": '{"model":"claude-x","x":"café"}'.encode("latin-1"),
}


def test_invalid_utf8_bodies_are_400(
    running: Running, fake: FakeUpstream, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    for case, raw in INVALID_UTF8.items():
        for path, kind, _ in BRIDGED_TEMPLATES:
            r = client.post(running.url + path, headers=AUTH, content=raw)
            body = assert_error(r, kind, 400)
            assert "UTF-8" in body["error"]["message"], (case, path)
    assert fake.requests == []
    # Valid UTF-8 split mid-character across chunks is fine, and forwarded exactly.
    valid = json.dumps({**MESSAGES_BODY, "x": "café ☕ 𝄞"}, ensure_ascii=False).encode()
    r = client.post(
        running.url + "/anthropic/v1/messages",
        headers=AUTH,
        content=iter([valid[i : i + 1] for i in range(len(valid))]),
    )
    assert r.status_code == 200, r.text
    assert fake.last().body == valid
    assert bridge_errors(caplog) == []
    assert_healthy(running)


def test_deeply_nested_json_is_400_never_a_crash(
    running: Running, fake: FakeUpstream, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    deep = 100_000
    cases = {
        "100k open brackets": b"[" * deep,
        "100k balanced brackets": b"[" * deep + b"]" * deep,
        "100k nested objects": b'{"a":' * deep + b"1" + b"}" * deep,
        "deep inside a valid request": MESSAGES_RAW[:-1]
        + b',"x":'
        + b"[" * deep
        + b"]" * deep
        + b"}",
    }
    for case, raw in cases.items():
        for path, kind, _ in BRIDGED_TEMPLATES:
            r = client.post(running.url + path, headers=AUTH, content=raw)
            body = assert_error(r, kind, 400)
            assert "nested too deeply" in body["error"]["message"], (case, path)
    assert fake.requests == []
    # Around the parser's limit: whatever the depth, an answer or a 400, never a 500.
    statuses: Counter[int] = Counter()
    for depth in range(880, 1040, 9):
        for path, _, template in BRIDGED_TEMPLATES:
            raw = template % (b"[" * depth + b"]" * depth)
            r = client.post(running.url + path, headers=AUTH, content=raw)
            statuses[r.status_code] += 1
    assert set(statuses) <= {200, 400}, statuses
    assert statuses[400] > 0 and statuses[200] > 0, statuses  # the limit was crossed
    assert bridge_errors(caplog) == []
    assert_healthy(running)


def test_huge_chunked_body_is_413_without_buffering_past_the_limit(
    serve: Callable[..., Running], fake: FakeUpstream
) -> None:
    """A chunked upload (no Content-Length) far past max_body_size: 413 while
    the client is still sending; the bridge pulls at most the limit plus one
    read; memory stays flat; the server keeps serving."""
    limit = 1 << 20
    pulled = [0]

    def counting(bridge: Bridge) -> Any:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            async def counted() -> Any:
                message = await receive()
                pulled[0] += len(message.get("body", b""))
                return message

            await bridge(scope, counted, send)

        return app

    running = serve(limits=Limits(max_body_size=limit), wrap=counting)
    rss_before = rss_mib()
    frame_size = 64 * 1024
    frame = b"%x\r\n" % frame_size + b"x" * frame_size + b"\r\n"
    total = 256 << 20
    sent = sent_at_answer = 0
    answer = b""
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)
    try:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + bearer(HOST_TOKEN)
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while sent < total and time.monotonic() < deadline:
            try:
                sent += sock.send(frame[sent % len(frame) :] if sent % len(frame) else frame)
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading: fine, it answered already
            try:
                data = sock.recv(65536)
                if data and not answer:
                    sent_at_answer = sent
                answer += data
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        sock.setblocking(True)
        sock.settimeout(5)
        while not _complete(answer):  # headers and body may come in separate reads
            data = sock.recv(65536)
            if not data:
                break
            if not sent_at_answer:
                sent_at_answer = sent
            answer += data
    finally:
        sock.close()
    rss_after = rss_mib()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    error = json.loads(body[: int(head.split(b"content-length: ")[1].split(b"\r\n")[0])])
    assert error["error"]["type"] == "request_too_large"
    assert sent_at_answer < 64 << 20, f"413 only after {sent_at_answer >> 20} MiB were sent"
    assert pulled[0] <= limit + (1 << 20), f"the bridge read {pulled[0]} bytes"
    assert rss_after - rss_before < 64, f"RSS grew {rss_after - rss_before:.0f} MiB"
    assert fake.requests == []
    ends = running.recorder.wait_ended()
    assert (ends[0].status, ends[0].http_status) == ("failed", 413)
    assert_healthy(running)


def _slow_sender(port: int, head: bytes, body: bytes, pause: float, answers: list[bytes]) -> None:
    """Send ``head`` then ``body`` one byte per ``pause``; keep what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        got = b""
        for byte in body:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(pause)
            try:
                got += sock.recv(65536)
                if got:
                    break
            except BlockingIOError:
                pass
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            # The status line and headers may come in one read and the body
            # in the next: read until the whole Content-Length has arrived.
            while not _complete(got) and (data := sock.recv(65536)):
                got += data
        except OSError:
            pass
        answers.append(got)


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response with a Content-Length body."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/anthropic/v1/messages", "anthropic"),
        ("/openai/v1/responses", "openai"),
        ("/anthropic/v1/messages/count_tokens", "anthropic"),
    ],
)
@pytest.mark.slow
def test_slow_loris_upload_is_408_and_does_not_starve_others(
    serve: Callable[..., Running], fake: FakeUpstream, path: str, kind: str
) -> None:
    running = serve(limits=Limits(body_timeout=0.6))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {HOST_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(MESSAGES_RAW)}\r\n\r\n"
    ).encode()
    answers: list[bytes] = []
    slow = [
        threading.Thread(
            target=_slow_sender, args=(running.server.port, head, MESSAGES_RAW, 0.05, answers)
        )
        for _ in range(20)
    ]
    began = time.monotonic()
    for thread in slow:
        thread.start()
    time.sleep(0.2)
    # While 20 slow uploads are pending, a normal client is served at once.
    with httpx.Client(timeout=10) as client:
        quick = time.monotonic()
        r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
        assert r.status_code == 200
        assert time.monotonic() - quick < 1.0
    for thread in slow:
        thread.join(10)
    took = time.monotonic() - began
    assert len(answers) == 20
    for answer in answers:
        head_bytes, _, body = answer.partition(b"\r\n\r\n")
        assert head_bytes.startswith(b"HTTP/1.1 408"), answer[:200]
        parsed = json.loads(body)
        assert "not received within 0.6 seconds" in parsed["error"]["message"]
        if kind == "anthropic":
            assert parsed["error"]["type"] == "timeout_error"
    assert took < 3, took  # 0.6 s each, in parallel; the full upload would take 2.5 s
    assert [r.path for r in fake.requests] == ["/v1/messages"]  # the normal request only
    if "count_tokens" not in path:
        ends = [e for e in running.recorder.wait_ended(21) if e.http_status == 408]
        assert len(ends) == 20 and {e.status for e in ends} == {"failed"}
    assert_healthy(running)


def test_slow_but_steady_upload_within_the_timeout_succeeds(
    serve: Callable[..., Running], fake: FakeUpstream
) -> None:
    running = serve(limits=Limits(body_timeout=3))
    head = http_request(b"/anthropic/v1/messages", [bearer(HOST_TOKEN)], MESSAGES_RAW)
    head, _, _ = head.partition(b"\r\n\r\n")
    answers: list[bytes] = []
    _slow_sender(running.server.port, head + b"\r\n\r\n", MESSAGES_RAW, 0.01, answers)
    assert answers[0].startswith(b"HTTP/1.1 200"), answers[0][:200]
    assert fake.last().body == MESSAGES_RAW
    assert_healthy(running)


WRONG_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "text/json",
    "application/jsonp",
    "application/json-seq",
]
RIGHT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/json ; charset=UTF-8",
    "application/vnd.api+json",
]


def test_content_types(
    running: Running, fake: FakeUpstream, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    for media in WRONG_TYPES:
        for path, kind, _ in BRIDGED_TEMPLATES:
            r = client.post(
                running.url + path,
                headers={**AUTH, "content-type": media},
                content=MESSAGES_RAW,
            )
            body = assert_shaped(r, kind, 415)
            assert "content-type must be application/json" in body["error"]["message"]
            assert r.headers["x-aibridge-interception-id"]
    assert fake.requests == []
    for media in RIGHT_TYPES:
        r = client.post(
            running.url + "/anthropic/v1/messages",
            headers={**AUTH, "content-type": media},
            content=MESSAGES_RAW,
        )
        assert r.status_code == 200, (media, r.text)
        assert fake.last().header("content-type") == media
    ends = running.recorder.wait_ended(len(WRONG_TYPES) * 3 + len(RIGHT_TYPES))
    assert Counter(e.http_status for e in ends) == {
        415: len(WRONG_TYPES) * 3,
        200: len(RIGHT_TYPES),
    }
    assert bridge_errors(caplog) == []
    assert_healthy(running)


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_missing_content_type_is_accepted_and_none_is_invented_upstream(
    serve: Callable[..., Running], fake: FakeUpstream, seam: str
) -> None:
    """No Content-Type at all: accepted (the body must still be JSON). The
    upstream gets the body as the client sent it, and no Content-Type that
    contradicts it (a JSON body labelled application/octet-stream)."""
    running = serve(upstream=SEAMS[seam](Timeouts()))
    data = http_request(
        b"/anthropic/v1/messages", [bearer(HOST_TOKEN)], MESSAGES_RAW, content_type=None
    )
    r = raw_exchange(running.server.port, data)
    assert r.status == 200, r.body
    seen = fake.last()
    assert seen.body == MESSAGES_RAW
    assert seen.header_values("content-type") in ([], ["application/json"]), seen.headers
    # Not JSON and no content type: still a 400 in the provider's shape.
    data = http_request(b"/anthropic/v1/messages", [bearer(HOST_TOKEN)], b"a=b", content_type=None)
    r = raw_exchange(running.server.port, data)
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert_healthy(running)


def _utf8_problems(value: Any, where: str) -> list[str]:
    """Strings inside ``value`` (a record) that cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [where]
        return []
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [p for k, v in items for p in _utf8_problems(v, f"{where}[{k!r}]")]
    if hasattr(value, "__dataclass_fields__"):
        return [
            p
            for name in value.__dataclass_fields__
            for p in _utf8_problems(getattr(value, name), f"{type(value).__name__}.{name}")
        ]
    return []


def test_lone_surrogates_never_reach_the_records(running: Running, client: httpx.Client) -> None:
    """JSON may spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it
    into a str that no UTF-8 store accepts (SQLite, PostgreSQL, a JSON log
    all refuse it). If it reached a record, a client could make the host's
    recorder drop its InterceptionStarted, and so hide its usage. Every text
    in every record must encode as UTF-8, whatever the client sent."""
    session = json.dumps({"device_id": "d", "session_id": "s\\ud800"})
    bodies = [
        {**MESSAGES_BODY, "model": "claude-sonnet-4-5\ud800"},
        {**MESSAGES_BODY, "messages": [{"role": "user", "content": "hi \udfff there"}]},
        {**MESSAGES_BODY, "metadata": {"user_id": session}},
    ]
    headers = {**AUTH, "user-agent": "claude-cli/2.1.328 (external, cli)"}
    for body in bodies:
        raw = json.dumps(body).encode()  # ASCII, with \uXXXX escapes
        r = client.post(running.url + "/anthropic/v1/messages", headers=headers, content=raw)
        assert r.status_code in (200, 400), r.text
    running.recorder.wait_ended(len(bodies))
    running.flush()
    problems = [p for record in running.recorder.records for p in _utf8_problems(record, "")]
    assert problems == []
    assert_healthy(running)


# -- auth headers ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", SERVER_IMPLS)
def test_oversized_and_repeated_auth_headers(
    serve: Callable[..., Running], fake: FakeUpstream, impl: str
) -> None:
    calls: list[str] = []

    def counting_resolver(token: str) -> Actor | None:
        calls.append(token)
        return resolve(token)

    running = serve(http=impl, resolve_token=counting_resolver)
    port = running.server.port
    path = b"/anthropic/v1/messages"
    huge = b"a" * 65536

    # A 64 KiB token, alone or after a valid prefix: a clear 401, echoing nothing.
    for token in (huge, HOST_TOKEN.encode() + huge):
        r = raw_exchange(port, http_request(path, [bearer(token)], MESSAGES_RAW))
        assert r.status == 401, (r.status, r.body[:200])
        assert r.json()["error"]["type"] == "authentication_error"
        assert len(r.body) < 1000 and b"aaaaaaaa" not in r.body
    assert len(calls) == 2 and len(calls[0]) == 65536
    # 1 MiB of token: refused by the server or by the bridge, never served.
    r = raw_exchange(port, http_request(path, [bearer(b"b" * (1 << 20))], MESSAGES_RAW))
    assert r.status is None or 400 <= r.status < 500, r.status

    # Many Authorization headers: the first Bearer decides, once.
    others = [bearer(f"other-{i}") for i in range(500)]
    calls.clear()
    r = raw_exchange(port, http_request(path, [bearer(HOST_TOKEN), *others], MESSAGES_RAW))
    assert r.status == 200, r.body[:200]
    assert calls == [HOST_TOKEN]
    r = raw_exchange(port, http_request(path, [*others, bearer(HOST_TOKEN)], MESSAGES_RAW))
    assert r.status == 401
    # Many X-Api-Key headers: the first one decides.
    keys = [f"X-Api-Key: other-{i}".encode() for i in range(500)]
    r = raw_exchange(port, http_request(path, [f"X-Api-Key: {HOST_TOKEN}".encode(), *keys]))
    # Authenticated as alice (the empty body is then a 400, after the token check).
    assert r.status == 400, r.body[:200]
    assert r.json()["error"]["message"].startswith("request body is empty")

    # Both headers, different tokens: Bearer wins; the other is never forwarded.
    fake.requests.clear()
    for headers, actor in [
        ([bearer(HOST_TOKEN), f"X-Api-Key: {OTHER_TOKEN}".encode()], "alice"),
        ([f"X-Api-Key: {OTHER_TOKEN}".encode(), bearer(HOST_TOKEN)], "alice"),
        ([bearer(OTHER_TOKEN), f"X-Api-Key: {HOST_TOKEN}".encode()], "bob"),
    ]:
        r = raw_exchange(port, http_request(path, headers, MESSAGES_RAW))
        assert r.status == 200
        interception_id = r.header("x-aibridge-interception-id")
        assert interception_id is not None
        running.recorder.wait_sync(lambda rec, i=interception_id: rec.started(i) is not None)
        started = running.recorder.started(interception_id)
        assert started is not None and started.actor.id == actor
    for seen in fake.requests:
        assert seen.header_values("x-api-key") == [ANTHROPIC_KEY]
        assert seen.header_values("authorization") == []
        text = repr(seen.headers) + seen.body.decode()
        assert HOST_TOKEN not in text and OTHER_TOKEN not in text and "other-" not in text
    assert_healthy(running)


ODD_TOKENS: list[bytes] = [
    b"  padded-token  ",
    b'"quoted-token"',
    b"it's-a-token",
    b"tok en with spaces",
    "tökén-☕-unicode".encode(),
    "latin1-tøken".encode("latin-1"),
    b"\xff\xfe\x80-raw-high-bytes",
    b"back\\slash/and;semi,comma=eq",
    b"=" * 200,
    b"Bearer nested-scheme",
    b"<script>alert(1)</script>",
    b"%00%0d%0a-encoded",
    b"{{template}}-${var}",
]


@pytest.mark.parametrize("impl", SERVER_IMPLS)
def test_tokens_with_odd_characters(
    serve: Callable[..., Running], fake: FakeUpstream, impl: str
) -> None:
    """The resolver gets exactly what was sent, read as Latin-1 with the
    surrounding whitespace removed; a refused token is a 401 that echoes
    nothing; an accepted one never reaches the upstream."""
    expected = {raw: raw.decode("latin-1").strip() for raw in ODD_TOKENS}
    accepted = set(list(expected.values())[::2])
    seen_tokens: list[str] = []

    def resolver(token: str) -> Actor | None:
        seen_tokens.append(token)
        return Actor("odd") if token in accepted else resolve(token)

    running = serve(http=impl, resolve_token=resolver)
    for raw in ODD_TOKENS:
        for header in (bearer(raw), b"X-Api-Key: " + raw):
            seen_tokens.clear()
            data = http_request(b"/anthropic/v1/messages", [header], MESSAGES_RAW)
            r = raw_exchange(running.server.port, data)
            assert seen_tokens == [expected[raw]], (header, seen_tokens)
            if expected[raw] in accepted:
                assert r.status == 200, (raw, r.status, r.body[:200])
            else:
                assert r.status == 401, (raw, r.status, r.body[:200])
                assert raw.strip() not in r.body
    for seen in fake.requests:
        assert seen.header_values("x-api-key") == [ANTHROPIC_KEY]
        for _, value in seen.headers:
            assert not any(token in value for token in expected.values()), value
    assert_healthy(running)


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_non_ascii_header_bytes_reach_upstream_byte_for_byte(
    serve: Callable[..., Running], fake: FakeUpstream, seam: str
) -> None:
    """Header values are bytes. UTF-8 values arrive upstream unchanged through
    either seam. Other (obs-text) bytes arrive unchanged through the httpx
    seam; aiohttp (the default) can only write UTF-8 header values, so there
    the client gets a clear 400 and nothing is sent (docs/configuration.md)."""
    running = serve(upstream=SEAMS[seam](Timeouts()))
    values = ["café ☕".encode(), "café".encode("latin-1"), b"\x80\xff obs-text", b"plain"]
    for value in values:
        before = len(fake.requests)
        data = http_request(
            b"/anthropic/v1/messages", [bearer(HOST_TOKEN), b"X-Title: " + value], MESSAGES_RAW
        )
        r = raw_exchange(running.server.port, data)
        utf8 = True
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            utf8 = False
        if seam == "aiohttp" and not utf8:
            assert r.status == 400, r.body[:200]
            assert "not valid UTF-8" in json.loads(r.body)["error"]["message"]
            assert len(fake.requests) == before
            continue
        assert r.status == 200, r.body[:200]
        got = fake.last().header("x-title")
        assert got is not None
        assert got.encode("latin-1") == value, (value, got.encode("latin-1"))
    assert_healthy(running)


# -- smuggling -----------------------------------------------------------------------

_BODY = MESSAGES_RAW
_TOKEN = HOST_TOKEN.encode()
_AUTH_LINE = b"Authorization: Bearer " + _TOKEN + b"\r\n"
_HIDDEN_IN_BODY = _BODY[:-1] + b',"x":"\\r\\n\\r\\nGET /v1/models HTTP/1.1\\r\\n"}'


def _raw(
    request_line: bytes,
    headers: bytes = _AUTH_LINE,
    body: bytes | None = _BODY,
    framing: bytes | None = None,
    host: bytes = b"127.0.0.1",
) -> bytes:
    """``request_line`` and ``headers`` (CRLF-terminated lines) exactly as
    given, then a JSON body framed by ``framing`` (default: its length)."""
    head = request_line + b"\r\nHost: " + host + b"\r\n" + headers
    if body is None:
        return head + b"\r\n"
    if framing is None:
        framing = b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return head + b"Content-Type: application/json\r\n" + framing + b"\r\n" + body


_POST = b"POST /anthropic/v1/messages HTTP/1.1"
_CHUNKED_BODY = b"%x\r\n" % len(_BODY) + _BODY + b"\r\n0\r\n\r\n"

SMUGGLING: dict[str, bytes] = {
    "CR inside the token": _raw(_POST, _AUTH_LINE[:-2] + b"\rX-Smuggled: 1\r\n"),
    "NUL inside the token": _raw(_POST, _AUTH_LINE[:-2] + b"\x00X-Smuggled: 1\r\n"),
    "bare LF inside the token": _raw(_POST, _AUTH_LINE[:-2] + b"\nX-After-Bare-Lf: 1\r\n"),
    "NUL in another header": _raw(_POST, _AUTH_LINE + b"X-Foo: a\x00X-Smuggled: 1\r\n"),
    "a second x-api-key by obs-fold": _raw(
        _POST, _AUTH_LINE + b"X-Foo: a\r\n x-api-key: stolen\r\n"
    ),
    "space before the colon": _raw(_POST, _AUTH_LINE + b"X-Api-Key : stolen\r\n"),
    "Content-Length and Transfer-Encoding": _raw(
        _POST,
        body=_CHUNKED_BODY,
        framing=b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    ),
    "two Content-Lengths": _raw(
        _POST, framing=b"Content-Length: %d\r\nContent-Length: 4\r\n" % len(_BODY)
    ),
    "a request pipelined after the body": _raw(_POST)
    + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Smuggled: 1\r\n\r\n",
    "an HTTP request inside the JSON": _raw(_POST, body=_HIDDEN_IN_BODY),
    "the client's own Host and Transfer-Encoding": _raw(
        _POST,
        body=_CHUNKED_BODY,
        framing=b"Transfer-Encoding: chunked\r\n",
        host=b"evil.example",
    ),
    "CRLF in the path": _raw(b"POST /anthropic/v1/messages\r\nX-Api-Key: stolen HTTP/1.1"),
    "NUL in the path": _raw(b"POST /anthropic/v1/messages\x00/x HTTP/1.1"),
    "encoded CRLF in the path": _raw(
        b"GET /anthropic/v1/models/x%0d%0aX-Api-Key:%20stolen HTTP/1.1", body=None
    ),
    "encoded CRLF in the query": _raw(
        b"POST /anthropic/v1/messages?a=%0d%0aX-Api-Key:%20stolen HTTP/1.1"
    ),
    "raw CR in the query": _raw(b"POST /anthropic/v1/messages?a=\rX-Api-Key: stolen HTTP/1.1"),
    "tab in the path": _raw(b"GET /anthropic/v1/models/a\tb HTTP/1.1", body=None),
    "high bytes in the path": _raw(b"GET /anthropic/v1/models/\xff\xfe HTTP/1.1", body=None),
    "absolute URL to another host": _raw(
        b"GET http://evil.example/anthropic/v1/models HTTP/1.1", body=None
    ),
}


@pytest.mark.parametrize("impl", SERVER_IMPLS)
def test_smuggling_attempts_never_reach_upstream(
    serve: Callable[..., Running],
    fake: FakeUpstream,
    upstream: ServerThread,
    impl: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = serve(http=impl)
    answers: dict[str, int | None] = {}
    for case, data in SMUGGLING.items():
        before = len(fake.requests)
        answers[case] = raw_exchange(running.server.port, data).status
        time.sleep(0.05)  # anything pipelined after the first request has arrived
        arrived = fake.requests[before:]
        assert len(arrived) <= 1, (case, [(r.method, r.path) for r in arrived])
        for seen in arrived:
            assert seen.path in ("/v1/messages", "/v1/models"), (case, seen.path)
            assert seen.header_values("x-api-key") == [ANTHROPIC_KEY], case
            assert seen.header_values("authorization") == [], case
            # A header line hidden inside another header's value never becomes a
            # header, and no credential header can be slipped in at all.
            assert seen.header("x-smuggled") is None, case
            assert seen.header("transfer-encoding") is None, case
            assert seen.header("host") == f"127.0.0.1:{upstream.port}", case
            for name, value in seen.headers:
                assert not set(name + value) & {"\r", "\n", "\x00"}, (case, name, value)
                assert HOST_TOKEN not in value, (case, name)
            if seen.method == "POST":
                assert seen.header("content-length") == str(len(seen.body)), case
                assert isinstance(seen.json(), dict), case
                assert b"X-Smuggled" not in seen.body, case
    refused = {case for case, status in answers.items() if status is None or status >= 400}
    # The control characters are refused by the server (or the bridge) under
    # both parsers. (httptools reads a request line cut by CRLF as a line
    # without a version followed by headers: that is the client's own header
    # then, and is checked above like any other.)
    must_refuse = [
        "CR inside the token",
        "NUL inside the token",
        "NUL in another header",
        "NUL in the path",
        "encoded CRLF in the path",
        "raw CR in the query",
        "tab in the path",
        "high bytes in the path",
    ]
    assert {case: answers[case] for case in must_refuse if case not in refused} == {}
    assert not [e for e in bridge_errors(caplog) if "failed inside the bridge" in e]
    assert_healthy(running)


# -- the bridge itself, behind a lenient server ----------------------------------------


async def _asgi_call(
    bridge: Bridge,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    query: bytes = b"",
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Call the bridge directly, as an ASGI server that does not validate
    header bytes would."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    try:
        await asyncio.wait_for(bridge(scope, receive, send), 10)
    except Exception as exc:  # what an ASGI server turns into a bare 500
        return 500, [], f"the bridge raised {exc!r}".encode()
    start = out[0]
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in out[1:])


CONTROL_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "CRLF in a header value": [(b"x-foo", b"a\r\nx-smuggled: 1")],
    "LF in a header value": [(b"x-foo", b"a\nx-smuggled: 1")],
    "NUL in a header value": [(b"x-foo", b"a\x00b")],
    "CRLF in a header name": [(b"x-foo\r\nx-smuggled", b"1")],
    "CRLF in anthropic-version": [(b"anthropic-version", b"2023-06-01\r\nx-smuggled: 1")],
}


@pytest.mark.parametrize("case", sorted(CONTROL_HEADERS))
@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_control_characters_from_a_lenient_server_get_a_4xx_not_a_500(
    upstream: ServerThread,
    fake: FakeUpstream,
    seam: str,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn refuses these bytes itself, but an ASGI server that passes
    them on must not turn them into a 500 with a traceback: the bridge
    answers a provider-shaped 4xx and the upstream never sees them."""
    recorder = InMemoryRecorder()
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY},
        base_urls={"anthropic": upstream.url, "openai": upstream.url + "/v1"},
        upstream=SEAMS[seam](Timeouts()),
        recorder=recorder,
    )
    auth = (b"authorization", b"Bearer " + HOST_TOKEN.encode())
    json_type = (b"content-type", b"application/json")

    async def scenario() -> list[tuple[str, int, bytes]]:
        results = []
        for method, path, body in [
            ("POST", "/anthropic/v1/messages", MESSAGES_RAW),
            ("GET", "/anthropic/v1/models", b""),
        ]:
            status, _, answer = await _asgi_call(
                bridge, method, path, [auth, json_type, *CONTROL_HEADERS[case]], body
            )
            results.append((path, status, answer))
        await bridge.aclose()
        return results

    results = asyncio.run(scenario())
    smuggled = [r for r in fake.requests if r.header("x-smuggled") is not None]
    assert smuggled == []
    for path, status, answer in results:
        assert 400 <= status < 500, (path, status, answer[:200])
        assert json.loads(answer)["error"]["message"], path
    assert not [e for e in bridge_errors(caplog) if "failed inside the bridge" in e]
    starts = recorder.of_type(InterceptionStarted)
    ends = recorder.of_type(InterceptionEnded)
    assert len(starts) == len(ends) == 1
