"""The one seam between the bridge and whatever sends HTTP upstream.

The bridge only ever calls :meth:`Upstream.send` and reads the returned
:class:`UpstreamResponse`. Errors arrive as the three exceptions below, so a
change of HTTP client touches this module alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

from .config import Timeouts
from .deadlines import Deadlines, WaitLimit

__all__ = [
    "AiohttpUpstream",
    "HttpxUpstream",
    "Upstream",
    "UpstreamRequestInvalid",
    "UpstreamResponse",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class UpstreamUnreachable(Exception):
    """No response: connection refused, DNS or TLS failure, connection reset.

    ``before_send`` is True when no connection was made, so the request
    cannot have reached the upstream (safe to retry).
    """

    def __init__(self, message: str, *, before_send: bool = False) -> None:
        super().__init__(message)
        self.before_send = before_send


class UpstreamTimeout(Exception):
    """No response in time (connect, write, or read before the headers).

    ``before_send`` is True for a connect timeout.
    """

    def __init__(self, message: str, *, before_send: bool = False) -> None:
        super().__init__(message)
        self.before_send = before_send


class UpstreamRequestInvalid(Exception):
    """The request cannot be sent as it is (e.g. a header this HTTP client
    cannot encode). Nothing was sent."""


class UpstreamStreamError(Exception):
    """The response body broke off: cut connection, read timeout, bad framing."""


class UpstreamResponse(Protocol):
    """A response whose headers have arrived and whose body is still to read."""

    status: int
    #: Lower-case names, raw values, in upstream order.
    headers: list[tuple[bytes, bytes]]

    def iter_raw(self) -> AsyncIterator[bytes]:
        """The body bytes as sent (no content decoding); raises
        :class:`UpstreamStreamError` if the body breaks off."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closing it if the body was not read)."""
        ...


class Upstream(Protocol):
    """Sends one request upstream and returns once the headers are in."""

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Raise :class:`UpstreamUnreachable` or :class:`UpstreamTimeout` when
        no response arrives."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections the seam owns."""
        ...


