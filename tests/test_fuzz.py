"""Fuzzing: the SSE scanner and the bridge's request handling.

* hypothesis over :class:`SSEScanner`: arbitrary bytes, arbitrary splits:
  no crash, the same events however the input is chunked, and time linear
  in the input (no hang on long lines fed in small reads);
* hypothesis over whole requests to the bridge, in-process: arbitrary
  methods, paths, headers, bodies and scripted upstream answers, through
  ``httpx.ASGITransport`` and through raw ASGI messages (bytes no HTTP client
  would send, bodies in pieces, clients that leave). Never a 500, always a
  provider-shaped JSON error or a relayed answer, every started interception
  ended exactly once, never a hang;
* a time-boxed run of the coverage-guided fuzzer atheris over the same two
  targets (``fuzz/``), when atheris is installed.

Runs are bounded: 200 examples per hypothesis test, ``AIBRIDGE_FUZZ_SECONDS``
(default 10) per atheris target.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from aibridge_asgi import (
    Bridge,
    InterceptionEnded,
    InterceptionStarted,
    Limits,
    create_bridge,
)
from aibridge_asgi.sse import SSEEvent, SSEScanner
from aibridge_asgi.testing import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    FakeResponse,
    FakeUpstream,
    InMemoryRecorder,
    streams,
)

from .conftest import FAILING_TOKEN, HOST_TOKEN, OTHER_TOKEN, resolve

ROOT = Path(__file__).resolve().parent.parent
FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the log collector is shared on purpose
    ],
)
INTERNAL_ERROR = "failed to handle this request"

# -- the SSE scanner ---------------------------------------------------------------------


def scan(chunks: list[bytes]) -> tuple[list[SSEEvent], bytes]:
    scanner = SSEScanner()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += scanner.feed(chunk)
    last, rest = scanner.finish()
    return events + last, rest


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# Bytes biased towards what matters to a line scanner.
sse_bytes = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\n", b":", b" ", b"data", b"event", b"\x00"])
    | st.binary(min_size=1, max_size=16),
    max_size=200,
).map(b"".join) | st.binary(max_size=4096)


@FUZZ_SETTINGS
@given(raw=sse_bytes, cuts=st.lists(st.integers(0, 1 << 16), max_size=64))
def test_scanner_any_bytes_any_split(raw: bytes, cuts: list[int]) -> None:
    whole = scan([raw])
    assert scan(split(raw, cuts)) == whole
    events, rest = whole
    assert b"".join(e.raw for e in events) + rest == raw
    for one in events:  # each event ends with its blank line
        assert one.raw.endswith((b"\n", b"\r")), one


@FUZZ_SETTINGS
@given(raw=sse_bytes)
def test_scanner_one_byte_at_a_time(raw: bytes) -> None:
    assert scan([raw[i : i + 1] for i in range(len(raw))]) == scan([raw])


@pytest.mark.parametrize(
    ("case", "data", "read"),
    [
        ("a 2 MiB data line in 1 KiB reads", b"data: " + b"x" * (2 << 20) + b"\n\n", 1024),
        ("a 200 KB data line in 16-byte reads", b"data: " + b"y" * 200_000 + b"\n\n", 16),
        ("a 2 MiB comment without a line end", b": " + b"z" * (2 << 20), 4096),
        ("1 MiB of lone CRs", b"\r" * (1 << 20), 1024),
        ("one event of 100k short lines", b"data: a\n" * 100_000 + b"\n", 512),
    ],
)
def test_scanner_time_is_linear_in_its_input(case: str, data: bytes, read: int) -> None:
    """An upstream may send one huge line (a Responses ``response.completed``
    event carries the whole answer) and the network may hand it over in small
    reads. Scanning must not start over from the beginning of the line on
    every read: that is quadratic, and it blocks the event loop that serves
    every other client.

    Measured as this process's CPU time (other processes' load does not count)
    and as a ratio: four times the input must cost about four times as much,
    where a quadratic scan costs sixteen times as much."""
    quarter = _scan_cpu_seconds(data[: len(data) // 4], read, case)
    whole = _scan_cpu_seconds(data, read, case)
    assert whole < 0.25 or whole < 8 * quarter, (
        f"{case}: {whole:.2f} s of CPU for the whole input, {quarter:.2f} s for a quarter"
    )


def _scan_cpu_seconds(data: bytes, read: int, case: str) -> float:
    ceiling = 30.0  # stop a quadratic scan early rather than hang the suite
    scanner = SSEScanner()
    began = time.process_time()
    for offset in range(0, len(data), read):
        scanner.feed(data[offset : offset + read])
        if time.process_time() - began > ceiling:
            pytest.fail(f"{case}: over {ceiling:.0f} s of CPU after {offset >> 10} KiB")
    scanner.finish()
    return time.process_time() - began


# -- request handling, in-process --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", ""]) | json_values},
        optional={"content": st.text(max_size=30) | json_values},
    )
    | json_values,
    max_size=3,
)
request_objects = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["claude-sonnet-4-5", "gpt-5", "gpt-5-codex"]) | json_values,
        "stream": st.booleans() | json_values,
        "messages": messages,
        "input": st.text(max_size=30) | messages,
        "max_tokens": st.integers(-5, 100) | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values}),
        "background": st.booleans() | json_values,
        "metadata": st.dictionaries(st.sampled_from(["user_id", "x"]), json_values, max_size=2),
        "tools": json_values,
    },
)
valid_requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-4-5", "gpt-5", "gpt-5-codex"]),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=20)}),
            min_size=1,
            max_size=2,
        ),
        "input": st.text(max_size=20),
    },
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 100),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    },
)
request_bodies = st.one_of(
    valid_requests.map(lambda body: json.dumps(body).encode()),
    valid_requests.map(lambda body: json.dumps(body).encode()),
    request_objects.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"[" * 5000, b'{"model": "m"}' + b" " * 5000, b"\xff\xfe{}"]),
)

ROUTES = [
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/count_tokens",
    "/anthropic/v1/models",
    "/anthropic/v1/models/claude-sonnet-4-5",
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/openai/v1/responses/resp_1/input_items",
    "/openai/v1/models",
]
segments = st.sampled_from(
    [
        "v1",
        "messages",
        "models",
        "responses",
        "..",
        ".",
        "%2e%2e",
        "%2f",
        "",
        "a:b",
        "~x",
        "é",
        "chat",
        "completions",
        "count_tokens",
        "%00",
        "\\",
        "x" * 300,
    ]
) | st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
bridged_routes = st.sampled_from(
    ["/anthropic/v1/messages", "/openai/v1/chat/completions", "/openai/v1/responses"]
)
paths = (
    bridged_routes
    | bridged_routes
    | st.sampled_from(ROUTES)
    | st.builds(
        lambda prefix, rest: prefix + "".join("/" + s for s in rest),
        st.sampled_from(["", "/anthropic", "/openai", "/azure", "/anthropic/v1", "/openai/v1"]),
        st.lists(segments, max_size=4),
    )
)
methods = st.sampled_from(["POST"] * 24 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
header_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
auth_headers = st.sampled_from(
    [
        {"authorization": f"Bearer {HOST_TOKEN}"},
        {"authorization": f"Bearer {HOST_TOKEN}"},
        {"authorization": f"Bearer {HOST_TOKEN}"},
        {"x-api-key": HOST_TOKEN},
        {"x-api-key": HOST_TOKEN},
        {"authorization": f"Bearer {HOST_TOKEN}", "x-api-key": OTHER_TOKEN},
        {"authorization": "Bearer nope"},
        {"authorization": f"Bearer {FAILING_TOKEN}"},
        {"authorization": f"Basic {HOST_TOKEN}"},
        {},
    ]
)
content_types = st.sampled_from(
    [
        None,
        None,
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "a/b+json",
    ]
)
upstream_answers = st.none() | st.builds(
    FakeResponse,
    status=st.sampled_from([200, 200, 201, 400, 401, 404, 429, 503, 529]),
    chunks=st.lists(
        st.binary(max_size=80)
        | st.sampled_from(
            [
                *streams.anthropic_events("fuzz")[:4],
                json.dumps(streams.chat_completion("fuzz")).encode(),
                b"data: [DONE]\n\n",
                b'{"error": {"message": "nope", "type": "x"}}',
            ]
        ),
        max_size=4,
    ),
    content_type=st.sampled_from(["application/json", "text/event-stream", "text/plain"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["retry-after", "x-request-id", "content-encoding", "connection"]),
            st.sampled_from(["1", "gzip", "close", "abc", "deflate"]),
        ),
        max_size=2,
    ),
)  # no cut: httpx.ASGITransport cannot model one (test_hardening_upstream covers it)


def new_bridge(fake: FakeUpstream, recorder: InMemoryRecorder) -> Bridge:
    """A bridge whose upstream is ``fake``, in-process, with small limits so
    that fuzzed bodies reach them."""
    return create_bridge(
        resolve,
        {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY},
        base_urls={"anthropic": "http://upstream.test", "openai": "http://upstream.test/v1"},
        # A fake that raises (it is not hardened) answers 500, as a server would.
        upstream=httpx.ASGITransport(app=fake, raise_app_exceptions=False),
        recorder=recorder,
        limits=Limits(max_body_size=4096, body_timeout=2, keepalive_interval=None),
    )


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def bridge_log() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("aibridge_asgi")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def check_answer(
    status: int,
    headers: httpx.Headers,
    body: bytes,
    *,
    method: str,
    upstream_called: bool,
    answer: FakeResponse | None,
) -> None:
    """Never the bridge's own 500. What the bridge answers itself is a
    provider-shaped JSON error; a scripted upstream answer that is not a
    stream comes back byte for byte."""
    assert INTERNAL_ERROR.encode() not in body, body[:300]
    if not upstream_called:
        assert status >= 400, (status, body[:300])
        assert status != 500, body[:300]
        if method != "HEAD":
            assert headers["content-type"] == "application/json"
            assert isinstance(json.loads(body)["error"]["message"], str), body[:300]
    elif answer is not None and method != "HEAD" and answer.content_type != "text/event-stream":
        assert status == answer.status, (status, answer.status, body[:300])
        assert body == b"".join(answer.chunks)


def check_records(recorder: InMemoryRecorder, answered_ids: list[str]) -> None:
    starts = Counter(r.interception_id for r in recorder.of_type(InterceptionStarted))
    ends = Counter(r.interception_id for r in recorder.of_type(InterceptionEnded))
    assert set(starts.values()) <= {1} and set(ends.values()) <= {1}
    assert starts == ends, (starts, ends)
    for interception_id in answered_ids:
        assert starts[interception_id] == 1, interception_id


@FUZZ_SETTINGS
@given(
    method=methods,
    path=paths,
    auth=auth_headers,
    extra=st.dictionaries(header_names, header_values, max_size=4),
    content_type=content_types,
    body=request_bodies,
    answer=upstream_answers,
)
@example(  # found by hypothesis: data mislabelled as compressed, JSON and SSE
    method="POST",
    path="/anthropic/v1/messages",
    auth={"authorization": f"Bearer {HOST_TOKEN}"},
    extra={},
    content_type=None,
    body=json.dumps({"model": "claude-sonnet-4-5", "messages": []}).encode(),
    answer=FakeResponse(chunks=[b"\x00"], headers=[("content-encoding", "gzip")]),
)
@example(
    method="POST",
    path="/anthropic/v1/messages",
    auth={"authorization": f"Bearer {HOST_TOKEN}"},
    extra={},
    content_type=None,
    body=json.dumps({"model": "claude-sonnet-4-5", "messages": []}).encode(),
    answer=FakeResponse(
        chunks=[b"\x00\x00"],
        content_type="text/event-stream",
        headers=[("content-encoding", "gzip")],
    ),
)
def test_requests_through_httpx_asgi_transport(
    method: str,
    path: str,
    auth: dict[str, str],
    extra: dict[str, str],
    content_type: str | None,
    body: bytes,
    answer: FakeResponse | None,
    bridge_log: Collect,
) -> None:
    fake = FakeUpstream()
    if answer is not None:
        fake.enqueue(answer)
    recorder = InMemoryRecorder()
    bridge = new_bridge(fake, recorder)
    named = {**extra, **auth}
    if content_type is not None:
        named["content-type"] = content_type
    headers = [(name, value.encode("latin-1")) for name, value in named.items()]
    # httpx sends only printable ASCII: what is not gets percent-encoded.
    raw_path = urllib.parse.quote(path, safe="/%:@~+=.-_!$&'()*,;").encode()
    url = httpx.URL("http://bridge.test").copy_with(raw_path=raw_path)

    async def run() -> tuple[int, httpx.Headers, bytes] | None:
        transport = httpx.ASGITransport(app=bridge)
        async with asyncio.timeout(20), httpx.AsyncClient(transport=transport) as client:
            try:
                request = client.build_request(method, url, headers=headers, content=body)
                try:
                    response = await client.send(request, stream=True)
                except AssertionError as exc:
                    if _cut_by_bridge(exc):
                        return None
                    raise
                # The bytes as sent: a body the upstream mislabelled as
                # compressed is relayed as it came, label included.
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
                await response.aclose()
                return response.status_code, response.headers, raw
            finally:
                await bridge.aclose()

    answered = asyncio.run(run())
    if answered is None:
        # The bridge cut the client's connection: only ever a stream whose
        # upstream broke (here: compressed data that does not decompress).
        event("stream cut by the bridge")
        assert answer is not None and answer.content_type == "text/event-stream", answer
        check_records(recorder, [])
        return
    status, response_headers, raw = answered
    event(f"status {status}")
    check_answer(
        status,
        response_headers,
        raw,
        method=method,
        upstream_called=bool(fake.requests),
        answer=answer,
    )
    interception_id = response_headers.get("x-aibridge-interception-id")
    check_records(recorder, [interception_id] if interception_id else [])
    assert not [line for line in bridge_log.lines if "failed inside the bridge" in line]


def _cut_by_bridge(exc: AssertionError) -> bool:
    """httpx.ASGITransport cannot carry a cut response: it asserts that the
    app completed it. True when ``exc`` is that assertion."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename.endswith("_transports/asgi.py")


