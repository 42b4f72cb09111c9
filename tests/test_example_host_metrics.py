"""The example host's /metrics page (Prometheus exposition of the bridge's metrics)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from .test_example_host import RunningHost, messages, start_host

__all__ = ["start_host"]


def test_metrics_page_counts_interceptions_and_tokens(
    start_host: Callable[..., RunningHost], client: httpx.Client
) -> None:
    host = start_host()
    token = host.user("mia")
    r = client.post(
        host.bridge_url + "/anthropic/v1/messages",
        headers={"x-api-key": token},
        json=messages("claude-sonnet-4-5", "count me", stream=True),
    )
    assert r.status_code == 200
    host.flush()
    # Admins only: usage by user and model is not for everyone.
    assert client.get(host.url + "/metrics/").status_code == 401
    assert client.get(host.url + "/metrics/", headers={"x-api-key": token}).status_code == 403
    admin = host.user("ops", admin=True)
    page = client.get(host.url + "/metrics/", headers={"authorization": f"Bearer {admin}"})
    assert page.status_code == 200
    text = page.text
    assert (
        'aibridge_interceptions_total{client="unknown",model="claude-sonnet-4-5",'
        'provider="anthropic",provider_name="anthropic",route="/v1/messages",'
        'status="completed"} 1.0'
    ) in text
    assert (
        'aibridge_tokens_total{model="claude-sonnet-4-5",provider_name="anthropic",'
        'type="output"} 7.0'
    ) in text
    assert token not in text and admin not in text
