"""SSEScanner, sans-IO: same events and same bytes however the input is split."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aibridge_asgi.sse import SSEEvent, SSEScanner
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    chat_events,
    response_events,
)

# -- helpers -------------------------------------------------------------------


def scan(chunks: Sequence[bytes]) -> tuple[list[SSEEvent], bytes]:
    """Feed ``chunks`` one by one; return the events and the pending tail."""
    scanner = SSEScanner()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += scanner.feed(chunk)
    last, rest = scanner.finish()
    return events + last, rest


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def fields(events: Sequence[SSEEvent]) -> list[tuple[str | None, str | None]]:
    return [(e.event, e.data) for e in events]


_LINE_END = re.compile(rb"\r\n|\r|\n")


def reference(data: bytes) -> tuple[list[SSEEvent], bytes]:
    """A direct reading of the SSE specification over the whole input."""
    events: list[SSEEvent] = []
    pos = start = 0
    event: str | None = None
    datas: list[str] | None = None
    while (m := _LINE_END.search(data, pos)) is not None:
        line, pos = data[pos : m.start()], m.end()
        if not line:
            joined = None if datas is None else "\n".join(datas)
            events.append(SSEEvent(data[start:pos], event, joined))
            event, datas, start = None, None, pos
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            datas = [*(datas or []), value.decode("utf-8", "replace")]
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return events, data[start:]


ANTHROPIC = b"".join(anthropic_events("Hi there", thinking="hmm", tool_calls=[ToolCall("t")]))


# -- fields --------------------------------------------------------------------


def test_one_event_with_name_and_data() -> None:
    raw = b'event: message_start\ndata: {"type":"message_start"}\n\n'
    events, rest = scan([raw])
    assert events == [SSEEvent(raw, "message_start", '{"type":"message_start"}')]
    assert rest == b""


def test_comment_only_block_is_an_event_without_fields() -> None:
    raw = b": this is a comment\n\n"
    assert scan([raw]) == ([SSEEvent(raw, None, None)], b"")


def test_comments_inside_an_event_are_ignored() -> None:
    raw = b": before\nevent: ping\n: middle\ndata: {}\n:after\n\n"
    assert scan([raw]) == ([SSEEvent(raw, "ping", "{}")], b"")


def test_field_without_space_after_colon() -> None:
    raw = b"event:content_block_delta\ndata:{}\n\n"
    assert fields(scan([raw])[0]) == [("content_block_delta", "{}")]


def test_only_one_leading_space_is_removed() -> None:
    raw = b"event:  two\ndata:  x \n\n"
    assert fields(scan([raw])[0]) == [(" two", " x ")]


def test_stray_trailing_spaces_on_data_are_kept() -> None:
    raw = b'event: message_delta\ndata: {"a":1}   \n\n'
    events, _ = scan([raw])
    assert events[0].data == '{"a":1}   '
    assert events[0].raw == raw


def test_multi_line_data_is_joined_with_newlines() -> None:
    raw = b"data: first\ndata:\ndata: third\ndata\n\n"
    assert fields(scan([raw])[0]) == [(None, "first\n\nthird\n")]


def test_last_event_field_wins() -> None:
    raw = b"event: a\nevent: b\ndata: x\n\n"
    assert fields(scan([raw])[0]) == [("b", "x")]


def test_unknown_event_names_and_fields() -> None:
    raw = b"id: 7\nretry: 100\nevent: some_future_event\nfoo: bar\ndata: {}\n\n"
    events, _ = scan([raw])
    assert events == [SSEEvent(raw, "some_future_event", "{}")]


def test_data_only_events_have_no_name() -> None:
    raw = b'data: {"id":"chatcmpl-1"}\n\ndata: [DONE]\n\n'
    assert fields(scan([raw])[0]) == [(None, '{"id":"chatcmpl-1"}'), (None, "[DONE]")]


def test_fields_do_not_leak_into_the_next_event() -> None:
    raw = b"event: a\ndata: 1\n\ndata: 2\n\n"
    assert fields(scan([raw])[0]) == [("a", "1"), (None, "2")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    raw = b"data: \xff\xfe ok\n\n"
    assert scan([raw])[0][0].data == "\ufffd\ufffd ok"


def test_multibyte_character_split_across_chunks() -> None:
    raw = "data: café ☕\n\n".encode()
    cut = raw.index(b"\xc3") + 1
    assert fields(scan([raw[:cut], raw[cut:]])[0]) == [(None, "café ☕")]


def test_empty_chunks_change_nothing() -> None:
    raw = b"data: a\n\n"
    assert scan([b"", raw[:3], b"", raw[3:], b""]) == scan([raw])


# -- line ends -----------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_each_line_end(end: bytes) -> None:
    raw = ANTHROPIC.replace(b"\n", end)
    events, rest = scan([raw])
    assert fields(events) == fields(scan([ANTHROPIC])[0])
    assert b"".join(e.raw for e in events) == raw
    assert rest == b""


def test_mixed_line_ends_in_one_stream() -> None:
    raw = b"event: a\r\ndata: 1\r\rdata: 2\n\r\nevent: c\rdata: 3\n\n"
    events, rest = scan([raw])
    assert fields(events) == [("a", "1"), (None, "2"), ("c", "3")]
    assert b"".join(e.raw for e in events) == raw
    assert rest == b""


def test_cr_then_lf_is_one_line_end_not_two() -> None:
    # If CRLF counted as two line ends, "data: x" would end an event early.
    events, _ = scan([b"data: x\r\ndata: y\r\n\r\n"])
    assert fields(events) == [(None, "x\ny")]


def test_lf_after_a_cr_split_across_reads_is_not_a_blank_line() -> None:
    events, rest = scan([b"data: x\r", b"\ndata: y\r", b"\n\r\n"])
    assert fields(events) == [(None, "x\ny")]
    assert rest == b""


# -- splitting -----------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_two_way_split_gives_the_same_fields_and_bytes(end: bytes) -> None:
    raw = ANTHROPIC.replace(b"\n", end)
    whole, _ = scan([raw])
    for cut in range(len(raw) + 1):
        events, rest = scan([raw[:cut], raw[cut:]])
        assert fields(events) == fields(whole), cut
        assert b"".join(e.raw for e in events) + rest == raw, cut


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_at_a_time_gives_the_same_fields_and_bytes(end: bytes) -> None:
    raw = ANTHROPIC.replace(b"\n", end)
    events, rest = scan(bytewise(raw))
    assert fields(events) == fields(scan([raw])[0])
    assert b"".join(e.raw for e in events) + rest == raw


def test_split_inside_the_crlf_of_the_blank_line_keeps_each_event_whole() -> None:
    # Every event's raw is "every byte of the block, blank line included",
    # however the input was split: the LF of a CRLF blank line split from
    # its CR by a read boundary still belongs to the event it ends.
    raw = b"data: x\r\n\r\ndata: y\r\n\r\n"
    expected = [SSEEvent(b"data: x\r\n\r\n", None, "x"), SSEEvent(b"data: y\r\n\r\n", None, "y")]
    assert scan([raw]) == (expected, b"")
    assert scan([raw[:11], raw[11:]]) == (expected, b"")
    assert scan(bytewise(raw)) == (expected, b"")


def test_one_byte_at_a_time_crlf_stream_leaves_nothing_pending() -> None:
    # A complete stream has no incomplete event at its end.
    raw = b"".join(chat_events("hello")).replace(b"\n", b"\r\n")
    _, rest = scan(bytewise(raw))
    assert rest == b""


# -- incomplete input ----------------------------------------------------------


def test_incomplete_final_event_is_pending() -> None:
    scanner = SSEScanner()
    events = scanner.feed(b"data: a\n\nevent: x\ndata: b\n")
    assert fields(events) == [(None, "a")]
    assert scanner.pending() == b"event: x\ndata: b\n"
    assert scanner.finish()[1] == b"event: x\ndata: b\n"
    assert scanner.pending() == b""
    assert scanner.finish()[1] == b""


def test_finish_forgets_the_fields_of_the_incomplete_event() -> None:
    scanner = SSEScanner()
    scanner.feed(b"event: x\ndata: b\n")
    scanner.finish()[1]
    assert fields(scanner.feed(b"data: c\n\n")) == [(None, "c")]


def test_line_without_end_is_pending_not_an_event() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"data: [DONE]") == []
    assert scanner.finish()[1] == b"data: [DONE]"


def test_pending_grows_then_completes() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"data: a") == []
    assert scanner.feed(b"\n") == []
    assert scanner.pending() == b"data: a\n"
    assert scanner.feed(b"\n") == [SSEEvent(b"data: a\n\n", None, "a")]
    assert scanner.pending() == b""


# -- properties ----------------------------------------------------------------

_TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b":",
    b": keepalive",
    b" ",
    b"x",
    b"{}",
    b"[DONE]",
    "é☕".encode(),
    b"\xff",
    b"id: 1",
    b"retry: 5",
]

soup = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=4), max_size=60).map(b"".join)

tool_calls = st.lists(
    st.builds(
        ToolCall,
        name=st.sampled_from(["read_file", "bash", "search"]),
        arguments=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8))
        | st.text(max_size=10),
        id=st.sampled_from(["call_1", "call_2", "toolu_3"]),
    ),
    max_size=3,
)


@st.composite
def built_streams(draw: st.DrawFn) -> bytes:
    text = draw(st.text(max_size=30))
    calls = draw(tool_calls)
    pieces = draw(st.integers(1, 4))
    usage = Usage(*draw(st.tuples(*[st.integers(0, 10**6)] * 5)))
    kind = draw(st.sampled_from(["anthropic", "chat", "responses"]))
    if kind == "anthropic":
        thinking = draw(st.none() | st.text(max_size=20))
        events = anthropic_events(
            text, tool_calls=calls, thinking=thinking, usage=usage, pieces=pieces
        )
    elif kind == "chat":
        include = draw(st.booleans())
        events = chat_events(
            text, tool_calls=calls, usage=usage, include_usage=include, pieces=pieces
        )
    else:
        reasoning = draw(st.none() | st.text(min_size=1, max_size=20))
        events = response_events(
            text, tool_calls=calls, reasoning=reasoning, usage=usage, pieces=pieces
        )
    # Comments, pings and stray trailing spaces anywhere between events.
    out: list[bytes] = []
    for event in events:
        if draw(st.booleans()):
            out.append(draw(st.sampled_from([b": keepalive\n\n", b":\n\n", b"event: ping\n\n"])))
        if draw(st.booleans()):
            event = event.replace(b"\n\n", b"  \n\n")
        out.append(event)
    raw = b"".join(out)
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]  # a cut stream
    end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return raw.replace(b"\n", end)


inputs = built_streams() | soup


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=inputs, data=st.data())
def test_any_split_gives_the_specified_fields_and_the_exact_bytes(
    raw: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=30))
    events, rest = scan(split_at(raw, cuts))
    expected, _ = reference(raw)
    assert fields(events) == fields(expected)
    assert b"".join(e.raw for e in events) + rest == raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=inputs)
def test_whole_input_matches_the_specification(raw: bytes) -> None:
    assert scan([raw]) == reference(raw)


CRLF_STREAM = b"".join(chat_events("hi", pieces=1)).replace(b"\n", b"\r\n")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=inputs, cuts=st.lists(st.integers(0, 10**5), max_size=30))
@example(raw=CRLF_STREAM, cuts=[CRLF_STREAM.index(b"\r\n\r\n") + 3])
def test_any_split_gives_identical_events(raw: bytes, cuts: list[int]) -> None:
    cuts = [c % (len(raw) + 1) for c in cuts]
    assert scan(split_at(raw, cuts)) == scan([raw])


@settings(max_examples=100, deadline=None)
@given(raw=inputs)
@example(raw=CRLF_STREAM)
def test_one_byte_at_a_time_gives_identical_events(raw: bytes) -> None:
    assert scan(bytewise(raw)) == scan([raw])
