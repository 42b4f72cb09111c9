"""A sans-IO Server-Sent Events scanner.

Bytes go in, complete events come out, each with the exact bytes it was made
of (so a relay can forward or drop it unchanged) and its parsed ``event`` and
``data`` fields. The result does not depend on how the input is split: one
byte at a time, mid-line or mid-CRLF, the same events come out. Lines may end
in CRLF, LF or CR, as the SSE specification allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DATA_EVENT",
    "NAMED_EVENT",
    "EventTooLarge",
    "SSEEvent",
    "SSEScanner",
    "Span",
    "blocks_holding",
    "outside_runs",
    "whole_crlf_events",
    "whole_event",
]

#: Where one whole event lies in a read: ``chunk[start:end]``, blank line included.
Span = tuple[int, int]

_LINE_END = re.compile(rb"\r\n|\r|\n")


class EventTooLarge(ValueError):
    """An unfinished event grew past the scanner's ``max_event_size``.

    ``events`` are the whole events the same :meth:`SSEScanner.feed` call
    completed before it.
    """

    def __init__(self, message: str, events: list[SSEEvent]) -> None:
        super().__init__(message)
        self.events = events


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One blank-line-terminated block of the stream.

    ``raw`` is every byte of the block, blank line included. ``event`` is the
    last ``event:`` field, ``data`` the ``data:`` fields joined with ``\\n``;
    both are ``None`` when absent (a block of comments only has neither).
    """

    raw: bytes
    event: str | None
    data: str | None


