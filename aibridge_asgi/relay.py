"""Relaying an upstream answer to the client: the hot path.

SSE answers go out event by event, byte for byte, as they arrive; a copy of
each event goes to the API's sans-IO observer on the way. A streamed JSON
array (Gemini without ``alt=sse``) goes out chunk by chunk as it arrives,
its elements observed on the way. Other answers are read whole (they are
small JSON documents), observed, and sent unchanged. During upstream
silence a started SSE stream gets SSE comment lines (a JSON array cannot
take any: it gets none).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.types import Message, Send

from ._asgi import UPSTREAM_BROKE, ClientGone, Runtime, header, send_error
from .apis import ApiInterception
from .auth import response_headers_for_client
from .follow import EventFollower
from .hooks import Timings
from .hooks import call as call_hooks
from .jsonarray import JSONArraySplitter
from .records import Cost, EndStatus, Record, TokenUsage
from .sse import EventTooLarge
from .upstream import UpstreamResponse, UpstreamStreamError

__all__ = ["KEEPALIVE_COMMENT", "Outcome", "relay_body", "relay_json_array", "relay_stream"]

logger = logging.getLogger("aibridge_asgi")

#: Sent while a started stream is silent; an SSE comment, never an event.
KEEPALIVE_COMMENT = b": keepalive\n\n"


@dataclass
class Outcome:
    """What happened so far; ends up in InterceptionEnded, hooks and the log."""

    rt: Runtime
    status: EndStatus = "failed"
    http_status: int | None = None
    error: str | None = None
    response_started: bool = False
    response_done: bool = False
    client_gone: bool = False
    began: float = 0.0
    upstream_began: float | None = None
    upstream_ended: float | None = None
    first_byte: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Decimal | None = None  # the sum of priced Cost records

    def emit(self, record: Record) -> None:
        """Hand a usage record to the recorder queue and the hooks."""
        if isinstance(record, TokenUsage):
            self.input_tokens += record.input_tokens
            self.output_tokens += record.output_tokens
            self.cache_read_tokens += record.cache_read_input_tokens
            self.cache_write_tokens += record.cache_write_input_tokens
        elif isinstance(record, Cost) and record.amount is not None:
            self.cost = record.amount if self.cost is None else self.cost + record.amount
        self.rt.records.put(record)
        if self.rt.hooks:
            call_hooks(self.rt.hooks, "produced", record)

    def timings(self, now: float) -> Timings:
        upstream = 0.0
        if self.upstream_began is not None:
            upstream = (self.upstream_ended or now) - self.upstream_began
        first = None if self.first_byte is None else self.first_byte - self.began
        return Timings(total=now - self.began, upstream=upstream, first_byte=first)


def error_message(body: bytes) -> str | None:
    """The message of a provider-shaped JSON error body, if it is one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return None


_ZLIB_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
_ZLIB_WBITS = 47  # zlib: accept a gzip or a zlib header


def content_encoding(headers: list[tuple[bytes, bytes]]) -> str:
    """The response's content coding, ``""`` for none or identity."""
    value = header(headers, b"content-encoding")
    if value is None:
        return ""
    coding = value.decode("latin-1").strip().lower()
    return "" if coding == "identity" else coding


def decoded(body: bytes, encoding: str) -> bytes | None:
    """``body`` decompressed, or None if the bridge cannot decode it."""
    if encoding not in _ZLIB_ENCODINGS:
        return None
    try:
        return zlib.decompress(body, _ZLIB_WBITS)
    except zlib.error:
        return None


