"""A fake upstream for the benchmark, fast enough not to be the bottleneck.

A raw asyncio ``Protocol`` server on uvloop that answers from pre-built
bytes. It parses just enough HTTP/1.1 (request line, headers,
``Content-Length`` body; keep-alive) and serves:

* ``POST /v1/messages`` (Anthropic Messages), ``POST /v1/chat/completions``
  and ``POST /v1/responses`` (OpenAI): a small JSON answer, or, when the body
  contains ``"stream":true``, an SSE stream of ``--events`` events (default
  200) built with :mod:`aibridge_asgi.testing.streams`, sent with chunked
  transfer encoding, one write per event (as a provider does);
  ``POST /v1beta/models/gemini-2.5-pro:generateContent`` a JSON answer and
  ``...:streamGenerateContent`` (``alt=sse``) a stream, as Google sends them
  (CRLF line ends, the usage so far in every chunk);
* when the body contains ``bench-ttfb``: the headers and the first event,
  then the other events ``--ttfb-gap`` seconds (default 0.002) later, so that
  a time-to-first-byte sample is not slowed by the burst behind the first
  event (the client shares its core with the upstream);
* the same, slowly, when the body contains ``bench-slow``: the headers and the
  first event at once, then one event every ``--slow-interval`` seconds, for
  the memory test (1,000 open, mostly idle streams);
* ``GET /health``: ``ok``.

Usage: ``python bench/upstream.py --port 8101 [--events 200]``. It prints
``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from aibridge_asgi.testing.streams import (
    anthropic_events,
    anthropic_message,
    chat_completion,
    chat_events,
    gemini_events,
    gemini_response,
    response_events,
    response_object,
)

__all__ = ["build_responses", "main", "stream_events"]

STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
COMMON = b"date: Thu, 27 Nov 2025 10:00:00 GMT\r\nserver: bench-upstream\r\n"

_GEMINI = "/v1beta/models/gemini-2.5-pro"
_GOOGLE = b"x-gemini-service-tier: standard\r\nserver-timing: gfet4t7; dur=1\r\n"

# Per API: the JSON builder, the SSE builder, extra response headers.
_APIS: dict[str, tuple[Callable[..., Any], Callable[..., list[bytes]], bytes]] = {
    "/v1/messages": (
        anthropic_message,
        anthropic_events,
        b"request-id: req_bench_01\r\nanthropic-organization-id: org-bench\r\n",
    ),
    "/v1/chat/completions": (
        chat_completion,
        chat_events,
        b"x-request-id: req_bench_01\r\nopenai-processing-ms: 1\r\n",
    ),
    "/v1/responses": (
        response_object,
        response_events,
        b"x-request-id: req_bench_01\r\nopenai-processing-ms: 1\r\n",
    ),
    # Gemini: the method in the path says whether the answer streams.
    _GEMINI + ":generateContent": (gemini_response, gemini_events, _GOOGLE),
    _GEMINI + ":streamGenerateContent": (gemini_response, gemini_events, _GOOGLE),
}
#: Paths whose answer is always a stream, whatever the body says.
_STREAMING = {(_GEMINI + ":streamGenerateContent").encode()}


def stream_events(path: str, events: int) -> list[bytes]:
    """The SSE events of one streamed answer of exactly ``events`` events."""
    build = _APIS[path][1]
    overhead = len(build("x", pieces=1)) - 1  # events that are not text deltas
    pieces = max(1, events - overhead)
    # Pieces of equal length, so the builder splits the text into exactly
    # ``pieces`` deltas.
    text = "".join(f"tok{i % 1000:03d} " for i in range(pieces))[: pieces * 7]
    result = build(text, pieces=pieces)
    if len(result) != max(events, overhead + 1):
        raise AssertionError(f"{path}: built {len(result)} events, wanted {events}")
    return result


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """Pre-built response bytes for one path."""

    __slots__ = ("json", "slow_events", "sse_chunks", "sse_head")

    def __init__(self, path: str, events: int) -> None:
        build_json, _, extra = _APIS[path]
        body = json.dumps(build_json(), separators=(",", ":")).encode()
        self.json = (
            STATUS_LINE
            + b"content-type: application/json\r\n"
            + extra
            + COMMON
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        sse_events = stream_events(path, events)
        self.sse_head = (
            STATUS_LINE
            + b"content-type: text/event-stream; charset=utf-8\r\n"
            + b"cache-control: no-cache\r\n"
            + extra
            + COMMON
            + b"transfer-encoding: chunked\r\n\r\n"
        )
        # One write per event; the head goes with the first, the chunked
        # terminator with the last.
        chunks = [_chunk(e) for e in sse_events]
        chunks[0] = self.sse_head + chunks[0]
        chunks[-1] = chunks[-1] + b"0\r\n\r\n"
        self.sse_chunks = chunks
        self.slow_events = [_chunk(e) for e in sse_events]


def build_responses(events: int) -> dict[bytes, Answers]:
    """Pre-built answers, by request path."""
    return {path.encode(): Answers(path, events) for path in _APIS}


_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n"
    b'{"error":"not found"}\n'
)
_HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_BAD = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in order."""

    answers: ClassVar[dict[bytes, Answers]] = {}
    slow_interval = 10.0
    ttfb_gap = 0.002
    loop: asyncio.AbstractEventLoop

    __slots__ = ("buf", "slow_answer", "slow_index", "slow_timer", "transport")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.slow_timer: asyncio.TimerHandle | None = None
        self.slow_answer: Answers | None = None
        self.slow_index = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slow_timer is not None:
            self.slow_timer.cancel()
            self.slow_timer = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while self.transport is not None and self.slow_answer is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            lower = head.lower()
            length = 0
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else None].strip())
            elif b"\r\ntransfer-encoding:" in lower:
                self.transport.write(_BAD)
                self.transport.close()
                return
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            line_end = head.find(b"\r\n")
            parts = head[: line_end if line_end >= 0 else None].split(b" ")
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b"/"
            self._answer(path, body, b"\r\nconnection: close" in lower)

    def _answer(self, path: bytes, body: bytes, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        answers = self.answers.get(path)
        if answers is None:
            transport.write(_HEALTH if path == b"/health" else _NOT_FOUND)
        elif b'"stream":true' not in body and path not in _STREAMING:
            transport.write(answers.json)
        elif b"bench-ttfb" in body:
            # The first event alone, the rest a moment later: time to first
            # byte then measures the relay of that event, not the burst behind it.
            transport.write(answers.sse_chunks[0])
            self.slow_answer = answers  # holds further requests until the rest is out
            self.slow_timer = self.loop.call_later(self.ttfb_gap, self._ttfb_rest, close)
            return
        elif b"bench-slow" in body:
            self.slow_answer = answers
            self.slow_index = 1
            transport.write(answers.sse_head + answers.slow_events[0])
            self.slow_timer = self.loop.call_later(self.slow_interval, self._slow_next)
            return
        else:
            write = transport.write
            for chunk in answers.sse_chunks:
                write(chunk)
        if close:
            transport.close()

    def _ttfb_rest(self, close: bool) -> None:
        self.slow_timer = None
        answers, transport = self.slow_answer, self.transport
        self.slow_answer = None
        if answers is None or transport is None or transport.is_closing():
            return
        for chunk in answers.sse_chunks[1:]:
            transport.write(chunk)
        if close:
            transport.close()
        elif self.buf:
            self.data_received(b"")

    def _slow_next(self) -> None:
        self.slow_timer = None
        answers, transport = self.slow_answer, self.transport
        if answers is None or transport is None or transport.is_closing():
            return
        events = answers.slow_events
        transport.write(events[self.slow_index])
        self.slow_index += 1
        if self.slow_index >= len(events):
            transport.write(b"0\r\n\r\n")
            self.slow_answer = None
            if self.buf:
                self.data_received(b"")
        else:
            self.slow_timer = self.loop.call_later(self.slow_interval, self._slow_next)


async def serve(host: str, port: int, events: int, slow_interval: float, ttfb_gap: float) -> None:
    loop = asyncio.get_running_loop()
    UpstreamProtocol.answers = build_responses(events)
    UpstreamProtocol.slow_interval = slow_interval
    UpstreamProtocol.ttfb_gap = ttfb_gap
    UpstreamProtocol.loop = loop
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--events", type=int, default=200, help="events per SSE stream")
    parser.add_argument(
        "--slow-interval", type=float, default=10.0, help="seconds between slow-stream events"
    )
    parser.add_argument(
        "--ttfb-gap", type=float, default=0.002, help="seconds after the first event (bench-ttfb)"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bench extra installs it
        print("uvloop is missing: pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(2) from None
    uvloop.run(serve(args.host, args.port, args.events, args.slow_interval, args.ttfb_gap))


if __name__ == "__main__":
    main()