raw_header_bytes = st.binary(max_size=30)
raw_paths = paths | st.text(max_size=40).map(lambda s: "/" + s)


@FUZZ_SETTINGS
@given(
    method=methods | st.text(max_size=12),
    path=raw_paths,
    auth=auth_headers,
    extra=st.lists(st.tuples(header_names.map(str.encode), raw_header_bytes), max_size=4),
    content_type=content_types,
    body=request_bodies,
    pieces=st.lists(st.integers(0, 5000), max_size=5),
    leave_after=st.none() | st.integers(0, 6),
    answer=upstream_answers,
)
def test_raw_asgi_requests(
    method: str,
    path: str,
    auth: dict[str, str],
    extra: list[tuple[bytes, bytes]],
    content_type: str | None,
    body: bytes,
    pieces: list[int],
    leave_after: int | None,
    answer: FakeResponse | None,
    bridge_log: Collect,
) -> None:
    """What a lenient ASGI server could hand the bridge: any path text, any
    header bytes, a body in pieces, a client leaving at any message."""
    fake = FakeUpstream()
    if answer is not None:
        fake.enqueue(answer)
    recorder = InMemoryRecorder()
    bridge = new_bridge(fake, recorder)
    headers = [(k.encode(), v.encode("latin-1")) for k, v in auth.items()]
    headers += [
        (k, v.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")) for k, v in extra
    ]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    chunks = split(body, pieces) or [b""]
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    if leave_after is not None:
        incoming = incoming[:leave_after]
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        done = asyncio.Event()
        queue = list(incoming)

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            if leave_after is None:
                await done.wait()  # the client stays until the answer is complete
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
            "raw_path": path.encode("utf-8", "surrogatepass"),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        async with asyncio.timeout(20):
            try:
                await bridge(scope, receive, send)
            finally:
                await bridge.aclose()

    asyncio.run(run())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) <= 1
    event(f"status {starts[0]['status']}" if starts else "no answer (client left)")
    if starts:
        status = starts[0]["status"]
        response_headers = httpx.Headers(starts[0]["headers"])
        body_out = b"".join(m.get("body", b"") for m in sent[1:])
        check_answer(
            status,
            response_headers,
            body_out,
            method=method if leave_after is None else "HEAD",  # a partial answer
            upstream_called=bool(fake.requests),
            answer=answer if leave_after is None else None,
        )
    else:
        assert leave_after is not None, "no answer although the client stayed"
    check_records(recorder, [])
    assert not [line for line in bridge_log.lines if "failed inside the bridge" in line]


