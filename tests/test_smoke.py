from __future__ import annotations

import httpx

from aibridge_asgi import InterceptionEnded, InterceptionStarted, TokenUsage
from aibridge_asgi.testing import FakeUpstream

from .conftest import HOST_TOKEN, Running


def test_messages_round_trip(running: Running, client: httpx.Client, fake: FakeUpstream) -> None:
    r = client.post(
        running.url + "/anthropic/v1/messages",
        headers={"x-api-key": HOST_TOKEN, "anthropic-version": "2023-06-01"},
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert r.status_code == 200, r.text
    assert "Hello from the fake upstream" in r.text or "Hello" in r.text
    running.recorder.wait_ended()
    kinds = [type(x).__name__ for x in running.recorder.records]
    print(kinds, running.recorder.records)
    assert running.recorder.of_type(InterceptionStarted)
    assert running.recorder.of_type(TokenUsage)
    assert running.recorder.of_type(InterceptionEnded)[0].status == "completed"
