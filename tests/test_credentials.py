"""Credentials: where the host token is read from, what goes upstream instead.

The host token is read from ``Authorization: Bearer``, then ``X-Api-Key``,
then the host's own ``token_headers``; the first non-empty one wins. No host
credential and no hop-by-hop header ever reaches the upstream, which gets the
provider key in the header its API expects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from aibridge_asgi import Actor, InterceptionStarted, ProviderConfig
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    ReceivedRequest,
    ServerThread,
    streams,
)

from .conftest import FAILING_TOKEN, HOST_TOKEN, OTHER_TOKEN, Running
from .test_errors import assert_anthropic_error, assert_error, assert_openai_error

MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}

# (method, bridge path, upstream path, provider kind, body)
ROUTES: list[tuple[str, str, str, str, dict[str, Any] | None]] = [
    ("POST", "/anthropic/v1/messages", "/v1/messages", "anthropic", MESSAGES_BODY),
    ("GET", "/anthropic/v1/models", "/v1/models", "anthropic", None),
    ("POST", "/openai/v1/chat/completions", "/v1/chat/completions", "openai", CHAT_BODY),
    ("POST", "/openai/v1/responses", "/v1/responses", "openai", {"model": "gpt-5", "input": "x"}),
    ("GET", "/openai/v1/models", "/v1/models", "openai", None),
]


def assert_provider_key(request: ReceivedRequest, kind: str) -> None:
    """The upstream request carries exactly the provider key, in its own header."""
    if kind == "anthropic":
        assert request.header_values("x-api-key") == [ANTHROPIC_KEY]
        assert request.header_values("authorization") == []
    else:
        assert request.header_values("authorization") == [f"Bearer {OPENAI_KEY}"]
        assert request.header_values("x-api-key") == []


def actor_of(running: Running, response: httpx.Response) -> str:
    """The actor recorded for the interception that produced ``response``."""
    interception_id = response.headers["x-aibridge-interception-id"]
    running.recorder.wait_sync(lambda r: r.started(interception_id) is not None)
    started = running.recorder.started(interception_id)
    assert started is not None
    return started.actor.id


def test_token_via_bearer_or_x_api_key_and_provider_key_injected(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    sources = {
        "bearer": {"Authorization": f"Bearer {HOST_TOKEN}"},
        "x-api-key": {"X-Api-Key": HOST_TOKEN},
        "lower-case bearer scheme": {"Authorization": f"bearer {HOST_TOKEN}"},
    }
    for source, headers in sources.items():
        for method, path, upstream_path, kind, body in ROUTES:
            fake.requests.clear()
            r = client.request(method, running.url + path, headers=headers, json=body)
            assert r.status_code == 200, (source, path, r.text)
            (seen,) = fake.requests
            assert (seen.method, seen.path) == (method, upstream_path)
            assert_provider_key(seen, kind)
            if method == "POST":
                assert actor_of(running, r) == "alice", (source, path)


def test_missing_or_unknown_token_is_401(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    attempts = {
        "no credentials": {},
        "unknown bearer": {"Authorization": "Bearer nope"},
        "unknown x-api-key": {"X-Api-Key": "nope"},
        "empty x-api-key": {"X-Api-Key": ""},
        "not a token header by default": {"Coder-Session-Token": HOST_TOKEN},
        "cookie is not a token": {"Cookie": f"session={HOST_TOKEN}"},
    }
    for case, headers in attempts.items():
        for method, path, _, kind, body in ROUTES:
            r = client.request(method, running.url + path, headers=headers, json=body)
            try:
                error = assert_error(r, kind, 401)
            except AssertionError as exc:
                raise AssertionError(f"{case} on {path}: {exc}") from None
            assert "x-aibridge-interception-id" not in r.headers, (case, path)
            if kind == "openai":
                assert error["error"]["code"] == "invalid_api_key"
    assert fake.requests == []
    running.flush()
    assert running.recorder.records == []


def test_async_and_sync_resolvers_and_their_failures(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """``async def`` resolvers run on the loop, plain ones in a worker thread.
    A resolver that raises (or returns something else than an Actor) gives a
    503 that tells nothing of the failure."""
    threads: list[str] = []

    async def async_resolver(token: str) -> Any:
        threads.append(threading.current_thread().name)
        if token == "boom":
            raise ConnectionError("postgres://admin:hunter2@db.internal/users is down")
        if token == "wrong-type":
            return "carol"
        return Actor("carol", {"team": "ml"}) if token == "carol-token" else None

    def sync_resolver(token: str) -> Actor | None:
        threads.append(threading.current_thread().name)
        if token == FAILING_TOKEN:
            raise RuntimeError("database is down")
        return Actor("dave") if token == "dave-token" else None

    async_bridge = start_bridge(resolve_token=async_resolver)
    sync_bridge = start_bridge(resolve_token=sync_resolver)
    for running, token, actor in (
        (async_bridge, "carol-token", "carol"),
        (sync_bridge, "dave-token", "dave"),
    ):
        r = client.post(
            running.url + "/openai/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json=CHAT_BODY,
        )
        assert r.status_code == 200, r.text
        assert actor_of(running, r) == actor
        r = client.post(
            running.url + "/openai/v1/chat/completions",
            headers={"Authorization": f"Bearer {HOST_TOKEN}"},
            json=CHAT_BODY,
        )
        assert_openai_error(r, 401)
    (started,) = async_bridge.recorder.of_type(InterceptionStarted)
    assert started.metadata == {"team": "ml"}
    assert threads[0] == f"asgi-{async_bridge.server.port}"  # on the server's loop thread
    assert threads[2] not in (f"asgi-{sync_bridge.server.port}", "MainThread")  # a worker

    fake.requests.clear()
    failing = [
        ("async resolver raising", async_bridge, "boom", "hunter2"),
        ("async resolver returning a str", async_bridge, "wrong-type", "str"),
        ("sync resolver raising", sync_bridge, FAILING_TOKEN, "database is down"),
    ]
    for case, running, token, secret in failing:
        for method, path, _, kind, body in ROUTES:
            r = client.request(method, running.url + path, headers={"X-Api-Key": token}, json=body)
            parsed = assert_error(r, kind, 503)
            text = json.dumps(parsed)
            for leak in (secret, "Error", "postgres", "Traceback"):
                assert leak not in text, (case, path, text)
            assert "x-aibridge-interception-id" not in r.headers
    assert fake.requests == []


def test_token_order_and_host_named_token_headers(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """``Authorization: Bearer`` first, even when its token is invalid (a
    non-Bearer Authorization is skipped); then ``X-Api-Key``; then the host's
    ``token_headers`` in the host's order, the first non-empty one winning.
    The host's token headers work alone and are never forwarded."""
    running = start_bridge(token_headers=["Coder-Session-Token", "X-Host-Token"])
    order = [
        ({"Authorization": f"Bearer {OTHER_TOKEN}", "X-Api-Key": HOST_TOKEN}, "bob"),
        ({"Authorization": f"Bearer {HOST_TOKEN}", "X-Api-Key": OTHER_TOKEN}, "alice"),
        ({"Authorization": "Bearer not-a-token", "X-Api-Key": HOST_TOKEN}, None),
        ({"Authorization": f"Basic {OTHER_TOKEN}", "X-Api-Key": HOST_TOKEN}, "alice"),
        ({"Authorization": "Bearer", "X-Api-Key": HOST_TOKEN}, "alice"),
        ({"Authorization": f"Token {OTHER_TOKEN}", "X-Api-Key": HOST_TOKEN}, "alice"),
        ({"X-Api-Key": OTHER_TOKEN, "Coder-Session-Token": HOST_TOKEN}, "bob"),
        ({"X-Host-Token": OTHER_TOKEN, "Coder-Session-Token": HOST_TOKEN}, "alice"),
        ({"X-Host-Token": HOST_TOKEN, "Coder-Session-Token": ""}, "alice"),
        ({"X-Host-Token": HOST_TOKEN, "Coder-Session-Token": "nope"}, None),
    ]
    for headers, actor in order:
        r = client.post(running.url + "/anthropic/v1/messages", headers=headers, json=MESSAGES_BODY)
        if actor is None:
            assert_anthropic_error(r, 401)
        else:
            assert r.status_code == 200, (headers, r.text)
            assert actor_of(running, r) == actor, headers

    for header in ("Coder-Session-Token", "X-Host-Token"):
        for method, path, _, kind, body in ROUTES:
            fake.requests.clear()
            r = client.request(method, running.url + path, headers={header: HOST_TOKEN}, json=body)
            assert r.status_code == 200, (header, path, r.text)
            (seen,) = fake.requests
            assert seen.header(header) is None, (header, path)
            assert_provider_key(seen, kind)


