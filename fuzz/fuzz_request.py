"""atheris target: whole requests through the bridge, in-process.

Each input becomes one request (route, method, credentials, content type,
extra header bytes, body) and, optionally, a scripted upstream answer; the
bridge runs with a FakeUpstream behind ``httpx.ASGITransport``. Checks:
no exception escapes the bridge, never the bridge's own 500, every started
interception ends exactly once, nothing logged as "failed inside the bridge".

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_request.py CORPUS_DIR -max_total_time=60

tests/test_fuzz.py runs it for a few seconds when atheris is installed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from typing import Any

import atheris

with atheris.instrument_imports(include=["aibridge_asgi"]):
    import httpx

    from aibridge_asgi import InterceptionEnded, InterceptionStarted, Limits, create_bridge
    from aibridge_asgi.records import Actor
    from aibridge_asgi.testing import (
        ANTHROPIC_KEY,
        OPENAI_KEY,
        FakeResponse,
        FakeUpstream,
        InMemoryRecorder,
    )

TOKEN = "fuzz-host-token"
ROUTES = [
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/count_tokens",
    "/anthropic/v1/models",
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/openai/v1/models/gpt-5",
    "/openai/v1/responses/resp_1",
    "/anthropic/v1/../v1/models",
    "/openai/v1/%2e%2e/x",
    "//anthropic/v1/messages",
    "/nowhere",
]
METHODS = ["POST", "POST", "POST", "GET", "DELETE", "PUT", "HEAD", "OPTIONS", "BREW"]
AUTHS = [
    [(b"authorization", b"Bearer " + TOKEN.encode())],
    [(b"x-api-key", TOKEN.encode())],
    [(b"authorization", b"Bearer wrong")],
    [(b"authorization", b"Bearer raise")],
    [],
]
CONTENT_TYPES = [b"application/json", b"text/plain", b"application/x+json", b"", None]
STATUSES = [200, 200, 400, 401, 404, 429, 503, 529]
UPSTREAM_TYPES = ["application/json", "text/event-stream", "text/plain"]
INTERNAL_ERROR = b"failed to handle this request"


def resolve(token: str) -> Actor | None:
    if token == "raise":
        raise RuntimeError("resolver down")
    return Actor("fuzz") if token == TOKEN else None


class Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "failed inside the bridge" in record.getMessage():
            self.seen.append(record.getMessage())


FAILURES = Failures()
logging.getLogger("aibridge_asgi").addHandler(FAILURES)
logging.getLogger("aibridge_asgi").propagate = False  # quiet: the resolver failure is expected
LOOP = asyncio.new_event_loop()


async def one(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    answer: FakeResponse | None,
) -> tuple[list[dict[str, Any]], InMemoryRecorder]:
    fake = FakeUpstream()
    if answer is not None:
        fake.enqueue(answer)
    recorder = InMemoryRecorder()
    bridge = create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY},
        base_urls={"anthropic": "http://upstream.test", "openai": "http://upstream.test/v1"},
        upstream=httpx.ASGITransport(app=fake, raise_app_exceptions=False),
        recorder=recorder,
        limits=Limits(max_body_size=2048, body_timeout=2, keepalive_interval=None),
    )
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    queue = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    async with asyncio.timeout(10):
        try:
            await bridge(scope, receive, send)
        finally:
            await bridge.aclose()
    return sent, recorder


BRIDGED = ["/anthropic/v1/messages", "/openai/v1/chat/completions", "/openai/v1/responses"]


def test_one_input(data: bytes) -> None:
    if data[:1] == b"{":  # a JSON body to a bridged route: the common case, seeded
        json_headers = [*AUTHS[0], (b"content-type", b"application/json")]
        path = BRIDGED[len(data) % 3]
        check(*LOOP.run_until_complete(one("POST", path, json_headers, data, None)), data)
        return
    fdp = atheris.FuzzedDataProvider(data)
    path = fdp.PickValueInList(ROUTES)
    method = fdp.PickValueInList(METHODS)
    headers = list(fdp.PickValueInList(AUTHS))
    content_type = fdp.PickValueInList(CONTENT_TYPES)
    if content_type is not None:
        headers.append((b"content-type", content_type))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = bytes(c for c in fdp.ConsumeBytes(8).lower() if 0x61 <= c <= 0x7A) or b"x"
        headers.append((name, fdp.ConsumeBytes(16)))
    answer = None
    if fdp.ConsumeBool():
        answer = FakeResponse(
            status=fdp.PickValueInList(STATUSES),
            chunks=[fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)) for _ in range(2)],
            content_type=fdp.PickValueInList(UPSTREAM_TYPES),
        )  # no cut: httpx.ASGITransport cannot model one (tests cover it on loopback)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    sent, recorder = LOOP.run_until_complete(one(method, path, headers, body, answer))
    check(sent, recorder, (method, path, headers, body))


def check(sent: list[dict[str, Any]], recorder: InMemoryRecorder, what: object) -> None:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if len(starts) != 1:
        raise AssertionError(f"{len(starts)} response starts")
    answered = b"".join(m.get("body", b"") for m in sent[1:])
    if INTERNAL_ERROR in answered:
        raise AssertionError(f"the bridge failed on {what!r}")
    ids_started = Counter(r.interception_id for r in recorder.of_type(InterceptionStarted))
    ids_ended = Counter(r.interception_id for r in recorder.of_type(InterceptionEnded))
    if ids_started != ids_ended or set(ids_started.values()) - {1}:
        raise AssertionError(f"records do not pair up: {ids_started} {ids_ended}")
    if FAILURES.seen:
        raise AssertionError(FAILURES.seen[0])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
