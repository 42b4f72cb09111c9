"""Which paths the bridge serves, and where each one goes upstream.

Routing looks at the path only (never the query string) and accepts a closed
set of shapes per provider kind. Everything a client controls in the path is
either a fixed word or one id segment of safe characters, so no request can
steer the upstream URL outside the configured base URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .config import ProviderConfig

__all__ = [
    "CHAT_COMPLETIONS",
    "GENERATE_CONTENT",
    "MESSAGES",
    "RESPONSES",
    "STREAM_GENERATE_CONTENT",
    "Route",
    "Routes",
    "match_route",
    "route_path",
]

#: Names of the bridged APIs, as recorded in ``InterceptionStarted.route``.
MESSAGES = "/v1/messages"
CHAT_COMPLETIONS = "/chat/completions"
RESPONSES = "/responses"
#: The Gemini API's two generation methods (the model is in the path).
GENERATE_CONTENT = ":generateContent"
STREAM_GENERATE_CONTENT = ":streamGenerateContent"

# An id segment: no dots first (so never "." or ".."), no slashes, no "%".
_ID = r"[A-Za-z0-9_][A-Za-z0-9._:@~+=-]{0,255}"

_ANTHROPIC_BRIDGED = {"/v1/messages": MESSAGES}
_ANTHROPIC_PASSTHROUGH = re.compile(rf"^/v1/(?:models|models/{_ID}|messages/count_tokens)$")
_OPENAI_BRIDGED = {"/chat/completions": CHAT_COMPLETIONS, "/responses": RESPONSES}
_OPENAI_PASSTHROUGH = re.compile(rf"^/(?:models|models/{_ID}|responses/{_ID}(?:/{_ID})*)$")

# Gemini: /v1beta/models/{model}:method (or /v1/...). A model id has no ":".
_MODEL = r"[A-Za-z0-9_][A-Za-z0-9._@~+=-]{0,255}"
_GEMINI_BRIDGED = re.compile(
    rf"^/v1(?:beta)?/models/(?P<model>{_MODEL})(?P<method>:generateContent|:streamGenerateContent)$"
)
_GEMINI_PASSTHROUGH = re.compile(rf"^/v1(?:beta)?/models(?:/{_MODEL}(?::countTokens)?)?$")

_SAFE_PATH = re.compile(r"^(?:/[A-Za-z0-9_][A-Za-z0-9._:@~+=-]*)*/?$")


@dataclass(frozen=True, slots=True)
class Route:
    """A matched request: which provider, which bridged API (``None`` for a
    passthrough route) and the path to append to the provider's base URL."""

    provider: ProviderConfig
    api: str | None
    upstream_path: str
    #: The model named in the path (Gemini), else ``None`` (it is in the body).
    model: str | None = None


def _raw_unsafe(raw_path: bytes | None) -> bool:
    return raw_path is not None and (b"%" in raw_path or b"\\" in raw_path)


def route_path(scope_path: str, root_path: str, raw_path: bytes | None) -> str | None:
    """Return the path below the bridge's mount, or ``None`` if it is unsafe.

    Unsafe: percent-escapes in the raw path (encoded slashes and dots),
    backslashes, empty segments (``//``), dot segments and control characters.
    """
    if _raw_unsafe(raw_path):
        return None
    path = scope_path
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if not path:
        path = "/"
    if not _SAFE_PATH.match(path):
        return None
    return path


def match_route(
    path: str, providers: Mapping[str, ProviderConfig]
) -> Route | ProviderConfig | None:
    """Match ``path`` (below the mount) against the enabled providers.

    Returns a :class:`Route`, or the provider whose prefix matched but whose
    path is not served (so the 404 can use its error shape), or ``None``.
    """
    name, sep, rest = path[1:].partition("/")
    provider = providers.get(name)
    if provider is None:
        return None
    rest = "/" + rest if sep else ""
    if provider.kind == "anthropic":
        api = _ANTHROPIC_BRIDGED.get(rest)
        if api is not None:
            return Route(provider, api, rest)
        if _ANTHROPIC_PASSTHROUGH.match(rest):
            return Route(provider, None, rest)
        return provider
    if provider.kind == "google":
        m = _GEMINI_BRIDGED.match(rest)
        if m is not None:
            return Route(provider, m["method"], rest, m["model"])
        if _GEMINI_PASSTHROUGH.match(rest):
            return Route(provider, None, rest)
        return provider
    if not rest.startswith("/v1/"):
        return provider
    rest = rest[3:]
    api = _OPENAI_BRIDGED.get(rest)
    if api is not None:
        return Route(provider, api, rest)
    if _OPENAI_PASSTHROUGH.match(rest):
        return Route(provider, None, rest)
    return provider


#: How many paths :class:`Routes` remembers (then it starts over), and the
#: longest it remembers.
_REMEMBERED = 1024
_LONGEST_REMEMBERED = 512


class Routes:
    """:func:`route_path` then :func:`match_route`, remembered by path.

    Clients call the same few paths over and over; a path that matched a
    route is looked up in a dict the next time. Only matches are kept (a
    client probing for 404s fills nothing), up to ``_REMEMBERED`` of them.
    """

    __slots__ = ("_matched", "providers")

    def __init__(self, providers: Mapping[str, ProviderConfig]) -> None:
        self.providers = providers
        self._matched: dict[tuple[str, str], Route] = {}

    def match(
        self, scope_path: str, root_path: str, raw_path: bytes | None
    ) -> Route | ProviderConfig | None:
        """What :func:`match_route` answers for the request's path (``None``
        for an unsafe one)."""
        if _raw_unsafe(raw_path):
            return None
        key = (scope_path, root_path)
        route = self._matched.get(key)
        if route is not None:
            return route
        path = route_path(scope_path, root_path, None)
        match = match_route(path, self.providers) if path is not None else None
        if isinstance(match, Route) and len(scope_path) <= _LONGEST_REMEMBERED:
            if len(self._matched) >= _REMEMBERED:
                self._matched.clear()
            self._matched[key] = match
        return match
