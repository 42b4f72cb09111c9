"""Hardening against upstream faults.

Each fault ends the interception with the right status and a useful,
secret-free error, and the client gets either a provider-shaped error or
exactly the bytes that arrived followed by a cut connection, never a hang.
Connection-level faults run through both upstream seams (aiohttp, the
default, and httpx). Everything stays on 127.0.0.1: the DNS failure uses a
``.invalid`` name whose lookup is answered in-process, so no query leaves
the machine.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from aibridge_asgi import InterceptionEnded, Limits, Timeouts, TokenUsage
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ServerThread,
    streams,
)
from aibridge_asgi.upstream import AiohttpUpstream, HttpxUpstream, Upstream

from .conftest import HOST_TOKEN, Running
from .test_errors import assert_error, closed_port
from .test_hardening_input import assert_all_ended, assert_healthy

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-5", "input": "hi"}
USAGE = streams.Usage(input_tokens=321, output_tokens=54, cache_read=7, cache_write=3)

SEAMS: dict[str, Callable[[Timeouts], Upstream]] = {
    "aiohttp": AiohttpUpstream,
    "httpx": HttpxUpstream,
}


@pytest.fixture(params=sorted(SEAMS))
def seam(request: pytest.FixtureRequest) -> Callable[[Timeouts], Upstream]:
    return SEAMS[request.param]


def ended_for(running: Running, response: httpx.Response) -> InterceptionEnded:
    interception_id = response.headers["x-aibridge-interception-id"]
    running.recorder.wait_sync(lambda r: r.ended(interception_id) is not None)
    ended = running.recorder.ended(interception_id)
    assert ended is not None
    return ended


def usage_of(running: Running, interception_id: str) -> list[TokenUsage]:
    running.flush()
    return [
        r for r in running.recorder.for_interception(interception_id) if isinstance(r, TokenUsage)
    ]


def last_interception(running: Running) -> str:
    running.recorder.wait_sync(lambda r: bool(r.of_type(InterceptionEnded)))
    return running.recorder.of_type(InterceptionEnded)[-1].interception_id


# -- a raw TCP upstream, for faults no HTTP server would make -----------------------


def read_request(conn: socket.socket) -> bytes:
    """Read one HTTP/1.1 request (head and Content-Length body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def wait_closed(conn: socket.socket, within: float = 30.0) -> bool:
    """Block until the peer closes ``conn`` (True) or ``within`` passes."""
    conn.settimeout(within)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


class RawUpstream:
    """A loopback TCP server calling ``handle(conn)`` for each connection, in
    its own thread. Keeps the bytes each connection received (``received``)
    and when the bridge closed each one (``closed_at``)."""

    def __init__(self, handle: Callable[[RawUpstream, socket.socket], None]) -> None:
        self.handle = handle
        self.received: list[bytes] = []
        self.closed_at: list[float] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the bridge hung up: nothing to do
            self.handle(self, conn)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(2)


@pytest.fixture
def raw_upstream() -> Iterator[
    Callable[[Callable[[RawUpstream, socket.socket], None]], RawUpstream]
]:
    made: list[RawUpstream] = []

    def make(handle: Callable[[RawUpstream, socket.socket], None]) -> RawUpstream:
        server = RawUpstream(handle)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def silent(server: RawUpstream, conn: socket.socket) -> None:
    """Read the request, never answer; note when the bridge gives up."""
    server.received.append(read_request(conn))
    if wait_closed(conn):
        server.closed_at.append(time.monotonic())


def headers_then_nothing(content_type: bytes) -> Callable[[RawUpstream, socket.socket], None]:
    def handle(server: RawUpstream, conn: socket.socket) -> None:
        server.received.append(read_request(conn))
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        if wait_closed(conn):
            server.closed_at.append(time.monotonic())

    return handle


def garbage_status_line(server: RawUpstream, conn: socket.socket) -> None:
    server.received.append(read_request(conn))
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\xff\xfe garbage\r\n\r\n")
    conn.close()


def reset_after_request(server: RawUpstream, conn: socket.socket) -> None:
    server.received.append(read_request(conn))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # SO_LINGER 0: an RST, not a FIN


def plain_http_capture(server: RawUpstream, conn: socket.socket) -> None:
    """What a plain-HTTP server sees of a TLS client: keep every byte."""
    conn.settimeout(2)
    data = b""
    with contextlib.suppress(TimeoutError):
        data = conn.recv(65536)
    server.received.append(data)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    conn.close()


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer ``.invalid`` lookups in-process (NXDOMAIN), refuse any other
    name that is not an IP literal or localhost: no DNS query leaves."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "localhost"):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                looked_up.append(name)
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


# -- connection-level faults -----------------------------------------------------------


def assert_upstream_failure(
    running: Running,
    client: httpx.Client,
    status: int,
    reason: str,
    hidden: tuple[str, ...],
) -> None:
    """A streamed and a blocking call each get ``status`` in their provider's
    shape, end ``failed`` with an error holding ``reason``, and neither the
    answer nor the record names the upstream (``hidden``)."""
    for path, kind, body in [
        ("/anthropic/v1/messages", "anthropic", MESSAGES_BODY),
        ("/openai/v1/chat/completions", "openai", {**CHAT_BODY, "stream": True}),
    ]:
        began = time.monotonic()
        r = client.post(running.url + path, headers=AUTH, json=body)
        assert time.monotonic() - began < 5, path
        parsed = assert_error(r, kind, status)
        ended = ended_for(running, r)
        assert (ended.status, ended.http_status) == ("failed", status), path
        assert ended.error is not None and reason in ended.error, (path, ended.error)
        for text in (json.dumps(parsed), ended.error):
            for secret in (*hidden, ANTHROPIC_KEY, OPENAI_KEY, HOST_TOKEN):
                assert secret not in text, (path, secret, text)
    assert_all_ended(running)


def test_connection_refused(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
) -> None:
    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    running = start_bridge(
        upstream=seam(Timeouts()), base_urls={"anthropic": base, "openai": base + "/v1"}
    )
    assert_upstream_failure(running, client, 502, "upstream connection failed", (str(port),))


def test_dns_failure(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
    no_dns: list[str],
) -> None:
    base = "http://llm-upstream.invalid"
    running = start_bridge(
        upstream=seam(Timeouts()), base_urls={"anthropic": base, "openai": base + "/v1"}
    )
    assert_upstream_failure(running, client, 502, "upstream connection failed", ("invalid",))
    assert set(no_dns) == {"llm-upstream.invalid"}  # it was looked up, here only


def test_tls_failure_sends_nothing_in_clear(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
    raw_upstream: Callable[..., RawUpstream],
) -> None:
    """An https base URL pointing at a plain-HTTP server: the handshake fails
    (502), and the server got a TLS ClientHello only, never the request and
    never the provider key."""
    plain = raw_upstream(plain_http_capture)
    base = f"https://127.0.0.1:{plain.port}"
    running = start_bridge(
        upstream=seam(Timeouts()), base_urls={"anthropic": base, "openai": base + "/v1"}
    )
    assert_upstream_failure(running, client, 502, "upstream connection failed", (str(plain.port),))
    assert plain.received, "the bridge never tried to connect"
    for data in plain.received:
        assert data[:1] == b"\x16", data[:40]  # a TLS handshake record
        for secret in (ANTHROPIC_KEY, OPENAI_KEY, HOST_TOKEN, "/v1/messages", "POST"):
            assert secret.encode() not in data


def test_connect_timeout(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
) -> None:
    """A listener whose accept queue is full never completes a handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the queue; later connects hang in SYN-SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        running = start_bridge(
            upstream=seam(Timeouts(connect=0.3)),
            base_urls={"anthropic": base, "openai": base + "/v1"},
        )
        assert_upstream_failure(running, client, 504, "did not answer in time", (str(port),))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_read_timeout_before_headers_closes_the_upstream_connection(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
    raw_upstream: Callable[..., RawUpstream],
) -> None:
    mute = raw_upstream(silent)
    running = start_bridge(
        upstream=seam(Timeouts(read=0.3)),
        base_urls={"anthropic": mute.url, "openai": mute.url + "/v1"},
    )
    answered = time.monotonic()
    assert_upstream_failure(running, client, 504, "did not answer in time", (str(mute.port),))
    deadline = time.monotonic() + 3
    while len(mute.closed_at) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mute.received) == 2  # not retried: the request may have arrived
    assert len(mute.closed_at) == 2, "the bridge kept the timed-out connections open"
    assert max(mute.closed_at) - answered < 5


@pytest.mark.parametrize("handle", [garbage_status_line, reset_after_request])
def test_broken_answers_before_headers(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
    raw_upstream: Callable[..., RawUpstream],
    handle: Callable[[RawUpstream, socket.socket], None],
) -> None:
    broken = raw_upstream(handle)
    running = start_bridge(
        upstream=seam(Timeouts()),
        base_urls={"anthropic": broken.url, "openai": broken.url + "/v1"},
    )
    assert_upstream_failure(running, client, 502, "upstream connection failed", (broken.url,))
    assert len(broken.received) == 2  # reached upstream once each: never retried


# -- upstream statuses ------------------------------------------------------------------------

ERROR_BODIES = {
    "anthropic": b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    "openai": b'{"error":{"message":"Slow down","type":"server_error","param":null,"code":null}}',
}


def test_error_statuses_are_relayed_as_is_and_not_retried(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    cases = 0
    for status in (429, 500, 503, 529):
        for retry_after in (None, "7", "Wed, 21 Oct 2037 07:28:00 GMT"):
            for path, kind, body in [
                ("/anthropic/v1/messages", "anthropic", MESSAGES_BODY),
                ("/openai/v1/chat/completions", "openai", {**CHAT_BODY, "stream": True}),
                ("/openai/v1/responses", "openai", RESPONSES_BODY),
            ]:
                headers = [("x-request-id", f"req-{cases}")]
                if retry_after is not None:
                    headers.append(("retry-after", retry_after))
                fake.enqueue(FakeResponse.json(ERROR_BODIES[kind], status=status, headers=headers))
                before = len(fake.requests)
                r = client.post(running.url + path, headers=AUTH, json=body)
                case = (status, retry_after, path)
                assert len(fake.requests) == before + 1, case  # the default policy: no retry
                assert r.status_code == status, case
                assert r.content == ERROR_BODIES[kind], case
                assert r.headers.get_list("retry-after") == (
                    [] if retry_after is None else [retry_after]
                ), case
                assert r.headers["x-request-id"] == f"req-{cases}", case
                ended = ended_for(running, r)
                assert (ended.status, ended.http_status) == ("failed", status), case
                message = "Overloaded" if kind == "anthropic" else "Slow down"
                assert ended.error == f"upstream answered {status}: {message}", case
                cases += 1
    assert_healthy(running)


# -- broken streams -------------------------------------------------------------------------


def stream_until_cut(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[bytes, str]:
    """Read a streamed answer until the connection is cut; return the bytes
    and the interception id. Fails if the answer ended normally."""
    got = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", url, headers=AUTH, json=body) as r,
    ):
        assert r.status_code == 200
        interception_id = r.headers["x-aibridge-interception-id"]
        for chunk in r.iter_raw():
            got += chunk
    return got, interception_id


@pytest.mark.parametrize(
    ("path", "events", "body"),
    [
        (
            "/anthropic/v1/messages",
            streams.anthropic_events("one two three four", usage=USAGE, pieces=4),
            {**MESSAGES_BODY, "stream": True},
        ),
        (
            "/openai/v1/responses",
            streams.response_events("one two three four", usage=USAGE, pieces=4),
            {**RESPONSES_BODY, "stream": True},
        ),
    ],
    ids=["anthropic", "responses"],
)
def test_stream_cut_mid_event(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    path: str,
    events: list[bytes],
    body: dict[str, Any],
) -> None:
    """The client gets every byte that arrived, the half event included, then
    a cut connection (so it knows the answer is incomplete)."""
    half = events[4][: len(events[4]) // 2]
    sent = [*events[:4], half]
    fake.enqueue(FakeResponse.sse(sent, cut=True))
    got, interception_id = stream_until_cut(client, running.url + path, body)
    assert got == b"".join(sent)
    running.recorder.wait_sync(lambda r: r.ended(interception_id) is not None)
    ended = running.recorder.ended(interception_id)
    assert ended is not None
    assert (ended.status, ended.http_status) == ("failed", 200)
    assert ended.error is not None and "upstream connection failed" in ended.error
    if path.startswith("/anthropic"):  # message_start carries the input tokens
        (usage,) = usage_of(running, interception_id)
        assert usage.input_tokens == USAGE.input_tokens
    assert_healthy(running)


def test_malformed_sse_is_relayed_exactly_and_flagged(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    events = streams.anthropic_events("fine", usage=USAGE)
    broken = [
        *events[:3],
        b"event: message_delta\ndata: {this is not json\n\n",
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": \n\n',
        b"data: \xff\xfe\x00 binary\n\n",
        b"event: message_delta\ndata: [1, 2, 3]\n\n",
        b"event: message_delta\ndata: " + b"[" * 50_000 + b"\n\n",
        *events[3:],
    ]
    fake.enqueue(FakeResponse.sse(broken))
    r = client.post(
        running.url + "/anthropic/v1/messages", headers=AUTH, json={**MESSAGES_BODY, "stream": True}
    )
    assert r.status_code == 200
    assert r.content == b"".join(broken)
    ended = ended_for(running, r)
    assert ended.status == "failed" and ended.error is not None, ended
    assert "malformed" in ended.error or "could not follow" in ended.error, ended.error
    (usage,) = usage_of(running, r.headers["x-aibridge-interception-id"])
    assert usage.input_tokens == USAGE.input_tokens

    # Not SSE at all, under an SSE content type: relayed as is, flagged.
    noise = [bytes(range(256)) * 4, b"\r\r\n\n\x00" * 100, b"no event ends here"]
    fake.enqueue(FakeResponse.sse(noise))
    r = client.post(
        running.url + "/anthropic/v1/messages", headers=AUTH, json={**MESSAGES_BODY, "stream": True}
    )
    assert r.content == b"".join(noise)
    ended = ended_for(running, r)
    assert ended.status == "failed" and ended.error is not None
    assert_healthy(running)


BAD_JSON_BODIES = {
    "not JSON": b"<html>upstream maintenance</html>",
    "truncated JSON": b'{"id": "msg_1", "content": [',
    "a JSON array": b'[{"id": "msg_1"}]',
    "a huge exponent": b'{"id": "msg_1", "usage": {"input_tokens": 1e999999}}',
    "deeply nested": b'{"id": "msg_1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deeply nested usage": b'{"id": "msg_1", "usage": ' + b'{"a":' * 50_000 + b"1"
    + b"}" * 50_000 + b"}",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_JSON_BODIES))
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/anthropic/v1/messages", MESSAGES_BODY),
        ("/openai/v1/chat/completions", CHAT_BODY),
        ("/openai/v1/responses", RESPONSES_BODY),
    ],
    ids=["anthropic", "chat", "responses"],
)
def test_broken_json_answer_is_relayed_never_a_500(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    path: str,
    body: dict[str, Any],
    case: str,
) -> None:
    """Whatever a 200 body holds, the client gets it unchanged: the bridge
    only reads a copy, and what it cannot read it flags in the record."""
    raw = BAD_JSON_BODIES[case]
    fake.enqueue(FakeResponse.json(raw))
    r = client.post(running.url + path, headers=AUTH, json=body)
    assert r.status_code == 200, r.text[:300]
    assert r.content == raw
    ended = ended_for(running, r)
    assert ended.http_status == 200
    assert_healthy(running)


def test_never_ending_stream_stops_upstream_within_a_second_of_the_client_leaving(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    left: list[float] = []
    started = threading.Event()

    async def endless(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        first = streams.anthropic_events("x")[0]
        await send({"type": "http.response.body", "body": first, "more_body": True})
        started.set()
        async with anyio.create_task_group() as tg:

            async def pings() -> None:
                while True:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b'event: ping\ndata: {"type": "ping"}\n\n',
                            "more_body": True,
                        }
                    )
                    await anyio.sleep(0.02)

            tg.start_soon(pings)
            while (await receive())["type"] != "http.disconnect":
                pass
            left.append(time.monotonic())
            tg.cancel_scope.cancel()

    with ServerThread(endless) as server:
        running = start_bridge(base_urls={"anthropic": server.url, "openai": server.url + "/v1"})
        with client.stream(
            "POST",
            running.url + "/anthropic/v1/messages",
            headers=AUTH,
            json={**MESSAGES_BODY, "stream": True},
        ) as r:
            interception_id = r.headers["x-aibridge-interception-id"]
            received = 0
            for chunk in r.iter_raw():
                received += chunk.count(b"event: ping")
                if received >= 10:
                    break
            closed = time.monotonic()
        deadline = time.monotonic() + 3
        while not left and time.monotonic() < deadline:
            time.sleep(0.01)
        assert left, "the upstream stream was never closed"
        assert left[0] - closed < 1.0, left[0] - closed
        running.recorder.wait_sync(lambda rec: rec.ended(interception_id) is not None)
        ended = running.recorder.ended(interception_id)
        assert ended is not None
        assert (ended.status, ended.error) == ("cancelled", "client disconnected")
        assert_all_ended(running)


def test_headers_then_nothing(
    start_bridge: Callable[..., Running],
    seam: Callable[[Timeouts], Upstream],
    client: httpx.Client,
    raw_upstream: Callable[..., RawUpstream],
) -> None:
    """The upstream sends its headers and then falls silent. A stream is kept
    warm with keepalive comments, then cut when the read timeout passes; a
    blocking call gets a 502. Both end failed, saying the read timed out."""
    sse = raw_upstream(headers_then_nothing(b"text/event-stream"))
    running = start_bridge(
        upstream=seam(Timeouts(read=0.6)),
        limits=Limits(keepalive_interval=0.1),
        base_urls={"anthropic": sse.url, "openai": sse.url + "/v1"},
    )
    began = time.monotonic()
    got, interception_id = stream_until_cut(
        client, running.url + "/anthropic/v1/messages", {**MESSAGES_BODY, "stream": True}
    )
    assert 0.5 < time.monotonic() - began < 3
    assert got and set(got.split(b"\n\n")) <= {b": keepalive", b""}, got
    running.recorder.wait_sync(lambda rec: rec.ended(interception_id) is not None)
    ended = running.recorder.ended(interception_id)
    assert ended is not None
    assert (ended.status, ended.http_status) == ("failed", 200)
    assert ended.error is not None and "timed out" in ended.error, ended.error

    blocking = raw_upstream(headers_then_nothing(b"application/json"))
    running = start_bridge(
        upstream=seam(Timeouts(read=0.6)),
        base_urls={"anthropic": blocking.url, "openai": blocking.url + "/v1"},
    )
    r = client.post(running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT_BODY)
    assert_error(r, "openai", 502)
    ended = ended_for(running, r)
    assert (ended.status, ended.http_status) == ("failed", 502)
    assert ended.error is not None and "timed out" in ended.error, ended.error
    deadline = time.monotonic() + 3
    while len(sse.closed_at) + len(blocking.closed_at) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sse.closed_at) == 1 and len(blocking.closed_at) == 1  # connections dropped


# -- encodings and framing -----------------------------------------------------------------


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_chunked_bodies_in_tiny_pieces(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    blocking = json.dumps(streams.anthropic_message("pieces", usage=USAGE)).encode()
    fake.enqueue(FakeResponse(chunks=one_byte_chunks(blocking)))
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert r.content == blocking
    assert r.headers["content-length"] == str(len(blocking))
    assert "transfer-encoding" not in r.headers
    iid = r.headers["x-aibridge-interception-id"]
    assert ended_for(running, r).status == "completed"
    assert usage_of(running, iid)[0].output_tokens == USAGE.output_tokens

    stream = b"".join(streams.response_events("pieces", usage=USAGE))
    fake.enqueue(FakeResponse.sse(one_byte_chunks(stream)))
    r = client.post(
        running.url + "/openai/v1/responses", headers=AUTH, json={**RESPONSES_BODY, "stream": True}
    )
    assert r.content == stream
    iid = r.headers["x-aibridge-interception-id"]
    assert ended_for(running, r).status == "completed"
    assert usage_of(running, iid)[0].output_tokens == USAGE.output_tokens


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    return zlib.compress(data)  # HTTP "deflate" is the zlib format


GZIP_CASES = [
    ("anthropic json", "/anthropic/v1/messages", MESSAGES_BODY, False),
    ("chat json", "/openai/v1/chat/completions", CHAT_BODY, False),
    ("responses json", "/openai/v1/responses", RESPONSES_BODY, False),
    ("anthropic sse", "/anthropic/v1/messages", {**MESSAGES_BODY, "stream": True}, True),
    ("responses sse", "/openai/v1/responses", {**RESPONSES_BODY, "stream": True}, True),
    (
        "chat sse",
        "/openai/v1/chat/completions",
        {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}},
        True,
    ),
]


def _answer(case: str) -> bytes:
    if case == "anthropic json":
        return json.dumps(streams.anthropic_message("zipped", usage=USAGE)).encode()
    if case == "chat json":
        return json.dumps(streams.chat_completion("zipped", usage=USAGE)).encode()
    if case == "responses json":
        return json.dumps(streams.response_object("zipped", usage=USAGE)).encode()
    if case == "anthropic sse":
        return b"".join(streams.anthropic_events("zipped", usage=USAGE))
    if case == "responses sse":
        return b"".join(streams.response_events("zipped", usage=USAGE))
    return b"".join(streams.chat_events("zipped", usage=USAGE))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(
    ("case", "path", "body", "sse"), GZIP_CASES, ids=[c[0] for c in GZIP_CASES]
)
def test_compressed_upstream_bodies(
    running: Running,
    client: httpx.Client,
    fake: FakeUpstream,
    case: str,
    path: str,
    body: dict[str, Any],
    sse: bool,
    encoding: str,
) -> None:
    """An upstream may compress although asked for identity. The client gets
    an answer it can decode to exactly the upstream's bytes, and the records
    still hold the usage."""
    plain = _answer(case)
    packed = _compress(plain, encoding)
    pieces = [packed[i : i + 97] for i in range(0, len(packed), 97)]
    fake.enqueue(
        FakeResponse(
            chunks=pieces,
            headers=[("content-encoding", encoding)],
            content_type="text/event-stream" if sse else "application/json",
        )
    )
    r = client.post(running.url + path, headers=AUTH, json=body)
    assert r.status_code == 200
    assert r.content == plain  # httpx decoded whatever encoding the bridge declared
    ended = ended_for(running, r)
    usage = usage_of(running, r.headers["x-aibridge-interception-id"])
    assert (ended.status, ended.error) == ("completed", None)
    assert [(u.input_tokens, u.output_tokens) for u in usage] == [
        (USAGE.input_tokens, USAGE.output_tokens)
    ]
