"""OpenAI Responses over a WebSocket: one socket, many interceptions.

Codex (with ``supports_websockets = true`` on its model provider) opens
``GET <base_url>/responses`` as a WebSocket and sends each turn as a text
frame ``{"type": "response.create", ...}``; the answer comes back as one
text frame per Responses event. The bridge:

1. routes and authenticates the handshake like an HTTP request (a refusal is
   an HTTP answer through the ``websocket.http.response`` extension, else a
   close before accepting, code 1008);
2. opens the provider's ``wss://.../responses`` with the provider key (and
   the client's other handshake headers), then accepts the client;
3. relays text and binary frames both ways unchanged, parsing copies on the
   side: each client ``response.create`` starts one interception, observed
   by the same :class:`~aibridge_asgi.apis.ResponsesInterception` as over
   HTTP, and ended by its terminal event (``response.completed``,
   ``response.failed``, ``response.incomplete``) or an ``error`` event;
4. passes close codes through both ways and closes everything it opened.

A warm-up (``"generate": false``) is not an interception: it is relayed and
produces no records of its own. Should the provider report tokens for it,
they are recorded as a :class:`~aibridge_asgi.records.TokenUsage` of the
next turn on the socket (the turn it prepared), under the warm-up's
response id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from ._asgi import Runtime
from .apis import ResponsesInterception
from .apis.base import clean_text
from .auth import extract_token, log_resolver_failure, request_headers_for_upstream
from .clients import detect_client
from .config import ProviderConfig
from .errors import BridgeError, error_body
from .hooks import call as call_hooks
from .ids import new_id
from .interception import record_end
from .keys import Access, Credential
from .records import (
    Actor,
    EndStatus,
    InterceptionStarted,
    Record,
    TokenUsage,
    utcnow,
)
from .relay import Outcome
from .routing import RESPONSES, Routes
from .sse import SSEEvent

__all__ = ["CLOSE_BAD_GATEWAY", "WebSocketSessions", "WebSocketSettings"]

logger = logging.getLogger("aibridge_asgi")

#: Close codes the bridge sends itself (RFC 6455 and the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
#: "Bad Gateway": the upstream could not be reached or broke off.
CLOSE_BAD_GATEWAY = 1014

# Codes that only describe a close locally and may never be sent in a frame.
_UNSENDABLE = {1005: CLOSE_NORMAL, 1006: CLOSE_GOING_AWAY, 1015: CLOSE_GOING_AWAY}

# Handshake headers of the client's own connection, never forwarded
# (aiohttp makes its own for the upstream handshake).
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"origin",
    }
)

# The "type" of an event, read from the first bytes of its JSON so that
# deltas are relayed without being parsed.
_TYPE = re.compile(r'^\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.]+)"')
_TURN_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


@dataclass
class WebSocketSettings:
    """How the bridge handles WebSocket connections (``bridge.websockets.settings``).

    ``enabled``: when False every upgrade is refused (HTTP 426), as before
    this feature. ``idle_timeout``: seconds a socket may stay open with no
    response running and no client message before the bridge closes it
    (code 1001); ``None`` for no limit. ``max_message_size``: a client
    message above this many bytes closes the socket with 1009 (``None``:
    the bridge's ``Limits.max_body_size``); upstream messages get the same
    limit.
    ``heartbeat``: seconds between the bridge's pings to the upstream (a
    missing pong closes it); ``connect_timeout``: seconds to open the
    upstream socket; ``read_timeout``: seconds of upstream silence during a
    response before the socket is closed with 1014; ``close_timeout``:
    seconds to wait for the upstream's answer to the bridge's close frame.
    """

    enabled: bool = True
    idle_timeout: float | None = 3600.0
    max_message_size: int | None = None
    heartbeat: float | None = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    close_timeout: float = 2.0


class _Host(Protocol):
    """What the sessions need from :class:`~aibridge_asgi.app.Bridge`."""

    routes: Routes
    _rt: Runtime
    _token_headers: tuple[bytes, ...]
    _closing: bool
    _cancelled_by_close: bool
    _in_flight: int
    _tasks: set[asyncio.Task[Any]]
    _idle: asyncio.Event | None

    async def _resolve(self, token: str) -> Actor | None: ...


class _Refusal(Exception):
    """The handshake is refused: HTTP ``status`` where the server can send
    one, else a close with ``code`` before accepting."""

    def __init__(
        self,
        status: int,
        message: str,
        code: int = CLOSE_POLICY,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


class _Unreachable(Exception):
    """The upstream socket could not be opened (after accepting: close 1014)."""


class _UpstreamRefused(Exception):
    """The upstream answered the handshake with an HTTP status."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


