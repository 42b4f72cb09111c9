"""What the bridge forwards of a client's headers: credentials, hop-by-hop
and configured headers dropped, and a 400 for any forwarded header that
cannot go on the wire (a malformed name, a control byte in its value),
naming the first such header; checked against a plain per-header reading."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge_asgi.auth import HOP_BY_HOP, HOST_CREDENTIALS, request_headers_for_upstream
from aibridge_asgi.errors import BridgeError

NAMES = st.sampled_from(
    [
        b"user-agent",
        b"x-custom",
        b"anthropic-version",
        b"authorization",
        b"connection",
        b"keep-alive",
        b"x-strip-me",
        b"bad name",
        b"x:colon",
        b"",
        b"x-\xff",
        b"x-trace",
    ]
)
VALUES = st.sampled_from(
    [
        b"ok",
        b"a b",
        b"\x00",
        b"tab\there",
        b"x\r\ny",
        b"\x7f",
        b"keep-alive",
        b"x-trace, close",
        b"\xc3\xa9",
    ]
)
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
STRIP = frozenset({b"x-strip-me"})
ALWAYS = (
    HOP_BY_HOP
    | HOST_CREDENTIALS
    | STRIP
    | {b"host", b"content-length", b"accept-encoding", b"expect", b"http2-settings"}
)


def plainly(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | str:
    named = {t.strip().lower() for n, v in headers if n == b"connection" for t in v.split(b",")}
    kept = [(n, v) for n, v in headers if n not in ALWAYS | named]
    for name, value in kept:
        if not TOKEN.fullmatch(name) or CONTROL.search(value):
            return name.decode("latin-1")[:40].encode("unicode_escape").decode()
    return [*kept, (b"accept-encoding", b"identity")]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_forwarded_headers_and_refusals(headers: list[tuple[bytes, bytes]]) -> None:
    expected = plainly(headers)
    if isinstance(expected, str):
        with pytest.raises(BridgeError) as caught:
            request_headers_for_upstream(headers, STRIP, ())
        assert caught.value.status == 400
        assert repr(expected) in caught.value.message
    else:
        assert request_headers_for_upstream(headers, STRIP, ()) == expected
