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
import warnings
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeAlias

import aiohttp
import anyio.to_thread
import httpx
from starlette.types import Receive, Scope, Send

from ._asgi import ClientGone, Runtime, send_error
from .auth import (
    HOST_CREDENTIALS,
    ResolverFailed,
    extract_token,
    log_resolver_failure,
    take_query_token,
)
from .breaker import CircuitBreakerConfig, CircuitBreakers
from .config import ProviderConfig, RetryPolicy, Timeouts
from .delivery import RecordQueue
from .errors import BridgeError
from .hooks import BridgeHooks
from .hooks import call as call_hooks
from .interception import intercept
from .keys import DEFAULT_BYOK_HEADER, Access, KeyCooldowns, KeyPool, Keys, KeySpec
from .limits import Limits
from .passthrough import passthrough
from .policy import Check, Policy
from .pricing import Costing, PriceBook, default_prices
from .records import Actor, Record, Recorder
from .routing import Routes
from .upstream import AiohttpUpstream, HttpxUpstream, Upstream
from .websocket import WebSocketSessions

__all__ = ["Bridge", "ResolverFailed", "TokenResolver", "UpstreamChoice", "create_bridge"]

logger = logging.getLogger("aibridge_asgi")

#: Maps a host token to an actor, or ``None`` when the token is not valid.
#: Plain functions run in a worker thread, so they may block (a database
#: lookup); ``async def`` functions run on the event loop.
TokenResolver: TypeAlias = Callable[[str], "Actor | Awaitable[Actor | None] | None"]

_BUILTIN_KINDS = ("anthropic", "openai")
#: Key-map names of the Gemini API: either one configures the ``google``
#: provider served under ``/gemini/``.
_GEMINI_NAMES = ("gemini", "google")

#: What ``create_bridge(upstream=...)`` accepts: an :class:`Upstream` seam,
#: or an HTTP client (or httpx transport) that the bridge wraps in one.
UpstreamChoice: TypeAlias = (
    "Upstream | httpx.AsyncClient | httpx.AsyncBaseTransport | aiohttp.ClientSession"
)


