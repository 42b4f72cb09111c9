"""Errors the bridge answers itself, and upstream errors it relays.

Every error body must parse with the provider's official shape, so that each
client SDK shows it; upstream errors reach the client byte for byte.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aibridge_asgi import Limits, Timeouts
from aibridge_asgi.testing import ANTHROPIC_KEY, GOOGLE_KEY, OPENAI_KEY, FakeResponse, FakeUpstream

from .conftest import HOST_TOKEN, Running

AUTH = {"Authorization": f"Bearer {HOST_TOKEN}"}

MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY: dict[str, Any] = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-5", "input": "hi"}

# (bridge path, provider kind, a valid body)
BRIDGED: list[tuple[str, str, dict[str, Any]]] = [
    ("/anthropic/v1/messages", "anthropic", MESSAGES_BODY),
    ("/openai/v1/chat/completions", "openai", CHAT_BODY),
    ("/openai/v1/responses", "openai", RESPONSES_BODY),
]

# Anthropic's documented error types, by HTTP status
# (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_TYPES = {
    400: {"invalid_request_error"},
    401: {"authentication_error"},
    403: {"permission_error"},
    404: {"not_found_error"},
    405: {"invalid_request_error"},
    413: {"request_too_large"},
    429: {"rate_limit_error"},
    500: {"api_error"},
    501: {"invalid_request_error", "api_error"},
    502: {"api_error"},
    503: {"api_error", "overloaded_error"},
    504: {"timeout_error", "api_error"},
}


# -- shape helpers (also used by the other test modules) ----------------------


def assert_no_secrets(response: httpx.Response) -> None:
    """No provider key appears anywhere in a response."""
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, GOOGLE_KEY):
        assert secret.encode() not in response.content
        for name, value in response.headers.items():
            assert secret not in name and secret not in value, name


def assert_anthropic_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error in Anthropic's shape: ``{"type":"error","error":{"type","message"}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error", body
    error = body["error"]
    assert isinstance(error, dict), body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["type"] in ANTHROPIC_TYPES[status], body
    if error["type"] != "request_too_large":  # documented, but missing from the SDK's union
        anthropic.types.ErrorResponse.model_validate(body)
    assert_no_secrets(response)
    return body


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error in OpenAI's shape: ``{"error":{"message","type","param","code"}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert "param" in error and "code" in error, body
    assert error["code"] is None or isinstance(error["code"], str), body
    openai.types.ErrorObject.model_validate(error)
    assert_no_secrets(response)
    return body


# Google's canonical status names (google.rpc.Code) a status may carry.
GOOGLE_STATUSES = {
    400: {"INVALID_ARGUMENT", "FAILED_PRECONDITION"},
    401: {"UNAUTHENTICATED"},
    403: {"PERMISSION_DENIED"},
    404: {"NOT_FOUND"},
    405: {"UNIMPLEMENTED"},
    413: {"INVALID_ARGUMENT"},
    415: {"INVALID_ARGUMENT"},
    429: {"RESOURCE_EXHAUSTED"},
    500: {"INTERNAL"},
    501: {"UNIMPLEMENTED"},
    502: {"UNAVAILABLE"},
    503: {"UNAVAILABLE"},
    504: {"DEADLINE_EXCEEDED"},
}


def assert_google_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error in Google's shape: ``{"error":{"code","message","status"}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "status"}, body
    assert error["code"] == status, body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["status"] in GOOGLE_STATUSES[status], body
    assert_no_secrets(response)
    return body


def assert_error(response: httpx.Response, kind: str | None, status: int) -> dict[str, Any]:
    """An error in the shape of provider ``kind`` (``None``: any shape with
    ``error.message``)."""
    if kind == "google":
        return assert_google_error(response, status)
    if kind == "anthropic":
        return assert_anthropic_error(response, status)
    if kind == "openai":
        return assert_openai_error(response, status)
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert_no_secrets(response)
    return body


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 400 -----------------------------------------------------------------------

BAD_BODIES = {
    "empty": b"",
    "not JSON": b"not json",
    "truncated JSON": b'{"model": "m", ',
    "not UTF-8": b"\xff\xfe{}",
    "a JSON array": b'[{"model": "m"}]',
    "a JSON string": b'"model"',
    "no model": b'{"messages": []}',
    "an empty model": b'{"model": ""}',
    "a model that is not a string": b'{"model": 5}',
    "stream as a string": b'{"model": "m", "stream": "true"}',
    "stream as a number": b'{"model": "m", "stream": 1}',
}


def test_bad_body_is_400_in_provider_shape(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    for path, kind, _ in BRIDGED:
        for case, raw in BAD_BODIES.items():
            r = client.post(
                running.url + path,
                headers={**AUTH, "content-type": "application/json"},
                content=raw,
            )
            try:
                assert_error(r, kind, 400)
            except AssertionError as exc:
                raise AssertionError(f"{path}, body {case}: {exc}") from None
            assert r.headers.get("x-aibridge-interception-id"), (path, case)
    assert fake.requests == []


def test_body_check_is_narrow(running: Running, client: httpx.Client, fake: FakeUpstream) -> None:
    """New request fields appear every month; the bridge never rejects them and
    forwards the client's bytes. Only background Responses are refused (501)."""
    raw = (
        b'{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[],'
        b'"context_management":{"edits":[]},"output_config":{"x":1},"brand_new":[1,2]}'
    )
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, content=raw)
    assert r.status_code == 200, r.text
    assert fake.last("/v1/messages").body == raw

    fake.requests.clear()
    r = client.post(
        running.url + "/openai/v1/responses",
        headers=AUTH,
        json={**RESPONSES_BODY, "background": True},
    )
    assert_openai_error(r, 501)
    assert "background" in r.json()["error"]["message"]
    assert fake.requests == []


