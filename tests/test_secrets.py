"""Secrets: provider keys and host tokens never leak.

A full scenario (successes, client errors, upstream errors and failures,
clients leaving, a resolver and a recorder that raise, an open circuit
breaker) runs with every logger at DEBUG and every log record captured,
with stdout/stderr captured, with Prometheus and OpenTelemetry hooks on.
Then no provider key and no host token may appear, whole or in part, in any
log line, exception text, record, error body, response header, metric or
span; no host token may reach the upstream; the provider key reaches it only
in its own header. Where a hint of a credential shows at all, it is masked.

The secrets are random per run, so a piece of one cannot appear by chance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from aibridge_asgi import (
    Actor,
    CircuitBreakerConfig,
    InterceptionStarted,
    Limits,
    Record,
    Timeouts,
    TokenUsage,
    create_bridge,
)
from aibridge_asgi.hooks import BridgeHooks
from aibridge_asgi.metrics import PrometheusHooks
from aibridge_asgi.otel import OpenTelemetryHooks
from aibridge_asgi.testing import FakeResponse, FakeUpstream, InMemoryRecorder, ServerThread
from aibridge_asgi.testing import streams as fake_streams
from aibridge_asgi.upstream import AiohttpUpstream, HttpxUpstream, Upstream

from .test_errors import closed_port

SEAMS: dict[str, Callable[[Timeouts], Upstream]] = {
    "aiohttp": AiohttpUpstream,
    "httpx": HttpxUpstream,
}


@dataclass(frozen=True)
class Secrets:
    anthropic_key: str = field(default_factory=lambda: "sk-ant-api03-" + secrets.token_hex(24))
    openai_key: str = field(default_factory=lambda: "sk-proj-" + secrets.token_hex(24))
    alice: str = field(default_factory=lambda: "hst_" + secrets.token_hex(20))
    bob: str = field(default_factory=lambda: "hst_" + secrets.token_hex(20))
    unknown: str = field(default_factory=lambda: "hst_" + secrets.token_hex(20))
    breaks_resolver: str = field(default_factory=lambda: "hst_" + secrets.token_hex(20))

    @property
    def provider_keys(self) -> dict[str, str]:
        return {"anthropic": self.anthropic_key, "openai": self.openai_key}

    @property
    def host_tokens(self) -> dict[str, str]:
        return {
            "alice": self.alice,
            "bob": self.bob,
            "unknown": self.unknown,
            "breaks_resolver": self.breaks_resolver,
        }

    @property
    def all(self) -> dict[str, str]:
        return {**self.provider_keys, **self.host_tokens}


def pieces(secret: str, size: int = 10) -> set[str]:
    """Every ``size``-character piece of the random part of ``secret``."""
    tail = secret.split("_", 1)[-1].split("-")[-1]
    return {tail[i : i + size] for i in range(len(tail) - size + 1)}


def find_leaks(found: dict[str, list[str]], where: str, text: str, all_secrets: Secrets) -> None:
    for name, secret in all_secrets.all.items():
        if secret in text or any(piece in text for piece in pieces(secret)):
            found.setdefault(name, []).append(f"{where}: {text[:300]!r}")


_MASK = r"(?:\*{3,}|\.{3}|…)"


def find_hints(found: dict[str, list[str]], where: str, text: str, all_secrets: Secrets) -> None:
    """A masked hint: a run of mask characters then the secret's last four."""
    for name, secret in all_secrets.all.items():
        if re.search(_MASK + re.escape(secret[-4:]), text):
            found.setdefault(name, []).append(where)


class CaptureAll(logging.Handler):
    """Every record from every logger, with its traceback and extra fields."""

    _STANDARD: ClassVar[frozenset[str]] = frozenset(vars(logging.makeLogRecord({})))

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        extra = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        if extra:
            text += "\n" + repr(extra)
        self.lines.append(text)


@dataclass
class LogCapture:
    handler: CaptureAll = field(default_factory=CaptureAll)
    _saved: list[tuple[logging.Logger, int, bool]] = field(default_factory=list)

    def start(self) -> None:
        """Every logger to DEBUG, every record to the handler (also from
        loggers that do not propagate, such as uvicorn's)."""
        logging.disable(logging.NOTSET)
        manager = logging.root.manager
        loggers = [logging.root] + [
            lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]
        for logger in loggers:
            attach = logger is logging.root or not logger.propagate
            self._saved.append((logger, logger.level, attach))
            logger.setLevel(logging.DEBUG)
            if attach:
                logger.addHandler(self.handler)

    def stop(self) -> None:
        for logger, level, attached in self._saved:
            logger.setLevel(level)
            if attached:
                logger.removeHandler(self.handler)


