"""Routing: which paths the bridge serves and where each one goes upstream.

Routing looks at the path only, never the query string (which is forwarded
as sent), and no request can steer the upstream URL outside the configured
base URL: anything that looks like a path escape is a 404 that never leaves
the bridge.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from aibridge_asgi.config import ProviderConfig
from aibridge_asgi.routing import Routes, match_route, route_path
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ServerThread,
)

from .conftest import HOST_TOKEN, Running
from .test_errors import assert_anthropic_error, assert_error, assert_openai_error

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-5", "input": "hi"}

# (method, bridge path, upstream path, body)
BRIDGED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("POST", "/anthropic/v1/messages", "/v1/messages", MESSAGES_BODY),
    ("POST", "/openai/v1/chat/completions", "/v1/chat/completions", CHAT_BODY),
    ("POST", "/openai/v1/responses", "/v1/responses", RESPONSES_BODY),
]
PASSTHROUGH: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET", "/anthropic/v1/models", "/v1/models", None),
    ("GET", "/anthropic/v1/models/claude-sonnet-4-5", "/v1/models/claude-sonnet-4-5", None),
    ("POST", "/anthropic/v1/messages/count_tokens", "/v1/messages/count_tokens", MESSAGES_BODY),
    ("GET", "/openai/v1/models", "/v1/models", None),
    ("GET", "/openai/v1/models/gpt-5.1-codex", "/v1/models/gpt-5.1-codex", None),
    ("GET", "/openai/v1/responses/resp_0123abc", "/v1/responses/resp_0123abc", None),
    (
        "GET",
        "/openai/v1/responses/resp_0123abc/input_items",
        "/v1/responses/resp_0123abc/input_items",
        None,
    ),
    ("DELETE", "/openai/v1/responses/resp_0123abc", "/v1/responses/resp_0123abc", None),
]


def raw_request(
    url: str, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Send ``method target HTTP/1.1`` exactly as given (no client-side
    normalisation of dots, slashes or escapes); return status and body."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in {**AUTH, **(headers or {})}.items()]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.read()


def test_bridged_and_passthrough_routes_reach_the_right_upstream_path(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    for method, path, upstream_path, body in [*BRIDGED, *PASSTHROUGH]:
        fake.requests.clear()
        if method == "DELETE":
            fake.enqueue(FakeResponse.json({"id": "resp_0123abc", "deleted": True}))
        r = client.request(method, running.url + path, headers=AUTH, json=body)
        assert r.status_code == 200, (method, path, r.text)
        (seen,) = fake.requests
        assert (seen.method, seen.path, seen.query) == (method, upstream_path, ""), path
        if body is not None:
            assert seen.json() == body, path
    # Passthrough answers come back unchanged.
    raw = b'{"data": [ {"id":"claude-x"} ],\n "has_more": false}'
    fake.enqueue(FakeResponse.json(raw, headers=[("request-id", "req_1")]))
    r = client.get(running.url + "/anthropic/v1/models?limit=1", headers=AUTH)
    assert r.content == raw
    assert r.headers["request-id"] == "req_1"


def test_query_string_is_forwarded_exactly_and_ignored_by_routing(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    cases = [
        ("POST", "/anthropic/v1/messages", "beta=true", "/v1/messages", MESSAGES_BODY),
        (
            "POST",
            "/anthropic/v1/messages/count_tokens",
            "beta=true",
            "/v1/messages/count_tokens",
            MESSAGES_BODY,
        ),
        ("GET", "/openai/v1/models", "client_version=0.1&x=a%20b", "/v1/models", None),
        (
            "POST",
            "/openai/v1/responses",
            "x=%2F..%2Fadmin&y=a+b&z=/../../etc&empty=&flag",
            "/v1/responses",
            RESPONSES_BODY,
        ),
        (
            "POST",
            "/openai/v1/chat/completions",
            "api-version=2024-10-21&q=%E2%9C%93",
            "/v1/chat/completions",
            CHAT_BODY,
        ),
    ]
    for method, path, query, upstream_path, body in cases:
        fake.requests.clear()
        r = client.request(method, f"{running.url}{path}?{query}", headers=AUTH, json=body)
        assert r.status_code == 200, (path, query, r.text)
        (seen,) = fake.requests
        assert (seen.path, seen.query) == (upstream_path, query)


def test_base_url_path_prefix_is_kept(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """The fake served below ``/proxy/api`` on its own port, as behind a proxy."""
    arrived: list[tuple[str, bytes]] = []
    proxied = Starlette(routes=[Mount("/proxy/api", app=fake)])

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            arrived.append((scope["path"], scope["query_string"]))
        await proxied(scope, receive, send)

    with ServerThread(front) as proxy:
        base = proxy.url + "/proxy/api"
        running = start_bridge(base_urls={"anthropic": base + "/", "openai": base + "/v1"})
        cases = [
            *BRIDGED,
            ("GET", "/anthropic/v1/models", "/v1/models", None),
            ("POST", "/anthropic/v1/messages/count_tokens", "/v1/messages/count_tokens", {}),
            ("GET", "/openai/v1/models/gpt-5", "/v1/models/gpt-5", None),
            (
                "GET",
                "/openai/v1/responses/resp_1/input_items",
                "/v1/responses/resp_1/input_items",
                None,
            ),
        ]
        for method, path, upstream_path, body in cases:
            arrived.clear()
            r = client.request(method, f"{running.url}{path}?beta=true", headers=AUTH, json=body)
            assert r.status_code == 200, (path, r.text)
            assert arrived == [("/proxy/api" + upstream_path, b"beta=true")]
    assert len(fake.requests) == len(cases)


ESCAPES = [
    "/anthropic/v1/../v1/models",
    "/anthropic/v1/models/../../admin",
    "/anthropic/v1/models/..",
    "/anthropic/v1/models/.",
    "/anthropic/./v1/models",
    "/anthropic/v1/%2e%2e/v1/models",
    "/anthropic/%2E%2E/admin",
    "/anthropic/v1/models%2f..%2fadmin",
    "/anthropic/v1/models/..%2f..%2fadmin",
    "/anthropic/v1/models/claude%2f..%2f..%2fadmin",
    "/anthropic/v1/models/%2e%2e",
    "/anthropic/v1/messages%2fcount_tokens",
    "/anthropic//v1/models",
    "/anthropic/v1//models",
    "//anthropic/v1/models",
    "/anthropic/v1/models\\..\\..\\admin",
    "/anthropic/v1\\models",
    "/anthropic/v1/models/a%00b",
    "/openai/v1/responses/..%2f..%2fadmin",
    "/openai/v1/responses/resp_1/..",
    "/openai/v1/responses/resp_1/%2e%2e/%2e%2e/admin",
    "/openai/v1/models/.env",
    "/openai/v1/../../admin",
    "/openai/v1/responses/resp_1//input_items",
    "//evil.example/anthropic/v1/models",
    "//evil.example/openai/v1/models",
]

# Absolute-form request targets. uvicorn's h11 parser hands the whole target
# to the app (which answers 404); its httptools parser keeps only the path, as
# RFC 9112 allows, so the request is an ordinary one for the configured
# upstream. Either way nothing may go anywhere but the configured base URL.
ABSOLUTE = {
    "http://evil.example/anthropic/v1/models": "/v1/models",
    "http://evil.example:8080/openai/v1/models": "/v1/models",
}


def test_path_escapes_are_404_and_never_reach_upstream(
    running: Running, fake: FakeUpstream
) -> None:
    answered = {target: raw_request(running.url, target) for target in ESCAPES}
    # Bridged routes too: a POST must not be steered either.
    for target in ("/anthropic/v1/../v1/messages", "/openai/v1/chat%2fcompletions"):
        answered["POST " + target] = raw_request(running.url, target, "POST")
    wrong = {t: status for t, (status, _) in answered.items() if status != 404}
    assert wrong == {}
    for target, (_, body) in answered.items():
        assert json.loads(body)["error"]["message"], target
    assert fake.requests == []
    for target, upstream_path in ABSOLUTE.items():
        status, _ = raw_request(running.url, target)
        if status == 404:
            assert fake.requests == [], target
        else:
            assert status == 200, target
            assert [r.path for r in fake.requests] == [upstream_path], target
            fake.requests.clear()


def test_remembered_routes_answer_as_the_matcher_does() -> None:
    """``Routes`` remembers matched paths; asked again, and for escaped forms
    of a remembered path, it answers exactly as ``route_path`` then
    ``match_route``. Misses are not remembered, and the memo is bounded."""
    providers = {
        "anthropic": ProviderConfig("anthropic", "anthropic", "k"),
        "openai": ProviderConfig("openai", "openai", "k"),
    }
    routes = Routes(providers)

    def expected(path: str, root: str, raw: bytes | None) -> object:
        below = route_path(path, root, raw)
        return match_route(below, providers) if below is not None else None

    paths = [p for _, p, _, _ in BRIDGED + PASSTHROUGH] + ["/openai/v1/nope", "/nowhere"]
    cases = [(p, "", p.encode()) for p in paths] + [(p, "", None) for p in paths]
    cases += [("/mnt" + p, "/mnt", ("/mnt" + p).encode()) for p in paths]
    # The decoded path of an escaped request equals a remembered one.
    cases += [("/anthropic/v1/models", "", b"/anthropic/v1/%6dodels")]
    cases += [("/openai/v1/chat/completions", "", b"/openai/v1/chat%2fcompletions")]
    cases += [("/anthropic/v1/models", "", b"/anthropic/v1\\models")]
    cases += [(t.split("?")[0], "", t.encode()) for t in ESCAPES if "%" not in t]
    for _ in range(2):  # the second time from the memo
        for path, root, raw in cases:
            assert routes.match(path, root, raw) == expected(path, root, raw), (path, raw)
    remembered = routes._matched
    assert all(m.api is not None or m.upstream_path for m in remembered.values())
    assert ("/nowhere", "") not in remembered
    assert ("/openai/v1/nope", "") not in remembered
    for n in range(3000):  # distinct ids: the memo starts over, never grows past its size
        assert routes.match(f"/openai/v1/responses/resp_{n}", "", None) is not None
        assert len(remembered) <= 1024


def test_unknown_paths_are_404_in_the_providers_shape(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    cases: list[tuple[str, str, str | None]] = [
        ("POST", "/anthropic/v1/complete", "anthropic"),
        ("POST", "/anthropic/v2/messages", "anthropic"),
        ("GET", "/anthropic/v1/models/", "anthropic"),
        ("GET", "/anthropic/v1/models/a/b", "anthropic"),
        ("POST", "/anthropic/v1/messages/batches", "anthropic"),
        ("GET", "/anthropic", "anthropic"),
        ("POST", "/anthropic/messages", "anthropic"),
        ("POST", "/openai/v1/embeddings", "openai"),
        ("POST", "/openai/chat/completions", "openai"),
        ("POST", "/openai/v1/chat/completions/extra", "openai"),
        ("GET", "/openai/v1", "openai"),
        ("GET", "/openai", "openai"),
        ("POST", "/openai/v1/messages", "openai"),
        ("GET", "/", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/messages", None),
        ("POST", "/gemini/v1beta/models/x:embedContent", "google"),
        ("GET", "/gemini/v1beta/tunedModels", "google"),
        ("POST", "/gemini/v2/models/x:generateContent", "google"),
        ("POST", "/google/v1beta/models/x:generateContent", None),
        ("GET", "/api/hello", None),
    ]
    for method, path, kind in cases:
        r = client.request(method, running.url + path, headers=AUTH, json={"model": "m"})
        try:
            assert_error(r, kind, 404)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from None
        if kind is None:
            assert r.json()["error"]["type"] == "not_found_error"
    assert fake.requests == []


def test_disabled_provider_is_404(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(provider_keys={"anthropic": ANTHROPIC_KEY, "openai": ""})
    for method, path, body in [
        ("POST", "/openai/v1/chat/completions", CHAT_BODY),
        ("POST", "/openai/v1/responses", RESPONSES_BODY),
        ("GET", "/openai/v1/models", None),
    ]:
        r = client.request(method, running.url + path, headers=AUTH, json=body)
        body_json = assert_error(r, None, 404)
        assert OPENAI_KEY not in json.dumps(body_json)
    assert fake.requests == []
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, json=MESSAGES_BODY)
    assert r.status_code == 200


def test_wrong_method_on_a_bridged_route_is_405(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    for method, path in [
        ("GET", "/anthropic/v1/messages"),
        ("PUT", "/anthropic/v1/messages"),
        ("DELETE", "/anthropic/v1/messages"),
        ("GET", "/openai/v1/chat/completions"),
        ("PATCH", "/openai/v1/responses"),
        ("GET", "/openai/v1/responses"),
    ]:
        r = client.request(method, running.url + path, headers=AUTH)
        if path.startswith("/anthropic"):
            assert_anthropic_error(r, 405)
        else:
            assert_openai_error(r, 405)
        assert r.headers.get_list("allow") == ["POST"], (method, path)
        assert "x-aibridge-interception-id" not in r.headers
    assert fake.requests == []
