"""Credentials: where the host token is read from, what never goes upstream.

The host token is looked for, in this order:

1. ``Authorization: Bearer <token>`` (OpenAI clients, Claude Code with
   ``ANTHROPIC_AUTH_TOKEN``);
2. ``X-Api-Key: <token>`` (Anthropic SDKs with ``ANTHROPIC_API_KEY``);
3. each header the host names in ``token_headers``, in its order.

On Gemini routes (``google`` providers) ``x-goog-api-key`` comes first, and
the ``key`` query parameter last (:func:`take_query_token` removes it from
the query before anything forwards or shows the URL).

The first non-empty one wins. Upstream requests never carry any of these
headers (``x-goog-api-key`` included), nor ``Cookie``,
``Proxy-Authorization``, ``Coder-Session-Token``, hop-by-hop headers,
request-only headers that ask something of the next hop (``Expect``,
``HTTP2-Settings``), ``Host``, ``Content-Length`` or ``Accept-Encoding``;
every other header passes through byte for byte.

The bring-your-own-key form (the host token in ``X-AIBridge-Token``, the
client's own credential forwarded as sent) is read first, by
:mod:`aibridge_asgi.keys`, which then adds that credential to the upstream
request itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import unquote_plus

from .errors import BridgeError

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_ONLY",
    "ResolverFailed",
    "extract_token",
    "log_resolver_failure",
    "request_headers_for_upstream",
    "response_headers_for_client",
    "take_query_token",
]

Headers = Sequence[tuple[bytes, bytes]]

#: Headers that describe one connection, never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Host credentials never sent upstream, whatever the host configures.
HOST_CREDENTIALS = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"x-goog-api-key",
        b"cookie",
        b"proxy-authorization",
        b"coder-session-token",
    }
)

# A header name (RFC 9110 token) and what a header value must not hold.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Set by the bridge itself on the upstream request.
_REPLACED = frozenset({b"host", b"content-length", b"accept-encoding"})

#: Request headers addressed to the next hop, never forwarded: the bridge
#: has the whole body before it calls upstream, so ``Expect: 100-continue``
#: would only make the upstream client wait for a 100 that may never come.
REQUEST_ONLY = frozenset({b"expect", b"http2-settings"})


def extract_token(
    headers: Headers, extra_headers: Sequence[bytes] = (), *, google: bool = False
) -> str | None:
    """Return the host token from ``headers`` (lower-case names), or ``None``.

    With ``google``, ``x-goog-api-key`` is looked at first."""
    bearer: str | None = None
    api_key: str | None = None
    goog: str | None = None
    extras: dict[bytes, str] = {}
    for name, value in headers:
        if google and name == b"x-goog-api-key" and goog is None:
            goog = value.strip().decode("latin-1")
        elif name == b"authorization" and bearer is None:
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                bearer = token.strip().decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.strip().decode("latin-1")
        elif name in extra_headers and name not in extras:
            extras[name] = value.strip().decode("latin-1")
    for candidate in (goog, bearer, api_key, *(extras.get(n) for n in extra_headers)):
        if candidate:
            return candidate
    return None


def take_query_token(query_string: bytes) -> tuple[str | None, bytes]:
    """Split the ``key`` parameter (Gemini clients may send their key there)
    off a query string: return its first non-empty value and the query
    without any ``key`` parameter, every other byte kept as it was."""
    if b"key" not in query_string and b"%" not in query_string:
        return None, query_string  # (a name may be spelled with escapes: k%65y)
    token: str | None = None
    kept: list[bytes] = []
    for item in query_string.split(b"&"):
        name, _, value = item.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == "key":
            if token is None and value:
                token = unquote_plus(value.decode("latin-1"), encoding="latin-1")
            continue
        kept.append(item)
    return token, b"&".join(kept)


def _connection_tokens(headers: Headers) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return named


# What never goes upstream for a given ``strip`` set and names of added
# headers: made once per pair.
_DROPPED: dict[tuple[frozenset[bytes], tuple[bytes, ...]], frozenset[bytes]] = {}
# Header names joined by spaces, each a token (the space is not a token byte).
_TOKENS = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?: [!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def _dropped(strip: frozenset[bytes], added: tuple[bytes, ...]) -> frozenset[bytes]:
    key = (strip, added)
    drop = _DROPPED.get(key)
    if drop is None:
        drop = HOP_BY_HOP | HOST_CREDENTIALS | REQUEST_ONLY | _REPLACED | strip | frozenset(added)
        if len(_DROPPED) < 256:
            _DROPPED[key] = drop
    return drop


def request_headers_for_upstream(
    headers: Headers,
    strip: frozenset[bytes],
    add: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """Client headers minus credentials, hop-by-hop and ``strip``; plus ``add``,
    which replaces any client header of the same name. A forwarded header
    with control characters (CR, LF, NUL...) or a malformed name is refused
    with a 400 :class:`~aibridge_asgi.errors.BridgeError`.

    The bridge asks upstream for ``identity`` encoding so it can relay bytes
    unchanged and parse them on the side.
    """
    drop = _dropped(strip, tuple([n for n, _ in add]) if add else ())
    named = _connection_tokens(headers)
    if named:
        drop = drop | named
    out = [(n, v) for n, v in headers if n not in drop]
    # One check of all names and one of all values (joining adds no control
    # byte; a space is no token byte, so the names joined by spaces match
    # with exactly one space between each two only if every name is a
    # token); the header at fault is looked for only when one fails.
    names = b" ".join([n for n, _ in out])
    if out and (
        not _TOKENS.fullmatch(names)
        or names.count(b" ") != len(out) - 1
        or _CONTROL.search(b"".join([v for _, v in out]))
    ):
        for name, value in out:
            if not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                shown = name.decode("latin-1")[:40].encode("unicode_escape").decode()
                raise BridgeError(
                    400, f"request header {shown!r} has characters that cannot be forwarded"
                )
    out.extend(add)
    out.append((b"accept-encoding", b"identity"))
    return out


#: Response headers the bridge's own server sets (or frames) itself.
_SERVER_SET = frozenset({b"content-length", b"date", b"server"})


_NEVER_TO_CLIENT = HOP_BY_HOP | _SERVER_SET


def response_headers_for_client(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones, ``Content-Length``
    (the bridge frames the body itself) and ``Date``/``Server`` (the host's
    server sends its own; two of each confuse strict clients)."""
    named = _connection_tokens(headers)
    drop = _NEVER_TO_CLIENT | named if named else _NEVER_TO_CLIENT
    return [(n, v) for n, v in headers if n not in drop]


class ResolverFailed(Exception):
    """Stands in for an exception the token resolver raised, in the log.

    The resolver's own message is withheld (database drivers quote query
    parameters, here the token, in theirs); the traceback's frames are the
    original ones, so structured log handlers keep where it failed.
    """


def _withheld(exc: BaseException) -> ResolverFailed:
    """A message-free stand-in for ``exc`` carrying its traceback."""
    names: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(names) < 5:
        names.append(type(seen).__qualname__)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    chain = " <- ".join(names)
    stand_in = ResolverFailed(f"{chain} (message withheld: it may quote the token)")
    stand_in.__traceback__ = exc.__traceback__
    stand_in.__suppress_context__ = True
    return stand_in


def log_resolver_failure(log: logging.Logger, exc: BaseException) -> None:
    """Log a token resolver's failure with ``exc_info`` (its frames) but
    without its message, which may quote the token."""
    stand_in = _withheld(exc)
    log.error(
        "token resolver failed with %s",
        stand_in,
        exc_info=(ResolverFailed, stand_in, exc.__traceback__),
    )
