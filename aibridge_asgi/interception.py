"""A bridged call from start to end: read, record, forward, relay, record.

The lifecycle, in order:

1. read the body (413 past the limit) and check it (400);
2. record :class:`InterceptionStarted` (always, once authentication passed);
3. send upstream, relay the answer: SSE byte for byte, flushed per event,
   with a sans-IO observer reading a copy; JSON bodies unchanged;
4. record :class:`InterceptionEnded` (always, exactly once), with
   ``completed``, ``failed`` or ``cancelled``.

A watcher task listens for the client's disconnect the whole time and
cancels the upstream call when it comes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import Message, Receive, Scope, Send

from ._asgi import ClientGone, Runtime, content_length, read_body, send_error, upstream_url
from .apis import ApiInterception, interception_for
from .auth import request_headers_for_upstream, response_headers_for_client
from .clients import detect_client
from .errors import BridgeError
from .hooks import Timings
from .hooks import call as call_hooks
from .records import (
    Actor,
    EndStatus,
    InterceptionEnded,
    InterceptionStarted,
    Record,
    TokenUsage,
    utcnow,
)
from .routing import RESPONSES, Route
from .sse import SSEEvent, SSEScanner
from .upstream import UpstreamResponse, UpstreamStreamError, UpstreamTimeout, UpstreamUnreachable

__all__ = ["INTERCEPTION_ID_HEADER", "KEEPALIVE_COMMENT", "intercept"]

logger = logging.getLogger("aibridge_asgi")
#: One INFO record per interception end, its fields under ``record.aibridge``.
end_log = logging.getLogger("aibridge_asgi.interceptions")

INTERCEPTION_ID_HEADER = b"x-aibridge-interception-id"
#: Sent while a started stream is silent; an SSE comment, never an event.
KEEPALIVE_COMMENT = b": keepalive\n\n"


@dataclass
class _Outcome:
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

    def emit(self, record: Record) -> None:
        """Hand a usage record to the recorder queue and the hooks."""
        if isinstance(record, TokenUsage):
            self.input_tokens += record.input_tokens
            self.output_tokens += record.output_tokens
            self.cache_read_tokens += record.cache_read_input_tokens
            self.cache_write_tokens += record.cache_write_input_tokens
        self.rt.records.put(record)
        if self.rt.hooks:
            call_hooks(self.rt.hooks, "produced", record)

    def timings(self, now: float) -> Timings:
        upstream = 0.0
        if self.upstream_began is not None:
            upstream = (self.upstream_ended or now) - self.upstream_began
        first = None if self.first_byte is None else self.first_byte - self.began
        return Timings(total=now - self.began, upstream=upstream, first_byte=first)


def _parse_request(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or 400."""
    if not raw:
        raise BridgeError(400, "request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise BridgeError(400, "request body is not valid UTF-8") from None
    except ValueError as exc:
        raise BridgeError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BridgeError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BridgeError(400, "request body must be a JSON object")
    return body


def _check_request(body: dict[str, Any], route: str) -> None:
    """400 for a missing model or a non-boolean stream; 501 for what the
    bridge does not support."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BridgeError(400, "'model' is required and must be a non-empty string")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BridgeError(400, "'stream' must be a boolean")
    if route == RESPONSES and body.get("background") is True:
        raise BridgeError(
            501,
            "background responses are not supported through this gateway; "
            "send the request without 'background': true",
        )


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio wraps task errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _error_message(body: bytes) -> str | None:
    """The message of a provider-shaped JSON error body, if it is one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return None


async def intercept(
    rt: Runtime, scope: Scope, receive: Receive, send: Send, route: Route, actor: Actor
) -> None:
    """Handle one authenticated request to a bridged route."""
    assert route.api is not None
    outcome = _Outcome(rt, began=time.perf_counter())
    provider = route.provider
    interception_id = str(uuid.uuid4())
    id_header = (INTERCEPTION_ID_HEADER, interception_id.encode())
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}

    body: dict[str, Any] | None = None
    raw = b""
    refusal: BridgeError | None = None
    gone = False
    try:
        raw = await read_body(receive, rt.max_body_size, content_length(raw_headers))
        body = _parse_request(raw)
        _check_request(body, route.api)
    except BridgeError as exc:
        refusal = exc
    except ClientGone:
        gone = True

    client, session_id = detect_client(headers, body)
    model = body.get("model") if body is not None else None
    started = InterceptionStarted(
        interception_id=interception_id,
        actor=actor,
        provider=provider.kind,
        provider_name=provider.name,
        model=model if isinstance(model, str) else "",
        route=route.api,
        streaming=bool(body and body.get("stream") is True),
        client=client,
        client_session_id=session_id,
        user_agent=headers.get("user-agent"),
        started_at=utcnow(),
        metadata=actor.metadata,
    )
    rt.records.put(started)
    if rt.hooks:
        call_hooks(rt.hooks, "interception_started", started, raw_headers)
    try:
        if gone:
            outcome.status, outcome.error = "cancelled", "client disconnected while sending"
        elif refusal is not None:
            outcome.http_status, outcome.error = refusal.status, refusal.message
            await send_error(send, provider.kind, refusal, (id_header,))
        else:
            assert body is not None
            api = interception_for(route.api, interception_id, body)
            await _exchange(rt, scope, receive, send, route, api, raw, id_header, outcome)
    except anyio.get_cancelled_exc_class():
        outcome.status, outcome.error = "cancelled", "bridge shut down during the call"
        raise
    except Exception as exc:
        logger.exception("interception %s failed inside the bridge", interception_id)
        cause = type(_root_cause(exc)).__name__
        outcome.status, outcome.error = "failed", f"internal bridge error ({cause})"
        if not outcome.response_started:
            outcome.http_status = 500
            error = BridgeError(500, "the AI gateway failed to handle this request")
            try:
                await send_error(send, provider.kind, error, (id_header,))
            except Exception:
                logger.debug("could not report the error to the client", exc_info=True)
    finally:
        ended = InterceptionEnded(
            interception_id=interception_id,
            ended_at=utcnow(),
            status=outcome.status,
            http_status=outcome.http_status,
            error=outcome.error,
        )
        rt.records.put(ended)
        timings = outcome.timings(time.perf_counter())
        if rt.hooks:
            call_hooks(rt.hooks, "interception_ended", started, ended, timings)
        if end_log.isEnabledFor(logging.INFO):
            _log_end(started, ended, timings, outcome)