# -- atheris, time-boxed -------------------------------------------------------------------

ATHERIS_TARGETS = ["fuzz_sse.py", "fuzz_request.py"]


@pytest.mark.parametrize("target", ATHERIS_TARGETS)
@pytest.mark.slow
def test_atheris_time_boxed(target: str, tmp_path: Path) -> None:
    """Run a coverage-guided fuzzer over a target for a few seconds: it must
    end without a crash, a hang (5 s per input) or a leak, and it must have
    run a fair number of inputs."""
    try:
        import atheris  # noqa: F401  (the test extras install it on Linux)
    except ImportError:
        pytest.fail("atheris is not installed: `pip install -e '.[test]'` installs it")
    seconds = int(os.environ.get("AIBRIDGE_FUZZ_SECONDS", "10"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [
        b"".join(streams.anthropic_events("seed")),
        json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}).encode(),
        json.dumps({"model": "gpt-5", "stream": True, "messages": [{"role": "user"}]}).encode(),
        json.dumps({"model": "gpt-5", "input": "hi", "stream": False}).encode(),
    ]
    for n, seed in enumerate(seeds):
        (corpus / f"seed-{n}").write_bytes(seed)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / target),
            str(corpus),
            f"-max_total_time={seconds}",
            "-timeout=5",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = re.search(r"Done (\d+) runs", output)
    assert runs is not None, output[-2000:]
    assert int(runs.group(1)) >= 100, output[-2000:]
    print(f"atheris {target}: {runs.group(0)} in {seconds} s")
