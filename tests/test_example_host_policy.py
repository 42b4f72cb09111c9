"""The example host's policy: groups with budgets and model allow-lists,
per-user budget overrides (the highest group budget wins, an override
replaces it), a requests-per-minute limit, the admin API; and two worker
processes sharing one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from .redis_server import RedisServer
from .test_example_host import RunningHost, host_command, messages, spawn_host
from .test_example_host import start_host as start_host  # the fixture


def test_two_workers_share_one_rate_limit_through_redis(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    """200 concurrent requests from one user against 60 per minute, over two
    worker processes: 60 pass, plus what the bucket refilled (one a second)
    while they were answered; the rest get 429 with a Retry-After."""
    host = spawn_host(
        host_command(tmp_path / "host.db", "--workers", "2", "--redis", redis_url, "--rpm", "60")
    )
    try:

        async def fire() -> tuple[list[httpx.Response], float]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                began = time.monotonic()
                responses = await asyncio.gather(
                    *(
                        client.post(
                            host.url + "/api/v2/aibridge/anthropic/v1/messages",
                            headers={"x-api-key": host.token},
                            json=messages("claude-sonnet-4-5", f"hello {n}", stream=False),
                        )
                        for n in range(200)
                    )
                )
                return responses, time.monotonic() - began

        responses, seconds = asyncio.run(fire())
        statuses = [r.status_code for r in responses]
        admitted = statuses.count(200)
        assert statuses.count(429) == 200 - admitted, sorted(set(statuses))
        # The documented slack: one more per second the burst took.
        print(f"admitted {admitted} of 200 in {seconds:.2f} s")
        assert 60 <= admitted <= 60 + int(seconds) + 1, (admitted, seconds)
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "60 requests per minute" in refused.json()["error"]["message"]
        keys = redis_server.command("KEYS", "aibridge:rpm:*").decode()
        assert "aibridge:rpm:" in keys
    finally:
        host.stop()


POLICY = "/api/v2/aibridge/policy"


def test_groups_budgets_overrides_and_model_lists_through_the_admin_api(
    start_host: Callable[..., RunningHost], client: httpx.Client
) -> None:
    host = start_host()
    admin = {"authorization": f"Bearer {host.user('root', admin=True)}"}
    alice = {"x-api-key": host.user("alice")}
    bob = {"x-api-key": host.user("bob")}
    carol = {"x-api-key": host.user("carol")}
    policy = host.host.policy
    assert policy is not None

    # Only admins see or change the policy.
    assert client.get(host.url + POLICY, headers=alice).status_code == 403
    assert client.get(host.url + POLICY).status_code == 401
    r = client.put(
        host.url + POLICY + "/groups/engineering",
        headers=admin,
        json={"monthly_budget": "50", "models": ["claude-*"], "members": ["alice", "bob"]},
    )
    assert r.status_code == 200, r.text
    r = client.put(
        host.url + POLICY + "/groups/research",
        headers=admin,
        json={"monthly_budget": "200.00", "models": ["gpt-5*"], "members": ["bob"]},
    )
    assert r.status_code == 200, r.text
    bad = client.put(host.url + POLICY + "/groups/x", headers=admin, json={"monthly_budget": "-1"})
    assert bad.status_code == 400 and "non-negative" in bad.json()["message"]
    unknown = client.put(host.url + POLICY + "/groups/x", headers=admin, json={"members": ["zed"]})
    assert unknown.status_code == 400
    described = client.get(host.url + POLICY, headers=admin).json()
    assert [(g["name"], g["monthly_budget"], g["members"]) for g in described["groups"]] == [
        ("engineering", "50", ["alice", "bob"]),
        ("research", "200.00", ["bob"]),
    ]

    def budget(who: dict[str, str]) -> dict[str, Any]:
        r = client.get(host.url + POLICY + "/budget", headers=who)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    # The highest group budget wins; no group, no budget.
    assert budget(alice)["limit"] == "50"
    assert budget(bob)["limit"] == "200.00"
    assert budget(carol)["limit"] is None
    # A per-user override replaces the group budgets.
    r = client.put(
        host.url + POLICY + "/users/bob/budget", headers=admin, json={"monthly_budget": "20"}
    )
    assert r.status_code == 200 and r.json()["user_budgets"] == {"bob": "20"}
    assert budget(bob)["limit"] == "20"
    assert client.get(host.url + POLICY + "/budget?user=bob", headers=alice).status_code == 403
    assert budget(admin | {"x": "1"})["user"] == "root"

    url = host.bridge_url
    # Model lists: the union of the user's groups'.
    r = client.post(url + "/openai/v1/chat/completions", headers=alice, json=_chat("gpt-5"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert "claude-*" in r.json()["error"]["message"]
    r = client.post(url + "/openai/v1/chat/completions", headers=bob, json=_chat("gpt-5-mini"))
    assert r.status_code == 200
    r = client.post(url + "/openai/v1/chat/completions", headers=carol, json=_chat("o3"))
    assert r.status_code == 200  # in no group: every model

    # Spend this month at the limit: refused with the reset date.
    alice_id = host.host.db.user("alice").id  # type: ignore[union-attr]
    host.server.call(
        policy.store.add(policy.budget._period(policy.store.now())[0] + alice_id, Decimal(50), 3600)
    )
    body = messages("claude-sonnet-4-5", "hi", stream=False)
    r = client.post(url + "/anthropic/v1/messages", headers=alice, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"].startswith("monthly AI budget of $50.00 reached; resets ")
    assert budget(alice)["exhausted"] is True
    # Raising her budget lets her through again.
    client.put(
        host.url + POLICY + "/users/alice/budget", headers=admin, json={"monthly_budget": "80"}
    )
    assert client.post(url + "/anthropic/v1/messages", headers=alice, json=body).status_code == 200
    # The usage page shows spend against budgets: everyone's to admins.
    page = client.get(host.url + "/usage", headers=admin).text
    assert 'id="budgets"' in page
    assert "<td>alice</td><td>$50.00</td><td>$80.00</td>" in page
    assert "<td>bob</td><td>$0.00</td><td>$20.00</td>" in page
    own = client.get(host.url + "/usage", headers=alice).text
    assert "<td>alice</td><td>$50.00</td><td>$80.00</td>" in own and "<td>bob</td>" not in own
    assert client.delete(host.url + POLICY + "/groups/research", headers=admin).status_code == 204
    assert client.delete(host.url + POLICY + "/groups/research", headers=admin).status_code == 404
    r = client.post(url + "/openai/v1/chat/completions", headers=bob, json=_chat("gpt-5-mini"))
    assert r.status_code == 403  # research's list went with the group
    host.flush()


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def test_two_workers_overshoot_a_shared_budget_by_at_most_one_request_each(
    tmp_path: Path, redis_url: str
) -> None:
    """Two workers, one Redis, a budget of a few requests' cost. Two clients
    send requests one after another until refused: the spend passes the
    limit by at most one request per client in flight (each request costs
    the same), and both see the refusal."""
    host = spawn_host(host_command(tmp_path / "host.db", "--workers", "2", "--redis", redis_url))
    try:
        admin = {"authorization": f"Bearer {host.token}"}
        with httpx.Client(timeout=30) as client:
            r = client.put(
                host.url + POLICY + "/users/demo/budget",
                headers=admin,
                json={"monthly_budget": "0.001"},
            )
            assert r.status_code == 200, r.text

        async def lane() -> int:
            admitted = 0
            async with httpx.AsyncClient(timeout=30) as client:
                while True:
                    r = await client.post(
                        host.url + "/api/v2/aibridge/anthropic/v1/messages",
                        headers={"x-api-key": host.token},
                        json=messages("claude-sonnet-4-5", "hi", stream=False),
                    )
                    if r.status_code == 403:
                        assert "monthly AI budget of $0.001 reached" in r.text
                        return admitted
                    assert r.status_code == 200, r.text
                    admitted += 1

        async def lanes() -> list[int]:
            return list(await asyncio.gather(lane(), lane()))

        counts = asyncio.run(lanes())
        with httpx.Client(timeout=30) as client:
            status = client.get(host.url + POLICY + "/budget", headers=admin).json()
        spent, limit = Decimal(status["spent"]), Decimal(status["limit"])
        per_request = spent / sum(counts)
        assert spent >= limit and status["exhausted"] is True
        assert spent - limit < 2 * per_request, (counts, spent)
    finally:
        host.stop()
