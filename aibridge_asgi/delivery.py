"""Records on their way to the recorder: ordered, bounded, timed.

One background task per event loop hands records to the host's recorder in
the order they were produced, so a slow or failing recorder never delays or
breaks a client's response. What it holds and waits for is bounded:

* at most ``max_pending`` records wait; past that, **new records are
  dropped** (the ones already queued keep their order), counted under
  ``"overflow"``, logged, and reported to the ``on_dropped`` callback (the
  bridge passes it to the hooks' ``record_dropped``, which the Prometheus
  hooks count in ``aibridge_records_dropped_total``);
* one ``recorder.record()`` call may take ``call_timeout`` seconds; past
  that it is abandoned and its record counted under ``"timeout"``;
* :meth:`RecordQueue.aclose` delivers until its deadline; records still
  waiting then are counted under ``"undelivered"`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from .records import Record, Recorder

__all__ = ["DropReason", "RecordQueue"]

logger = logging.getLogger("aibridge_asgi.records")

#: Why a record did not reach the recorder.
DropReason = str  # "overflow" | "timeout" | "undelivered" | "closed"

_LOG_EVERY = 1000


class RecordQueue:
    """Delivers records to a recorder from one background task, in order.

    :meth:`put` never blocks and never raises; the worker starts lazily on
    the running event loop (hosts often do not forward lifespan events to
    mounted apps), and again on a new loop if the old one went away.
    """

    def __init__(
        self,
        recorder: Recorder | None,
        on_recorded: Callable[[Record, float, BaseException | None], None] | None = None,
        *,
        max_pending: int = 100_000,
        call_timeout: float | None = 30.0,
        on_dropped: Callable[[Record, DropReason], None] | None = None,
    ) -> None:
        self._recorder = recorder
        self._on_recorded = on_recorded
        self._on_dropped = on_dropped
        self.max_pending = max_pending
        self.call_timeout = call_timeout
        self._pending: deque[Record] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # The call timeout is kept by one watchdog timer rather than a timer
        # per call: a call's number and start time, the timer, and the
        # number of the call the watchdog cancelled.
        self._call = 0
        self._call_began: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = 0
        #: Records that did not reach the recorder, by reason.
        self.dropped: dict[DropReason, int] = {}
        #: Records handed to the recorder (successfully or not).
        self.delivered = 0

    def put(self, record: Record) -> None:
        """Queue one record for delivery (or drop it, counted, when full)."""
        if self._recorder is None:
            return
        if self._closed:
            self._drop(record, "closed")
            return
        if len(self._pending) >= self.max_pending:
            self._drop(record, "overflow")
            return
        self._pending.append(record)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._loop = loop
            self._worker = loop.create_task(self._run(), name="aibridge-recorder")
        self._idle.clear()
        self._wakeup.set()

    def _drop(self, record: Record, reason: DropReason) -> None:
        count = self.dropped.get(reason, 0) + 1
        self.dropped[reason] = count
        if count == 1 or count % _LOG_EVERY == 0:
            logger.error(
                "record %s for interception %s not delivered (%s; %d so far)",
                type(record).__name__,
                getattr(record, "interception_id", "?"),
                reason,
                count,
            )
        if self._on_dropped is not None:
            try:
                self._on_dropped(record, reason)
            except Exception:
                logger.exception("on_dropped callback failed")

    async def _run(self) -> None:
        recorder = self._recorder
        assert recorder is not None
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        while True:
            while self._pending:
                record = self._pending.popleft()
                began = time.perf_counter()
                error: BaseException | None = None
                self._call += 1
                call = self._call
                if self.call_timeout is not None:
                    self._call_began = loop.time()
                    if self._watchdog is None:
                        self._watchdog = loop.call_later(self.call_timeout, self._watch, task, loop)
                try:
                    await recorder.record(record)
                except asyncio.CancelledError:
                    if self._timed_out != call:
                        self._call_began = None
                        self._pending.appendleft(record)  # counted by aclose()
                        raise
                    task.uncancel()
                    error = TimeoutError()
                except Exception as exc:
                    error = exc
                    logger.exception(
                        "recorder failed on %s for interception %s",
                        type(record).__name__,
                        getattr(record, "interception_id", "?"),
                    )
                else:
                    if self._timed_out == call:  # the recorder swallowed the cancel
                        task.uncancel()
                self._call_began = None
                if self._timed_out == call:
                    error = error if isinstance(error, TimeoutError) else TimeoutError()
                    logger.error(
                        "recorder took longer than %g s on %s for interception %s; abandoned",
                        self.call_timeout,
                        type(record).__name__,
                        getattr(record, "interception_id", "?"),
                    )
                    self._drop(record, "timeout")
                self.delivered += 1
                if self._on_recorded is not None:
                    try:
                        self._on_recorded(record, time.perf_counter() - began, error)
                    except Exception:
                        logger.exception("on_recorded callback failed")
            self._idle.set()
            if self._closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _watch(self, task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> None:
        """The watchdog: cancel the recorder call that has run past
        ``call_timeout``, else come back when the running one would."""
        self._watchdog = None
        began, timeout = self._call_began, self.call_timeout
        if began is None or timeout is None or task.done():
            return  # idle: the next call arms it again
        left = began + timeout - loop.time()
        if left <= 0:
            self._timed_out = self._call
            task.cancel()
        else:
            self._watchdog = loop.call_later(left, self._watch, task, loop)

    @property
    def pending(self) -> int:
        """How many records wait for the recorder."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose` until :meth:`reopen`."""
        return self._closed

    async def flush(self) -> None:
        """Wait until every record queued so far has been handed over."""
        if self._worker is None or self._worker.done():
            return
        if self._loop is not asyncio.get_running_loop():
            return
        await self._idle.wait()

    def reopen(self) -> None:
        """Take records again after :meth:`aclose` (a restarted bridge)."""
        self._closed = False

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Deliver what is pending (for at most ``timeout`` seconds), then
        stop the worker. Records left then are counted as ``undelivered``
        and logged."""
        self._closed = True
        worker = self._worker
        running = asyncio.get_running_loop()
        if worker is not None and not worker.done() and self._loop is running:
            self._wakeup.set()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(worker)
            except TimeoutError:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        elif self._pending and self._recorder is not None:
            # Records left by a loop that went away: deliver them here.
            self._loop = running
            self._idle = asyncio.Event()
            self._wakeup = asyncio.Event()
            self._worker = running.create_task(self._run(), name="aibridge-recorder")
            await self.aclose(timeout)
            return
        left = len(self._pending)
        if left:
            self.dropped["undelivered"] = self.dropped.get("undelivered", 0) + left
            logger.error(
                "%d record(s) could not be delivered to the recorder before close "
                "(first: %s for interception %s)",
                left,
                type(self._pending[0]).__name__,
                getattr(self._pending[0], "interception_id", "?"),
            )
            if self._on_dropped is not None:
                for record in self._pending:
                    try:
                        self._on_dropped(record, "undelivered")
                    except Exception:
                        logger.exception("on_dropped callback failed")
            self._pending.clear()
