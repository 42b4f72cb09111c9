"""Provider instances and bridge settings, as plain data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

from .keys import Key, KeySpec, auth_header, parse_keys
from .limits import DEFAULT_MAX_BODY_SIZE  # kept importable from here

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_MAX_BODY_SIZE",
    "ProviderConfig",
    "ProviderKind",
    "RetryPolicy",
    "Timeouts",
]

ProviderKind: TypeAlias = Literal["anthropic", "openai", "google"]

#: Where each kind's upstream lives by default. Anthropic's base has no
#: ``/v1`` (clients send ``/v1/messages``); OpenAI's includes it; Google's
#: has no version (clients send ``/v1beta/models/...`` or ``/v1/models/...``).
DEFAULT_BASE_URLS: Mapping[str, str] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
    "google": "https://generativelanguage.googleapis.com",
}


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _no_headers() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class ProviderConfig:
    """One upstream the bridge serves under ``/{name}/...``.

    ``kind`` decides which APIs and which auth header the instance speaks:

    * ``anthropic``: served at ``/{name}/v1/messages`` (plus passthrough
      routes); the key goes upstream as ``x-api-key`` unless ``key_header``
      says otherwise.
    * ``openai``: served at ``/{name}/v1/chat/completions`` and
      ``/{name}/v1/responses``; the key goes as ``Authorization: Bearer``
      unless ``key_header`` names another header (Azure uses ``api-key``).
    * ``google``: the Gemini API, served at
      ``/{name}/v1beta/models/{model}:generateContent`` and
      ``:streamGenerateContent`` (and their ``/v1/`` forms); the key goes
      upstream as ``x-goog-api-key``.

    ``api_key`` is one key or a pool of them (a list, tried in order, or a
    mapping of names to keys; see :mod:`aibridge_asgi.keys`).
    ``base_url`` may carry a path prefix; it is kept. ``headers`` are added
    to every upstream request of this instance (e.g. an API version).
    """

    name: str
    kind: ProviderKind
    api_key: KeySpec = field(repr=False)
    base_url: str | None = None
    key_header: str | None = None
    headers: Mapping[str, str] = field(default_factory=_no_headers)

    def __post_init__(self) -> None:
        if self.kind not in ("anthropic", "openai", "google"):
            raise ValueError(f"provider {self.name!r}: unknown kind {self.kind!r}")
        if not _NAME.match(self.name):
            raise ValueError(
                f"provider name {self.name!r} must be lowercase letters, digits, '-' or '_'"
            )
        if not self.api_key:
            raise ValueError(f"provider {self.name!r} has an empty api_key")
        if not isinstance(self.api_key, str):
            # A list or mapping: checked, named and frozen (the config stays hashable).
            object.__setattr__(self, "api_key", parse_keys(self.api_key, f"provider {self.name!r}"))
        self.keys  # noqa: B018 (checks the keys now)
        base = self.resolved_base_url
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"provider {self.name!r}: base_url must be http(s)")
        if "?" in base or "#" in base:
            raise ValueError(f"provider {self.name!r}: base_url must not have a query")

    @property
    def resolved_base_url(self) -> str:
        """The base URL, defaulted by kind, without a trailing slash."""
        return (self.base_url or DEFAULT_BASE_URLS[self.kind]).rstrip("/")

    @cached_property
    def keys(self) -> tuple[Key, ...]:
        """The instance's keys in pool order, each named (by position unless given)."""
        return parse_keys(self.api_key, f"provider {self.name!r}")

    @cached_property
    def extra_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """``headers`` as the bridge sets them on every upstream request of
        this instance; client headers of the same names are dropped."""
        return tuple((k.lower().encode(), v.encode()) for k, v in self.headers.items())

    @cached_property
    def key_header_name(self) -> bytes:
        """The name of the header that carries a key upstream."""
        return self.auth_header()[0]

    @cached_property
    def upstream_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The first key's header, then ``headers`` (what a call with the
        pool's first key sends)."""
        return (self.auth_header(), *self.extra_headers)

    def auth_header(self, key: Key | None = None) -> tuple[bytes, bytes]:
        """The header that carries ``key`` (default: the first) upstream."""
        secret = (key or self.keys[0]).secret
        return auth_header(self.kind, self.key_header, secret)


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds.

    ``read`` bounds the silence between two reads of a response, not the
    whole response: a long model answer that keeps streaming never hits it.
    The default allows ten silent minutes, enough for a long non-streaming
    answer with extended thinking.
    """

    connect: float = 10.0
    read: float = 600.0
    write: float = 60.0
    pool: float = 30.0


def _no_statuses() -> frozenset[int]:
    return frozenset()


@dataclass(frozen=True)
class RetryPolicy:
    """When the bridge calls the upstream again, always before any byte of
    the answer reached the client.

    The default retries once, after ``backoff`` seconds, when no connection
    could be made (refused, DNS, TLS, connect timeout): the request cannot
    have reached the upstream. Statuses are not retried by default: coding
    clients retry 429/529 themselves, and retrying here too multiplies the
    load on an overloaded provider. Put statuses in ``statuses`` to retry
    them; a ``Retry-After`` longer than ``max_wait`` seconds is not waited
    for (the answer goes to the client).
    """

    max_retries: int = 1
    connect_errors: bool = True
    statuses: frozenset[int] = field(default_factory=_no_statuses)
    max_wait: float = 10.0
    backoff: float = 0.25
