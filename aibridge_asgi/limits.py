"""Client-side limits in one object: what a request or an answer may cost.

:class:`Limits` sits next to :class:`~aibridge_asgi.config.Timeouts` (which
bounds the upstream side): request body size and time, the size of an SSE
event or a whole non-streamed answer the bridge holds in memory, keep-alive
comments, and the record queue on its way to the recorder.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "Limits",
]

#: Request bodies above this are refused with 413. Long Claude Code sessions
#: send several MB; 64 MiB leaves ample room.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

#: One SSE event is a few hundred bytes to a few kB; a 16 MiB event (a whole
#: image in one delta) is still far below this.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

#: A non-streamed answer is one JSON document; the largest model answers are
#: a few MB.
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the bridge hold or wait for.

    :param max_body_size: request bodies above this many bytes get 413.
    :param body_timeout: seconds a client may take to send its whole request
        body, from the first byte on (408 after that; bounds slow uploads
        and bodies that never start); ``None`` for no limit.
    :param keepalive_interval: seconds of upstream silence after which a
        started stream gets an SSE comment line; ``None`` turns it off.
    :param max_event_size: bytes of one unfinished SSE event the bridge may
        buffer; a longer event ends the stream as an upstream error (the
        client's connection is cut, the interception ends ``failed``). An
        unfinished element of a streamed JSON array (Gemini) is bounded the
        same way: past it the answer is relayed unread.
    :param max_response_size: bytes of a non-streamed upstream answer the
        bridge may buffer; a longer one is refused with 502.
    :param max_pending_records: records waiting for the recorder; past it,
        new records are dropped, counted and logged (see docs/records.md).
    :param record_timeout: seconds one ``recorder.record()`` call may take;
        a call that takes longer is abandoned and its record counted as
        dropped. ``None`` waits without limit.
    """

    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    body_timeout: float | None = 120.0
    keepalive_interval: float | None = 15.0
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    max_pending_records: int = 100_000
    record_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        for name in ("max_body_size", "max_event_size", "max_response_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must not be negative")
        if self.max_pending_records < 1:
            raise ValueError("Limits.max_pending_records must be at least 1")
        for name in ("body_timeout", "keepalive_interval", "record_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be positive or None")