class SSEScanner:
    """Incremental SSE parser: :meth:`feed` bytes, get complete events.

    A CR that ends a read could be the first half of a CRLF, so the line it
    ends is held until the next byte arrives (or :meth:`finish` is called).

    With ``max_event_size``, :meth:`feed` raises :class:`EventTooLarge` once
    the unfinished event it holds is longer than that many bytes (the
    scanner is then done: its state is dropped).
    """

    __slots__ = ("_buf", "_data", "_event", "_max", "_pos", "_searched")

    def __init__(self, max_event_size: int | None = None) -> None:
        self._max = max_event_size
        self._buf = bytearray()
        self._pos = 0  # start of the next unscanned line in _buf
        self._searched = 0  # no line end before this offset (keeps long lines linear)
        self._event: str | None = None
        self._data: list[str] | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take the next bytes of the stream; return the events they complete."""
        if not self._buf:
            line_end = _whole_events_line_end(chunk)
            if line_end is not None:
                return self._whole_events(chunk, line_end)
        self._buf += chunk
        events = self._scan(final=False)
        if self._max is not None and len(self._buf) > self._max:
            size = len(self._buf)
            self.finish()
            raise EventTooLarge(
                f"an SSE event is longer than {self._max} bytes ({size} so far)", events
            )
        return events

    def _whole_events(self, chunk: bytes, line_end: bytes) -> list[SSEEvent]:
        """Fast path: ``chunk`` is one or more whole events whose lines all
        end in ``line_end`` (the usual shape of an upstream read) and
        nothing is pending."""
        blank = line_end + line_end
        return [whole_event(block + blank, line_end) for block in chunk[: -len(blank)].split(blank)]

    def finish(self) -> tuple[list[SSEEvent], bytes]:
        """The stream ended: return the events still completed by a trailing
        CR, and the bytes of the incomplete event that remain."""
        events = self._scan(final=True)
        rest = bytes(self._buf)
        self._buf.clear()
        self._pos = 0
        self._searched = 0
        self._event = None
        self._data = None
        return events, rest

    def _scan(self, final: bool) -> list[SSEEvent]:
        buf = self._buf
        events: list[SSEEvent] = []
        pos = self._pos
        start = 0
        size = len(buf)
        while pos < size:
            m = _LINE_END.search(buf, max(pos, self._searched))
            if m is None:
                self._searched = size  # the unfinished line has no end so far
                break
            end = m.end()
            if end == size and not final and buf[end - 1] == 0x0D:
                self._searched = size - 1
                break  # maybe half of a CRLF: wait for the next byte
            line_start, pos = pos, end
            if m.start() == line_start:
                events.append(SSEEvent(bytes(buf[start:pos]), self._event, self._joined()))
                self._event = None
                self._data = None
                start = pos
            else:
                self._field(buf[line_start : m.start()])
        if start:
            del buf[:start]
        self._pos = pos - start
        self._searched = max(self._searched - start, self._pos)
        return events

    def _joined(self) -> str | None:
        return _joined(self._data)

    def _field(self, line: bytes | bytearray) -> None:
        field = _field(line)
        if field is None:
            return
        name, text = field
        if name == b"event":
            self._event = text
        elif self._data is None:
            self._data = [text]
        else:
            self._data.append(text)

    @property
    def idle(self) -> bool:
        """Whether no partial event is held (the next byte starts an event)."""
        return not self._buf

    def pending(self) -> bytes:
        """The bytes of the incomplete event at the end of what was fed."""
        return bytes(self._buf)


def whole_crlf_events(chunk: bytes) -> bool:
    """Whether ``chunk`` is whole events with no empty block whose lines all
    end in CRLF (Google's streams): then its events are exactly the pieces
    between its CRLF CRLF pairs."""
    return _whole_events_line_end(chunk) == b"\r\n"


def _whole_events_line_end(chunk: bytes) -> bytes | None:
    """The line end of ``chunk`` when it is whole events with no empty block
    whose lines all end in LF, or all in CRLF (Google's streams); else None."""
    if chunk.endswith(b"\n\n"):
        if not chunk.startswith(b"\n") and b"\r" not in chunk and b"\n\n\n" not in chunk:
            return b"\n"
    elif (
        chunk.endswith(b"\r\n\r\n")
        and not chunk.startswith(b"\r\n")
        and b"\r\n\r\n\r\n" not in chunk
        and chunk.count(b"\r\n") == chunk.count(b"\r") == chunk.count(b"\n")
    ):
        return b"\r\n"
    return None


#: One event of the usual named shape: an ``event:`` line, then one or more
#: ``data:`` lines, then the blank line (``.`` is any byte but LF; reads
#: holding a CR never get here).
NAMED_EVENT = re.compile(rb"event: .*+\n(?:data: .*+\n)++\n")
#: One event of ``data:`` lines only, then the blank line.
DATA_EVENT = re.compile(rb"(?:data: .*+\n)++\n")


def outside_runs(
    chunk: bytes, passed: re.Pattern[bytes], shape: re.Pattern[bytes] = NAMED_EVENT
) -> list[Span] | None:
    """The events of ``chunk`` outside the runs ``passed`` matches, in stream
    order; ``None`` when the chunk holds a CR, does not end with a whole
    event, or one of those events does not have the expected ``shape``
    (:data:`NAMED_EVENT`: an ``event:`` line, then ``data:`` lines; or
    :data:`DATA_EVENT`).

    ``passed`` matches, at an event's start, a run of zero or more whole
    events the caller may pass over unread (it always matches, possibly
    empty), each one an event the scanner would parse as such: LF line ends
    (``.`` never matches LF, and the chunk has no CR). The work is one pass
    over the chunk in the regular-expression engine, with no object built
    per event: a read of a hundred text deltas holding three events worth
    reading costs four matches of ``passed`` and three of the named shape.
    """
    if b"\r" in chunk:
        return None
    spans: list[Span] = []
    run, named = passed.match, shape.match
    pos, size = 0, len(chunk)
    while True:
        matched = run(chunk, pos)
        if matched is not None:
            pos = matched.end()
        if pos == size:
            return spans
        event = named(chunk, pos)
        if event is None:
            return None
        end = event.end()
        spans.append((pos, end))
        pos = end


def _field(line: bytes | bytearray) -> tuple[bytes, str] | None:
    """A ``data`` or ``event`` field line's name and value; ``None`` for a
    comment, an empty line or any other field."""
    if not line or line[0] == 0x3A:  # ":" comment
        return None
    name, colon, value = bytes(line).partition(b":")
    if name != b"data" and name != b"event":
        return None
    if colon and value[:1] == b" ":
        value = value[1:]
    return name, value.decode("utf-8", "replace")


def _joined(data: list[str] | None) -> str | None:
    """An event's ``data`` lines as its data field."""
    if data is None:
        return None
    return data[0] if len(data) == 1 else "\n".join(data)


def whole_event(raw: bytes, line_end: bytes = b"\n") -> SSEEvent:
    """The event ``raw`` holds: one whole block whose lines all end in
    ``line_end`` (LF, or CRLF), the last one blank, as :class:`SSEScanner`
    would parse it."""
    name: str | None = None
    data: list[str] | None = None
    for line in raw[: -2 * len(line_end)].split(line_end):
        field = _field(line)
        if field is None:
            continue
        if field[0] == b"event":
            name = field[1]
        elif data is None:
            data = [field[1]]
        else:
            data.append(field[1])
    return SSEEvent(raw, name, _joined(data))


def blocks_holding(chunk: bytes, needles: tuple[bytes, ...], line_end: bytes = b"\n") -> list[Span]:
    """The events of ``chunk`` holding any of ``needles``, in stream order,
    each once.

    ``chunk`` must be whole events that does not start with a line end: LF
    ones (empty lines between them are fine) or, with ``line_end=b"\r\n"``,
    what :func:`whole_crlf_events` accepts. No needle may hold a CR or an LF,
    so the blank lines around a hit bound its event.
    """
    blank = line_end + line_end
    size = len(blank)
    starts: set[int] = set()
    found: list[Span] = []
    for needle in needles:
        at = chunk.find(needle)
        while at != -1:
            start = chunk.rfind(blank, 0, at)
            start = 0 if start < 0 else start + size
            end = chunk.index(blank, at) + size
            if start not in starts:
                starts.add(start)
                found.append((start, end))
            at = chunk.find(needle, end)
    if len(needles) > 1:
        found.sort()
    return found