def _log_end(
    started: InterceptionStarted, ended: InterceptionEnded, timings: Timings, outcome: _Outcome
) -> None:
    """One structured log record per interception (fields under ``aibridge``)."""
    fields = {
        "interception_id": started.interception_id,
        "actor_id": started.actor.id,
        "provider": started.provider,
        "provider_name": started.provider_name,
        "model": started.model,
        "route": started.route,
        "client": started.client,
        "streaming": started.streaming,
        "status": ended.status,
        "http_status": ended.http_status,
        "duration_ms": round(timings.total * 1000, 3),
        "time_to_first_byte_ms": (
            None if timings.first_byte is None else round(timings.first_byte * 1000, 3)
        ),
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "cache_read_input_tokens": outcome.cache_read_tokens,
        "cache_write_input_tokens": outcome.cache_write_tokens,
        "error": ended.error,
    }
    end_log.info(
        "interception %s %s %s/%s %s",
        started.interception_id,
        ended.status,
        started.provider_name,
        started.model,
        ended.http_status,
        extra={"aibridge": fields},
    )


async def _exchange(
    rt: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    api: ApiInterception,
    raw: bytes,
    id_header: tuple[bytes, bytes],
    outcome: _Outcome,
) -> None:
    """Call upstream and relay the answer while watching for a disconnect."""
    provider = route.provider
    url = upstream_url(provider.resolved_base_url, route.upstream_path, scope["query_string"])
    added = provider.upstream_headers
    for hook in rt.hooks:  # e.g. traceparent, replacing the client's own
        try:
            added = (*added, *hook.upstream_headers(api.interception_id))
        except Exception:
            logger.exception("hook %s.upstream_headers failed", type(hook).__name__)
    headers = request_headers_for_upstream(scope["headers"], rt.strip_headers, added)

    async def watch_disconnect(cancel: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not outcome.response_done:
                    outcome.client_gone = True
                    cancel.cancel()
                return

    async def client_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if outcome.first_byte is None and message.get("body"):
                outcome.first_byte = time.perf_counter()
            if not message.get("more_body", False):
                # From here on the server reports "disconnect" to the watcher.
                outcome.response_done = True
        try:
            await send(message)
        except OSError:  # servers other than uvicorn raise once the client left
            outcome.client_gone = True
            raise ClientGone() from None

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect, tg.cancel_scope)
            try:
                await _call(rt, client_send, route, api, url, headers, raw, id_header, outcome)
            except ClientGone:
                pass
            finally:
                tg.cancel_scope.cancel()
    finally:
        try:
            api.finish()
        except Exception:
            logger.exception("observer failed to finish")
        for record in api.drain():
            outcome.emit(record)
    if outcome.client_gone:
        outcome.status, outcome.error = "cancelled", "client disconnected"