async def _relay_unread(
    send: Send,
    response: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    encoding: str,
    outcome: Outcome,
) -> None:
    """Relay a stream the bridge cannot decode, unchanged and unobserved."""
    outcome.response_started = True
    outcome.http_status = response.status
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    try:
        async for chunk in response.iter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamStreamError as exc:
        outcome.error = str(exc)
        return  # leave the response cut, as the upstream cut it
    finally:
        outcome.upstream_ended = time.perf_counter()
    outcome.status = "completed" if response.status < 400 else "failed"
    outcome.error = f"usage not read: stream has content-encoding {encoding!r}"
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def relay_body(
    rt: Runtime,
    send: Send,
    kind: str,
    api: ApiInterception,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
) -> None:
    """Relay a whole (non-SSE) body unchanged, observing it when it is a success.

    The body is held in memory up to ``Limits.max_response_size``; a longer
    one is not relayed (502)."""
    chunks: list[bytes] = []
    size = 0
    limit = rt.limits.max_response_size
    try:
        async for chunk in response.iter_raw():
            size += len(chunk)
            if size > limit:
                chunks.clear()
                raise UpstreamStreamError(
                    f"upstream answer is larger than the limit of {limit} bytes"
                )
            chunks.append(chunk)
    except UpstreamStreamError as exc:
        outcome.upstream_ended = time.perf_counter()
        outcome.http_status, outcome.error = 502, str(exc)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 502, str(exc))
        error = UPSTREAM_BROKE
        await send_error(send, kind, error, (id_header,))
        return
    outcome.upstream_ended = time.perf_counter()
    body = b"".join(chunks)
    status = response.status
    # The body goes out as it came (still encoded, if it was); a decoded copy
    # is what gets read.
    encoding = content_encoding(response.headers)
    readable = body if not encoding else decoded(body, encoding)
    if status < 400:
        if readable is None:
            outcome.status = "completed"
            outcome.error = f"usage not read: body has content-encoding {encoding!r}"
        else:
            api.on_body(readable)
            if api.error is not None:
                outcome.error = api.error
            else:
                outcome.status = "completed"
    else:
        message = error_message(readable or b"")
        outcome.error = f"upstream answered {status}" + (f": {message}" if message else "")
    headers = response_headers_for_client(response.headers)
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append(id_header)
    outcome.response_started = True
    outcome.http_status = status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _start_stream(
    send: Send,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
) -> tuple[list[tuple[bytes, bytes]], Any, str] | None:
    """The headers a relayed stream goes out with, the decoder its body needs
    (``None`` for identity) and its encoding; ``None`` when the body went out
    unread instead (an encoding the bridge cannot decode)."""
    headers = response_headers_for_client(response.headers)
    encoding = content_encoding(response.headers)
    decoder = None
    if encoding in _ZLIB_ENCODINGS:
        decoder = zlib.decompressobj(_ZLIB_WBITS)
        headers = [(k, v) for k, v in headers if k != b"content-encoding"]
    elif encoding:
        await _relay_unread(send, response, [*headers, id_header], encoding, outcome)
        return None
    headers.append(id_header)
    outcome.response_started = True
    outcome.http_status = response.status
    return headers, decoder, encoding


def _decompress(decoder: Any, item: bytes, encoding: str) -> bytes:
    """One read of a compressed stream, decoded; corrupt data breaks the stream."""
    try:
        return bytes(decoder.decompress(item))
    except zlib.error:
        raise UpstreamStreamError(f"upstream sent corrupt {encoding!r} data") from None


