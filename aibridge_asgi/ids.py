"""Interception ids: random (version 4) UUIDs in their usual text form.

``str(uuid.uuid4())`` asks the system for 16 random bytes on every call and
builds a :class:`uuid.UUID` on the way: about 2 us a call. Here the random
bytes come from ``os.urandom`` 4 KiB at a time and go straight to text
(under 1 us). The ids are the same kind: 122 random bits from the same
source, the version and variant bits set as RFC 9562 says. A forked child
starts with a fresh batch, so two processes never share one.
"""

from __future__ import annotations

import os
import threading

__all__ = ["new_id"]

_BATCH = 256  # ids per os.urandom call
_VARIANT = "89ab"  # the variant's top nibble (10xx), by the two random bits kept

_lock = threading.Lock()
_pool = b""
_at = 0


def _forget() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget)


def new_id() -> str:
    """A new random UUID (version 4), as ``str(uuid.uuid4())`` writes it."""
    global _pool, _at
    with _lock:
        if _at >= len(_pool):
            _pool, _at = os.urandom(16 * _BATCH), 0
        pool, at = _pool, _at
        _at = at + 16
    h = pool[at : at + 16].hex()
    variant = _VARIANT[pool[at + 8] >> 4 & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"
