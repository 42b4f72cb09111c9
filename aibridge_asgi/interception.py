"""A bridged call from start to end: read, record, forward, relay, record.

The lifecycle, in order:

1. read the body (413 past the limit) and check it (400);
2. record :class:`InterceptionStarted` (always, once authentication passed);
3. send upstream, relay the answer: SSE byte for byte, flushed per event,
   with a sans-IO observer reading a copy; JSON bodies unchanged;
4. record the usage (and its :class:`~aibridge_asgi.records.Cost`, when the
   bridge has a price book);
5. record :class:`InterceptionEnded` (always, exactly once), with
   ``completed``, ``failed`` or ``cancelled``.

A watcher task listens for the client's disconnect and cancels the upstream
call when it comes; it starts once the call has lasted ``WATCH_AFTER``
(50 ms), so the many calls that end sooner do without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ._asgi import (
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
    ClientGone,
    Runtime,
    header,
    read_body,
    send_error,
    upstream_url,
)
from .apis import ApiInterception, interception_for
from .apis.base import clean_text
from .auth import request_headers_for_upstream
from .clients import detect_client
from .errors import BridgeError
from .hooks import Timings
from .hooks import call as call_hooks
from .ids import new_id
from .keys import Access, Credential
from .records import Actor, InterceptionEnded, InterceptionStarted, TokenUsage, utcnow
from .relay import KEEPALIVE_COMMENT, Outcome, relay_body, relay_json_array, relay_stream
from .routing import RESPONSES, STREAM_GENERATE_CONTENT, Route
from .upstream import (
    UpstreamRequestInvalid,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["INTERCEPTION_ID_HEADER", "intercept"]

logger = logging.getLogger("aibridge_asgi")
#: One INFO record per interception end, its fields under ``record.aibridge``.
end_log = logging.getLogger("aibridge_asgi.interceptions")

INTERCEPTION_ID_HEADER = b"x-aibridge-interception-id"

#: Seconds into a call before the bridge starts listening for a disconnect.
WATCH_AFTER = 0.05


def _check_content_type(value: str | None) -> None:
    """415 unless the body is declared as JSON. A missing content type is
    accepted (the body must still parse as JSON)."""
    if value is None:
        return
    media = value.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise BridgeError(415, f"content-type must be application/json, not {media[:60]!r}")


def _parse_request(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or 400."""
    if not raw:
        raise BridgeError(400, "request body is empty; expected a JSON object")
    try:
        # Strict UTF-8 (json.loads on bytes would let encoded surrogates pass).
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BridgeError(400, "request body is not valid UTF-8") from None
    except ValueError as exc:
        raise BridgeError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BridgeError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BridgeError(400, "request body must be a JSON object")
    return body


def _check_request(body: dict[str, Any], route: str, path_model: str | None) -> None:
    """400 for a missing model (unless the path names it) or a non-boolean
    stream; 501 for what the bridge does not support."""
    model = body.get("model")
    if path_model is None and (not isinstance(model, str) or not model):
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
    """The first leaf of an exception group (a host's upstream seam or a task
    group inside it may raise one)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def intercept(
    rt: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    actor: Actor,
    access: Access | None = None,
) -> None:
    """Handle one authenticated request to a bridged route; ``access`` says
    which credentials it may use (default: the provider's pool)."""
    if access is None:
        access = rt.keys.access(route.provider.name)
    assert route.api is not None
    outcome = Outcome(rt, began=time.perf_counter())
    provider = route.provider
    interception_id = new_id()
    id_header = (INTERCEPTION_ID_HEADER, interception_id.encode())
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}

    body: dict[str, Any] | None = None
    raw = b""
    refusal: BridgeError | None = None
    gone = False
    try:
        _check_content_type(headers.get("content-type"))
        raw = await read_body(rt, scope, receive)
        body = _parse_request(raw)
        _check_request(body, route.api, route.model)
    except BridgeError as exc:
        refusal = exc
    except ClientGone:
        gone = True

    client, session_id = detect_client(headers, body)
    model = route.model or (body.get("model") if body is not None else None)
    started = InterceptionStarted(
        interception_id=interception_id,
        actor=actor.without_credentials(),
        provider=provider.kind,
        provider_name=provider.name,
        model=clean_text(model) if isinstance(model, str) else "",
        route=route.api,
        streaming=(
            route.api == STREAM_GENERATE_CONTENT or bool(body and body.get("stream") is True)
        ),
        client=client,
        client_session_id=clean_text(session_id),
        user_agent=headers.get("user-agent"),
        started_at=utcnow(),
        metadata=actor.metadata,
    )
    rt.records.put(started)
    if rt.hooks:
        call_hooks(rt.hooks, "interception_started", started, raw_headers)
    admitted: tuple[Any, ...] = ()  # policy checks to tell about the end
    try:
        if refusal is None and not gone and rt.policy is not None:
            refusal, admitted = await rt.policy.admit(started)
        if gone:
            outcome.status, outcome.error = "cancelled", "client disconnected while sending"
        elif refusal is not None:
            outcome.http_status, outcome.error = refusal.status, refusal.message
            await send_error(send, provider.kind, refusal, (id_header,))
        else:
            assert body is not None
            api = interception_for(
                route.api, interception_id, body, rt.tool_result_content, route.model
            )
            await _exchange(rt, scope, receive, send, route, api, raw, id_header, outcome, access)
    except asyncio.CancelledError:
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
        ended = record_end(rt, started, outcome, access.served)
        if admitted:
            assert rt.policy is not None
            await rt.policy.finish(admitted, started, ended, outcome)


