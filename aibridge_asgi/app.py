"""The bridge as one ASGI app: route, authenticate, dispatch.

A request's way through: :func:`~aibridge_asgi.routing.route_path` and
:func:`~aibridge_asgi.routing.match_route` pick the provider and API (404 or
405 otherwise); :mod:`~aibridge_asgi.auth` finds the host token and the
host's resolver names the actor (401/503 otherwise); then
:func:`~aibridge_asgi.interception.intercept` handles bridged APIs and
:func:`~aibridge_asgi.passthrough.passthrough` the rest.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeAlias

import anyio.to_thread
import httpx
from starlette.types import Receive, Scope, Send

from ._asgi import ClientGone, Runtime, send_error
from .auth import HOST_CREDENTIALS, extract_token, take_query_token
from .breaker import CircuitBreakerConfig, CircuitBreakers
from .config import DEFAULT_MAX_BODY_SIZE, ProviderConfig, RetryPolicy, Timeouts
from .errors import BridgeError
from .hooks import BridgeHooks
from .hooks import call as call_hooks
from .interception import intercept
from .keys import DEFAULT_BYOK_HEADER, KeyCooldowns, KeyPool, Keys, KeySpec
from .passthrough import passthrough
from .policy import Check, Policy
from .pricing import Costing, PriceBook, default_prices
from .records import Actor, Record, Recorder, RecordQueue
from .routing import match_route, route_path
from .upstream import AiohttpUpstream, HttpxUpstream, Upstream
from .websocket import WebSocketSessions

__all__ = ["Bridge", "TokenResolver", "create_bridge"]

logger = logging.getLogger("aibridge_asgi")

#: Maps a host token to an actor, or ``None`` when the token is not valid.
#: Plain functions run in a worker thread, so they may block (a database
#: lookup); ``async def`` functions run on the event loop.
TokenResolver: TypeAlias = Callable[[str], "Actor | Awaitable[Actor | None] | None"]

_BUILTIN_KINDS = ("anthropic", "openai")
#: Key-map names of the Gemini API: either one configures the ``google``
#: provider served under ``/gemini/``.
_GEMINI_NAMES = ("gemini", "google")


class Bridge:
    """The bridge's ASGI application. Build it with :func:`create_bridge`.

    Mount it anywhere (``app.mount("/api/v2/aibridge", bridge)``) or serve
    it alone. Hosts that do not forward lifespan events to mounted apps
    should ``await bridge.aclose()`` on shutdown, or use ``async with
    bridge:``, so in-flight calls finish and pending records are delivered.
    """

    def __init__(
        self,
        *,
        resolve_token: TokenResolver,
        providers: Mapping[str, ProviderConfig],
        runtime: Runtime,
        token_headers: Sequence[bytes],
    ) -> None:
        self.providers = providers
        self._resolve_token = resolve_token
        self._resolver_is_async = inspect.iscoroutinefunction(resolve_token) or (
            inspect.iscoroutinefunction(getattr(resolve_token, "__call__", None))  # noqa: B004
        )
        self._rt = runtime
        self._token_headers = tuple(token_headers)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled_by_close = False
        self._idle: asyncio.Event | None = None
        self._closing = False
        #: Responses over WebSocket (see :mod:`aibridge_asgi.websocket`).
        self.websockets = WebSocketSessions(self)

    # -- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self.websockets(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope["path"], scope.get("root_path", ""), scope.get("raw_path"))
        match = match_route(path, self.providers) if path is not None else None
        if match is None or isinstance(match, ProviderConfig):
            shape = match.kind if match is not None else None
            await send_error(
                send, shape, BridgeError(404, f"no route for {scope['method']} {_shown(scope)}")
            )
            return
        route = match
        kind = route.provider.kind
        if route.api is not None and scope["method"] != "POST":
            error = BridgeError(
                405, f"{route.api} accepts POST only", headers=((b"allow", b"POST"),)
            )
            await send_error(send, kind, error)
            return
        if self._closing:
            await send_error(send, kind, BridgeError(503, "the AI gateway is shutting down"))
            return
        keys = self._rt.keys
        byok = keys.split(scope["headers"])
        google = kind == "google"
        query_token = None
        if google:
            # ?key= never goes upstream (nor into anything that shows the URL).
            query_token, query = take_query_token(scope["query_string"])
            if query != scope["query_string"]:
                scope = {**scope, "query_string": query}
        token = (
            byok.token
            if byok
            else extract_token(scope["headers"], self._token_headers, google=google) or query_token
        )
        if token is None:
            where = (
                "'x-goog-api-key: <token>', 'Authorization: Bearer <token>' or '?key=<token>'"
                if google
                else "'Authorization: Bearer <token>' or 'X-Api-Key: <token>'"
            )
            await send_error(
                send, kind, BridgeError(401, f"missing credentials: send your token as {where}")
            )
            return
        try:
            actor = await self._resolve(token)
        except Exception as exc:
            # Not the message: drivers quote query parameters (the token) in it.
            frames = "".join(traceback.format_tb(exc.__traceback__))
            logger.error(
                "token resolver failed with %s (message withheld: it may quote the token)\n%s",
                type(exc).__name__,
                frames,
            )
            await send_error(
                send, kind, BridgeError(503, "could not check credentials right now; try again")
            )
            return
        if actor is None:
            await send_error(send, kind, BridgeError(401, "invalid credentials"))
            return
        try:
            access = keys.access(
                route.provider.name, byok=byok, actor_credentials=actor.credentials
            )
        except BridgeError as exc:  # a client's own key where BYOK is off
            await send_error(send, kind, exc)
            return
        self._in_flight += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if route.api is None:
                await passthrough(self._rt, scope, receive, send, route, access)
            else:
                await intercept(self._rt, scope, receive, send, route, actor, access)
        except ClientGone:
            pass
        except asyncio.CancelledError:
            if not self._cancelled_by_close:
                raise
            task.uncancel()  # aclose() ran out of patience; the call is recorded
        finally:
            self._tasks.discard(task)
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _resolve(self, token: str) -> Actor | None:
        if self._resolver_is_async:
            result: Any = await self._resolve_token(token)  # type: ignore[misc]
        else:
            result = await anyio.to_thread.run_sync(self._resolve_token, token)
            if inspect.isawaitable(result):
                result = await result
        if result is not None and not isinstance(result, Actor):
            raise TypeError(f"resolve_token returned {type(result).__name__}, not Actor or None")
        return result

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- lifecycle ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now."""
        return self._in_flight

    async def flush(self) -> None:
        """Wait until every record produced so far reached the recorder."""
        await self._rt.records.flush()

    async def aclose(self, grace_period: float | None = None) -> None:
        """Stop taking requests, wait for in-flight ones, deliver pending
        records and close the upstream client.

        With ``grace_period`` (seconds), calls still running after it are
        cancelled (they end ``cancelled``, with their records) rather than
        waited for.
        """
        self._closing = True
        self.websockets.shutdown()
        if self._in_flight:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), grace_period)
            except TimeoutError:
                self._cancelled_by_close = True
                for task in list(self._tasks):
                    task.cancel()
                if self._in_flight:
                    await self._idle.wait()
        await self._rt.records.aclose()
        await self._rt.upstream.aclose()
        await self.websockets.aclose()

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _shown(scope: Scope) -> str:
    """The request path for an error message, cut short and printable."""
    path = str(scope.get("path", ""))[:200]
    return "".join(c if c.isprintable() else "?" for c in path)