class Bridge:
    """The bridge's ASGI application. Build it with :func:`create_bridge`.

    Mount it anywhere (``app.mount("/api/v2/aibridge", bridge)``) or serve
    it alone. Hosts that do not forward lifespan events to mounted apps
    should ``await bridge.aclose()`` on shutdown, or use ``async with
    bridge:``, so in-flight calls finish and pending records are delivered.
    A closed bridge starts again on the next lifespan startup, ``async with
    bridge:``, :meth:`reopen`, or a request on another event loop.
    """

    def __init__(
        self,
        *,
        resolve_token: TokenResolver,
        providers: Mapping[str, ProviderConfig],
        runtime: Runtime,
        token_headers: Sequence[bytes],
    ) -> None:
        #: Which paths the bridge serves (:func:`~aibridge_asgi.routing.match_route`,
        #: remembered by path).
        self.routes = Routes(providers)
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
        self._close_task: asyncio.Task[None] | None = None
        self._close_loop: asyncio.AbstractEventLoop | None = None

    @property
    def providers(self) -> Mapping[str, ProviderConfig]:
        """The provider instances served, by name."""
        return self.routes.providers

    @providers.setter
    def providers(self, providers: Mapping[str, ProviderConfig]) -> None:
        self.routes = Routes(providers)

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
        match = self.routes.match(scope["path"], scope.get("root_path", ""), scope.get("raw_path"))
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
        if self._closing and not self._restart_on_new_loop():
            await send_error(send, kind, BridgeError(503, "the AI gateway is shutting down"))
            return
        query_token = None
        if kind == "google":
            # ?key= never goes upstream (nor into anything that shows the URL).
            query_token, query = take_query_token(scope["query_string"])
            if query != scope["query_string"]:
                scope = {**scope, "query_string": query}
        # Counted from here on: aclose() waits for this request (or cancels
        # it) even while the resolver runs, so it either ends with its
        # records or is refused with 503 and none.
        self._in_flight += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        answered = False
        try:
            admitted = await self._authenticate(scope, send, kind, route.provider.name, query_token)
            answered = True  # 401/403/503 sent, or the handlers answer from here on
            if admitted is None:
                return
            actor, access = admitted
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
            if not answered:
                try:
                    await send_error(
                        send, kind, BridgeError(503, "the AI gateway is shutting down")
                    )
                except Exception:
                    logger.debug("could not answer a request cut by shutdown", exc_info=True)
        finally:
            self._tasks.discard(task)
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _authenticate(
        self,
        scope: Scope,
        send: Send,
        kind: str,
        provider_name: str,
        query_token: str | None = None,
    ) -> tuple[Actor, Access] | None:
        """The request's actor and the credential it calls upstream with, or
        None once the client got its 401/403/503. ``query_token``: a Gemini
        client's ``?key=``, already taken out of the query."""
        keys = self._rt.keys
        byok = keys.split(scope["headers"])
        google = kind == "google"
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
            return None
        try:
            actor = await self._resolve(token)
        except Exception as exc:
            log_resolver_failure(logger, exc)
            del exc
            await send_error(
                send, kind, BridgeError(503, "could not check credentials right now; try again")
            )
            return None
        if actor is None:
            await send_error(send, kind, BridgeError(401, "invalid credentials"))
            return None
        try:
            access = keys.access(provider_name, byok=byok, actor_credentials=actor.credentials)
        except BridgeError as exc:  # a client's own key where BYOK is off
            await send_error(send, kind, exc)
            return None
        return actor, access

    async def _resolve(self, token: str) -> Actor | None:
        if self._resolver_is_async:
            result: Any = await self._resolve_token(token)  # type: ignore[misc]
        else:
            # Abandoned (not waited for) if aclose() cancels the request.
            result = await anyio.to_thread.run_sync(
                self._resolve_token, token, abandon_on_cancel=True
            )
            if inspect.isawaitable(result):
                result = await result
        if result is not None and not isinstance(result, Actor):
            raise TypeError(f"resolve_token returned {type(result).__name__}, not Actor or None")
        return result

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.reopen()
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

    @property
    def records_dropped(self) -> Mapping[str, int]:
        """Records that never reached the recorder, by reason (``overflow``,
        ``timeout``, ``undelivered``, ``closed``); see docs/records.md."""
        return dict(self._rt.records.dropped)

    async def flush(self) -> None:
        """Wait until every record produced so far reached the recorder."""
        await self._rt.records.flush()

    def reopen(self) -> None:
        """Take requests again after :meth:`aclose` (a host's lifespan that
        starts again, e.g. a second ``with TestClient(app):`` block).

        Upstream connections are made anew on the running event loop. A
        closed bridge also reopens by itself when a request arrives on an
        event loop other than the one it was closed on; on the same loop it
        answers 503 until reopened. Does nothing while a close is running.
        """
        if not self._closing:
            return
        if self._close_task is not None and not self._close_task.done():
            return
        self._closing = False
        self._close_task = None
        self._close_loop = None
        self._cancelled_by_close = False
        self._idle = None
        self._rt.records.reopen()

    def _restart_on_new_loop(self) -> bool:
        """Reopen a bridge closed on an event loop that is no longer the
        running one (a new test, a new ``TestClient`` block)."""
        loop = self._close_loop
        if loop is None or loop is asyncio.get_running_loop():
            return False
        if self._close_task is not None and not self._close_task.done() and not loop.is_closed():
            return False
        self._close_task = None  # a close left unfinished on a loop that is gone
        self.reopen()
        return True

    async def aclose(self, grace_period: float | None = None) -> None:
        """Stop taking requests, wait for in-flight ones, deliver pending
        records and close the upstream client.

        With ``grace_period`` (seconds), the whole close takes at most about
        that long: calls still running at ``grace_period`` minus a reserve
        for record delivery (a quarter of it, at most one second) are
        cancelled (they end ``cancelled``, with their records; a request
        still being authenticated gets 503 and no records); records not
        delivered by the deadline are counted in :attr:`records_dropped`
        and logged. Each recorder call is bounded by
        ``Limits.record_timeout`` in any case.

        Safe to call more than once and from several tasks at once: every
        caller waits for the same close.
        """
        task = self._close_task
        loop = asyncio.get_running_loop()
        other = self._close_loop
        # A close left on another loop: done, or cut short when that loop
        # went away. This loop gets its own close.
        stale = (
            other is not None
            and other is not loop
            and (task is None or task.done() or other.is_closed())
        )
        if task is None or stale:
            self._closing = True
            self.websockets.shutdown()
            self._close_loop = loop
            task = self._close_task = loop.create_task(
                self._close(grace_period), name="aibridge-close"
            )
        await asyncio.shield(task)

    async def _close(self, grace_period: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if grace_period is None else loop.time() + max(grace_period, 0.0)
        reserve = 0.0 if grace_period is None else min(1.0, max(grace_period, 0.0) / 4)
        if self._in_flight:
            self._idle = asyncio.Event()
            if self._in_flight:
                try:
                    async with asyncio.timeout_at(None if deadline is None else deadline - reserve):
                        await self._idle.wait()
                except TimeoutError:
                    self._cancelled_by_close = True
                    for task in list(self._tasks):
                        task.cancel()
                    if self._in_flight:
                        # Cancelled calls end at once (they only write their
                        # end records); a few loop turns, bounded anyway.
                        try:
                            async with asyncio.timeout_at(max(deadline or 0, loop.time() + 0.05)):
                                await self._idle.wait()
                        except TimeoutError:
                            logger.error(
                                "%d call(s) did not end after cancellation at close",
                                self._in_flight,
                            )
        # WebSocket turns that ended last may still be telling the policy.
        await self.websockets.aclose(
            None if deadline is None else max(deadline - reserve - loop.time(), 0.0)
        )
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        await self._rt.records.aclose(left)
        try:
            await self._rt.upstream.aclose()
        except Exception:
            logger.exception("closing the upstream client failed")

    async def __aenter__(self) -> Bridge:
        self.reopen()
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


_UNSET: Any = object()


def _choose_upstream(upstream: UpstreamChoice | None, timeouts: Timeouts | None) -> Upstream:
    """The upstream seam for ``create_bridge(upstream=...)``."""
    t = timeouts or Timeouts()
    if upstream is None:
        return AiohttpUpstream(t)
    if isinstance(upstream, httpx.AsyncClient):
        return HttpxUpstream(t, client=upstream)
    if isinstance(upstream, httpx.AsyncBaseTransport):
        return HttpxUpstream(t, transport=upstream)
    if isinstance(upstream, aiohttp.ClientSession):
        return AiohttpUpstream(t, session=upstream)
    if not callable(getattr(upstream, "send", None)) or not callable(
        getattr(upstream, "aclose", None)
    ):
        raise TypeError(
            "upstream must be an Upstream (send/aclose), an httpx.AsyncClient, an httpx "
            f"transport or an aiohttp.ClientSession, not {type(upstream).__name__}"
        )
    return upstream


def _check_recorder(recorder: Recorder | None) -> None:
    if recorder is None:
        return
    method = getattr(recorder, "record", None)
    if method is None or not (
        inspect.iscoroutinefunction(method)
        or inspect.iscoroutinefunction(getattr(method, "__call__", None))  # noqa: B004
    ):
        raise TypeError(
            f"recorder {type(recorder).__name__}.record must be a coroutine function "
            "('async def record(self, record)'); the bridge awaits it off the response path"
        )


def create_bridge(
    resolve_token: TokenResolver,
    provider_keys: Mapping[str, KeySpec] | None = None,
    *,
    base_urls: Mapping[str, str] | None = None,
    providers: Iterable[ProviderConfig] = (),
    recorder: Recorder | None = None,
    upstream: UpstreamChoice | None = None,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    token_headers: Sequence[str] = (),
    strip_headers: Sequence[str] = (),
    retry: RetryPolicy | None = None,
    circuit_breaker: CircuitBreakerConfig | None = None,
    hooks: Sequence[BridgeHooks] = (),
    byok: bool | Collection[str] = True,
    byok_header: str = DEFAULT_BYOK_HEADER,
    key_cooldowns: KeyCooldowns | None = None,
    prices: PriceBook | Literal["default"] | None = "default",
    tool_result_content: int | None = None,
    policy: Sequence[Check] = (),
    http_client: httpx.AsyncClient | None = _UNSET,
    transport: httpx.AsyncBaseTransport | None = _UNSET,
    max_body_size: int = _UNSET,
    keepalive_interval: float | None = _UNSET,
    body_timeout: float | None = _UNSET,
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
    :param recorder: receives every record, off the response path; its
        ``record`` must be ``async def`` (``TypeError`` otherwise).
    :param upstream: what sends requests upstream. ``None``: an aiohttp
        session the bridge owns. An ``httpx.AsyncClient`` or an
        ``aiohttp.ClientSession`` of the host's (the bridge never closes
        it); an httpx transport (the bridge builds and owns a client on it);
        or any :class:`~aibridge_asgi.upstream.Upstream` seam.
    :param timeouts: upstream timeouts (see :class:`Timeouts`) for the
        clients the bridge builds.
    :param limits: client-side limits: body size and time, event and answer
        sizes, keep-alive, the record queue (see :class:`Limits`).
    :param token_headers: further headers that may carry the host token,
        looked at after ``Authorization`` and ``X-Api-Key``; never forwarded.
    :param strip_headers: further headers never forwarded upstream.
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
    :param http_client: deprecated, use ``upstream=client``.
    :param transport: deprecated, use ``upstream=transport``.
    :param max_body_size: deprecated, use ``limits=Limits(max_body_size=...)``.
    :param keepalive_interval: deprecated, use ``Limits(keepalive_interval=...)``.
    :param body_timeout: deprecated, use ``Limits(body_timeout=...)``.
    """
    if http_client is not _UNSET or transport is not _UNSET:
        old = "http_client" if http_client is not _UNSET else "transport"
        warnings.warn(
            f"create_bridge({old}=...) is deprecated; pass the client or transport as "
            "upstream=... (removed in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        if upstream is not None:
            raise TypeError(f"pass either upstream= or {old}=, not both")
        client = None if http_client is _UNSET else http_client
        via = None if transport is _UNSET else transport
        if client is not None:
            upstream = client
        elif via is not None:
            upstream = via
    old_limits: dict[str, Any] = {
        name: value
        for name, value in (
            ("max_body_size", max_body_size),
            ("keepalive_interval", keepalive_interval),
            ("body_timeout", body_timeout),
        )
        if value is not _UNSET
    }
    if old_limits:
        warnings.warn(
            f"create_bridge({', '.join(f'{n}=' for n in old_limits)}...) is deprecated; "
            f"pass limits=Limits({', '.join(f'{n}=...' for n in old_limits)}) "
            "(removed in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        if limits is not None:
            raise TypeError("pass either limits= or the old limit keywords, not both")
        limits = Limits(**old_limits)
    limits = limits or Limits()
    _check_recorder(recorder)
    configured = _providers(provider_keys, base_urls, providers)
    if not configured:
        logger.warning("aibridge: no provider has a key; every route will answer 404")
    chosen = _choose_upstream(upstream, timeouts)
    extra_token_headers = tuple(h.lower().encode() for h in token_headers)
    strip = frozenset(h.lower().encode() for h in strip_headers) | frozenset(extra_token_headers)
    strip |= {byok_header.lower().encode()}
    hook_list = tuple(hooks)

    def notify(name: str, *args: object) -> None:
        if hook_list:
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

    def on_dropped(record: Record, reason: str) -> None:
        call_hooks(hook_list, "record_dropped", record, reason)

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
    records = RecordQueue(
        recorder,
        on_recorded if hook_list else None,
        max_pending=limits.max_pending_records,
        call_timeout=limits.record_timeout,
        on_dropped=on_dropped if hook_list else None,
    )
    runtime = Runtime(
        retry=retry or RetryPolicy(),
        breakers=breakers,
        policy=Policy(policy, hook_list) if policy else None,
        upstream=chosen,
        records=records,
        hooks=hook_list,
        limits=limits,
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