async def _call(
    rt: Runtime,
    send: Send,
    route: Route,
    api: ApiInterception,
    url: str,
    headers: list[tuple[bytes, bytes]],
    raw: bytes,
    id_header: tuple[bytes, bytes],
    outcome: _Outcome,
) -> None:
    kind = route.provider.kind
    body = api.upstream_body(raw)
    outcome.upstream_began = began = time.perf_counter()
    try:
        response = await rt.upstream.send("POST", url, headers, body)
    except UpstreamTimeout as exc:
        outcome.upstream_ended = time.perf_counter()
        outcome.http_status, outcome.error = 504, str(exc)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 504, str(exc))
        await send_error(
            send,
            kind,
            BridgeError(504, "the upstream provider did not answer in time"),
            (id_header,),
        )
        return
    except UpstreamUnreachable as exc:
        outcome.upstream_ended = time.perf_counter()
        outcome.http_status, outcome.error = 502, str(exc)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 502, str(exc))
        await send_error(
            send, kind, BridgeError(502, "the upstream provider could not be reached"), (id_header,)
        )
        return
    if rt.hooks:
        seconds = time.perf_counter() - began
        call_hooks(rt.hooks, "upstream_responded", api.interception_id, response.status, seconds)
    try:
        content_type = next((v for k, v in response.headers if k == b"content-type"), b"")
        if content_type.startswith(b"text/event-stream"):
            await _relay_stream(rt, send, api, response, id_header, outcome)
        else:
            await _relay_body(rt, send, kind, api, response, id_header, outcome)
    finally:
        if outcome.upstream_ended is None:
            outcome.upstream_ended = time.perf_counter()
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def _relay_body(
    rt: Runtime,
    send: Send,
    kind: str,
    api: ApiInterception,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: _Outcome,
) -> None:
    """Relay a whole (non-SSE) body unchanged, observing it when it is a success."""
    chunks: list[bytes] = []
    try:
        async for chunk in response.iter_raw():
            chunks.append(chunk)
    except UpstreamStreamError as exc:
        outcome.upstream_ended = time.perf_counter()
        outcome.http_status, outcome.error = 502, str(exc)
        if rt.hooks:
            call_hooks(rt.hooks, "upstream_failed", api.interception_id, 502, str(exc))
        error = BridgeError(502, "the upstream provider's answer broke off")
        await send_error(send, kind, error, (id_header,))
        return
    outcome.upstream_ended = time.perf_counter()
    body = b"".join(chunks)
    status = response.status
    if status < 400:
        api.on_body(body)
        if api.error is not None:
            outcome.error = api.error
        else:
            outcome.status = "completed"
    else:
        message = _error_message(body)
        outcome.error = f"upstream answered {status}" + (f": {message}" if message else "")
    headers = response_headers_for_client(response.headers)
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append(id_header)
    outcome.response_started = True
    outcome.http_status = status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _relay_stream(
    rt: Runtime,
    send: Send,
    api: ApiInterception,
    response: UpstreamResponse,
    id_header: tuple[bytes, bytes],
    outcome: _Outcome,
) -> None:
    """Relay an SSE body event by event, byte for byte, parsing a copy."""
    headers = response_headers_for_client(response.headers)
    headers.append(id_header)
    outcome.response_started = True
    outcome.http_status = response.status
    await send({"type": "http.response.start", "status": response.status, "headers": headers})

    scanner = SSEScanner()
    observing = True
    keepalive = rt.keepalive_interval
    tx, rx = anyio.create_memory_object_stream[bytes | UpstreamStreamError](8)

    async def pump() -> None:
        async with tx:
            try:
                async for chunk in response.iter_raw():
                    await tx.send(chunk)
            except UpstreamStreamError as exc:
                await tx.send(exc)
            finally:
                outcome.upstream_ended = time.perf_counter()

    def observe(events: list[SSEEvent]) -> bytes:
        """Show each event to the observer; return the bytes the client gets."""
        nonlocal observing
        out: list[bytes] = []
        for event in events:
            keep = True
            if observing:
                try:
                    keep = api.on_event(event)
                except Exception:
                    logger.exception("stream observer failed; relaying without it")
                    observing = False
                    api.error = "the bridge could not follow this stream"
            if keep:
                out.append(event.raw)
        for record in api.drain():
            outcome.emit(record)
        return out[0] if len(out) == 1 else b"".join(out)

    broke: UpstreamStreamError | None = None
    gone = False
    async with anyio.create_task_group() as tg, rx:
        tg.start_soon(pump)
        try:
            while True:
                item: bytes | UpstreamStreamError | None = None
                try:
                    if keepalive is None:
                        item = await rx.receive()
                    else:
                        with anyio.move_on_after(keepalive):
                            item = await rx.receive()
                except anyio.EndOfStream:
                    break
                if item is None:  # silent for a whole interval: keep the connection warm
                    await send(
                        {"type": "http.response.body", "body": KEEPALIVE_COMMENT, "more_body": True}
                    )
                    continue
                if isinstance(item, UpstreamStreamError):
                    broke = item
                    break
                events = scanner.feed(item)
                if events:
                    body = observe(events)
                    if body:
                        await send({"type": "http.response.body", "body": body, "more_body": True})
        except ClientGone:
            gone = True  # re-raised below, outside the task group (which would wrap it)
        finally:
            tg.cancel_scope.cancel()
    if gone:
        raise ClientGone()

    last_events, rest = scanner.finish()
    if last_events:
        rest = observe(last_events) + rest
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