@pytest.fixture
def capture() -> Iterator[LogCapture]:
    logs = LogCapture()
    try:
        yield logs
    finally:
        logs.stop()


class FailingRecorder(InMemoryRecorder):
    """Keeps every record, then raises for usage records, quoting them."""

    async def record(self, record: Record) -> None:
        await super().record(record)
        if isinstance(record, TokenUsage):
            raise RuntimeError(f"could not store {record!r}")


class FailingHook(BridgeHooks):
    def interception_started(self, started: InterceptionStarted, request_headers: Any) -> None:
        raise RuntimeError("metrics backend unavailable")


def masked(key: str) -> str:
    """How OpenAI shows a wrong key in its 401 message."""
    return key[:8] + "*" * 20 + key[-4:]


def slow_upload(port: int, token: str) -> bytes:
    """Send a body too slowly (the bridge's body_timeout is short)."""
    body = b'{"model": "claude-sonnet-4-5", "messages": []}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body[:5])
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def leave_while_sending(port: int, token: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"X-Api-Key: {token}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model": '
        )
        time.sleep(0.1)


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_no_secret_anywhere_in_a_full_scenario(
    seam: str, capture: LogCapture, capfd: pytest.CaptureFixture[str]
) -> None:
    keys = Secrets()

    def resolve(token: str) -> Actor | None:
        if token == keys.breaks_resolver:
            raise RuntimeError("database is down")
        return {keys.alice: Actor("alice"), keys.bob: Actor("bob")}.get(token)

    fake = FakeUpstream(anthropic_key=keys.anthropic_key, openai_key=keys.openai_key)
    recorder = FailingRecorder()
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    hooks = [
        PrometheusHooks(registry),
        OpenTelemetryHooks(tracing.get_tracer("secrets")),
        FailingHook(),
    ]
    responses: list[tuple[str, httpx.Response]] = []
    errors: list[str] = []
    with ServerThread(fake, log_level="debug") as upstream:
        options: dict[str, Any] = {
            "recorder": recorder,
            "hooks": hooks,
            "limits": Limits(max_body_size=64 * 1024, body_timeout=0.5),
            "circuit_breaker": CircuitBreakerConfig(failure_threshold=2, open_seconds=30),
        }
        bridge = create_bridge(
            resolve,
            keys.provider_keys,
            base_urls={"anthropic": upstream.url, "openai": upstream.url + "/v1"},
            upstream=SEAMS[seam](Timeouts(read=0.5)),
            **options,
        )
        dead = f"http://127.0.0.1:{closed_port()}"
        dead_bridge = create_bridge(
            resolve,
            keys.provider_keys,
            base_urls={"anthropic": dead, "openai": dead + "/v1"},
            upstream=SEAMS[seam](Timeouts()),
            **options,
        )
        server = ServerThread(bridge, log_level="debug").start()
        dead_server = ServerThread(dead_bridge, log_level="debug").start()
        capture.start()
        try:
            run_scenario(keys, fake, server.url, dead_server.url, responses, errors)
            server.call(bridge.aclose())
            dead_server.call(dead_bridge.aclose())
        finally:
            server.stop()
            dead_server.stop()
    capture.stop()
    out, err = capfd.readouterr()

    # The scenario did what it says.
    statuses = {r.status_code for _, r in responses}
    assert statuses >= {200, 400, 401, 404, 405, 413, 415, 429, 500, 502, 503, 504, 529}, statuses
    assert any(text.startswith("HTTP/1.1 408") for text in errors)  # the slow upload
    assert any("token resolver failed" in line for line in capture.handler.lines)
    assert any("recorder failed" in line for line in capture.handler.lines)
    assert any("FailingHook" in line for line in capture.handler.lines)
    assert any("circuit breaker" in line for line in capture.handler.lines)
    assert len(capture.handler.lines) > 100

    leaks: dict[str, list[str]] = {}
    hints: dict[str, list[str]] = {}
    haystacks: list[tuple[str, str]] = [("log", line) for line in capture.handler.lines]
    haystacks += [("stdout", out), ("stderr", err)]
    haystacks += [("exception", text) for text in errors]
    haystacks += [("record", repr(record)) for record in recorder.records]
    for case, r in responses:
        haystacks.append((f"{case}: status line", f"{r.status_code} {r.reason_phrase}"))
        haystacks += [(f"{case}: header", f"{k}: {v}") for k, v in r.headers.multi_items()]
        haystacks.append((f"{case}: body", r.content.decode("utf-8", "replace")))
    haystacks.append(("metrics", generate_latest(registry).decode()))
    for span in exporter.get_finished_spans():
        haystacks.append(("span", span.to_json()))
    for where, text in haystacks:
        find_leaks(leaks, where, text, keys)
        find_hints(hints, where, text, keys)
    assert leaks == {}
    names = sorted({line.split(" ", 1)[0] for line in capture.handler.lines})
    print(
        f"\nsecrets ({seam}): {len(responses)} responses, {len(capture.handler.lines)} log "
        f"records from {names}, {len(recorder.records)} records, {len(haystacks)} texts "
        f"searched, hints: {hints}"
    )

    # Hints: only the upstream's own masked hint of the key it refused, where
    # its message is quoted (the relayed body, the record, its log and span).
    assert set(hints) <= {"openai"}, hints
    for where in hints.get("openai", []):
        assert where.startswith(("upstream 401", "record", "log", "span")), where

    # The upstream never saw a host token; the key only in its own header.
    assert fake.requests
    for seen in fake.requests:
        text = seen.path + seen.query + repr(seen.headers) + seen.body.decode("latin-1")
        for name, token in keys.host_tokens.items():
            assert token not in text and not any(p in text for p in pieces(token)), name
        for kind, key in keys.provider_keys.items():
            where = [k for k, v in seen.headers if key in v]
            assert where in ([], ["x-api-key" if kind == "anthropic" else "authorization"])
            assert key not in seen.path + seen.query + seen.body.decode("latin-1")


