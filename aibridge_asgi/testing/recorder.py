"""An in-memory recorder for host tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from ..records import InterceptionEnded, InterceptionStarted, Record

__all__ = ["InMemoryRecorder"]

R = TypeVar("R")


class InMemoryRecorder:
    """Keeps every record in a list, in arrival order. Thread-safe to read.

    ``fail_with`` makes :meth:`record` raise after storing nothing (to test
    that a failing recorder never breaks a response); ``delay`` makes it slow.
    """

    def __init__(self, *, fail_with: Exception | None = None, delay: float = 0.0) -> None:
        self.records: list[Record] = []
        self.fail_with = fail_with
        self.delay = delay
        self._changed = threading.Condition()

    async def record(self, record: Record) -> None:
        """Store ``record`` (or fail, if so configured)."""
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def of_type(self, cls: type[R]) -> list[R]:
        """The records of one type, in order."""
        with self._changed:
            return [r for r in self.records if isinstance(r, cls)]

    def for_interception(self, interception_id: str) -> list[Record]:
        """The records of one interception, in order."""
        with self._changed:
            return [
                r for r in self.records if getattr(r, "interception_id", None) == interception_id
            ]

    def ended(self, interception_id: str) -> InterceptionEnded | None:
        """The end record of an interception, if it arrived."""
        for r in self.for_interception(interception_id):
            if isinstance(r, InterceptionEnded):
                return r
        return None

    def started(self, interception_id: str) -> InterceptionStarted | None:
        """The start record of an interception, if it arrived."""
        for r in self.for_interception(interception_id):
            if isinstance(r, InterceptionStarted):
                return r
        return None

    def wait_sync(
        self, predicate: Callable[[InMemoryRecorder], bool], timeout: float = 5.0
    ) -> None:
        """Block until ``predicate(self)`` holds (for a bridge on another thread)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"recorder condition not met; have {len(self.records)} records"
                    )
                self._changed.wait(left)

    async def wait(
        self, predicate: Callable[[InMemoryRecorder], bool], within: float = 5.0
    ) -> None:
        """Wait until ``predicate(self)`` holds, without blocking the loop."""
        with anyio.fail_after(within):
            # Polling: records may come from a bridge on another thread's loop.
            while not predicate(self):  # noqa: ASYNC110
                await anyio.sleep(0.005)

    def wait_ended(self, count: int = 1, timeout: float = 5.0) -> list[InterceptionEnded]:
        """Block until ``count`` interceptions ended; return their end records."""
        self.wait_sync(lambda r: len(r.of_type(InterceptionEnded)) >= count, timeout)
        return self.of_type(InterceptionEnded)
