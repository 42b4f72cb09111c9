"""The relay's shortcut: reads whose events the observer would only pass
over go to the client unsplit. Whatever the stream and however it is cut
into reads, the shortcut must give the same records, the same bytes and the
same end state as showing every event to the observer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibridge_asgi.apis import ApiInterception, interception_for
from aibridge_asgi.follow import EventFollower
from aibridge_asgi.records import Record
from aibridge_asgi.routing import CHAT_COMPLETIONS, MESSAGES, RESPONSES
from aibridge_asgi.sse import (
    Span,
    SSEScanner,
    blocks_holding,
    blocks_named,
    named_events,
    whole_event,
)
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    chat_events,
    response_events,
)

BODIES: dict[str, dict[str, Any]] = {
    MESSAGES: {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    CHAT_COMPLETIONS: {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    },
    RESPONSES: {"model": "m", "stream": True, "input": "hi"},
}
USAGE = Usage(input_tokens=7, output_tokens=5, cache_read=3)
CALLS = [ToolCall("call_1", "read_file", '{"path": "a.txt"}')]


def streams_for(route: str) -> list[list[bytes]]:
    if route == MESSAGES:
        return [
            anthropic_events("hello there, world", usage=USAGE, pieces=6),
            anthropic_events("", tool_calls=CALLS, thinking="hmm, let me see", usage=USAGE),
        ]
    if route == CHAT_COMPLETIONS:
        return [
            chat_events("hello there, world", usage=USAGE, pieces=6),
            chat_events("x", tool_calls=CALLS, usage=USAGE, include_usage=False),
        ]
    return [
        response_events("hello there, world", usage=USAGE, pieces=6),
        response_events("ok", tool_calls=CALLS, reasoning="think", commentary="note", usage=USAGE),
    ]


# Events a hostile or odd upstream may send among the real ones: needed
# names hidden in data, names in data lines, unnamed events, comments, CRs.
ODD_EVENTS = [
    b'event: content_block_delta\ndata: {"type":"message_stop"}\n\n',
    b"event: content_block_delta\nevent: message_stop\ndata: {}\n\n",
    b'data: {"type":"message_stop"}\n\n',
    b'event: ping\ndata: {"x":"event: message_stop\\n"}\n\n',
    b"event: message_delta\ndata: {not json\n\n",
    b'event: content_block_delta\ndata: {"delta":{"type":"thinking_delta"}}\n\n',
    b'event: response.output_text.delta\ndata: {"type":"response.completed"}\n\n',
    b'data: {"type":"response.completed","response":{"id":"r9","usage":{"input_tokens":1}}}\n\n',
    b'event: response.output_text.delta\nevent: error\ndata: {"message":"boom"}\n\n',
    b'event:response.completed\ndata: {"response":{"status":"failed"}}\n\n',
    b'data: {"id":"c9","choices":[],"usage":{"prompt_tokens":3}}\n\n',
    b'data: {"id":"c9","usage":null,"x":{"usage":null}}\n\n',
    b'data: {"error":{"message":"overloaded","type":"overloaded_error"}}\n\n',
    b"data: [DONE]\n\n",
    b"data: {bad json\n\n",
    b": a comment\n\n",
    b"id: 4\ndata: {}\n\n",
    b'data: {"a":1}\ndata: {"tool_calls":[]}\n\n',
    b"event: content_block_delta\r\ndata: {}\r\n\r\n",
    b': "error" [DONE] "tool_calls" "usage":{\ndata: {"a":1}\n\n',
    b'id: "usage":{}\ndata: {"id":"c8","usage":null}\n\n',
    b"\n",
]


def _plain(records: Sequence[Record]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        fields = asdict(record)  # type: ignore[call-overload]
        fields.pop("created_at", None)
        out.append({"type": type(record).__name__, **fields})
    return out


def run(route: str, reads: Sequence[bytes], shortcut: bool) -> tuple[Any, ...]:
    """Follow ``reads`` as the relay does, with or without the shortcut; the
    last item is how many reads (or rests of reads) went the short way."""
    api: ApiInterception = interception_for(route, "i", BODIES[route])
    records: list[Record] = []
    passed = 0
    needed_in = api.needed_in

    def counted(chunk: bytes) -> list[Span] | None:
        nonlocal passed
        spans = needed_in(chunk)
        passed += spans is not None
        return spans

    api.needed_in = counted  # type: ignore[method-assign]
    follower = EventFollower(api, records.append, shortcut=shortcut)
    out = [follower.take(read) for read in reads]
    out.append(follower.finish())
    complete, error = api.complete, api.error
    api.finish()
    records += api.drain()
    return _plain(records), b"".join(out), complete, error, api.overloaded, passed


@st.composite
def cut_stream(draw: st.DrawFn, route: str) -> list[bytes]:
    events = list(draw(st.sampled_from(streams_for(route))))
    for _ in range(draw(st.integers(0, 4))):
        events.insert(draw(st.integers(0, len(events))), draw(st.sampled_from(ODD_EVENTS)))
    data = b"".join(events)
    if draw(st.booleans()):  # cut at event boundaries, several events per read
        bounds = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=12))))
        edges = [0, *bounds, len(events)]
        return [b"".join(events[a:b]) for a, b in itertools.pairwise(edges) if b > a]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=20))))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@pytest.mark.parametrize("route", [MESSAGES, CHAT_COMPLETIONS, RESPONSES])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shortcut_changes_nothing(route: str, data: st.DataObject) -> None:
    reads = data.draw(cut_stream(route))
    assert run(route, reads, True)[:-1] == run(route, reads, False)[:-1]


@pytest.mark.parametrize("route", [MESSAGES, CHAT_COMPLETIONS, RESPONSES])
def test_text_deltas_are_passed_over_one_by_one_and_in_groups(route: str) -> None:
    (events, _) = streams_for(route)
    alone = run(route, events, True)
    assert alone[-1] >= len(events) - 10  # the framing events are read, not the deltas
    grouped = [b"".join(events[i : i + 4]) for i in range(0, len(events), 4)]
    assert run(route, grouped, True)[:-1] == run(route, grouped, False)[:-1] == alone[:-1]
    assert run(route, grouped, True)[-1] >= 1


@pytest.mark.parametrize(
    ("chunk", "named"),
    [
        (b"event: a\ndata: 1\n\n", 1),
        (b"event: a\ndata: 1\ndata: 2\n\nevent: b\n\n", 2),
        (b"data: 1\n\ndata: 2\ndata: 3\n\n", 0),
        (b"event: a\nevent: b\ndata: 1\n\n", 0),  # a second name line
        (b"event: a\nevent: b\ndata: c\n\ndata: x\nfoo\n\n", 0),  # counts that nearly fit
        (b"event: a\ndata: 1\n\ndata: 2\n\n", 0),  # an unnamed event
        (b"event: a\nid: 1\n\n", 0),
        (b"data: 1\n: comment\n\n", 0),
        (b"event: a\r\ndata: 1\r\n\r\n", 0),
        (b"event: a\ndata: 1\n\n\n", 0),
        (b"event: a\ndata: 1\n", 0),  # not finished
        (b"data:1\n\n", 0),
        (b"", 0),
    ],
)
def test_event_shapes(chunk: bytes, named: int) -> None:
    assert named_events(chunk) == named


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from([b"event: a", b"event: b", b"data: x", b"data: ", b"id: 1", b": c"]),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_event_shapes_match_the_scanner(blocks: list[list[bytes]]) -> None:
    """What named_events claims holds for what the scanner parses."""
    chunk = b"".join(b"\n".join(lines) + b"\n\n" for lines in blocks)
    events = SSEScanner().feed(chunk)
    names = [[line for line in lines if line.startswith(b"event:")] for lines in blocks]
    others = [
        [line for line in lines if not line.startswith((b"event:", b"data:"))] for lines in blocks
    ]
    named = all(
        len(n) == 1 and lines[0] == n[0] and not o
        for n, lines, o in zip(names, blocks, others, strict=True)
    )
    assert named_events(chunk) == (len(events) if named else 0)


@pytest.mark.parametrize("route", [MESSAGES, CHAT_COMPLETIONS, RESPONSES])
@pytest.mark.parametrize("which", [0, 1])
def test_a_whole_stream_in_one_read_goes_the_short_way(route: str, which: int) -> None:
    """Under load one read holds many events, text and framing mixed: only
    the needed events are parsed (Chat Completions: its first event, before
    the response id, the long way), and nothing changes."""
    events = streams_for(route)[which]
    one = [b"".join(events)]
    assert run(route, one, True)[:-1] == run(route, one, False)[:-1]
    assert run(route, one, True)[-1] == 1


def test_needed_in_names_only_the_events_on_event_reads() -> None:
    api = interception_for(MESSAGES, "i", BODIES[MESSAGES])
    events = anthropic_events("", tool_calls=CALLS, thinking="hmm", usage=USAGE)
    chunk = b"".join(events)
    spans = api.needed_in(chunk)
    assert spans is not None
    picked = [chunk[a:b] for a, b in spans]
    names = [e.split(b"\n", 1)[0] for e in picked]
    assert b"event: ping" not in names
    # Pings and the signature delta are passed over; the thinking and tool
    # deltas are read like the framing events.
    assert picked == [
        e for e in events if not e.startswith(b"event: ping") and b"signature_delta" not in e
    ]
    text = b"".join(anthropic_events("hello there", usage=USAGE, pieces=4))
    spans = api.needed_in(text)
    assert spans is not None
    assert all(b"text_delta" not in text[a:b] for a, b in spans)
    assert len(spans) == 5  # message start, block start and stop, message delta and stop
    assert api.needed_in(text.replace(b"event: ping", b"event: pong")) is None  # unknown name


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.sampled_from(
                    [b"event: a", b"event: b", b"data: x", b"data: ", b"data: ab", b"id: 1", b": b"]
                ),
                min_size=1,
                max_size=4,
            ),
            st.booleans(),  # an empty line after the event
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([b"a", b"b", b"x", b"ab"]),
)
def test_blocks_found_by_bytes_are_the_scanners_events(
    blocks: list[tuple[list[bytes], bool]], needle: bytes
) -> None:
    """Whole LF-terminated events, any fields, empty lines between them: the
    blank lines around a needle bound the scanner's event."""
    chunk = b"".join(
        b"\n".join(lines) + (b"\n\n\n" if empty else b"\n\n") for lines, empty in blocks
    )
    events = SSEScanner().feed(chunk)
    spans = blocks_holding(chunk, (needle,), [])
    assert [chunk[a:b] for a, b in spans] == [e.raw for e in events if needle in e.raw]
    for a, b in spans:
        assert whole_event(chunk[a:b]) == next(e for e in events if e.raw == chunk[a:b])
    if named_events(chunk):
        line = b"event: " + needle + b"\n"
        named = blocks_named(chunk, (line,))
        expected = [e.raw for e in events if e.event == needle.decode()]
        assert [chunk[a:b] for a, b in named] == expected