def run_scenario(
    keys: Secrets,
    fake: FakeUpstream,
    url: str,
    dead_url: str,
    responses: list[tuple[str, httpx.Response]],
    errors: list[str],
) -> None:
    alice = {"Authorization": f"Bearer {keys.alice}"}
    bob = {"X-Api-Key": keys.bob}
    message: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "what is in main.py?"}],
    }
    chat = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
    port = int(url.rsplit(":", 1)[1])

    with httpx.Client(timeout=10) as client:

        def send(case: str, method: str, path: str, base: str = url, **kw: Any) -> None:
            try:
                responses.append((case, client.request(method, base + path, **kw)))
            except httpx.HTTPError as exc:
                errors.append(f"{case}: {type(exc).__name__}: {exc}")

        # Successes, through every route.
        send("ok", "POST", "/anthropic/v1/messages", headers=alice, json=message)
        send("ok stream", "POST", "/anthropic/v1/messages", headers=bob,
             json={**message, "stream": True})  # fmt: skip
        send("ok chat", "POST", "/openai/v1/chat/completions", headers=alice,
             json={**chat, "stream": True})  # fmt: skip
        send("ok responses", "POST", "/openai/v1/responses", headers=bob,
             json={"model": "gpt-5", "input": "hi", "stream": True})  # fmt: skip
        send("models", "GET", "/anthropic/v1/models", headers=alice)
        send("models", "GET", "/openai/v1/models", headers=bob)
        send("count", "POST", "/anthropic/v1/messages/count_tokens", headers=alice, json=message)
        # The client's own refusals.
        send("unknown token", "POST", "/anthropic/v1/messages",
             headers={"Authorization": f"Bearer {keys.unknown}"}, json=message)  # fmt: skip
        send("unknown token", "GET", "/openai/v1/models", headers={"X-Api-Key": keys.unknown})
        send("no token", "POST", "/openai/v1/chat/completions", json=chat)
        send("resolver raises", "POST", "/anthropic/v1/messages",
             headers={"Authorization": f"Bearer {keys.breaks_resolver}"}, json=message)  # fmt: skip
        send("bad json", "POST", "/openai/v1/responses", headers=alice, content=b"{nope")
        send("too big", "POST", "/anthropic/v1/messages", headers=alice,
             json={**message, "pad": "x" * 70_000})  # fmt: skip
        send("wrong type", "POST", "/anthropic/v1/messages",
             headers={**alice, "content-type": "text/plain"}, content=b"{}")  # fmt: skip
        send("no route", "POST", "/anthropic/v2/messages", headers=alice, json=message)
        send("wrong method", "GET", "/openai/v1/chat/completions", headers=alice)
        errors.append(slow_upload(port, keys.alice).decode("latin-1"))
        leave_while_sending(port, keys.bob)
        # Upstream errors, relayed.
        fake.enqueue(
            FakeResponse.json(
                {"error": {"message": "Rate limit reached", "type": "requests"}},
                status=429,
                headers=[("retry-after", "3")],
            )
        )
        send("upstream 429", "POST", "/openai/v1/chat/completions", headers=alice, json=chat)
        fake.enqueue(FakeResponse.json({"type": "error", "error": {"type": "api_error"}}, 500))
        send("upstream 500", "POST", "/anthropic/v1/messages", headers=bob, json=message)
        refused = {
            "error": {
                "message": f"Incorrect API key provided: {masked(keys.openai_key)}. You can "
                "find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        fake.enqueue(FakeResponse.json(refused, status=401))
        send("upstream 401", "POST", "/openai/v1/chat/completions", headers=alice, json=chat)
        overloaded = (
            b'event: error\ndata: {"type":"error","error":'
            b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
        )
        events = fake_streams.anthropic_events("partial")
        fake.enqueue(FakeResponse.sse([*events[:3], overloaded]))
        send("mid-stream error", "POST", "/anthropic/v1/messages", headers=alice,
             json={**message, "model": "claude-haiku-4-5", "stream": True})  # fmt: skip
        fake.enqueue(FakeResponse.json({"type": "error"}, status=529))
        send("upstream 529", "POST", "/anthropic/v1/messages", headers=alice,
             json={**message, "model": "claude-haiku-4-5"})  # fmt: skip
        send("breaker open", "POST", "/anthropic/v1/messages", headers=alice,
             json={**message, "model": "claude-haiku-4-5"})  # fmt: skip
        # Upstream failures.
        fake.enqueue(FakeResponse.json({}, delay=1.0))
        send("upstream timeout", "POST", "/anthropic/v1/messages", headers=bob, json=message)
        fake.enqueue(FakeResponse.sse(events[:4], cut=True))
        send("upstream cut", "POST", "/anthropic/v1/messages", headers=bob,
             json={**message, "stream": True})  # fmt: skip
        send("unreachable", "POST", "/anthropic/v1/messages", base=dead_url, headers=alice,
             json=message)  # fmt: skip
        send("unreachable", "GET", "/openai/v1/models", base=dead_url, headers=bob)
        # A client leaving mid-stream.
        fake.enqueue(FakeResponse.sse(fake_streams.anthropic_events("a b c d", pieces=8),
                                      chunk_delay=0.05))  # fmt: skip
        with client.stream("POST", url + "/anthropic/v1/messages", headers=alice,
                           json={**message, "stream": True}) as r:  # fmt: skip
            next(r.iter_raw())
    time.sleep(0.3)  # the last disconnect reaches the bridge


def test_resolver_error_quoting_the_token_is_not_logged(
    capture: LogCapture, fake: FakeUpstream, upstream: ServerThread
) -> None:
    """Resolvers fail in ways that quote their input: database drivers put the
    query parameters in the exception (SQLAlchemy: ``[parameters: (...)]``).
    The bridge logs resolver failures; the log must not carry the token."""
    keys = Secrets()

    def resolve(token: str) -> Actor | None:
        raise RuntimeError(
            "(sqlite3.OperationalError) database is locked\n"
            "[SQL: SELECT actor FROM tokens WHERE token = ?]\n"
            f"[parameters: ('{token}',)]"
        )

    bridge = create_bridge(
        resolve,
        {"anthropic": "sk-ant-test"},
        base_urls={"anthropic": upstream.url},
        recorder=InMemoryRecorder(),
    )
    capture.start()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=bridge)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            response = await client.post(
                "/anthropic/v1/messages",
                headers={"Authorization": f"Bearer {keys.alice}"},
                json={"model": "claude-sonnet-4-5", "messages": []},
            )
        await bridge.aclose()
        return response

    response = asyncio.run(call())
    capture.stop()
    assert response.status_code == 503
    assert keys.alice not in response.text
    failure = [line for line in capture.handler.lines if "token resolver failed" in line]
    assert failure, capture.handler.lines
    leaks: dict[str, list[str]] = {}
    for line in capture.handler.lines:
        find_leaks(leaks, "log", line, keys)
    assert leaks == {}
    assert fake.requests == []


def test_secret_free_texts_by_construction() -> None:
    """The texts the bridge builds about credentials and upstreams hold no
    secret: the configured provider never shows its key, nor does its repr."""
    keys = Secrets()
    bridge = create_bridge(lambda token: None, keys.provider_keys)
    for provider in bridge.providers.values():
        assert provider.api_key not in repr(provider)
        assert provider.api_key not in str(provider)
    assert json.dumps([repr(p) for p in bridge.providers.values()]).find("sk-") == -1