# -- 413 -----------------------------------------------------------------------


def test_body_over_limit_is_413(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    """Refused whether the size is declared (Content-Length) or only counted as
    the bytes arrive (chunked upload, no Content-Length); upstream gets nothing."""
    running = start_bridge(limits=Limits(max_body_size=256))
    for path, kind, body in [
        *BRIDGED,
        ("/anthropic/v1/messages/count_tokens", "anthropic", MESSAGES_BODY),
    ]:
        raw = json.dumps({**body, "padding": "x" * 400}).encode()

        r = client.post(running.url + path, headers=AUTH, content=raw)
        assert r.request.headers["content-length"] == str(len(raw))
        assert_error(r, kind, 413)

        def pieces(raw: bytes = raw) -> Iterator[bytes]:
            for i in range(0, len(raw), 64):
                yield raw[i : i + 64]

        r = client.post(running.url + path, headers=AUTH, content=pieces())
        assert "content-length" not in r.request.headers
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert_error(r, kind, 413)
    assert fake.requests == []

    # The limit itself is allowed.
    exact = json.dumps({**MESSAGES_BODY, "pad": ""}).encode()
    exact = exact.replace(b'"pad": ""', b'"pad": "' + b"y" * (256 - len(exact)) + b'"')
    assert len(exact) == 256
    r = client.post(running.url + "/anthropic/v1/messages", headers=AUTH, content=exact)
    assert r.status_code == 200, r.text
    assert fake.last("/v1/messages").body == exact


# -- 502 / 504 -----------------------------------------------------------------


def test_unreachable_upstream_is_502(
    start_bridge: Callable[..., Running], client: httpx.Client
) -> None:
    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    running = start_bridge(base_urls={"anthropic": base, "openai": base + "/v1"})
    for method, path, kind, body in [
        *(("POST", path, kind, body) for path, kind, body in BRIDGED),
        ("GET", "/anthropic/v1/models", "anthropic", None),
        ("GET", "/openai/v1/models", "openai", None),
    ]:
        r = client.request(method, running.url + path, headers=AUTH, json=body)
        parsed = assert_error(r, kind, 502)
        assert str(port) not in json.dumps(parsed), path  # no upstream URL in the message
        if method == "POST":
            assert r.headers.get("x-aibridge-interception-id"), path


def test_upstream_timeout_is_504(
    start_bridge: Callable[..., Running], client: httpx.Client, fake: FakeUpstream
) -> None:
    running = start_bridge(timeouts=Timeouts(read=0.3))
    cases = [
        ("POST", "/anthropic/v1/messages", "anthropic", MESSAGES_BODY),
        ("POST", "/openai/v1/chat/completions", "openai", CHAT_BODY),
        ("GET", "/openai/v1/models", "openai", None),
    ]
    for method, path, kind, body in cases:
        fake.enqueue(FakeResponse.json({"late": True}, delay=0.8))
        r = client.request(method, running.url + path, headers=AUTH, json=body)
        assert_error(r, kind, 504)
        assert r.elapsed.total_seconds() < 0.75, path
        if method == "POST":
            assert r.headers.get("x-aibridge-interception-id"), path
    assert len(fake.requests) == len(cases)


# -- upstream errors relayed -------------------------------------------------

ANTHROPIC_429 = (
    b'{"type":"error","error":{"type":"rate_limit_error",'
    b'"message":"Number of request tokens has exceeded your per-minute rate limit"}}'
)
ANTHROPIC_529 = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
OPENAI_429 = (
    b'{\n  "error": {\n    "message": "Rate limit reached for gpt-5",\n'
    b'    "type": "requests",\n    "param": null,\n    "code": "rate_limit_exceeded"\n  }\n}\n'
)
OPENAI_400 = (
    b'{"error": {"message": "Invalid value for \'temperature\'.", '
    b'"type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}'
)

# (case, method, bridge path, request body, status, content type, body, extra headers)
RELAYED: list[
    tuple[str, str, str, dict[str, Any] | None, int, str, bytes, list[tuple[str, str]]]
] = [
    (
        "anthropic 429",
        "POST",
        "/anthropic/v1/messages",
        MESSAGES_BODY,
        429,
        "application/json",
        ANTHROPIC_429,
        [("retry-after", "3"), ("anthropic-ratelimit-tokens-remaining", "0")],
    ),
    (
        "anthropic 529 to a streaming request",
        "POST",
        "/anthropic/v1/messages",
        {**MESSAGES_BODY, "stream": True},
        529,
        "application/json",
        ANTHROPIC_529,
        [("request-id", "req_011")],
    ),
    (
        "anthropic 500 with an empty body",
        "POST",
        "/anthropic/v1/messages",
        MESSAGES_BODY,
        500,
        "text/plain",
        b"",
        [],
    ),
    (
        "openai chat 429",
        "POST",
        "/openai/v1/chat/completions",
        CHAT_BODY,
        429,
        "application/json; charset=utf-8",
        OPENAI_429,
        [("retry-after", "3"), ("x-request-id", "req_abc")],
    ),
    (
        "openai responses 400",
        "POST",
        "/openai/v1/responses",
        RESPONSES_BODY,
        400,
        "application/json",
        OPENAI_400,
        [("x-request-id", "req_def")],
    ),
    (
        "openai 503 html to a streaming request",
        "POST",
        "/openai/v1/chat/completions",
        {**CHAT_BODY, "stream": True},
        503,
        "text/html; charset=UTF-8",
        b"<html><body>upstream connect error</body></html>",
        [],
    ),
    (
        "passthrough 404",
        "GET",
        "/anthropic/v1/models/nope",
        None,
        404,
        "application/json",
        b'{"type":"error","error":{"type":"not_found_error","message":"model: nope"}}',
        [("request-id", "req_9")],
    ),
    (
        "passthrough 429",
        "POST",
        "/anthropic/v1/messages/count_tokens",
        MESSAGES_BODY,
        429,
        "application/json",
        ANTHROPIC_429,
        [("retry-after", "7")],
    ),
]


def test_upstream_error_is_relayed_byte_for_byte(
    running: Running, client: httpx.Client, fake: FakeUpstream
) -> None:
    for case, method, path, json_body, status, content_type, raw, extra in RELAYED:
        fake.enqueue(
            FakeResponse.json(raw, status=status, content_type=content_type, headers=extra)
        )
        r = client.request(method, running.url + path, headers=AUTH, json=json_body)
        assert r.status_code == status, case
        assert r.headers["content-type"] == content_type, case
        assert r.content == raw, case
        for name, value in extra:
            assert r.headers.get_list(name) == [value], (case, name)
        bridged = not path.startswith("/anthropic/v1/models") and "count_tokens" not in path
        assert ("x-aibridge-interception-id" in r.headers) is bridged, case
        assert_no_secrets(r)


# -- the official SDKs read our errors -------------------------------------


def test_official_sdks_read_the_errors(running: Running, fake: FakeUpstream) -> None:
    """The bridge's own errors and relayed ones surface as the SDKs' typed errors."""
    claude = anthropic.Anthropic(
        base_url=running.url + "/anthropic", api_key="not-a-host-token", max_retries=0
    )
    message: Any = {"role": "user", "content": "hi"}
    with pytest.raises(anthropic.AuthenticationError) as unauthorized:
        claude.messages.create(model="claude-test", max_tokens=8, messages=[message])
    assert unauthorized.value.status_code == 401
    assert isinstance(unauthorized.value.body, dict)
    assert unauthorized.value.body["error"]["type"] == "authentication_error"

    fake.enqueue(FakeResponse.json(ANTHROPIC_429, status=429, headers=[("retry-after", "3")]))
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.with_options(api_key=HOST_TOKEN).messages.create(
            model="claude-test", max_tokens=8, messages=[message]
        )
    assert limited.value.response.headers["retry-after"] == "3"
    assert "per-minute rate limit" in limited.value.message

    gpt = openai.OpenAI(base_url=running.url + "/openai/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        gpt.chat.completions.create(model="gpt-5", messages=[message])
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        gpt.with_options(base_url=running.url + "/openai/v2", api_key=HOST_TOKEN).models.list()
    assert [r.path for r in fake.requests] == ["/v1/messages"]
