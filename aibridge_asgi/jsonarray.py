"""A sans-IO splitter of a streamed JSON array into its elements.

Gemini's ``streamGenerateContent`` without ``alt=sse`` answers with one JSON
array whose elements arrive over time (``[{...}\\n,\\r\\n{...}\\n]``). The
bridge relays those bytes unchanged and feeds a copy here: bytes go in, the
exact bytes of each complete top-level element come out, whatever the split
(one byte at a time, mid-string, mid-escape). Only ASCII structure is looked
at, so a multi-byte UTF-8 character cut in two is never misread.

The splitter checks framing, not JSON: each element is handed over as soon
as its brackets balance, and the observer parses it.
"""

from __future__ import annotations

import re

__all__ = ["JSONArraySplitter"]

_NON_WS = re.compile(rb"[^ \t\r\n]")
_IN_STRING = re.compile(rb'["\\]')
_IN_CONTAINER = re.compile(rb'["\[\]{}]')
_SCALAR_END = re.compile(rb"[ \t\r\n,\]]")

# States
_BEFORE = 0  # before the opening "["
_BETWEEN = 1  # inside the array, between elements
_IN = 2  # inside an element
_DONE = 3  # after the closing "]"
_NOT_ARRAY = 4  # the body does not start with "["

_COMMA, _OPEN, _CLOSE, _QUOTE, _BACKSLASH = 0x2C, 0x5B, 0x5D, 0x22, 0x5C


class JSONArraySplitter:
    """Incremental splitter: :meth:`feed` bytes, get complete elements."""

    __slots__ = ("_buf", "_depth", "_in_string", "_pos", "_scalar", "_start", "_state")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next byte of _buf to scan
        self._start = 0  # where the current element starts in _buf (state _IN)
        self._state = _BEFORE
        self._depth = 0
        self._in_string = False
        self._scalar = False

    @property
    def is_array(self) -> bool:
        """False once the body turned out not to be a JSON array."""
        return self._state != _NOT_ARRAY

    @property
    def closed(self) -> bool:
        """Whether the closing ``]`` arrived."""
        return self._state == _DONE

    @property
    def pending(self) -> int:
        """Bytes held for the element still incomplete."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes of the body; return the elements they complete."""
        if self._state == _DONE:
            return []  # bytes after the array are not looked at
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        pos = self._pos
        n = len(buf)
        while pos < n:
            state = self._state
            if state == _IN:
                if self._in_string:
                    m = _IN_STRING.search(buf, pos)
                    if m is None:
                        pos = n
                        break
                    if buf[m.start()] == _BACKSLASH:
                        if m.end() >= n:
                            pos = m.start()  # the escaped byte is still to come
                            break
                        pos = m.end() + 1
                        continue
                    pos = m.end()
                    self._in_string = False
                    if self._scalar:
                        out.append(bytes(buf[self._start : pos]))
                        self._state = _BETWEEN
                    continue
                if self._scalar:
                    m = _SCALAR_END.search(buf, pos)
                    if m is None:
                        pos = n
                        break
                    pos = m.start()
                    out.append(bytes(buf[self._start : pos]))
                    self._state = _BETWEEN
                    continue
                m = _IN_CONTAINER.search(buf, pos)
                if m is None:
                    pos = n
                    break
                c = buf[m.start()]
                pos = m.end()
                if c == _QUOTE:
                    self._in_string = True
                elif c in b"[{":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        out.append(bytes(buf[self._start : pos]))
                        self._state = _BETWEEN
                continue
            if state in (_DONE, _NOT_ARRAY):
                pos = n
                break
            m = _NON_WS.search(buf, pos)
            if m is None:
                pos = n
                break
            pos = m.start()
            c = buf[pos]
            if state == _BEFORE:
                if c == _OPEN:
                    self._state = _BETWEEN
                    pos += 1
                else:
                    self._state = _NOT_ARRAY
                    pos = n
                continue
            # _BETWEEN
            if c == _COMMA:
                pos += 1
                continue
            if c == _CLOSE:
                self._state = _DONE
                pos = n
                continue
            self._start = pos
            self._state = _IN
            self._depth = 1 if c in b"[{" else 0
            self._in_string = c == _QUOTE
            self._scalar = c not in b"[{"
            pos += 1
        # Keep only what is still needed: the current element, or everything
        # of a body that is not an array (finish() hands it over whole).
        state = self._state
        if state == _NOT_ARRAY:
            keep = 0
        elif state == _IN:
            keep = self._start
            self._start = 0
        else:
            keep = pos
        if keep:
            del buf[:keep]
        self._pos = pos - keep
        if state == _DONE:
            buf.clear()
            self._pos = 0
        return out

    def finish(self) -> bytes:
        """The body ended: return what was not handed over as an element (an
        unfinished element, or the whole body when it was not an array)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._pos = 0
        return rest