def test_host_credentials_and_hop_by_hop_headers_never_reach_upstream(
    start_bridge: Callable[..., Running],
    client: httpx.Client,
    fake: FakeUpstream,
    upstream: ServerThread,
) -> None:
    running = start_bridge(strip_headers=["X-Internal-Secret"], token_headers=["X-Host-Token"])
    sent = {
        "Authorization": f"Bearer {HOST_TOKEN}",
        "X-Api-Key": HOST_TOKEN,
        "Cookie": f"session={HOST_TOKEN}; theme=dark",
        "Proxy-Authorization": f"Basic {HOST_TOKEN}",
        "Coder-Session-Token": HOST_TOKEN,
        "X-Host-Token": HOST_TOKEN,
        "X-Internal-Secret": f"internal-{HOST_TOKEN}",
        "Connection": "keep-alive, X-Foo",
        "X-Foo": f"named-by-connection-{HOST_TOKEN}",
        "Keep-Alive": "timeout=5, max=100",
        "Proxy-Connection": "keep-alive",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Upgrade": "h2c",
        "Accept-Encoding": "gzip, br",
        "X-Kept": "kept",
    }
    # Authorization / X-Api-Key come back holding the provider key (checked below).
    kept = {"connection", "x-kept", "accept-encoding", "authorization", "x-api-key"}
    dropped = {name.lower() for name in sent} - kept

    def chunked() -> Iterator[bytes]:
        yield b'{"model": "claude-sonnet-4-5", "max_tokens": 16, '
        yield b'"messages": [{"role": "user", "content": "hi"}]}'

    cases: list[tuple[str, str, Any]] = [
        ("POST", "/anthropic/v1/messages", {"json": MESSAGES_BODY}),
        ("POST", "/anthropic/v1/messages", {"content": chunked()}),
        ("POST", "/anthropic/v1/messages/count_tokens", {"json": MESSAGES_BODY}),
        ("GET", "/anthropic/v1/models", {}),
        ("POST", "/openai/v1/chat/completions", {"json": {**CHAT_BODY, "stream": True}}),
        ("POST", "/openai/v1/responses", {"json": {"model": "gpt-5", "input": "x"}}),
        ("GET", "/openai/v1/models/gpt-5", {}),
    ]
    for method, path, body in cases:
        fake.requests.clear()
        r = client.request(method, running.url + path, headers=sent, **body)
        assert r.status_code == 200, (path, r.text)
        (seen,) = fake.requests
        names = {name for name, _ in seen.headers}
        assert not names & dropped, (path, names & dropped)
        assert "transfer-encoding" not in names, path
        assert seen.header("connection") in (None, "keep-alive"), path
        assert seen.header_values("accept-encoding") == ["identity"], path
        assert seen.header("x-kept") == "kept", path
        assert seen.header("host") == f"127.0.0.1:{upstream.port}", path
        for name, value in seen.headers:
            assert HOST_TOKEN not in value, (path, name)
        assert HOST_TOKEN.encode() not in seen.body, path
        assert_provider_key(seen, "anthropic" if path.startswith("/anthropic") else "openai")

    # The other way, upstream hop-by-hop headers stop at the bridge too.
    fake.enqueue(
        FakeResponse.json(
            {"id": "msg_1"},
            headers=[
                ("connection", "x-up"),
                ("x-up", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic"),
                ("trailer", "x-checksum"),
                ("upgrade", "h2c"),
                ("x-kept", "kept"),
            ],
        )
    )
    r = client.post(running.url + "/anthropic/v1/messages", headers=sent, json=MESSAGES_BODY)
    assert r.status_code == 200
    for name in ("x-up", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in r.headers, name
    assert r.headers.get("connection") in (None, "keep-alive")
    assert r.headers["x-kept"] == "kept"
    assert r.headers.get_list("content-length") == [str(len(r.content))]


def test_other_headers_pass_byte_for_byte(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    headers = [
        ("Authorization", f"Bearer {HOST_TOKEN}"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14 ,context-1m-2025-08-07,  x-y"),
        ("anthropic-beta", "fine-grained-tool-streaming-2025-05-14"),
        ("X-Foo", 'Bar  Baz;q=0.5, "quoted"'),
        ("User-Agent", "claude-cli/2.1.328 (external, sdk-cli)"),
        ("x-stainless-retry-count", "0"),
        ("x-app", "cli"),
    ]
    for method, path, body in [
        ("POST", "/anthropic/v1/messages?beta=true", MESSAGES_BODY),
        ("POST", "/anthropic/v1/messages/count_tokens?beta=true", MESSAGES_BODY),
        ("GET", "/anthropic/v1/models", None),
    ]:
        fake.requests.clear()
        r = client.request(method, running.url + path, headers=headers, json=body)
        assert r.status_code == 200, r.text
        (seen,) = fake.requests
        assert seen.header_values("anthropic-beta") == [
            "interleaved-thinking-2025-05-14 ,context-1m-2025-08-07,  x-y",
            "fine-grained-tool-streaming-2025-05-14",
        ], path
        assert seen.header_values("anthropic-version") == ["2023-06-01"], path
        assert seen.header_values("x-foo") == ['Bar  Baz;q=0.5, "quoted"'], path
        assert seen.header_values("user-agent") == ["claude-cli/2.1.328 (external, sdk-cli)"]
        assert seen.header_values("x-stainless-retry-count") == ["0"], path
        assert seen.header_values("x-app") == ["cli"], path


def test_bridge_adds_no_headers_of_its_own_http_client(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    """A client that sends no User-Agent or Accept: the upstream gets none
    either (not the bridge's HTTP library's defaults)."""
    for method, path, _, _, body in ROUTES:
        fake.requests.clear()
        request = client.build_request(
            method, running.url + path, headers={"X-Api-Key": HOST_TOKEN}, json=body
        )
        del request.headers["user-agent"]
        del request.headers["accept"]
        r = client.send(request)
        assert r.status_code == 200, r.text
        (seen,) = fake.requests
        assert seen.header("user-agent") is None, (path, seen.header("user-agent"))
        assert seen.header("accept") is None, (path, seen.header("accept"))


def test_provider_config_instances(
    start_bridge: Callable[..., Running],
    client: httpx.Client,
    fake: FakeUpstream,
    upstream: ServerThread,
) -> None:
    """An Azure-style OpenAI instance and a second Anthropic instance, each under
    its own name, each with its own key, key header and extra headers."""
    azure = ProviderConfig(
        "azure",
        "openai",
        "azure-key-0123456789",
        base_url=upstream.url + "/v1",
        key_header="api-key",
        headers={"api-version": "2024-10-21"},
    )
    claude_eu = ProviderConfig("claude-eu", "anthropic", "sk-ant-eu-key", base_url=upstream.url)
    running = start_bridge(providers=[azure, claude_eu])
    auth = {"Authorization": f"Bearer {HOST_TOKEN}"}

    fake.enqueue(FakeResponse.json(streams.chat_completion("hi from azure")))
    # Headers the instance sets replace the client's own of the same name.
    r = client.post(
        running.url + "/azure/v1/chat/completions?x=1",
        headers={**auth, "api-key": HOST_TOKEN, "Api-Version": "1999-01-01"},
        json=CHAT_BODY,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hi from azure"
    seen = fake.last()
    assert (seen.path, seen.query) == ("/v1/chat/completions", "x=1")
    assert seen.header_values("api-key") == ["azure-key-0123456789"]
    assert seen.header_values("api-version") == ["2024-10-21"]
    assert seen.header("authorization") is None and seen.header("x-api-key") is None
    assert b"azure-key-0123456789" not in r.content

    fake.enqueue(FakeResponse.json(streams.anthropic_message("hi from the eu")))
    r = client.post(running.url + "/claude-eu/v1/messages", headers=auth, json=MESSAGES_BODY)
    assert r.status_code == 200, r.text
    seen = fake.last()
    assert seen.path == "/v1/messages"
    assert seen.header_values("x-api-key") == ["sk-ant-eu-key"]
    assert seen.header("authorization") is None and seen.header("api-version") is None

    fake.enqueue(FakeResponse.json({"data": [], "has_more": False}))
    r = client.get(running.url + "/claude-eu/v1/models", headers=auth)
    assert r.status_code == 200, r.text
    assert fake.last().header_values("x-api-key") == ["sk-ant-eu-key"]

    # Each instance speaks its kind's error shape.
    assert_openai_error(client.post(running.url + "/azure/v1/chat/completions", json={}), 401)
    assert_anthropic_error(client.post(running.url + "/claude-eu/v1/messages", json={}), 401)
    # The built-in instances are still there.
    r = client.post(running.url + "/anthropic/v1/messages", headers=auth, json=MESSAGES_BODY)
    assert r.status_code == 200
    assert fake.last().header_values("x-api-key") == [ANTHROPIC_KEY]

    running.recorder.wait_ended(3)
    started = running.recorder.of_type(InterceptionStarted)
    assert [(s.provider, s.provider_name) for s in started] == [
        ("openai", "azure"),
        ("anthropic", "claude-eu"),
        ("anthropic", "anthropic"),
    ]
