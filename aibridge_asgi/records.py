"""Record types the bridge hands to the host.

Every bridged request that passes authentication produces exactly one
:class:`InterceptionStarted` and exactly one :class:`InterceptionEnded`.
Between the two, the API interceptors emit :class:`TokenUsage`,
:class:`PromptUsage`, :class:`ToolUsage`, :class:`ToolResult`,
:class:`ModelThought` and :class:`Cost` records.

Records are delivered to the host's recorder by a single background worker,
in the order they were produced, so a slow or failing recorder never delays
or breaks a client's response (:mod:`aibridge_asgi.delivery`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from .keys import Key

__all__ = [
    "Actor",
    "Cost",
    "EndStatus",
    "InterceptionEnded",
    "InterceptionStarted",
    "ModelThought",
    "PromptUsage",
    "Record",
    "Recorder",
    "TokenUsage",
    "ToolResult",
    "ToolUsage",
    "utcnow",
]

logger = logging.getLogger("aibridge_asgi.records")

EndStatus: TypeAlias = Literal["completed", "failed", "cancelled"]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _empty() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a host token belongs to, as the host's resolver says.

    ``credentials`` maps provider instance names to a key of this actor's
    own (a team key, a user's stored key: a secret or a named
    :class:`~aibridge_asgi.keys.Key`); it replaces the provider's pool for
    the actor's calls. Never shown in ``repr`` and never in records: the
    actor the records carry has no credentials.
    """

    id: str
    metadata: Mapping[str, Any] = field(default_factory=_empty)
    credentials: Mapping[str, str | Key] = field(default_factory=_empty, repr=False)

    def without_credentials(self) -> Actor:
        """This actor without its credentials (what records carry)."""
        return Actor(self.id, self.metadata) if self.credentials else self


@dataclass(frozen=True, slots=True)
class InterceptionStarted:
    """A bridged request passed authentication and is about to go upstream.

    ``provider`` is the provider kind (``anthropic`` or ``openai``),
    ``provider_name`` the configured instance (``anthropic``, ``azure``...),
    ``route`` the bridged API (``/v1/messages``, ``/chat/completions``,
    ``/responses``), ``model`` the model the client asked for (``""`` when
    the body could not be read), ``client`` the client guessed from the
    request and ``client_session_id`` its session id where it sends one.
    ``metadata`` is the actor's metadata.
    """

    interception_id: str
    actor: Actor
    provider: str
    provider_name: str
    model: str
    route: str
    streaming: bool
    client: str
    client_session_id: str | None
    user_agent: str | None
    started_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class InterceptionEnded:
    """The interception is over; ``status`` says how it ended.

    ``http_status`` is the status the client was sent (``None`` when no
    response started, e.g. the client left first); ``error`` a short,
    secret-free reason for ``failed`` and ``cancelled``.

    ``credential`` says which kind of credential the last upstream attempt
    used: ``"pool"`` (the provider's keys), ``"byok"`` (the client's own) or
    ``"actor"`` (the actor's own); ``key_name`` names the key (its name in
    the pool or the actor's key's name; ``"byok"`` for a client's own).
    Both are ``None`` when no upstream call was made. Never the key itself.
    """

    interception_id: str
    ended_at: datetime
    status: EndStatus
    http_status: int | None
    error: str | None = None
    credential: str | None = None
    key_name: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one upstream response (see docs/records.md)."""

    interception_id: str
    provider_response_id: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    extra: Mapping[str, int] = field(default_factory=_empty)
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class PromptUsage:
    """The text of the last user message the client sent."""

    interception_id: str
    provider_response_id: str
    prompt: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ToolUsage:
    """A tool call the model made. ``args`` is parsed JSON, or the raw string
    when the arguments were not valid JSON. ``injected`` is True for tools the
    bridge itself added to the request (none yet)."""

    interception_id: str
    provider_response_id: str
    tool: str
    tool_call_id: str
    args: Any
    injected: bool = False
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ModelThought:
    """Model reasoning text; ``source`` is ``thinking``, ``reasoning_summary``
    or ``commentary``."""

    interception_id: str
    content: str
    source: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool result the client sent back to the model in this request: the
    id of the tool call it answers (``tool_use_id`` of an Anthropic
    ``tool_result`` block, ``tool_call_id`` of a Chat Completions ``tool``
    message, ``call_id`` of a Responses ``function_call_output`` item).

    ``is_error`` is what the client said (only Anthropic has the flag);
    ``size`` the result's length in UTF-8 bytes (structured content as
    compact JSON). ``content`` is ``None`` unless the host asked for it
    (``create_bridge(tool_result_content=N)``), then at most ``N``
    characters, with ``truncated`` set when it was cut.
    """

    interception_id: str
    tool_call_id: str
    is_error: bool
    size: int
    content: str | None = None
    truncated: bool = False
    created_at: datetime = field(default_factory=utcnow)


def _no_breakdown() -> Mapping[str, Decimal]:
    return {}


@dataclass(frozen=True, slots=True)
class Cost:
    """What one interception's tokens cost, from the bridge's price book.

    ``amount`` is ``None`` when the model has no price (never a guess);
    ``breakdown`` maps each token kind to its share and sums exactly to
    ``amount``. Produced after the :class:`TokenUsage` it prices and before
    :class:`InterceptionEnded`.
    """

    interception_id: str
    provider_name: str
    model: str
    amount: Decimal | None
    currency: str = "USD"
    breakdown: Mapping[str, Decimal] = field(default_factory=_no_breakdown)
    created_at: datetime = field(default_factory=utcnow)

    @property
    def priced(self) -> bool:
        """Whether the model had a price."""
        return self.amount is not None


Record: TypeAlias = (
    InterceptionStarted
    | InterceptionEnded
    | TokenUsage
    | PromptUsage
    | ToolUsage
    | ToolResult
    | ModelThought
    | Cost
)


@runtime_checkable
class Recorder(Protocol):
    """What a host supplies to receive records."""

    async def record(self, record: Record) -> None:
        """Persist or forward one record. Exceptions are logged and dropped."""
        ...


def __getattr__(name: str) -> Any:
    # RecordQueue moved to aibridge_asgi.delivery; the old import keeps working.
    if name == "RecordQueue":
        from .delivery import RecordQueue

        return RecordQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
