"""A scriptable fake of the Anthropic, OpenAI and Gemini APIs, as an ASGI app.

One app serves all three: Anthropic's paths under ``/v1/messages...``,
OpenAI's under ``/v1/chat/completions``, ``/v1/responses`` and
``/v1/models``, and Gemini's under ``/v1beta/models/...`` (and ``/v1/...``
for its ``:generateContent`` style methods). Point the bridge's
``anthropic`` and ``gemini`` base URLs at the server's origin and its
``openai`` base URL at ``origin + "/v1"``.

Without a script it answers every call with a realistic default (streamed
when the request asks for it). :meth:`FakeUpstream.enqueue` scripts the next
answers: status, headers, body chunks, delays, a cut connection, a hang.
Every request it received is kept in :attr:`FakeUpstream.requests`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import Message, Receive, Scope, Send

from .streams import (
    Usage,
    anthropic_events,
    anthropic_message,
    chat_completion,
    chat_events,
    gemini_error,
    gemini_events,
    gemini_json_array,
    gemini_response,
    response_events,
    response_object,
)

__all__ = ["FakeResponse", "FakeUpstream", "ReceivedRequest", "ReceivedWebSocket"]

ANTHROPIC_KEY = "sk-ant-fake-upstream-key"
OPENAI_KEY = "sk-fake-upstream-key"
GOOGLE_KEY = "AIzaFakeUpstreamKey-0123456789"

_GEMINI_PATH = re.compile(r"^/v1(?:beta)?/models(?:/(?P<model>[^/:]+)(?P<method>:[A-Za-z]+)?)?$")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the fake upstream saw it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name``."""
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class ReceivedWebSocket:
    """One WebSocket the fake upstream was asked to open: its handshake, the
    messages it received (text as ``str``, binary as ``bytes``) and how the
    other side closed it."""

    path: str
    query: str
    headers: list[tuple[str, str]]
    messages: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    #: True when the other side left while an answer was still running.
    abandoned: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def creates(self) -> list[dict[str, Any]]:
        """The ``response.create`` messages received, parsed."""
        out: list[dict[str, Any]] = []
        for message in self.messages:
            with contextlib.suppress(ValueError):
                data = json.loads(message)
                if isinstance(data, dict) and data.get("type") == "response.create":
                    out.append(data)
        return out


@dataclass
class FakeResponse:
    """A scripted answer.

    ``chunks`` are written one by one (``chunk_delay`` apart). ``cut`` drops
    the connection after them instead of ending the body; ``hang`` keeps the
    response open that many seconds after the last chunk (``float("inf")``:
    until the client leaves); ``delay`` waits before sending headers.
    """

    status: int = 200
    chunks: Sequence[bytes] = ()
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = "application/json"
    chunk_delay: float = 0.0
    delay: float = 0.0
    hang: float = 0.0
    cut: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200, **options: Any) -> FakeResponse:
        """A JSON body (``data`` is encoded compactly unless it is bytes)."""
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return cls(status=status, chunks=[body], **options)

    @classmethod
    def sse(cls, events: Sequence[bytes], status: int = 200, **options: Any) -> FakeResponse:
        """An event stream, one chunk per item of ``events``."""
        return cls(status=status, chunks=list(events), content_type="text/event-stream", **options)


Responder = Callable[[ReceivedRequest], FakeResponse]


@dataclass
class _Script:
    path: str | None
    answer: FakeResponse | Responder


def _anthropic_error(status: int, kind: str, message: str) -> FakeResponse:
    return FakeResponse.json({"type": "error", "error": {"type": kind, "message": message}}, status)


def _openai_error(status: int, code: str, message: str) -> FakeResponse:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return FakeResponse.json({"error": error}, status)


