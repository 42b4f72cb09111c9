"""Following an SSE answer: reads in, the bytes the client gets out (sans-IO).

:class:`EventFollower` takes the reads of a streamed answer as they arrive
and returns, for each, the bytes to relay now: whole events only (a partial
event is held until its end arrives, so that nothing, a keep-alive comment
included, is ever sent inside an event), byte for byte, minus any event the
observer keeps from the client. On the way it shows the API's observer the
events it needs.

A read that is whole events of a shape the observer can vouch for (most
reads of a healthy stream) is not split into event objects: the observer
names the few events it needs (:meth:`~aibridge_asgi.apis.ApiInterception.needed_in`),
those alone are parsed, and the read goes on as it came. Any other read is
split event by event by :class:`~aibridge_asgi.sse.SSEScanner`. Both ways
give the same bytes and the same records (``tests/test_passes_over.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .apis import ApiInterception
from .records import Record
from .sse import Span, SSEEvent, SSEScanner, whole_event

__all__ = ["EventFollower"]

logger = logging.getLogger("aibridge_asgi")


class EventFollower:
    """One SSE answer's reads in, the client's bytes out, the observer fed.

    ``emit`` receives the observer's records as they are produced. With
    ``shortcut=False`` every event is split out and shown (the reference
    behaviour the shortcut is tested against). :meth:`take` raises
    :class:`~aibridge_asgi.sse.EventTooLarge` like the scanner; the bytes
    of that read still owed to the client are then :meth:`give_up`'s.
    """

    __slots__ = ("_api", "_emit", "_held", "_scanner", "_shortcut", "observing")

    def __init__(
        self,
        api: ApiInterception,
        emit: Callable[[Record], None],
        max_event_size: int | None = None,
        *,
        shortcut: bool = True,
    ) -> None:
        self._api = api
        self._emit = emit
        self._scanner = SSEScanner(max_event_size)
        self._shortcut = shortcut
        self._held = b""
        #: False once the observer failed: the stream is then relayed unread.
        self.observing = True

    def take(self, item: bytes) -> bytes:
        """The bytes of one read the client gets now (whole events only)."""
        self._held = b""
        scanner = self._scanner
        if self._shortcut and self.observing and scanner.idle:
            spans = self._api.needed_in(item)
            if spans is not None:
                return self._observe_spans(item, spans) if spans else item
            # What the observer needs can depend on the first event (Chat
            # Completions and Gemini before the response id): that one the
            # long way, then the rest may go the short way.
            blank = b"\r\n\r\n" if b"\r" in item else b"\n\n"
            cut = item.find(blank) + len(blank)
            if len(blank) <= cut < len(item):
                self._held = self._observe(scanner.feed(item[:cut]))
                item = item[cut:]
                spans = self._api.needed_in(item) if self.observing and scanner.idle else None
                if spans is not None:
                    rest = self._observe_spans(item, spans) if spans else item
                    return self._held + rest
        return self._held + self._observe(scanner.feed(item))

    def give_up(self, events: list[SSEEvent]) -> bytes:
        """After :meth:`take` raised ``EventTooLarge`` with ``events`` (the
        whole events before the oversized one): the bytes still owed."""
        return self._held + (self._observe(events) if events else b"")

    def finish(self) -> bytes:
        """The stream ended: the bytes still owed (events a trailing CR
        completed, then the incomplete event's bytes, as they came)."""
        events, rest = self._scanner.finish()
        return self._observe(events) + rest if events else rest

    def _show(self, event: SSEEvent) -> bool:
        """Show one event to the observer; whether the client gets it."""
        if not self.observing:
            return True
        try:
            return self._api.on_event(event)
        except Exception:
            logger.exception("stream observer failed; relaying without it")
            self.observing = False
            self._api.error = "the bridge could not follow this stream"
            return True

    def _drain(self) -> None:
        for record in self._api.drain():
            self._emit(record)

    def _observe(self, events: list[SSEEvent]) -> bytes:
        out = [event.raw for event in events if self._show(event)]
        self._drain()
        return out[0] if len(out) == 1 else b"".join(out)

    def _observe_spans(self, chunk: bytes, spans: list[Span]) -> bytes:
        # needed_in answers for reads without a CR, or whose lines all end in CRLF.
        line_end = b"\r\n" if chunk.endswith(b"\r\n") else b"\n"
        dropped = [
            span for span in spans if not self._show(whole_event(chunk[slice(*span)], line_end))
        ]
        self._drain()
        if not dropped:
            return chunk
        out, at = [], 0
        for start, end in dropped:
            out.append(chunk[at:start])
            at = end
        out.append(chunk[at:])
        return b"".join(out)
