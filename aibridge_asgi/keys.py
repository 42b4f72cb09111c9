"""Which credential serves a call: key pools, bring-your-own-key, the actor's own.

Three sources, looked at in this order for each request:

1. **Bring your own key (BYOK).** The client sends the host token in the
   dedicated header (default ``X-AIBridge-Token``) *and* its own provider
   credential in ``Authorization`` or ``X-Api-Key``. That credential goes
   upstream unchanged (headers such as ``anthropic-beta`` pass as always).
2. **The actor's own.** The host's resolver returned an :class:`Actor`
   whose ``credentials`` name a key for this provider instance.
3. **The pool.** The provider's keys (``provider_keys={"anthropic": ["k1",
   "k2"]}``), tried in order. An upstream ``429`` puts the key aside for as
   long as the answer says (``retry-after``, ``anthropic-ratelimit-*-reset``,
   ``x-ratelimit-reset-*``) or :attr:`KeyCooldowns.rate_limited`; a ``401``
   or ``403`` for :attr:`KeyCooldowns.rejected` (the key is probably
   revoked). The same request then goes to the next key, which is possible
   because nothing has reached the client yet. When every key is cooling
   down the client gets ``429`` with ``Retry-After`` = the soonest return.
   A single key is never put aside: every request goes upstream and the
   upstream's own answer (with its ``retry-after``) reaches the client.

Keys have names (their position, ``"0"``, ``"1"``..., unless given) so that
logs, metrics and records can say which one served; the secret never
leaves this module except in the upstream request's header.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

from .errors import BridgeError

__all__ = [
    "DEFAULT_BYOK_HEADER",
    "Access",
    "Credential",
    "CredentialKind",
    "Key",
    "KeyCooldowns",
    "KeyPool",
    "KeySpec",
    "Keys",
    "parse_keys",
]

logger = logging.getLogger("aibridge_asgi.keys")

#: Where a BYOK client puts the host token.
DEFAULT_BYOK_HEADER = "X-AIBridge-Token"

#: ``pool`` (the provider's keys), ``byok`` (the client's own credential) or
#: ``actor`` (a key the resolver handed over with the actor).
CredentialKind: TypeAlias = Literal["pool", "byok", "actor"]

Headers = Sequence[tuple[bytes, bytes]]

_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Key:
    """A provider key and the name logs, metrics and records call it by.

    The name defaults to the key's position in its pool (``"0"``, ``"1"``...);
    the secret is never shown (not in ``repr`` either).
    """

    secret: str = field(repr=False)
    name: str = ""

    def __post_init__(self) -> None:
        if self.name and not _KEY_NAME.match(self.name):
            raise ValueError(
                f"key name {self.name[:70]!r} must be letters, digits, '.', '_' or '-' (at most 63)"
            )


#: How keys may be given: one secret, one :class:`Key`, a list of either
#: (a pool, tried in order), or a mapping of names to secrets.
KeySpec: TypeAlias = "str | Key | Sequence[str | Key] | Mapping[str, str]"


def parse_keys(spec: KeySpec, owner: str = "provider") -> tuple[Key, ...]:
    """The keys of ``spec`` in order, each named (by position unless given).

    Raises ``ValueError`` for an empty secret, a duplicate name or a
    duplicate secret (which would defeat the failover).
    """
    items: list[Key]
    if isinstance(spec, str | Key):
        items = [spec if isinstance(spec, Key) else Key(spec)]
    elif isinstance(spec, Mapping):
        items = [Key(secret, str(name)) for name, secret in spec.items()]
    else:
        items = [k if isinstance(k, Key) else Key(k) for k in spec]
    keys: list[Key] = []
    for index, key in enumerate(items):
        if not isinstance(key.secret, str) or not key.secret:
            raise ValueError(f"{owner}: key {key.name or index} is empty")
        keys.append(key if key.name else Key(key.secret, str(index)))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: key names must differ, got {names}")
    if len({k.secret for k in keys}) != len(keys):
        raise ValueError(f"{owner}: the same key is listed twice")
    return tuple(keys)


@dataclass(frozen=True)
class KeyCooldowns:
    """How long a pooled key is put aside after the upstream refused it.

    ``rate_limited`` applies to a ``429`` whose headers say nothing usable,
    capped at ``max_rate_limited`` when they do; ``rejected`` to ``401`` and
    ``403``. ``clock`` returns seconds since the epoch (injectable for tests;
    it also dates the ``anthropic-ratelimit-*-reset`` timestamps).
    """

    rate_limited: float = 30.0
    max_rate_limited: float = 3600.0
    rejected: float = 600.0
    clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class Credential:
    """The credential one upstream attempt used: its kind, its name
    (the key's name; ``"byok"`` for a client's own) and the headers that
    carry it (never logged)."""

    kind: CredentialKind
    name: str
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)


def auth_header(kind: str, key_header: str | None, secret: str) -> tuple[bytes, bytes]:
    """The header that carries ``secret`` to a provider of ``kind``."""
    if key_header is not None:
        name = key_header.lower()
        if name == "authorization":
            return (b"authorization", b"Bearer " + secret.encode())
        return (name.encode(), secret.encode())
    if kind == "anthropic":
        return (b"x-api-key", secret.encode())
    if kind == "google":
        return (b"x-goog-api-key", secret.encode())
    return (b"authorization", b"Bearer " + secret.encode())


# -- cooldowns from response headers ------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos else None


def _timestamp(text: str) -> float | None:
    """An RFC 3339 timestamp (Anthropic's resets) as epoch seconds."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rate_limit_wait(headers: Headers, now: float) -> float | None:
    """Seconds until a rate-limited key may be used again, from the answer's
    headers: ``retry-after`` (seconds or an HTTP date), else the resets of
    the exhausted Anthropic or OpenAI limits (the latest of them; the
    earliest reset when none says it is exhausted). ``None`` if none parse."""
    values: dict[str, str] = {}
    for raw_name, raw_value in headers:
        values.setdefault(raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
    retry_after = values.get("retry-after")
    if retry_after is not None:
        try:
            return max(float(retry_after), 0.0)
        except ValueError:
            try:
                return max(email.utils.parsedate_to_datetime(retry_after).timestamp() - now, 0.0)
            except (TypeError, ValueError):
                pass
    exhausted: list[float] = []
    others: list[float] = []
    for name, value in values.items():
        wait: float | None = None
        remaining: str | None = None
        if name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            stamp = _timestamp(value)
            wait = None if stamp is None else max(stamp - now, 0.0)
            remaining = values.get(name[: -len("-reset")] + "-remaining")
        elif name.startswith("x-ratelimit-reset-"):
            wait = _duration(value)
            remaining = values.get("x-ratelimit-remaining-" + name[len("x-ratelimit-reset-") :])
        if wait is None:
            continue
        (exhausted if remaining is not None and remaining.strip() == "0" else others).append(wait)
    if exhausted:
        return max(exhausted)
    if others:
        return min(others)
    return None


# -- pools --------------------------------------------------------------------

#: Hook-style notifications: (event name, *arguments).
Notify: TypeAlias = Callable[..., None]


def _quiet(name: str, *args: object) -> None:
    return None


class KeyPool:
    """The keys of one provider instance and when each may be used again.
    Not thread-safe: used on the bridge's event loop."""

    def __init__(
        self,
        provider_name: str,
        keys: Sequence[Key],
        *,
        kind: str,
        key_header: str | None = None,
        cooldowns: KeyCooldowns | None = None,
        notify: Notify = _quiet,
    ) -> None:
        self.provider_name = provider_name
        self.cooldowns = cooldowns or KeyCooldowns()
        self._notify = notify
        self._keys = tuple(keys)
        self._credentials = tuple(
            Credential("pool", k.name, (auth_header(kind, key_header, k.secret),))
            for k in self._keys
        )
        self._until: dict[str, float] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The keys' names, in order."""
        return tuple(k.name for k in self._keys)

    def cooling(self) -> dict[str, float]:
        """Seconds left per key name that is cooling down now."""
        now = self.cooldowns.clock()
        return {n: until - now for n, until in self._until.items() if until > now}

    def available(self, skip: Collection[str] = ()) -> Credential | None:
        """The first key not cooling down and not in ``skip``."""
        now = self.cooldowns.clock()
        for credential in self._credentials:
            if credential.name in skip:
                continue
            until = self._until.get(credential.name)
            if until is not None:
                if until > now:
                    continue
                del self._until[credential.name]
            return credential
        return None

    def retry_after(self) -> int:
        """Whole seconds (at least 1) until the soonest cooling key returns."""
        now = self.cooldowns.clock()
        soonest = min(self._until.values(), default=now)
        return max(1, math.ceil(soonest - now))

    def put_aside(self, name: str, status: int, headers: Headers) -> float | None:
        """Cool key ``name`` down after an upstream ``status``; return the
        seconds, or ``None`` when the status says nothing about the key."""
        settings = self.cooldowns
        now = settings.clock()
        if status == 429:
            wait = rate_limit_wait(headers, now)
            seconds = settings.rate_limited if wait is None else wait
            seconds = min(max(seconds, 1.0), settings.max_rate_limited)
            reason = "rate_limited"
        elif status in (401, 403):
            seconds, reason = settings.rejected, "rejected"
        else:
            return None
        self._until[name] = max(self._until.get(name, 0.0), now + seconds)
        logger.warning(
            "provider %s key %s answered %d; not using it for %.0f s",
            self.provider_name,
            name,
            status,
            seconds,
        )
        self._notify("key_cooldown", self.provider_name, name, reason, seconds)
        return seconds


class Access:
    """One request's way to a credential: a fixed one (BYOK, the actor's),
    or the pool's first key not cooling down. A failover never goes back to
    a key this request already had refused."""

    def __init__(
        self,
        provider_name: str,
        *,
        pool: KeyPool | None = None,
        fixed: Credential | None = None,
        notify: Notify = _quiet,
    ) -> None:
        if (pool is None) == (fixed is None):
            raise ValueError("an Access has a pool or a fixed credential, not both")
        self.provider_name = provider_name
        self._pool = pool
        self._fixed = fixed
        self._notify = notify
        self._tried: list[str] = []
        #: The credential of the last attempt (what served, in the end).
        self.served: Credential | None = None

    def next(self) -> Credential | None:
        """The credential for the next attempt; ``None`` when every pooled
        key is cooling down (answer with :meth:`exhausted`)."""
        if self._fixed is not None:
            credential: Credential | None = self._fixed
        else:
            assert self._pool is not None
            credential = self._pool.available()
        if credential is not None:
            self.served = credential
            self._notify("key_used", self.provider_name, credential.kind, credential.name)
        return credential

    def fail_over(self, credential: Credential, status: int, headers: Headers) -> bool:
        """Report an upstream answer. For a pooled key that got ``429``,
        ``401`` or ``403`` the key is put aside; True when another key is
        free, so the same request should go to it (the caller closes this
        answer and calls :meth:`next`)."""
        if credential.kind != "pool" or self._pool is None or status not in (401, 403, 429):
            return False
        if len(self._pool.names) < 2:
            return False  # one key: nothing to fail over to; the upstream's answer says more
        self._tried.append(credential.name)
        self._pool.put_aside(credential.name, status, headers)
        following = self._pool.available(skip=self._tried)
        if following is None:
            return False
        logger.warning(
            "provider %s: failing over from key %s (%d) to key %s",
            self.provider_name,
            credential.name,
            status,
            following.name,
        )
        self._notify("key_failover", self.provider_name, credential.name, status)
        return True

    def exhausted(self) -> BridgeError:
        """The 429 for a request that found every pooled key cooling down."""
        assert self._pool is not None
        wait = self._pool.retry_after()
        return BridgeError(
            429,
            f"every provider key of {self.provider_name!r} is rate limited or refused;"
            f" retry in {wait} s",
            headers=((b"retry-after", str(wait).encode()),),
        )


# -- the bridge's keys ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ByokRequest:
    """What the BYOK header split off a request: the host token and the
    client's own credential headers (``authorization``/``x-api-key``), if any."""

    token: str
    credential: tuple[tuple[bytes, bytes], ...] = field(repr=False)


def _secret_of(name: bytes, value: bytes) -> bytes:
    """The secret in an ``Authorization: <scheme> <secret>`` or ``X-Api-Key`` value."""
    if name == b"authorization":
        return value.partition(b" ")[2].strip()
    return value.strip()


class Keys:
    """The key pools of every provider instance and the BYOK rules."""

    def __init__(
        self,
        pools: Mapping[str, KeyPool],
        *,
        byok: bool | Collection[str] = True,
        byok_header: str = DEFAULT_BYOK_HEADER,
        provider_kinds: Mapping[str, tuple[str, str | None]] | None = None,
        notify: Notify = _quiet,
    ) -> None:
        self.pools = dict(pools)
        self.byok = byok if isinstance(byok, bool) else frozenset(byok)
        self.byok_header = byok_header.lower().encode()
        self._kinds = dict(provider_kinds or {})
        self._notify = notify

    def byok_allowed(self, provider_name: str) -> bool:
        """Whether clients may bring their own key to this provider instance."""
        if isinstance(self.byok, bool):
            return self.byok
        return provider_name in self.byok

    def split(self, headers: Headers) -> ByokRequest | None:
        """The BYOK form of a request: ``None`` unless it carries a non-empty
        host token in the BYOK header. ``credential`` holds the client's
        ``Authorization`` (a bearer) and ``X-Api-Key`` headers as sent."""
        token: str | None = None
        credential: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name == self.byok_header and token is None:
                token = value.strip().decode("latin-1")
            elif name in (b"authorization", b"x-api-key") and _secret_of(name, value):
                credential.append((name, value))
        if not token:
            return None
        # The host token is never a provider credential (a client that sends
        # it twice must not have it forwarded).
        host = token.encode("latin-1")
        own = tuple((n, v) for n, v in credential if _secret_of(n, v) != host)
        return ByokRequest(token, own)

    def access(
        self,
        provider_name: str,
        *,
        byok: ByokRequest | None = None,
        actor_credentials: Mapping[str, str | Key] | None = None,
    ) -> Access:
        """The credentials a request to ``provider_name`` may use. Raises a
        403 :class:`BridgeError` for a client's own credential where BYOK
        is not allowed."""
        if byok is not None and byok.credential:
            if not self.byok_allowed(provider_name):
                raise BridgeError(
                    403,
                    f"bring-your-own-key is not enabled for provider {provider_name!r};"
                    " send only the gateway token",
                )
            return Access(
                provider_name,
                fixed=Credential("byok", "byok", byok.credential),
                notify=self._notify,
            )
        own = (actor_credentials or {}).get(provider_name)
        if own:
            key = own if isinstance(own, Key) else Key(own, "actor")
            kind, key_header = self._kinds.get(provider_name, ("openai", None))
            header = auth_header(kind, key_header, key.secret)
            return Access(
                provider_name,
                fixed=Credential("actor", key.name or "actor", (header,)),
                notify=self._notify,
            )
        return Access(provider_name, pool=self.pools[provider_name], notify=self._notify)
