"""Coarse deadlines: one event-loop timer for the many a bridge keeps.

Every bridged call sets deadlines that almost never fire: the time limit of
the request body, the moment to start listening for a disconnect, the
upstream's allowed silence. An event-loop timer is dear under load (with
uvloop, arming and cancelling one is a few microseconds, and a call armed
three: about a tenth of the bridge's CPU per request under load). A
:class:`Deadlines` keeps them in dictionaries by time slot instead, and one
loop timer, armed for the earliest slot, runs the callbacks that are due.

A deadline fires within half a ``tick`` of its time, usually just after it:
fine for limits of tenths of seconds and more, not for precise timing.
Callbacks run on the event loop, like a timer's; one that raises is logged.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable

__all__ = ["Deadlines", "WaitLimit"]

logger = logging.getLogger("aibridge_asgi")


class Deadlines:
    """Deadlines on the running event loop, ``tick`` seconds apart at most.

    Bound to the loop of its first use; used from another loop (a new test,
    a restarted host), it forgets what the old one held.
    """

    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, dict[int, Callable[[], object]]] = {}
        self._slot_of: dict[int, int] = {}  # key -> slot
        self._heap: list[int] = []  # slots that had entries (emptied ones are skipped)
        self._queued: set[int] = set()  # the slots in the heap, each once
        self._timer: asyncio.TimerHandle | None = None
        self._armed: int | None = None  # the slot the timer is armed for
        self._last_key = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def after(self, delay: float, callback: Callable[[], object]) -> int:
        """Call ``callback`` in about ``delay`` seconds; returns a key for
        :meth:`cancel`."""
        loop = asyncio.get_running_loop()
        return self._add(loop, loop.time() + delay, callback)

    def at(self, when: float, callback: Callable[[], object]) -> int:
        """Call ``callback`` at about ``when`` (the loop's clock)."""
        return self._add(asyncio.get_running_loop(), when, callback)

    def cancel(self, key: int) -> None:
        """Forget a deadline (nothing happens if it fired or is unknown)."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        entries = self._slots.get(slot)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self._slots[slot]  # its number stays in the heap until due

    def _add(
        self, loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]
    ) -> int:
        if loop is not self._loop:
            self._reset(loop)
        slot = math.ceil(when / self.tick)
        self._last_key = key = self._last_key + 1
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = {}
            if slot not in self._queued:
                self._queued.add(slot)
                heapq.heappush(self._heap, slot)
            if self._armed is None or slot < self._armed:
                self._arm(loop, slot)
        entries[key] = callback
        self._slot_of[key] = slot
        return key

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None and self._loop is not None and not self._loop.is_closed():
            self._timer.cancel()
        self._loop = loop
        self._slots.clear()
        self._slot_of.clear()
        self._heap.clear()
        self._queued.clear()
        self._timer = None
        self._armed = None

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = slot
        self._timer = loop.call_at(slot * self.tick, self._fire)

    def _fire(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        self._armed = None
        due = (loop.time() + self.tick / 2) / self.tick
        heap, slots = self._heap, self._slots
        queued = self._queued
        while heap and heap[0] <= due:
            slot = heapq.heappop(heap)
            queued.discard(slot)
            entries = slots.pop(slot, None)
            if not entries:
                continue
            for key, callback in entries.items():
                self._slot_of.pop(key, None)
                try:
                    callback()
                except Exception:
                    logger.exception("deadline callback failed")
        while heap and heap[0] not in slots:
            queued.discard(heapq.heappop(heap))  # emptied by cancel()
        if heap and (self._armed is None or heap[0] < self._armed):
            self._arm(loop, heap[0])


class WaitLimit:
    """Bounds how long the running task may wait, with one deadline (see
    :class:`Deadlines`) rather than a loop timer per wait.

    :meth:`waiting` starts the clock when the task begins to wait (for the
    upstream's next bytes, for a request body), :meth:`done` stops it when
    the wait ends; a task that never calls :meth:`done` is bounded from its
    first :meth:`waiting` on. The deadline, set once, checks when it comes
    whether the wait it guards is still going on and otherwise is set again
    for the current wait (at most once per ``limit`` seconds). On expiry it
    cancels the task; the caller, catching that ``CancelledError``, asks
    :meth:`expired` and raises its own timeout error instead. aiohttp's
    ``sock_read`` timeout, by contrast, moves a loop timer on every read.
    """

    __slots__ = (
        "_cancelling",
        "_deadlines",
        "_key",
        "_limit",
        "_loop",
        "_since",
        "_task",
        "fired",
    )

    def __init__(self, limit: float, deadlines: Deadlines) -> None:
        self._limit = limit
        self._deadlines = deadlines
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._since: float | None = None
        self._key: int | None = None
        self.fired = False

    def waiting(self) -> None:
        """The task starts waiting."""
        self._since = since = self._loop.time()
        if self._key is None:
            self._key = self._deadlines.at(since + self._limit, self._check)

    def done(self) -> None:
        """The wait ended (what it waited for came, or the wait failed)."""
        self._since = None

    def _check(self) -> None:
        self._key = None
        since = self._since
        if since is None or self._task.done():
            return  # not waiting now: the next wait sets the deadline again
        due = since + self._limit
        if self._loop.time() >= due - self._deadlines.tick:
            self.fired = True
            self._task.cancel()
        else:
            self._key = self._deadlines.at(due, self._check)

    def expired(self) -> bool:
        """After a ``CancelledError`` in a wait: whether it was this limit's
        (then the cancellation is taken back and the caller raises its
        timeout error instead)."""
        return self.fired and self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        """The guarded work is over: drop the deadline."""
        self._since = None
        if self._key is not None:
            self._deadlines.cancel(self._key)
            self._key = None
