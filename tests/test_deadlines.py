"""Coarse deadlines (aibridge_asgi.deadlines): each fires once, never more
than half a tick early, unless cancelled; one loop timer serves them all.
(Upper bounds here are loose: a busy machine may run the loop late.)"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge_asgi.deadlines import Deadlines

TICK = 0.02


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=1, max_size=30),
)
def test_each_deadline_fires_once_near_its_time_unless_cancelled(
    plan: list[tuple[int, bool]],
) -> None:
    async def main() -> None:
        deadlines = Deadlines(TICK)
        loop = asyncio.get_running_loop()
        fired: dict[int, float] = {}
        keys = {}
        began = loop.time()
        for i, (ticks, cancel) in enumerate(plan):
            delay = ticks * TICK * 0.7

            def note(i: int = i) -> None:
                assert i not in fired
                fired[i] = loop.time()

            keys[i] = (deadlines.after(delay, note), delay, cancel)
        for key, _, cancel in keys.values():
            if cancel:
                deadlines.cancel(key)
        # Loop timers run in time order: this sleep ends after the deadlines'
        # timer has served the last slot, however late the loop runs.
        last = max(delay for _, delay, _ in keys.values())
        await asyncio.sleep(last + TICK + 0.05)
        for i, (_, delay, cancel) in keys.items():
            if cancel:
                assert i not in fired
            else:
                # Never more than half a tick early; late only by the loop's delays.
                assert fired[i] >= began + delay - TICK / 2 - 0.002
        assert set(fired) == {i for i, (_, _, cancel) in keys.items() if not cancel}
        assert len(deadlines) == 0

    run(main)


def test_an_earlier_deadline_rearms_the_timer() -> None:
    async def main() -> None:
        deadlines = Deadlines(TICK)
        order: list[str] = []
        deadlines.after(1.0, lambda: order.append("late"))
        done = asyncio.Event()
        deadlines.after(0.05, lambda: (order.append("early"), done.set()))
        await asyncio.wait_for(done.wait(), 0.9)  # not held back to the late one
        assert order == ["early"]

    run(main)


def test_callbacks_may_set_deadlines_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        deadlines = Deadlines(TICK)
        seen: list[str] = []
        done = asyncio.Event()

        def first() -> None:
            seen.append("first")
            deadlines.after(0.03, lambda: (seen.append("second"), done.set()))
            raise RuntimeError("boom")

        deadlines.after(0.0, first)
        deadlines.after(0.5, lambda: seen.append("third"))
        await asyncio.wait_for(done.wait(), 0.45)
        assert seen == ["first", "second"]

    with caplog.at_level(logging.ERROR, logger="aibridge_asgi"):
        run(main)
    assert "deadline callback failed" in caplog.text


def test_a_new_event_loop_forgets_the_old_one() -> None:
    deadlines = Deadlines(TICK)
    fired: list[str] = []

    async def first() -> None:
        deadlines.after(0.05, lambda: fired.append("old"))

    async def second() -> None:
        done = asyncio.Event()
        deadlines.after(0.01, lambda: (fired.append("new"), done.set()))
        await asyncio.wait_for(done.wait(), 0.5)
        await asyncio.sleep(0.1)

    asyncio.run(first())  # its loop closes with the deadline pending
    asyncio.run(second())
    assert fired == ["new"]
    assert len(deadlines) == 0


def test_what_it_holds_is_bounded_by_the_time_range_not_the_calls() -> None:
    """Many calls setting and cancelling the same far deadline (a body time
    limit) keep one slot number each, not one per call."""

    async def main() -> None:
        deadlines = Deadlines(TICK)
        for _ in range(5_000):
            deadlines.cancel(deadlines.after(120.0, lambda: None))
        assert len(deadlines) == 0
        assert len(deadlines._heap) <= 3  # the same slot or its neighbours

    run(main)