def record_end(
    rt: Runtime, started: InterceptionStarted, outcome: Outcome, credential: Credential | None
) -> InterceptionEnded:
    """End an interception: its :class:`InterceptionEnded` record, the hooks'
    ``interception_ended`` and the end log line (HTTP calls and WebSocket
    turns alike)."""
    ended = InterceptionEnded(
        interception_id=started.interception_id,
        ended_at=utcnow(),
        status=outcome.status,
        http_status=outcome.http_status,
        error=outcome.error,
        credential=credential.kind if credential else None,
        key_name=credential.name if credential else None,
    )
    rt.records.put(ended)
    logged = end_log.isEnabledFor(logging.INFO)
    if rt.hooks or logged:
        timings = outcome.timings(time.perf_counter())
        if rt.hooks:
            call_hooks(rt.hooks, "interception_ended", started, ended, timings)
        if logged:
            _log_end(started, ended, timings, outcome)
    return ended


def _log_end(
    started: InterceptionStarted, ended: InterceptionEnded, timings: Timings, outcome: Outcome
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
        "credential": ended.credential,
        "key_name": ended.key_name,
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
    outcome: Outcome,
    access: Access,
) -> None:
    """Call upstream and relay the answer while watching for a disconnect."""
    provider = route.provider
    url = upstream_url(provider.resolved_base_url, route.upstream_path, scope["query_string"])
    added = provider.extra_headers
    for hook in rt.hooks:  # e.g. traceparent, replacing the client's own
        try:
            added = (*added, *hook.upstream_headers(api.interception_id))
        except Exception:
            logger.exception("hook %s.upstream_headers failed", type(hook).__name__)
    try:
        headers = request_headers_for_upstream(scope["headers"], rt.strip_for(provider), added)
    except BridgeError as exc:
        outcome.http_status, outcome.error = exc.status, exc.message
        await send_error(send, provider.kind, exc, (id_header,))
        return

    task = asyncio.current_task()
    assert task is not None
    finished = False

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not outcome.response_done and not finished:
                    outcome.client_gone = True
                    task.cancel()  # stops the upstream call, wherever it is
                return

    async def client_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body")
            # A keep-alive comment is not the answer's first byte.
            if outcome.first_byte is None and body and body is not KEEPALIVE_COMMENT:
                outcome.first_byte = time.perf_counter()
            if not message.get("more_body", False):
                # From here on the server reports "disconnect" to the watcher.
                outcome.response_done = True
        try:
            await send(message)
        except OSError:  # servers other than uvicorn raise once the client left
            outcome.client_gone = True
            raise ClientGone() from None

    # The watcher starts once the call has lasted WATCH_AFTER: most short
    # calls end before, and never pay for a task (a disconnect within that
    # time is seen when the watcher starts, by its first receive()).
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None

    def start_watcher() -> None:
        nonlocal watcher
        if not finished:
            watcher = loop.create_task(watch_disconnect())

    timer = rt.deadlines.after(WATCH_AFTER, start_watcher)
    try:
        try:
            await _call(rt, client_send, route, api, url, headers, raw, id_header, outcome, access)
        except ClientGone:
            pass
        except asyncio.CancelledError:
            if not outcome.client_gone:
                raise  # the server is cancelling us: not the client's doing
            task.uncancel()
        finally:
            finished = True  # no await since _call ended: the watcher cannot fire
            rt.deadlines.cancel(timer)
            if watcher is not None:
                watcher.cancel()
    finally:
        try:
            api.finish()
        except Exception:
            logger.exception("observer failed to finish")
        for record in api.drain():
            outcome.emit(record)
            if rt.costing is not None and isinstance(record, TokenUsage):
                # Priced on what was seen, also when the client left early.
                outcome.emit(rt.costing.cost(record, route.provider, api.model))
    if outcome.client_gone:
        outcome.status, outcome.error = "cancelled", "client disconnected"


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only)."""
    value = header(headers, b"retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


async def _send_upstream(
    rt: Runtime,
    send: Send,
    route: Route,
    api: ApiInterception,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
    key: tuple[str, str, str],
    access: Access,
) -> UpstreamResponse | None:
    """Send upstream, retrying as the policy allows (nothing has reached the
    client yet), on the next pooled key after a 429/401/403 (see
    :mod:`aibridge_asgi.keys`) and as the circuit breaker permits. Returns
    the response to relay, or None when the client was already answered
    with an error."""
    kind = route.provider.kind
    policy = rt.retry
    breakers = rt.breakers
    attempt = 0
    while True:
        if breakers is not None:
            wait = breakers.acquire(key)
            if wait is not None:
                outcome.http_status, outcome.error = 503, "circuit breaker open"
                if rt.hooks:
                    call_hooks(rt.hooks, "circuit_rejected", key)
                error = BridgeError(
                    503,
                    "the upstream provider is failing for this model; "
                    f"the gateway is not calling it for {wait} s",
                    headers=((b"retry-after", str(wait).encode()),),
                )
                await send_error(send, kind, error, (id_header,))
                return None
        credential = access.next()
        if credential is None:  # every pooled key is cooling down
            error = access.exhausted()
            if breakers is not None:
                breakers.record(key, None)
            outcome.http_status, outcome.error = 429, "every provider key is cooling down"
            await send_error(send, kind, error, (id_header,))
            return None
        began = time.perf_counter()
        if outcome.upstream_began is None:
            outcome.upstream_began = began
        try:
            response = await rt.upstream.send("POST", url, [*headers, *credential.headers], body)
        except UpstreamRequestInvalid as exc:
            if breakers is not None:
                breakers.record(key, None)
            outcome.http_status, outcome.error = 400, str(exc)
            await send_error(send, kind, BridgeError(400, str(exc)), (id_header,))
            return None
        except (UpstreamTimeout, UpstreamUnreachable) as exc:
            if breakers is not None:
                breakers.record(key, True)
            if attempt < policy.max_retries and policy.connect_errors and exc.before_send:
                attempt += 1
                await asyncio.sleep(policy.backoff * 2 ** (attempt - 1))
                continue
            outcome.upstream_ended = time.perf_counter()
            status, answer = (
                (504, UPSTREAM_TIMEOUT)
                if isinstance(exc, UpstreamTimeout)
                else (502, UPSTREAM_UNREACHABLE)
            )
            outcome.http_status, outcome.error = status, str(exc)
            if rt.hooks:
                call_hooks(rt.hooks, "upstream_failed", api.interception_id, status, str(exc))
            await send_error(send, kind, answer, (id_header,))
            return None
        status = response.status
        if rt.hooks:
            seconds = time.perf_counter() - began
            call_hooks(rt.hooks, "upstream_responded", api.interception_id, status, seconds)
        if access.fail_over(credential, status, response.headers):
            if breakers is not None:
                breakers.record(key, None)  # the key's limit, not the upstream's health
            await response.aclose()
            continue
        if breakers is not None and status >= 400:
            # The upstream answered: only overload statuses count against it.
            breakers.record(key, breakers.is_failure_status(status))
        if status in policy.statuses and attempt < policy.max_retries:
            wait_for = _retry_after(response.headers)
            delay = policy.backoff * 2**attempt if wait_for is None else wait_for
            if delay <= policy.max_wait:
                await response.aclose()
                attempt += 1
                await asyncio.sleep(delay)
                continue
        return response


async def _call(
    rt: Runtime,
    send: Send,
    route: Route,
    api: ApiInterception,
    url: str,
    headers: list[tuple[bytes, bytes]],
    raw: bytes,
    id_header: tuple[bytes, bytes],
    outcome: Outcome,
    access: Access,
) -> None:
    # The circuit breaker's key: provider instance, route, model.
    key = (route.provider.name, route.api or "", api.model)
    body = api.upstream_body(raw)
    response = await _send_upstream(
        rt, send, route, api, url, headers, body, id_header, outcome, key, access
    )
    if response is None:
        return
    verdict: bool | None = None
    try:
        content_type = header(response.headers, b"content-type") or b""
        if content_type.startswith(b"text/event-stream"):
            await relay_stream(rt, send, api, response, id_header, outcome)
        elif api.streams_json_array and response.status < 400:
            await relay_json_array(rt, send, api, response, id_header, outcome)
        else:
            await relay_body(rt, send, route.provider.kind, api, response, id_header, outcome)
        verdict = api.overloaded
    finally:
        if rt.breakers is not None and response.status < 400:
            # Success unless a mid-stream overload error came; no verdict if
            # the client left or the bridge failed before the end.
            rt.breakers.record(key, verdict)
        if outcome.upstream_ended is None:
            outcome.upstream_ended = time.perf_counter()
        # Also after a cancellation: asyncio delivers it once, this await runs.
        await response.aclose()