_HTTPX_DEFAULTS = (b"user-agent", b"accept", b"connection")


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = [(k.lower(), v) for k, v in response.headers.raw]

    async def iter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise UpstreamStreamError(_describe(exc)) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def _describe(exc: Exception) -> str:
    """A short reason without URLs or headers (which could carry secrets)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"upstream read timed out ({name})"
    return f"upstream connection failed ({name})"


class HttpxUpstream:
    """The seam over an ``httpx.AsyncClient``, created on first use.

    Pass ``client`` to bring your own (its timeouts and transport are then
    yours; the bridge never closes it), or ``transport`` to have the bridge's
    own client send through it. The bridge's own client belongs to the event
    loop it was made on: on another loop (a new test, a restarted host) a new
    one is made.
    """

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._client = client
        self._transport = transport
        self._owned = client is None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._owned and self._client is not None and self._loop is not loop:
            self._client = None  # its connections belong to a loop that is gone
        if self._client is None:
            self._loop = loop
            t = self._timeouts
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                follow_redirects=False,
                trust_env=False,
                # One client serves every user: cookies an upstream sets must
                # not come back on someone else's calls.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=())),
            )
        return self._client

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        client = self._get_client()
        request = client.build_request(method, url, headers=list(headers), content=body)
        if self._owned:
            # httpx adds its own User-Agent/Accept defaults; the client's
            # headers are meant to pass as sent, so drop those it did not send.
            sent = {name for name, _ in headers}
            for name in _HTTPX_DEFAULTS:
                if name not in sent and name.decode() in request.headers:
                    del request.headers[name.decode()]
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"upstream did not answer in time ({type(exc).__name__})",
                before_send=isinstance(exc, httpx.ConnectTimeout),
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(
                _describe(exc), before_send=isinstance(exc, httpx.ConnectError)
            ) from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        """Close the bridge's own client (a host's client is left open)."""
        client, self._client = (self._client, None) if self._owned else (None, self._client)
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


class _AiohttpResponse:
    __slots__ = ("_response", "_silence", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, silence: WaitLimit | None) -> None:
        self._response = response
        self._silence = silence
        self.status = response.status
        self.headers = [(k.lower(), v) for k, v in response.raw_headers]

    async def iter_raw(self) -> AsyncIterator[bytes]:
        read = self._response.content.readany
        silence = self._silence
        try:
            while True:
                if silence is not None:
                    silence.waiting()
                try:
                    chunk = await read()
                except asyncio.CancelledError:
                    if silence is not None and silence.expired():
                        raise UpstreamStreamError(
                            "upstream read timed out (no data within the read timeout)"
                        ) from None
                    raise
                finally:
                    if silence is not None:
                        silence.done()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            name = type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError):
                raise UpstreamStreamError(f"upstream read timed out ({name})") from None
            raise UpstreamStreamError(f"upstream connection failed ({name})") from None

    async def aclose(self) -> None:
        if self._silence is not None:
            self._silence.close()
        response = self._response
        if response.content.at_eof():
            response.release()  # back to the pool
        else:
            response.close()  # unread body: drop the connection (cancels upstream)


class AiohttpUpstream:
    """The seam over an ``aiohttp.ClientSession``, created on first use.

    Faster than httpx's default transport (see docs/performance.md). Bodies
    are never decoded (``auto_decompress=False``) and aiohttp's own default
    headers are not added. Pass ``session`` to bring your own (the bridge
    never closes it). The bridge's own session belongs to the event loop it
    was made on: on another loop (a new test, a restarted host) a new one is
    made.
    """

    def __init__(
        self, timeouts: Timeouts | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._timeouts = timeouts or Timeouts()
        self._session = session
        self._owned = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines()

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._owned and self._session is not None and self._loop is not loop:
            self._session = None  # its connections belong to a loop that is gone
        if self._session is None or (self._owned and self._session.closed):
            self._loop = loop
            t = self._timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                # The read timeout is the seam's own (a WaitLimit): aiohttp's
                # sock_read would move a timer on every read.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=t.connect + t.pool, sock_connect=t.connect, sock_read=None
                ),
                auto_decompress=False,
                # One session serves every user: cookies an upstream sets
                # (Cloudflare's, say) must not come back on someone else's calls.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        session = self._get_session()
        try:
            # aiohttp writes header values as UTF-8: decoding them as UTF-8 here
            # sends the client's bytes unchanged.
            pairs = [(k.decode("ascii"), v.decode("utf-8")) for k, v in headers]
        except UnicodeDecodeError:
            raise UpstreamRequestInvalid("a request header is not valid UTF-8") from None
        # encoded=True: the client's query string goes out exactly as it came.
        target = URL(url, encoded=True)
        read = self._timeouts.read
        silence = WaitLimit(read, self._deadlines) if self._owned and read is not None else None
        try:
            if silence is not None:
                silence.waiting()
            response = await session.request(
                method, target, headers=pairs, data=body or None, allow_redirects=False
            )
        except asyncio.CancelledError:
            if silence is not None:
                silence.close()
                if silence.expired():
                    raise UpstreamTimeout(
                        "upstream did not answer in time (no response within the read timeout)"
                    ) from None
            raise
        except TimeoutError as exc:
            if silence is not None:
                silence.close()
            raise UpstreamTimeout(
                f"upstream did not answer in time ({type(exc).__name__})",
                before_send=isinstance(exc, aiohttp.ConnectionTimeoutError),
            ) from None
        except aiohttp.ClientError as exc:
            if silence is not None:
                silence.close()
            raise UpstreamUnreachable(
                f"upstream connection failed ({type(exc).__name__})",
                before_send=isinstance(exc, aiohttp.ClientConnectorError),
            ) from None
        if silence is not None:
            silence.done()
        return _AiohttpResponse(response, silence)

    async def aclose(self) -> None:
        """Close the bridge's own session (a host's session is left open)."""
        session, self._session = (self._session, None) if self._owned else (None, self._session)
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()