async def relay_stream(
    rt: Runtime,
    raw_send: Send,
    api: ApiInterception,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
) -> None:
    """Relay an SSE body event by event, byte for byte, parsing a copy.

    A compressed stream (which the bridge did not ask for) is decompressed
    and relayed decoded, without its ``Content-Encoding``; an encoding the
    bridge cannot decode is relayed as it comes, unread.
    """
    start = await _start_stream(raw_send, response, id_header, outcome)
    if start is None:
        return
    headers, decoder, encoding = start
    # The keep-alive task and the relay both send: never at the same time.
    # The keep-alive holds the lock while it sends and skips its turn while
    # the relay is sending (data is flowing then); the relay waits for the
    # lock only when a keep-alive is going out, so that its own sends,
    # one per read, take no lock.
    lock = asyncio.Lock()
    relaying = False

    async def relay_send(message: Message) -> None:
        nonlocal relaying
        if lock.locked():
            async with lock:
                await raw_send(message)
            return
        relaying = True  # no await since the check: the keep-alive sees it
        try:
            await raw_send(message)
        finally:
            relaying = False

    async def keepalive_send(message: Message) -> None:
        async with lock:
            if not relaying:
                await raw_send(message)

    send: Send = raw_send if rt.keepalive_interval is None else relay_send

    await send({"type": "http.response.start", "status": response.status, "headers": headers})

    follower = EventFollower(api, outcome.emit, rt.limits.max_event_size)
    loop = asyncio.get_running_loop()
    last_read = loop.time()

    async def keep_alive(interval: float) -> None:
        """While the upstream is silent, send an SSE comment every interval.
        Only whole events are ever sent, so a comment never splits one."""
        try:
            while True:
                wait = last_read + interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await keepalive_send(
                    {"type": "http.response.body", "body": KEEPALIVE_COMMENT, "more_body": True}
                )
                await asyncio.sleep(interval)
        except ClientGone:
            return  # the disconnect watcher ends the call

    keeper = None
    if rt.keepalive_interval is not None:
        keeper = loop.create_task(keep_alive(rt.keepalive_interval))
    broke: UpstreamStreamError | None = None
    try:
        async for item in response.iter_raw():
            last_read = loop.time()
            if decoder is not None:
                item = _decompress(decoder, item, encoding)
            try:
                body = follower.take(item)
            except EventTooLarge as exc:
                broke = UpstreamStreamError(f"upstream stream is malformed: {exc}")
                body = follower.give_up(exc.events)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                break
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
    except UpstreamStreamError as exc:
        broke = exc
    finally:
        outcome.upstream_ended = time.perf_counter()
        if keeper is not None:
            keeper.cancel()

    if decoder is not None and broke is None:
        tail = decoder.flush()
        if tail:
            body = follower.take(tail)
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
    rest = follower.finish()
    if broke is not None:
        # Give the client what arrived, then cut its connection as the
        # upstream cut ours, so that it sees the answer is incomplete.
        outcome.error = str(broke)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 502, str(broke))
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        return
    if response.status >= 400:
        outcome.error = f"upstream answered {response.status}"
    elif api.error is not None:
        outcome.error = api.error
    elif not api.complete:
        outcome.error = "upstream stream ended before its final event"
    else:
        outcome.status = "completed"
    await send({"type": "http.response.body", "body": rest, "more_body": False})


async def relay_json_array(
    rt: Runtime,
    send: Send,
    api: ApiInterception,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
) -> None:
    """Relay a streamed JSON array chunk by chunk, byte for byte, handing
    each complete element to the observer. A compressed body is relayed
    decoded, like an SSE stream."""
    start = await _start_stream(send, response, id_header, outcome)
    if start is None:
        return
    headers, decoder, encoding = start
    await send({"type": "http.response.start", "status": response.status, "headers": headers})

    splitter = JSONArraySplitter()
    observing = True

    def observe(data: bytes) -> None:
        nonlocal observing, splitter
        if not observing:
            return
        try:
            for element in splitter.feed(data):
                api.on_element(element)
        except Exception:
            logger.exception("stream observer failed; relaying without it")
            observing = False
            api.error = "the bridge could not follow this stream"
        if observing and splitter.pending > rt.limits.max_event_size:
            # Bounded like an SSE event: stop reading (the bytes still go
            # through), let go of the buffer.
            observing = False
            splitter = JSONArraySplitter()
            api.error = (
                f"an element of the answer is longer than {rt.limits.max_event_size} bytes; "
                "usage not read"
            )
        for record in api.drain():
            outcome.emit(record)

    broke: UpstreamStreamError | None = None
    try:
        async for item in response.iter_raw():
            if decoder is not None:
                item = _decompress(decoder, item, encoding)
            if item:
                observe(item)
                await send({"type": "http.response.body", "body": item, "more_body": True})
    except UpstreamStreamError as exc:
        broke = exc
    finally:
        outcome.upstream_ended = time.perf_counter()
    if decoder is not None and broke is None:
        tail = decoder.flush()
        if tail:
            observe(tail)
            await send({"type": "http.response.body", "body": tail, "more_body": True})
    rest = splitter.finish()
    if broke is not None:
        outcome.error = str(broke)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 502, str(broke))
        return  # leave the response cut, as the upstream cut it
    if observing and not splitter.is_array and rest.strip():
        api.on_body(rest)  # one object where an array was expected
        for record in api.drain():
            outcome.emit(record)
    if api.error is not None:
        outcome.error = api.error
    elif (splitter.is_array and not splitter.closed) or not api.complete:
        outcome.error = "upstream stream ended before its final event"
    else:
        outcome.status = "completed"
    await send({"type": "http.response.body", "body": b"", "more_body": False})
