"""Policy refusals as real clients show them: Claude Code and Codex print
the bridge's message and do not hammer the bridge with retries of a 403."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from aibridge_asgi import InterceptionEnded, InterceptionStarted
from aibridge_asgi.policy import Budget, MemoryStore, ModelAccess, period_bounds

from .harness import Rig, client_program
from .test_claude_code import claude_env
from .test_codex import codex

PROMPT = "Give me a one-line greeting for the bridge check."


def exhausted_budget(limit: str) -> Budget:
    """A monthly budget alice has already spent."""
    store = MemoryStore()
    start, _ = period_bounds("month", store.now())
    key = f"budget:month:{start.date().isoformat()}:alice"
    asyncio.run(store.add(key, Decimal(limit), 86400 * 40))
    return Budget(Decimal(limit), "month", store)


def resets_on() -> str:
    return period_bounds("month", datetime.now(UTC).timestamp())[1].date().isoformat()


def refused(rig: Rig, status: int) -> list[InterceptionStarted]:
    rig.settle()
    recorder = rig.running.recorder
    ends = recorder.of_type(InterceptionEnded)
    assert ends and all((e.status, e.http_status) == ("failed", status) for e in ends), ends
    assert rig.bridged_requests() == []  # nothing reached the provider
    return recorder.of_type(InterceptionStarted)


def test_claude_code_shows_the_budget_refusal(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(policy=[exhausted_budget("50")])
    result = rig.run(
        [client_program("claude"), "-p", PROMPT], claude_env(rig, "ANTHROPIC_AUTH_TOKEN")
    )
    output = result.stdout + result.stderr
    assert f"monthly AI budget of $50.00 reached; resets {resets_on()}" in output, result.describe()
    assert result.returncode != 0
    started = refused(rig, 403)
    # A 403 is not retried: one refused call per request Claude Code made
    # (the prompt, plus at most a side call such as a title).
    assert len(started) <= 2, [s.model for s in started]


def test_claude_code_shows_the_model_refusal(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(policy=[ModelAccess(allow=["gpt-*"])])
    result = rig.run(
        [client_program("claude"), "-p", PROMPT], claude_env(rig, "ANTHROPIC_AUTH_TOKEN")
    )
    output = result.stdout + result.stderr
    assert "is not allowed for your account; models you may use: gpt-*" in output, result.describe()
    assert len(refused(rig, 403)) <= 2


def test_codex_shows_the_budget_refusal(make_rig: Callable[..., Rig]) -> None:
    """Codex 0.171 retries any HTTP status other than 400 and 429 (its
    stream retries: five, with exponential backoff) before it shows the
    message. Bounded and spaced out, not a hammering loop; each refusal
    costs the bridge one policy step and no upstream call."""
    rig = make_rig(policy=[exhausted_budget("20")])
    result = rig.run(*codex(rig, PROMPT))
    output = result.stdout + result.stderr
    assert f"monthly AI budget of $20.00 reached; resets {resets_on()}" in output, result.describe()
    assert result.returncode != 0
    started = refused(rig, 403)
    assert len(started) <= 6, len(started)
    times = [s.started_at.timestamp() for s in started]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if gaps:  # backoff, growing: the last wait is the longest
        assert max(gaps) == gaps[-1] and gaps[-1] >= 1.0, gaps