def _providers(
    provider_keys: Mapping[str, KeySpec] | None,
    base_urls: Mapping[str, str] | None,
    providers: Iterable[ProviderConfig],
) -> dict[str, ProviderConfig]:
    out: dict[str, ProviderConfig] = {}
    base_urls = dict(base_urls or {})
    keys = dict(provider_keys or {})
    if all(keys.get(n) for n in _GEMINI_NAMES):
        raise ValueError("provider_keys has both 'gemini' and 'google'; give one of them")
    gemini_base = [base_urls.pop(n) for n in _GEMINI_NAMES if n in base_urls]
    if len(gemini_base) > 1:
        raise ValueError("base_urls has both 'gemini' and 'google'; give one of them")
    for name, key in keys.items():
        if name in _GEMINI_NAMES:
            if key:
                base = gemini_base[0] if gemini_base else None
                out["gemini"] = ProviderConfig("gemini", "google", key, base)
                gemini_base = []
            continue
        if name not in _BUILTIN_KINDS:
            raise ValueError(
                f"provider_keys has {name!r}; only 'anthropic', 'openai' and 'gemini' "
                "(or 'google') are built in. "
                "Configure other instances with providers=[ProviderConfig(...)]"
            )
        if key:
            out[name] = ProviderConfig(name, name, key, base_urls.pop(name, None))  # type: ignore[arg-type]
    for config in providers:
        if config.name in out:
            raise ValueError(f"provider {config.name!r} is configured twice")
        out[config.name] = config
    unused = set(base_urls) - set(_BUILTIN_KINDS)
    if unused:
        raise ValueError(f"base_urls names providers that are not configured: {sorted(unused)}")
    return out