@dataclass
class FakeUpstream:
    """The fake provider. ``reply`` is the text of default answers; the keys
    are what it accepts (a wrong or missing key gets the provider's 401).

    ``requests`` keeps every request received, for tests to look at; a
    long-running fake (a demo host) sets ``max_kept`` to keep only the
    latest few (and as many ``abandoned`` paths), and ``max_body_size`` to
    answer 413 to larger bodies without reading past the limit.
    """

    reply: str = "Hello from the fake upstream."
    anthropic_key: str = ANTHROPIC_KEY
    openai_key: str = OPENAI_KEY
    google_key: str = GOOGLE_KEY
    requests: list[ReceivedRequest] = field(default_factory=list)
    #: Paths of responses the client abandoned before their end.
    abandoned: list[str] = field(default_factory=list)
    #: Every WebSocket opened on ``/v1/responses`` (Responses over WebSocket).
    websockets: list[ReceivedWebSocket] = field(default_factory=list)
    #: When set, every WebSocket handshake is refused with this HTTP status
    #: (a provider that does not speak WebSocket).
    websocket_status: int | None = None
    #: Tokens a warm-up (``"generate": false``) reports (none by default).
    warmup_usage: Usage = field(default_factory=lambda: Usage(0, 0))
    max_kept: int | None = None
    max_body_size: int | None = None
    _script: deque[_Script] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, answer: FakeResponse | Responder, path: str | None = None) -> None:
        """Script the next answer (to a request on ``path``, if given)."""
        with self._lock:
            self._script.append(_Script(path, answer))

    def last(self, path: str | None = None) -> ReceivedRequest:
        """The latest request received (on ``path``, if given)."""
        for request in reversed(self.requests):
            if path is None or request.path == path:
                return request
        raise LookupError(f"no request received on {path or 'any path'}")

    def _scripted(self, request: ReceivedRequest) -> FakeResponse | None:
        with self._lock:
            for item in self._script:
                if item.path is None or item.path == request.path:
                    self._script.remove(item)
                    answer = item.answer
                    return answer if isinstance(answer, FakeResponse) else answer(request)
        return None

    # -- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if self.max_body_size is not None and size > self.max_body_size:
                error = _anthropic_error(413, "request_too_large", "request body is too large")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": error.chunks[0]})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):  # mounted: see the path below the mount
            path = path[len(root_path) :] or "/"
        request = ReceivedRequest(
            method=scope["method"],
            path=path,
            query=scope["query_string"].decode("latin-1"),
            headers=[
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            ],
            body=body,
        )
        self.requests.append(request)
        if self.max_kept is not None and len(self.requests) > 2 * self.max_kept:
            del self.requests[: -self.max_kept]  # amortised: trim by half at a time
        answer = self._scripted(request) or self._default(request)
        await self._send(answer, request, receive, send)

    async def _send(
        self, answer: FakeResponse, request: ReceivedRequest, receive: Receive, send: Send
    ) -> None:
        gone = anyio.Event()

        async def watch() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        completed = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                if answer.delay:
                    await anyio.sleep(answer.delay)
                headers = [(b"content-type", answer.content_type.encode())]
                headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers]
                await send(
                    {"type": "http.response.start", "status": answer.status, "headers": headers}
                )
                for n, chunk in enumerate(answer.chunks):
                    if n and answer.chunk_delay:
                        await anyio.sleep(answer.chunk_delay)
                    if gone.is_set():
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if answer.hang:
                    with anyio.move_on_after(answer.hang):
                        await gone.wait()
                if gone.is_set():
                    self.abandoned.append(request.path)
                    if self.max_kept is not None and len(self.abandoned) > 2 * self.max_kept:
                        del self.abandoned[: -self.max_kept]
                elif not answer.cut:
                    await send({"type": "http.response.body", "body": b""})
                    completed = True
            finally:
                tg.cancel_scope.cancel()
        if not completed and not gone.is_set():
            # Returning with the body unfinished makes the server drop the
            # connection: what a cut upstream looks like to the bridge.
            return

    # -- Responses over WebSocket ----------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        socket = ReceivedWebSocket(
            path=path,
            query=scope["query_string"].decode("latin-1"),
            headers=[
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            ],
        )
        self.websockets.append(socket)
        if self.websocket_status is not None or path != "/v1/responses":
            status = self.websocket_status or 404
            await _deny(scope, send, status, "WebSocket is not available here")
            return
        if socket.header("authorization") != f"Bearer {self.openai_key}":
            await _deny(scope, send, 401, "Incorrect API key provided.")
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                socket.close_code = message.get("code", 1005)
                socket.close_reason = message.get("reason") or ""
                return
            text = message.get("text")
            if text is None:  # a binary frame: read as UTF-8 JSON, as a text one
                data = message.get("bytes") or b""
                socket.messages.append(data)
                text = data.decode("utf-8", "replace")
            else:
                socket.messages.append(text)
            if not await self._ws_turn(socket, text, receive, send):
                return

    async def _ws_turn(
        self, socket: ReceivedWebSocket, text: str, receive: Receive, send: Send
    ) -> bool:
        """Answer one client message; False once the socket is closed."""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, Mapping) or body.get("type") != "response.create":
            error = {"type": "invalid_request_error", "code": "invalid_event", "message": "?"}
            frames = [json.dumps({"type": "error", "status": 400, "error": error})]
            return await _send_frames(socket, FakeResponse(), frames, receive, send)
        model = str(body.get("model", "fake-model"))
        if body.get("generate") is False:  # a warm-up: an empty response, not scripted
            warm_id = f"resp_warm{len(self.websockets)}"
            usage = self.warmup_usage
            events = response_events("", model=model, response_id=warm_id, usage=usage)
            warm = [e for e in _ws_frames(events) if '"response.output' not in e]
            return await _send_frames(socket, FakeResponse(), warm, receive, send)
        request = ReceivedRequest(
            method="POST",
            path=socket.path,
            query=socket.query,
            headers=socket.headers,
            body=text.encode(),
        )
        answer = self._scripted(request) or FakeResponse.sse(
            response_events(self.reply, model=model)
        )
        return await _send_frames(socket, answer, _answer_frames(answer), receive, send)

    # -- default answers -----------------------------------------------------

    def _default(self, request: ReceivedRequest) -> FakeResponse:
        path = request.path
        gemini = _GEMINI_PATH.match(path)
        if gemini is not None and (path.startswith("/v1beta/") or gemini["method"]):
            return self._gemini(request, gemini["model"], gemini["method"])
        anthropic = path.startswith("/v1/messages")
        if anthropic:
            if request.header("x-api-key") != self.anthropic_key:
                return _anthropic_error(401, "authentication_error", "invalid x-api-key")
        elif request.header("authorization") != f"Bearer {self.openai_key}" and (
            request.header("x-api-key") != self.anthropic_key
        ):
            return _openai_error(401, "invalid_api_key", "Incorrect API key provided.")
        if request.method == "GET" and path == "/v1/models":
            return FakeResponse.json(_models())
        if request.method == "GET" and path.startswith("/v1/models/"):
            model_id = path.rsplit("/", 1)[1]
            return FakeResponse.json(_model(model_id))
        if request.method == "GET" and path.startswith("/v1/responses/"):
            return FakeResponse.json(response_object(self.reply, response_id=path.split("/")[3]))
        if request.method != "POST":
            return _openai_error(
                404, "unknown_url", f"Unknown request URL: {request.method} {path}"
            )
        try:
            body = request.json()
        except ValueError:
            return _openai_error(
                400, "invalid_json", "We could not parse the JSON body of your request."
            )
        if not isinstance(body, Mapping):
            return _openai_error(400, "invalid_json", "body must be an object")
        stream = body.get("stream") is True
        model = str(body.get("model", "fake-model"))
        if path == "/v1/messages/count_tokens":
            return FakeResponse.json({"input_tokens": max(1, len(request.body) // 4)})
        if path == "/v1/messages":
            if stream:
                return FakeResponse.sse(anthropic_events(self.reply, model=model))
            return FakeResponse.json(anthropic_message(self.reply, model=model))
        if path == "/v1/chat/completions":
            if stream:
                options = body.get("stream_options")
                usage = isinstance(options, Mapping) and options.get("include_usage") is True
                return FakeResponse.sse(chat_events(self.reply, model=model, include_usage=usage))
            return FakeResponse.json(chat_completion(self.reply, model=model))
        if path == "/v1/responses":
            if stream:
                return FakeResponse.sse(response_events(self.reply, model=model))
            return FakeResponse.json(response_object(self.reply, model=model))
        return _openai_error(404, "unknown_url", f"Unknown request URL: POST {path}")

    def _gemini(
        self, request: ReceivedRequest, model: str | None, method: str | None
    ) -> FakeResponse:
        """Gemini's answers: the key must come as ``x-goog-api-key``."""
        if request.header("x-goog-api-key") != self.google_key:
            return FakeResponse.json(
                gemini_error(
                    400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"
                ),
                400,
            )
        if request.method == "GET" and method is None:
            if model is None:
                return FakeResponse.json({"models": [_gemini_model(m) for m in _GEMINI_MODELS]})
            return FakeResponse.json(_gemini_model(model))
        if request.method != "POST" or model is None:
            return FakeResponse.json(
                gemini_error(404, f"{request.method} {request.path} is not found", "NOT_FOUND"), 404
            )
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            return FakeResponse.json(
                gemini_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"), 400
            )
        if method == ":countTokens":
            return FakeResponse.json({"totalTokens": max(1, len(request.body) // 4)})
        if method == ":generateContent":
            return FakeResponse.json(gemini_response(self.reply, model=model))
        if method == ":streamGenerateContent":
            if "alt=sse" in request.query.split("&"):
                return FakeResponse.sse(gemini_events(self.reply, model=model))
            return FakeResponse(chunks=gemini_json_array(self.reply, model=model))
        return FakeResponse.json(
            gemini_error(404, f"method {method} is not found", "NOT_FOUND"), 404
        )


_GEMINI_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-3-pro-preview")


def _gemini_model(model_id: str) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def _ws_frames(events: Sequence[bytes]) -> list[str]:
    """The WebSocket text frames of an SSE answer: each event's data."""
    frames: list[str] = []
    for event in events:
        for line in event.decode().splitlines():
            if line.startswith("data:"):
                frames.append(line[5:].strip())
    return frames


def _answer_frames(answer: FakeResponse) -> list[str]:
    """A scripted HTTP answer as WebSocket frames: SSE events one per frame;
    an error body as an ``error`` event; a JSON response as its terminal event."""
    if answer.content_type == "text/event-stream":
        return _ws_frames(answer.chunks)
    body = b"".join(answer.chunks)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if answer.status >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        event = {"type": "error", "status": answer.status, "error": error}
        return [json.dumps(event)]
    return [json.dumps({"type": "response.completed", "response": data})]


async def _send_frames(
    socket: ReceivedWebSocket,
    answer: FakeResponse,
    frames: Sequence[str],
    receive: Receive,
    send: Send,
) -> bool:
    """Send ``frames`` as ``answer`` says (delays, hang, cut); False once the
    socket is closed."""
    if answer.delay:
        await anyio.sleep(answer.delay)
    for n, frame in enumerate(frames):
        if n and answer.chunk_delay:
            await anyio.sleep(answer.chunk_delay)
        await send({"type": "websocket.send", "text": frame})
    if answer.hang:
        with anyio.move_on_after(answer.hang):
            message = await receive()
            if message["type"] == "websocket.disconnect":
                socket.close_code = message.get("code", 1005)
                socket.abandoned = True
                return False
    if answer.cut:
        await send({"type": "websocket.close", "code": 1011, "reason": "fake upstream cut"})
        return False
    return True


async def _deny(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse a WebSocket handshake with an HTTP status (or a close)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    *([(b"retry-after", b"7")] if status == 429 else []),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _model(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "type": "model",
        "created": 1_760_000_000,
        "created_at": "2025-10-01T00:00:00Z",
        "display_name": model_id,
        "owned_by": "fake",
    }


def _models() -> dict[str, Any]:
    data = [_model(m) for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5", "gpt-5-codex")]
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"],
        "last_id": data[-1]["id"],
    }