class WebSocketSessions:
    """The bridge's WebSocket side: serves the upgrades, tracks open sockets.

    Created by the bridge; reached as ``bridge.websockets``. Change
    :attr:`settings` before serving.
    """

    def __init__(self, host: _Host) -> None:
        self._host = host
        self.settings = WebSocketSettings()
        self._sessions: set[_Session] = set()
        #: Policy ends under way (a turn's end is recorded at once; the
        #: policy hears of it in the background): ``aclose`` waits for them.
        self._policy_ends: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_sockets(self) -> int:
        """How many client sockets are open right now."""
        return len(self._sessions)

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._http is not None and self._http_loop is not loop:
            self._http = None  # made on a loop that is gone (a restarted bridge)
        if self._http is None or self._http.closed:
            self._http_loop = loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                trust_env=False,
            )
        return self._http

    # -- ASGI -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ``websocket`` scope. It counts as in flight from the
        handshake on, so ``aclose()`` waits for it (or cancels it)."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        host = self._host
        task = asyncio.current_task()
        assert task is not None
        host._in_flight += 1
        host._tasks.add(task)
        try:
            await self._serve(scope, receive, send)
        except asyncio.CancelledError:
            if not host._cancelled_by_close:
                raise
            task.uncancel()  # aclose() ran out of patience; the turns are recorded
        finally:
            host._tasks.discard(task)
            host._in_flight -= 1
            if host._in_flight == 0 and host._idle is not None:
                host._idle.set()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            provider, actor, access, url, headers = await self._handshake(scope)
            try:
                upstream = await self._open(access, url, headers, _offered_protocols(scope))
            except _Unreachable as exc:
                await send({"type": "websocket.accept"})
                await _close_client(send, CLOSE_BAD_GATEWAY, str(exc))
                return
        except _Refusal as refusal:
            await _refuse(scope, send, refusal)
            return
        accept: Message = {"type": "websocket.accept"}
        if upstream.protocol:
            accept["subprotocol"] = upstream.protocol
        limit = self.settings.max_message_size or self._host._rt.max_body_size
        session = _Session(self, scope, provider, actor, access.served, upstream, send, limit)
        self._sessions.add(session)
        try:
            try:
                await send(accept)
            except OSError:
                await upstream.close(code=CLOSE_GOING_AWAY)
                return
            await session.run(receive)
        finally:
            self._sessions.discard(session)

    async def _handshake(
        self, scope: Scope
    ) -> tuple[ProviderConfig, Actor, Access, str, list[tuple[bytes, bytes]]]:
        """Route and authenticate the upgrade; raise :class:`_Refusal`."""
        host = self._host
        match = host.routes.match(scope["path"], scope.get("root_path", ""), scope.get("raw_path"))
        if (
            not self.settings.enabled
            or match is None
            or isinstance(match, ProviderConfig)
            or match.api != RESPONSES
        ):
            raise _Refusal(
                426, "WebSocket is only served on /v1/responses of OpenAI providers; use HTTP"
            )
        if host._closing:
            raise _Refusal(503, "the AI gateway is shutting down", CLOSE_TRY_AGAIN)
        keys = host._rt.keys
        byok = keys.split(scope["headers"])
        token = byok.token if byok else extract_token(scope["headers"], host._token_headers)
        if token is None:
            raise _Refusal(
                401,
                "missing credentials: send your token as "
                "'Authorization: Bearer <token>' or 'X-Api-Key: <token>'",
            )
        try:
            actor = await host._resolve(token)
        except Exception as exc:
            log_resolver_failure(logger, exc)
            raise _Refusal(
                503, "could not check credentials right now; try again", CLOSE_TRY_AGAIN
            ) from None
        if actor is None:
            raise _Refusal(401, "invalid credentials")
        if host._closing:  # it began while the resolver ran
            raise _Refusal(503, "the AI gateway is shutting down", CLOSE_TRY_AGAIN)
        provider = match.provider
        try:
            # Pools, BYOK and the actor's own key, as for HTTP (aibridge_asgi.keys).
            access = keys.access(provider.name, byok=byok, actor_credentials=actor.credentials)
            headers = request_headers_for_upstream(
                scope["headers"],
                host._rt.strip_for(provider) | _HANDSHAKE,
                provider.extra_headers,
            )
        except BridgeError as exc:
            raise _Refusal(exc.status, exc.message) from None
        base = provider.resolved_base_url
        url = ("ws" + base[4:] if base.startswith("http") else base) + match.upstream_path
        query: bytes = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        return provider, actor, access, url, headers

    async def _open(
        self,
        access: Access,
        url: str,
        headers: list[tuple[bytes, bytes]],
        protocols: tuple[str, ...],
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the upstream socket with the first usable credential; a pooled
        key the upstream refuses (401, 403, 429) is put aside and the next
        one tried, as for HTTP."""
        while True:
            credential = access.next()
            if credential is None:  # every pooled key is cooling down
                error = access.exhausted()
                raise _Refusal(error.status, error.message, CLOSE_TRY_AGAIN, error.headers)
            try:
                return await self._connect(url, [*headers, *credential.headers], protocols)
            except _UpstreamRefused as refused:
                if not access.fail_over(credential, refused.status, refused.headers):
                    raise _upstream_refusal(refused.status, refused.headers) from None

    async def _connect(
        self, url: str, headers: list[tuple[bytes, bytes]], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the upstream socket; raise :class:`_UpstreamRefused` when the
        upstream answered the handshake with an HTTP status,
        :class:`_Unreachable` when it could not be reached."""
        settings = self.settings
        try:
            pairs = CIMultiDict(
                (k.decode("ascii"), v.decode("utf-8"))
                for k, v in headers
                if k != b"accept-encoding"
            )
        except UnicodeDecodeError:
            raise _Refusal(400, "a request header is not valid UTF-8") from None
        limit = settings.max_message_size or self._host._rt.max_body_size
        try:
            async with asyncio.timeout(settings.connect_timeout):
                return await self._client().ws_connect(
                    URL(url, encoded=True),
                    headers=pairs,
                    protocols=protocols,
                    autoping=True,
                    heartbeat=settings.heartbeat,
                    max_msg_size=limit,
                    # No permessage-deflate upstream, as HTTP asks for identity:
                    # frames relay without a compress step per event.
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=settings.close_timeout),
                )
        except aiohttp.WSServerHandshakeError as exc:
            answered = [
                (k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
                for k, v in (exc.headers or {}).items()
            ]
            raise _UpstreamRefused(exc.status, answered) from None
        except TimeoutError:
            raise _Unreachable("the upstream provider did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            logger.warning("upstream WebSocket failed to open (%s)", type(exc).__name__)
            raise _Unreachable("the upstream provider could not be reached") from None

    # -- lifecycle ---------------------------------------------------------------

    def shutdown(self) -> None:
        """The bridge is closing: idle sockets close now (code 1001), busy
        ones once their running response has ended."""
        for session in list(self._sessions):
            session.wake.set()

    async def aclose(self, grace: float | None = None) -> None:
        """Wait for the policy to hear of the turns that ended (at most
        ``grace`` seconds; those still running then are cancelled, and
        logged), then release the upstream client (the sockets are closed
        by then)."""
        loop = asyncio.get_running_loop()
        ends = [t for t in self._policy_ends if t.get_loop() is loop]
        if ends:
            _, late = await asyncio.wait(ends, timeout=grace)
            if late:
                logger.error("%d policy end(s) unfinished at close; cancelled", len(late))
                for task in late:
                    task.cancel()
        http, self._http = self._http, None
        if http is not None and self._http_loop is loop:
            await http.close()


def _offered_protocols(scope: Scope) -> tuple[str, ...]:
    subprotocols = scope.get("subprotocols") or ()
    return tuple(str(p) for p in subprotocols)


def _upstream_refusal(status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> _Refusal:
    """How an upstream's refusal of the handshake reaches the client. A
    provider that does not speak WebSocket (404, 400, 426...) becomes 426, on
    which clients fall back to HTTP at once; a 429 keeps its ``Retry-After``."""
    if status in (401, 403, 429):
        kept = tuple((k, v) for k, v in headers if k == b"retry-after")
        return _Refusal(
            status,
            f"the upstream provider refused the WebSocket connection ({status})",
            headers=kept,
        )
    if status >= 500:
        return _Refusal(
            502, f"the upstream provider failed to open a WebSocket ({status})", CLOSE_BAD_GATEWAY
        )
    return _Refusal(
        426, f"the upstream provider does not accept WebSocket connections ({status}); use HTTP"
    )


async def _refuse(scope: Scope, send: Send, refusal: _Refusal) -> None:
    """Refuse a handshake: an HTTP answer in OpenAI's error shape where the
    server supports it, else a close before accepting."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body("openai", refusal.status, refusal.message)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *refusal.headers,
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": refusal.code, "reason": refusal.message})


async def _close_client(send: Send, code: int, reason: str) -> None:
    """Close the client's socket; it may be gone already."""
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": _short(reason)})


def error_event(
    status: int, message: str, code: str | None = None, error_type: str | None = None
) -> str:
    """An ``error`` event in the shape the Responses WebSocket uses."""
    inner = json.loads(error_body("openai", status, message, code, error_type))["error"]
    return json.dumps({"type": "error", "status": status, "error": inner}, separators=(",", ":"))


class _Turn:
    """One ``response.create`` on the socket and what it produced so far."""

    def __init__(
        self,
        session: _Session,
        body: Mapping[str, Any],
        warmup: bool,
    ) -> None:
        rt = session.rt
        self.warmup = warmup
        self.interception_id = new_id()
        self.outcome = Outcome(rt, began=time.perf_counter())
        self.outcome.upstream_began = self.outcome.began
        # A warm-up carries no user turn: its observer sees no input.
        self.api = ResponsesInterception(
            self.interception_id, {} if warmup else body, rt.tool_result_content
        )
        self.started: InterceptionStarted | None = None
        self.ended = False
        #: Policy checks to tell about the end (see :mod:`aibridge_asgi.policy`).
        self.admitted: tuple[Any, ...] = ()
        if warmup:
            return
        client, session_id = detect_client(session.headers, body)
        model = body.get("model")
        self.started = InterceptionStarted(
            interception_id=self.interception_id,
            actor=session.actor,
            provider=session.provider.kind,
            provider_name=session.provider.name,
            model=clean_text(model) if isinstance(model, str) else "",
            route=RESPONSES,
            streaming=True,
            client=client,
            client_session_id=clean_text(session_id),
            user_agent=session.headers.get("user-agent"),
            started_at=utcnow(),
            metadata=session.actor.metadata,
        )
        rt.records.put(self.started)
        if rt.hooks:
            call_hooks(rt.hooks, "interception_started", self.started, session.raw_headers)


class _Session:
    """One client socket and its upstream socket."""

    def __init__(
        self,
        owner: WebSocketSessions,
        scope: Scope,
        provider: ProviderConfig,
        actor: Actor,
        credential: Credential | None,
        upstream: aiohttp.ClientWebSocketResponse,
        send: Send,
        limit: int,
    ) -> None:
        self.owner = owner
        self.rt = owner._host._rt
        self.provider = provider
        self.actor = actor.without_credentials()  # what records carry
        #: The credential the upstream socket was opened with (every turn's).
        self.credential = credential
        self.upstream = upstream
        self.send = send
        self.limit = limit
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}
        self.turns: deque[_Turn] = deque()
        self.wake = asyncio.Event()
        self.last_activity = time.monotonic()
        self.client_gone = False
        #: Tokens a warm-up was billed, recorded with the next turn.
        self.carried: list[TokenUsage] = []
        #: The turn just started, for the policy to admit before it is relayed.
        self.admitting: _Turn | None = None

    # -- the session ---------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Relay until either side closes, the socket idles out or the bridge
        closes; then close both sockets and end every running turn."""
        loop = asyncio.get_running_loop()
        up = loop.create_task(self._client_to_upstream(receive))
        down = loop.create_task(self._upstream_to_client())
        watch = loop.create_task(self._watchdog())
        pumps = (up, down, watch)
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            first = up if up in done else down if down in done else watch
            try:
                code, reason = first.result()
            except OSError:  # the client went away while the bridge wrote to it
                self.client_gone = True
                code, reason = CLOSE_GOING_AWAY, ""
            except Exception:
                logger.exception("WebSocket relay failed inside the bridge")
                code, reason = CLOSE_INTERNAL, "the AI gateway failed"
                self._end_all("failed", "internal bridge error")
            if self.client_gone:
                # Pass the client's close code upstream.
                self._end_all("cancelled", "client disconnected")
                await self._close_upstream(_UNSENDABLE.get(code, code), reason)
            else:
                if first is down:
                    detail = f"{code}: {reason}" if reason else str(code)
                    self._end_all("failed", f"upstream closed the socket mid-response ({detail})")
                else:
                    self._end_all("failed", reason)
                await self._close_upstream(code, reason)
                await _close_client(self.send, code, reason)
        except asyncio.CancelledError:
            self._end_all("cancelled", "bridge shut down during the call")
            await _close_client(self.send, CLOSE_GOING_AWAY, "the AI gateway is shutting down")
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._close_upstream(CLOSE_GOING_AWAY, ""))
            raise
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(BaseException):
                    await pump
            self._end_all("cancelled", "socket closed")
            if not self.upstream.closed:
                await self._close_upstream(CLOSE_GOING_AWAY, "")

    async def _close_upstream(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.upstream.close(code=code, message=_short(reason).encode())

    async def _client_send(self, message: Message) -> None:
        try:
            await self.send(message)
        except OSError:
            self.client_gone = True
            raise

    async def _watchdog(self) -> tuple[int, str]:
        """Ends the session when the bridge closes (once no response runs),
        when the socket stayed idle too long, or when the upstream went
        silent in the middle of a response."""
        settings = self.owner.settings
        host = self.owner._host
        while True:
            now = time.monotonic()
            wait: float | None
            if not self.turns:
                if host._closing:
                    return CLOSE_GOING_AWAY, "the AI gateway is shutting down"
                wait = None
                if settings.idle_timeout is not None:
                    wait = self.last_activity + settings.idle_timeout - now
                    if wait <= 0:
                        return CLOSE_GOING_AWAY, f"idle for {settings.idle_timeout:g} seconds"
            else:
                wait = self.last_activity + settings.read_timeout - now
                if wait <= 0:
                    return CLOSE_BAD_GATEWAY, "the upstream provider stopped answering"
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    # -- client -> upstream -------------------------------------------------------

    async def _client_to_upstream(self, receive: Receive) -> tuple[int, str]:
        """Relay client frames; returns the client's close code and reason."""
        upstream = self.upstream
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self.client_gone = True
                return int(message.get("code", 1005)), str(message.get("reason") or "")
            if kind != "websocket.receive":
                continue
            self.last_activity = time.monotonic()
            text = message.get("text")
            data: bytes | None = None
            if text is None:
                data = message.get("bytes") or b""
                if len(data) > self.limit:
                    return await self._too_big()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = ""  # refused below as not JSON
            else:
                size = len(text)
                if size > self.limit or (size * 4 > self.limit and len(text.encode()) > self.limit):
                    return await self._too_big()
            # Every frame is read, binary ones too: whatever the upstream could
            # take as a response.create must start an interception.
            refusal = self._on_client_message(text)
            if refusal is None and self.admitting is not None:
                refusal = await self._admit(self.admitting)
            if refusal is not None:
                await self._client_send({"type": "websocket.send", "text": refusal})
                continue
            sending = upstream.send_str(text) if data is None else upstream.send_bytes(data)
            if not await self._upstream_send(sending):
                return CLOSE_BAD_GATEWAY, "the upstream connection broke off"

    @staticmethod
    async def _upstream_send(sending: Awaitable[None]) -> bool:
        """Send one frame upstream; False when the upstream socket is gone."""
        try:
            await sending
        except (aiohttp.ClientError, OSError, RuntimeError):
            return False
        return True

    async def _too_big(self) -> tuple[int, str]:
        reason = f"message is larger than the limit of {self.limit} bytes"
        self._end_all("failed", reason)
        await _close_client(self.send, CLOSE_TOO_BIG, reason)
        # The client is closed by the bridge; the upstream hears "going away".
        self.client_gone = True
        return CLOSE_GOING_AWAY, reason

    def _on_client_message(self, text: str) -> str | None:
        """Start a turn for a ``response.create``; return an error event to
        send back instead of relaying, or None to relay the frame. A frame
        the bridge cannot read as a JSON object is not relayed: it could not
        tell whether it starts a response."""
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            return error_event(400, "the message is not valid JSON")
        if not isinstance(body, dict):
            return error_event(400, "the message must be a JSON object")
        if body.get("type") != "response.create":
            return None  # another client event (response.steer...): relayed, not recorded
        if self.owner._host._closing:
            # Not an interception, as an HTTP call refused at shutdown.
            return error_event(503, "the AI gateway is shutting down")
        warmup = body.get("generate") is False
        turn = _Turn(self, body, warmup)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            if turn.started is not None:
                message = "'model' is required and must be a non-empty string"
                turn.outcome.http_status, turn.outcome.error = 400, message
                self._end(turn, "failed")
            return error_event(400, "'model' is required and must be a non-empty string")
        self.turns.append(turn)
        if turn.started is not None and self.rt.policy is not None:
            self.admitting = turn
        self.wake.set()
        return None

    async def _admit(self, turn: _Turn) -> str | None:
        """Run the policy for a turn before its frame goes upstream; an error
        event (and the turn ended ``failed``) when a check refuses it."""
        self.admitting = None
        assert self.rt.policy is not None and turn.started is not None
        refusal, turn.admitted = await self.rt.policy.admit(turn.started)
        if refusal is None:
            return None
        if turn in self.turns:
            self.turns.remove(turn)
        turn.outcome.http_status, turn.outcome.error = refusal.status, refusal.message
        self._end(turn, "failed")
        return error_event(refusal.status, refusal.message, refusal.code, refusal.error_type)

    # -- upstream -> client ---------------------------------------------------------

    async def _upstream_to_client(self) -> tuple[int, str]:
        """Relay upstream frames; returns the close to pass to the client."""
        upstream = self.upstream
        while True:
            msg = await upstream.receive()
            kind = msg.type
            if kind == aiohttp.WSMsgType.TEXT:
                text: str = msg.data
                self.last_activity = time.monotonic()
                self._on_upstream_text(text)
                await self._client_send({"type": "websocket.send", "text": text})
            elif kind == aiohttp.WSMsgType.BINARY:
                self.last_activity = time.monotonic()
                await self._client_send({"type": "websocket.send", "bytes": msg.data})
            elif kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                code = upstream.close_code or msg.data or CLOSE_NORMAL
                reason = msg.extra if isinstance(msg.extra, str) else ""
                code = int(code)
                if code in _UNSENDABLE or not _sendable(code):
                    return CLOSE_BAD_GATEWAY, "the upstream connection broke off"
                return code, reason
            elif kind == aiohttp.WSMsgType.CLOSED:
                code = upstream.close_code
                if code is None or code in _UNSENDABLE or not _sendable(code):
                    return CLOSE_BAD_GATEWAY, "the upstream connection broke off"
                return code, ""
            elif kind == aiohttp.WSMsgType.ERROR:
                exc = upstream.exception()
                if isinstance(exc, aiohttp.WebSocketError) and exc.code == CLOSE_TOO_BIG:
                    return CLOSE_BAD_GATEWAY, "the upstream sent a message above the size limit"
                if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
                    return CLOSE_BAD_GATEWAY, "the upstream provider stopped answering pings"
                return CLOSE_BAD_GATEWAY, "the upstream connection broke off"

    def _on_upstream_text(self, text: str) -> None:
        """Show a copy of one event to the running turn's observer."""
        if not self.turns:
            return
        turn = self.turns[0]
        match = _TYPE.match(text)
        name = match.group(1) if match else None
        outcome = turn.outcome
        if outcome.first_byte is None:
            outcome.first_byte = time.perf_counter()
            outcome.http_status = 200
            outcome.response_started = True
            if self.rt.hooks and not turn.warmup:
                seconds = outcome.first_byte - outcome.began
                call_hooks(self.rt.hooks, "upstream_responded", turn.interception_id, 200, seconds)
        try:
            turn.api.on_event(SSEEvent(b"", name, text))
        except Exception:
            logger.exception("WebSocket observer failed; relaying without it")
            turn.api.error = "the bridge could not follow this response"
        if name is None:
            with contextlib.suppress(ValueError, RecursionError, AttributeError):
                name = json.loads(text).get("type")
        if turn.warmup:
            turn.api.drain()  # a warm-up records nothing of its own
        else:
            for record in turn.api.drain():
                self._emit(turn, record)
        if name in _TURN_ENDS:
            self.turns.popleft()
            self.wake.set()
            if name == "error":
                status = _error_status(text)
                if status is not None:
                    outcome.http_status = status
            self._end(turn, "completed" if turn.api.error is None else "failed")

    # -- records ----------------------------------------------------------------

    def _end(self, turn: _Turn, status: EndStatus, error: str | None = None) -> None:
        """Record the end of ``turn`` (exactly once)."""
        if turn.ended:
            return
        turn.ended = True
        outcome = turn.outcome
        api = turn.api
        outcome.upstream_ended = time.perf_counter()
        try:
            api.finish()
        except Exception:
            logger.exception("observer failed to finish")
        records = api.drain()
        if turn.warmup:
            self.carried.extend(r for r in records if isinstance(r, TokenUsage) and _billed(r))
            return
        for record in records:
            self._emit(turn, record)
        for usage in self.carried:
            self._emit(turn, dataclasses.replace(usage, interception_id=turn.interception_id))
        self.carried.clear()
        if status == "completed" and not api.complete:
            status, error = "failed", "upstream stream ended before its final event"
        outcome.status = status
        outcome.error = error or api.error or outcome.error
        if status == "completed":
            outcome.error = None
        self._record_end(turn)

    def _emit(self, turn: _Turn, record: Record) -> None:
        """Hand one record of ``turn`` on; token usage is followed by its
        :class:`~aibridge_asgi.records.Cost` when the bridge prices calls."""
        turn.outcome.emit(record)
        costing = self.rt.costing
        if costing is not None and isinstance(record, TokenUsage):
            turn.outcome.emit(costing.cost(record, self.provider, turn.api.model))

    def _record_end(self, turn: _Turn) -> None:
        assert turn.started is not None
        outcome = turn.outcome
        ended = record_end(self.rt, turn.started, outcome, self.credential)
        if turn.admitted and self.rt.policy is not None:
            # Ends are recorded synchronously here: the policy hears in the background.
            task = asyncio.get_running_loop().create_task(
                self.rt.policy.finish(turn.admitted, turn.started, ended, outcome)
            )
            ends = self.owner._policy_ends
            ends.add(task)
            task.add_done_callback(ends.discard)

    def _end_all(self, status: EndStatus, error: str) -> None:
        """End every turn still running (the socket is closing)."""
        while self.turns:
            turn = self.turns.popleft()
            self._end(turn, status, error)


def _short(reason: str) -> str:
    """A close reason within the 123 bytes a close frame allows."""
    return reason.encode()[:123].decode("utf-8", "ignore")


def _billed(usage: TokenUsage) -> bool:
    return bool(usage.input_tokens or usage.output_tokens or usage.cache_read_input_tokens)


def _sendable(code: int) -> bool:
    """Whether ``code`` may be sent in a close frame (RFC 6455, 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def _error_status(text: str) -> int | None:
    with contextlib.suppress(ValueError, RecursionError, AttributeError):
        status = json.loads(text).get("status")
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None