def create_bridge(
    resolve_token: TokenResolver,
    provider_keys: Mapping[str, KeySpec] | None = None,
    *,
    base_urls: Mapping[str, str] | None = None,
    providers: Iterable[ProviderConfig] = (),
    recorder: Recorder | None = None,
    http_client: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    upstream: Upstream | None = None,
    timeouts: Timeouts | None = None,
    token_headers: Sequence[str] = (),
    strip_headers: Sequence[str] = (),
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    keepalive_interval: float | None = 15.0,
    body_timeout: float | None = 120.0,
    retry: RetryPolicy | None = None,
    circuit_breaker: CircuitBreakerConfig | None = None,
    hooks: Sequence[BridgeHooks] = (),
    byok: bool | Collection[str] = True,
    byok_header: str = DEFAULT_BYOK_HEADER,
    key_cooldowns: KeyCooldowns | None = None,
    prices: PriceBook | Literal["default"] | None = "default",
    tool_result_content: int | None = None,
    policy: Sequence[Check] = (),
) -> Bridge:
    """Build the bridge's ASGI app.

    :param resolve_token: maps the host token a client sent to an
        :class:`Actor`, or ``None`` to refuse it (401).
    :param provider_keys: ``{"anthropic": key, "openai": key, "gemini": key}``
        (``"google"`` is another name for ``"gemini"``); a provider with a
        non-empty key is enabled. The Gemini API is served under ``/gemini/``.
        A key may be a pool: a list of keys tried in order (``["k1", "k2"]``),
        a mapping of names to keys, or :class:`~aibridge_asgi.keys.Key`
        values (see docs/configuration.md).
    :param base_urls: upstream base URL overrides for the built-in providers
        (same names).
    :param providers: further provider instances (:class:`ProviderConfig`),
        each served under ``/{name}/``.
    :param recorder: receives every record, off the response path.
    :param http_client: an ``httpx.AsyncClient`` of the host's for upstream
        calls (the bridge does not close it); or ``transport``, an httpx
        transport for a client the bridge creates; or ``upstream``, a whole
        replacement of the upstream seam.
    :param timeouts: upstream timeouts (see :class:`Timeouts`).
    :param token_headers: further headers that may carry the host token,
        looked at after ``Authorization`` and ``X-Api-Key``; never forwarded.
    :param strip_headers: further headers never forwarded upstream.
    :param max_body_size: request bodies above this many bytes get 413.
    :param keepalive_interval: seconds of upstream silence after which a
        started stream gets an SSE comment line; ``None`` turns it off.
    :param body_timeout: seconds a client may take to send its whole request
        body (408 after that; bounds slow uploads); ``None`` for no limit.
    :param retry: when to call the upstream again before answering (see
        :class:`RetryPolicy`; default: once, for connection failures only).
    :param circuit_breaker: per (provider, route, model) breakers; ``None``
        (the default) turns them off.
    :param hooks: :class:`~aibridge_asgi.hooks.BridgeHooks` called as
        interceptions progress (metrics, traces; see docs/observability.md).
    :param byok: whether clients may bring their own provider credential
        (sent with the host token in ``byok_header``): ``True`` for every
        provider instance, ``False`` for none, or the instance names that allow it.
    :param byok_header: the header that carries the host token in the BYOK
        form (default ``X-AIBridge-Token``); never forwarded.
    :param key_cooldowns: how long a pooled key rests after a 429, 401 or
        403 (see :class:`~aibridge_asgi.keys.KeyCooldowns`).
    :param prices: the price book that gives every usage record a
        :class:`~aibridge_asgi.records.Cost` (see :mod:`aibridge_asgi.pricing`);
        ``"default"`` is genai-prices' bundled data
        (:class:`~aibridge_asgi.pricing.GenaiPrices`), ``None`` turns cost off.
    :param tool_result_content: record the content of tool results the
        clients send back, up to this many characters each; ``None`` (the
        default) records only their id, error flag and size.
    :param policy: checks run in order before each bridged call goes
        upstream (:mod:`aibridge_asgi.policy`: model access, budgets, rate
        and concurrency limits; see docs/policy.md).
    """
    configured = _providers(provider_keys, base_urls, providers)
    if not configured:
        logger.warning("aibridge: no provider has a key; every route will answer 404")
    if upstream is None:
        if http_client is not None or transport is not None:
            upstream = HttpxUpstream(timeouts or Timeouts(), http_client, transport)
        else:
            upstream = AiohttpUpstream(timeouts or Timeouts())
    extra_token_headers = tuple(h.lower().encode() for h in token_headers)
    strip = frozenset(h.lower().encode() for h in strip_headers) | frozenset(extra_token_headers)
    strip |= {byok_header.lower().encode()}
    hook_list = tuple(hooks)

    def notify(name: str, *args: object) -> None:
        call_hooks(hook_list, name, *args)

    if isinstance(byok, str):
        byok = (byok,)  # one provider instance's name
    if not isinstance(byok, bool):
        unknown = set(byok) - set(configured)
        if unknown:
            raise ValueError(f"byok names providers that are not configured: {sorted(unknown)}")
    pools = {
        name: KeyPool(
            name,
            config.keys,
            kind=config.kind,
            key_header=config.key_header,
            cooldowns=key_cooldowns,
            notify=notify,
        )
        for name, config in configured.items()
    }
    keys = Keys(
        pools,
        byok=byok,
        byok_header=byok_header,
        provider_kinds={n: (c.kind, c.key_header) for n, c in configured.items()},
        notify=notify,
    )

    def on_recorded(record: Record, seconds: float, error: BaseException | None) -> None:
        call_hooks(hook_list, "recorded", record, seconds, error)

    breakers = None
    if circuit_breaker is not None:

        def on_change(key: tuple[str, str, str], state: str) -> None:
            logger.warning("circuit breaker %s is now %s", "/".join(key), state)
            call_hooks(hook_list, "circuit_changed", key, state)

        breakers = CircuitBreakers(circuit_breaker, on_change)

    if tool_result_content is not None and tool_result_content < 0:
        raise ValueError("tool_result_content must be None or >= 0")
    book = default_prices() if prices == "default" else prices
    if book is not None and not isinstance(book, PriceBook):
        raise TypeError("prices must be a PriceBook (an object with a price() method) or None")
    runtime = Runtime(
        retry=retry or RetryPolicy(),
        breakers=breakers,
        policy=Policy(policy, hook_list) if policy else None,
        upstream=upstream,
        records=RecordQueue(recorder, on_recorded if hook_list else None),
        hooks=hook_list,
        max_body_size=max_body_size,
        keepalive_interval=keepalive_interval,
        body_timeout=body_timeout,
        strip_headers=strip | HOST_CREDENTIALS,
        keys=keys,
        costing=Costing(book) if book is not None else None,
        tool_result_content=tool_result_content,
    )
    return Bridge(
        resolve_token=resolve_token,
        providers=configured,
        runtime=runtime,
        token_headers=extra_token_headers,
    )
