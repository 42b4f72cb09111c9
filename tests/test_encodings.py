"""Upstream bodies compressed although the bridge asked for identity."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx

from aibridge_asgi import TokenUsage
from aibridge_asgi.testing import FakeResponse, FakeUpstream, streams

from .conftest import HOST_TOKEN, Running

AUTH = {"authorization": f"Bearer {HOST_TOKEN}"}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
USAGE = streams.Usage(input_tokens=11, output_tokens=5)


def test_gzip_json_is_relayed_encoded_and_still_read(
    running: Running, fake: FakeUpstream, client: httpx.Client
) -> None:
    body = json.dumps(streams.chat_completion(usage=USAGE)).encode()
    packed = gzip.compress(body)
    fake.enqueue(
        FakeResponse(chunks=[packed[:10], packed[10:]], headers=[("content-encoding", "gzip")])
    )
    with client.stream(
        "POST", running.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT
    ) as r:
        raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
    assert raw == packed  # unchanged on the wire
    assert gzip.decompress(raw) == body
    (end,) = running.recorder.wait_ended()
    assert end.status == "completed"
    (usage,) = running.recorder.of_type(TokenUsage)
    assert (usage.input_tokens, usage.output_tokens) == (11, 5)


def test_deflate_stream_is_relayed_decoded(
    running: Running, fake: FakeUpstream, client: httpx.Client
) -> None:
    events = streams.chat_events(usage=USAGE, include_usage=True)
    plain = b"".join(events)
    compressor = zlib.compressobj()
    packed = compressor.compress(plain) + compressor.flush()
    pieces = [packed[i : i + 37] for i in range(0, len(packed), 37)]
    fake.enqueue(FakeResponse.sse(pieces, headers=[("content-encoding", "deflate")]))
    with client.stream(
        "POST",
        running.url + "/openai/v1/chat/completions",
        headers=AUTH,
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        raw = b"".join(r.iter_raw())
        assert "content-encoding" not in r.headers
    assert raw == plain
    (end,) = running.recorder.wait_ended()
    assert end.status == "completed"
    (usage,) = running.recorder.of_type(TokenUsage)
    assert (usage.input_tokens, usage.output_tokens) == (11, 5)


def test_unknown_encoding_is_relayed_unread(
    running: Running, fake: FakeUpstream, client: httpx.Client
) -> None:
    chunks = [b"\x00\x01opaque", b"brotli-ish\xff"]
    fake.enqueue(FakeResponse.sse(chunks, headers=[("content-encoding", "br")]))
    with client.stream(
        "POST",
        running.url + "/openai/v1/chat/completions",
        headers=AUTH,
        json={**CHAT, "stream": True},
    ) as r:
        raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "br"
    assert raw == b"".join(chunks)
    (end,) = running.recorder.wait_ended()
    assert end.status == "completed"
    assert end.error is not None and "content-encoding 'br'" in end.error
    assert running.recorder.of_type(TokenUsage) == []
