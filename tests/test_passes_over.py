"""The relay's shortcut: reads whose events the observer would only pass
over go to the client unsplit. Whatever the stream and however it is cut
into reads, the shortcut must give the same records, the same bytes and the
same end state as showing every event to the observer."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibridge_asgi.apis import ApiInterception, interception_for
from aibridge_asgi.follow import EventFollower
from aibridge_asgi.records import Record
from aibridge_asgi.routing import CHAT_COMPLETIONS, MESSAGES, RESPONSES, STREAM_GENERATE_CONTENT
from aibridge_asgi.sse import (
    Span,
    SSEScanner,
    blocks_holding,
    outside_runs,
    whole_crlf_events,
    whole_event,
)
from aibridge_asgi.testing.streams import (
    ToolCall,
    Usage,
    anthropic_events,
    chat_events,
    gemini_error,
    gemini_events,
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
    STREAM_GENERATE_CONTENT: {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
}
ROUTES = [MESSAGES, CHAT_COMPLETIONS, RESPONSES, STREAM_GENERATE_CONTENT]
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
    if route == STREAM_GENERATE_CONTENT:
        return [
            gemini_events("hello there, world", usage=USAGE, pieces=6),
            gemini_events("ok then", tool_calls=CALLS, thinking="hmm, let me see", usage=USAGE),
            gemini_events("cut", usage=USAGE, pieces=3, finish="SAFETY"),
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
    # Text deltas that only nearly have the passed shape, or hide a marker.
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"a\\"input_json_delta\\" b"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"a"},"x":"input_json_delta"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"a\\\\"},"input_json_delta"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":9,'
    b'"delta":{"type":"text_delta","text":"\x01 raw control"}}\n\n',
]


# Google's streams are CRLF-framed: chunks of text only, without usage, with
# odd usage, malformed, marks outside the data, a thought once text has
# begun, an error, data-less and multi-line events, and LF framing mixed in.
GEMINI_CALL_EVENT = (
    b'data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}'
    b"\r\n\r\n"
)
_TEXT_PARTS = '"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"index":0}]'
GEMINI_ODD_EVENTS = [
    b"data: {" + _TEXT_PARTS.encode() + b"}\r\n\r\n",
    b"data: {" + _TEXT_PARTS.encode() + b',"usageMetadata":{"promptTokenCount":99,'
    b'"candidatesTokenCount":4}}\r\n\r\n',
    b'data: {"usageMetadata":"n/a"}\r\n\r\n',
    b'data: {"usageMetadata":null,"responseId":"r2"}\r\n\r\n',
    b"data: {bad json\r\n\r\n",
    b"data: \r\n\r\n",
    b": keep-alive\r\n\r\n",
    b"event: x\r\n\r\n",
    b': "error" "thought"\r\ndata: {"usageMetadata":{"promptTokenCount":3}}\r\n\r\n',
    b'data: {"usageMetadata":\r\ndata: {"promptTokenCount":7,"candidatesTokenCount":2}}\r\n\r\n',
    b'data: {"candidates":[{"content":{"parts":[{"text":"hm","thought":true}]}}]}\r\n\r\n',
    b'data: {"candidates":[{"content":{"parts":[{"text":"a \\"thought\\" b"}]}}]}\r\n\r\n',
    b"data: " + json.dumps(gemini_error(503, "overloaded", "UNAVAILABLE")).encode() + b"\r\n\r\n",
    GEMINI_CALL_EVENT,
    b'data: {"usageMetadata":{"promptTokenCount":5}}\n\n',
    b"data: [" + b'{"usageMetadata":{"promptTokenCount":8}}' + b"]\r\n\r\n",
    b"\r\n",
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
    api: ApiInterception = interception_for(route, "i", BODIES[route], model="gemini-2.5-pro")
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
    odd = GEMINI_ODD_EVENTS if route == STREAM_GENERATE_CONTENT else ODD_EVENTS
    for _ in range(draw(st.integers(0, 4))):
        events.insert(draw(st.integers(0, len(events))), draw(st.sampled_from(odd)))
    data = b"".join(events)
    if draw(st.booleans()):  # cut at event boundaries, several events per read
        bounds = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=12))))
        edges = [0, *bounds, len(events)]
        return [b"".join(events[a:b]) for a, b in itertools.pairwise(edges) if b > a]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=20))))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shortcut_changes_nothing(route: str, data: st.DataObject) -> None:
    reads = data.draw(cut_stream(route))
    assert run(route, reads, True)[:-1] == run(route, reads, False)[:-1]


@pytest.mark.parametrize("route", ROUTES)
def test_text_deltas_are_passed_over_one_by_one_and_in_groups(route: str) -> None:
    events = streams_for(route)[0]
    alone = run(route, events, True)
    assert alone[-1] >= len(events) - 10  # the framing events are read, not the deltas
    grouped = [b"".join(events[i : i + 4]) for i in range(0, len(events), 4)]
    assert run(route, grouped, True)[:-1] == run(route, grouped, False)[:-1] == alone[:-1]
    assert run(route, grouped, True)[-1] >= 1


# Passed over in the tests below: runs of events named "a" with data.
A_RUN = re.compile(rb"(?:event: a\n(?:data: [^\n\r]*+\n)++\n)*+")


@pytest.mark.parametrize(
    ("chunk", "spans"),
    [
        (b"event: a\ndata: 1\n\n", []),
        (b"event: a\ndata: 1\ndata: 2\n\nevent: b\ndata: 3\n\n", [(26, 44)]),
        (b"event: b\ndata: 1\n\nevent: a\ndata: 2\n\nevent: b\ndata: 3\n\n", [(0, 18), (36, 54)]),
        (b"event: a\n\n", None),  # no data: not the usual shape
        (b"data: 1\n\n", None),  # unnamed
        (b"event: a\nevent: b\ndata: 1\n\n", None),  # a second name line
        (b"event: a\nid: 1\ndata: 1\n\n", None),
        (b"event: a\ndata: 1\n: comment\n\n", None),
        (b"event: a\r\ndata: 1\r\n\r\n", None),
        (b"event: a\ndata: 1\r\n\n", None),
        (b"event: a\ndata: 1\n\n\n", None),  # an empty line after it
        (b"event: a\ndata: 1\n", None),  # not finished
        (b"event: a\ndata:1\n\n", None),
        (b"", []),
    ],
)
def test_event_shapes(chunk: bytes, spans: list[Span] | None) -> None:
    assert outside_runs(chunk, A_RUN) == spans


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [b"event: a", b"event: b", b"data: x", b"data: ", b"data: a\r", b"id: 1", b": c"]
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
)
def test_event_shapes_match_the_scanner(blocks: list[list[bytes]], cut: bool) -> None:
    """Where outside_runs answers, its spans are exactly the scanner's events
    not passed over, and the passed ones are named "a" and hold data."""
    chunk = b"".join(b"\n".join(lines) + b"\n\n" for lines in blocks)
    if cut:
        chunk = chunk[:-1]
    spans = outside_runs(chunk, A_RUN)
    scanner = SSEScanner()
    events = scanner.feed(chunk)
    usual = all(
        lines[0].startswith(b"event: ")
        and len(lines) > 1
        and all(line.startswith(b"data: ") and b"\r" not in line for line in lines[1:])
        for lines in blocks
    )
    if not usual or cut:
        # Every event of another shape, or an unfinished one, makes it refuse.
        assert spans is None
        return
    assert spans is not None
    shown = [chunk[a:b] for a, b in spans]
    assert shown == [e.raw for e in events if e.event != "a"]
    for a, b in spans:
        assert whole_event(chunk[a:b]) == next(e for e in events if e.raw == chunk[a:b])
    assert all(e.data is not None for e in events if e.event == "a")


_PIECES = ['"', "\\", "\x01", "}", "a", ":{", ":null", "input_json_delta", "thinking_delta"]
_PIECES += ["tool_calls", "error", "[DONE]", "usage"]  # marks of Chat Completions
_TEXT = st.one_of(st.text(max_size=12), st.lists(st.sampled_from(_PIECES), max_size=6).map("".join))


@settings(max_examples=500, deadline=None)
@given(_TEXT, st.sampled_from(["", ',"x":"input_json_delta"', '},"y":{"z":1']), st.booleans())
def test_anthropic_passes_over_only_text_deltas_without_effect(
    text: str, tail: str, escape: bool
) -> None:
    """A text delta passed over unread is one that showing to on_event would
    change nothing: same records, same error, whatever its text."""
    data = json.dumps(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        separators=(",", ":"),
        ensure_ascii=escape,
    )
    if "\x01" in text and not escape:
        data = data.replace("\\u0001", "\x01")  # a raw control character: not JSON
    data = data[:-2] + tail + data[-2:] if tail else data
    event = b"event: content_block_delta\ndata: " + data.encode() + b"\n\n"
    before = [e for e in anthropic_events("hi", usage=USAGE, pieces=1) if b"text_delta" not in e]
    head, rest = before[:3], before[3:]  # message start, ping, text block start
    spans = interception_for(MESSAGES, "i", BODIES[MESSAGES]).needed_in(event)
    if spans == []:
        shown = run(MESSAGES, [*head, event, *rest], False)
        hidden = run(MESSAGES, [*head, *rest], False)
        # Records, completeness, error and overload flag: all the same.
        assert (shown[0], *shown[2:-1]) == (hidden[0], *hidden[2:-1])
    else:
        assert spans == [(0, len(event))]
    if not tail and "\x01" not in data:
        assert spans == []  # the shape Anthropic sends is passed over


@settings(max_examples=500, deadline=None)
@given(_TEXT, _TEXT, st.booleans(), st.booleans(), st.booleans())
def test_chat_passes_over_only_chunks_without_effect(
    text: str, model: str, fingerprint: bool, usage: bool, escape: bool
) -> None:
    """A Chat Completions chunk passed over unread is one that showing to
    on_event would change nothing, whatever its strings spell."""
    chunk: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
    }
    if fingerprint:
        chunk["system_fingerprint"] = text
    chunk["choices"] = [
        {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    ]
    if usage:
        chunk["usage"] = None
    data = json.dumps(chunk, separators=(",", ":"), ensure_ascii=escape)
    event = b"data: " + data.encode() + b"\n\n"
    events = chat_events("hi", usage=USAGE, pieces=1, include_usage=True)
    head, rest = events[:1], events[1:]  # the first chunk names the id
    api = interception_for(CHAT_COMPLETIONS, "i", BODIES[CHAT_COMPLETIONS])
    api.set_response_id("chatcmpl-x")
    spans = api.needed_in(event)
    if spans == []:
        shown = run(CHAT_COMPLETIONS, [*head, event, *rest], False)
        hidden = run(CHAT_COMPLETIONS, [*head, *rest], False)
        assert (shown[0], *shown[2:-1]) == (hidden[0], *hidden[2:-1])
    assert spans == []  # the shape OpenAI sends is passed over, whatever its strings


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("which", [0, 1])
def test_a_whole_stream_in_one_read_goes_the_short_way(route: str, which: int) -> None:
    """Under load one read holds many events, text and framing mixed: only
    the needed events are parsed (Chat Completions and Gemini: the first
    event, before the response id, the long way), and nothing changes."""
    events = streams_for(route)[which]
    one = [b"".join(events)]
    assert run(route, one, True)[:-1] == run(route, one, False)[:-1]
    # Gemini's thought chunks send their read the long way.
    assert run(route, one, True)[-1] == (0 if route == STREAM_GENERATE_CONTENT and which else 1)


@st.composite
def gemini_reads(draw: st.DrawFn) -> list[bytes]:
    """A Gemini SSE answer in reads of one to five whole events (Google's
    usual reads), odd events among them, now and then a read cut inside an
    event or framed with LF (those go the long way, between short ones),
    possibly cut short."""
    calls = [ToolCall(f"c{n}", "read_file", {"n": n}) for n in range(draw(st.integers(0, 2)))]
    events = gemini_events(
        draw(st.text(min_size=1, max_size=30)),
        usage=Usage(draw(st.integers(1, 99)), draw(st.integers(1, 99)), draw(st.integers(0, 9))),
        pieces=draw(st.integers(1, 12)),
        tool_calls=calls,
        thinking=draw(st.none() | st.text(min_size=1, max_size=12)),
        finish=draw(st.sampled_from(["STOP", "SAFETY"])),
    )
    # Chunks with marks but no usage, mid-stream, are what tells the order
    # of the runs of text around them apart: drawn more often.
    marked = [e for e in GEMINI_ODD_EVENTS if b'"error"' in e or b'"functionCall"' in e]
    for _ in range(draw(st.integers(0, 4))):
        odd = draw(st.sampled_from(GEMINI_ODD_EVENTS + marked * 3))
        events.insert(draw(st.integers(1, len(events))), odd)
    if draw(st.booleans()):  # cut short (the client left): the last usage seen counts
        events = events[: draw(st.integers(1, len(events)))]
    reads: list[bytes] = []
    at = 0
    while at < len(events):
        n = draw(st.integers(1, 5))
        piece = b"".join(events[at : at + n])
        at += n
        if draw(st.integers(0, 7)) == 0:
            cut = draw(st.integers(1, len(piece) - 1))
            reads += [piece[:cut], piece[cut:]]
        else:
            reads.append(piece)
    return reads


@settings(max_examples=400, deadline=None)
@given(gemini_reads())
def test_gemini_shortcut_changes_nothing(reads: list[bytes]) -> None:
    """Runs of text chunks kept whole (read for their usage only when a
    shown chunk or the end needs it) give what the event-by-event way gives."""
    short = run(STREAM_GENERATE_CONTENT, reads, True)
    assert short[:-1] == run(STREAM_GENERATE_CONTENT, reads, False)[:-1]


def test_gemini_shows_only_chunks_with_marks_and_reads_the_newest_usage() -> None:
    """Text chunks are neither shown nor split; the newest usage before each
    shown chunk and at the end is what counts; thinking goes the long way."""
    api = interception_for(STREAM_GENERATE_CONTENT, "i", BODIES[STREAM_GENERATE_CONTENT])
    events = gemini_events("one two three four five", usage=USAGE, pieces=5)
    assert api.needed_in(b"".join(events)) is None  # no response id yet
    api.set_response_id("resp_gemini_fake01")
    chunk = b"".join(events)
    spans = api.needed_in(chunk)
    assert spans is not None
    assert [chunk[a:b] for a, b in spans] == [events[-1]]  # the finishReason chunk
    lf = chunk.replace(b"\r\n", b"\n")
    assert api.needed_in(lf) is None  # only Google's CRLF framing goes the short way
    thinking = b"".join(gemini_events("ok", thinking="hmm", usage=USAGE, pieces=2))
    assert api.needed_in(thinking) is None
    # Reads of text only are kept whole until their usage is needed.
    records: list[Record] = []
    api = interception_for(STREAM_GENERATE_CONTENT, "i", BODIES[STREAM_GENERATE_CONTENT])
    follower = EventFollower(api, records.append)
    assert follower.take(events[0]) == events[0]
    text = b"".join(events[1:-1])
    assert follower.take(text) == text
    # Kept as it came, neither split nor parsed, until a chunk or the end needs it.
    assert api._ahead == [text]  # type: ignore[attr-defined]
    assert follower.take(events[-1]) == events[-1]
    assert api._unread == []  # type: ignore[attr-defined]
    api.finish()
    [usage] = [r for r in api.drain() if type(r).__name__ == "TokenUsage"]
    assert (usage.input_tokens, usage.output_tokens) == (USAGE.input_tokens, USAGE.output_tokens)


def test_gemini_events_shown_after_a_read_are_newer_than_its_runs() -> None:
    """A caller that shows the next events one by one without asking
    needed_in first still gets the newest usage: the runs left from the
    last read come before them."""
    api = interception_for(STREAM_GENERATE_CONTENT, "i", BODIES[STREAM_GENERATE_CONTENT])
    events = gemini_events("one two three four", usage=USAGE, pieces=4)
    api.on_event(whole_event(events[0], b"\r\n"))  # the response id
    chunk = b"".join([events[1], GEMINI_CALL_EVENT, events[2]])  # text, a call, text
    spans = api.needed_in(chunk)
    assert spans is not None and len(spans) == 1
    api.on_event(whole_event(chunk[slice(*spans[0])], b"\r\n"))
    api.on_event(whole_event(events[3], b"\r\n"))  # text, shown directly
    api.finish()
    [usage] = [r for r in api.drain() if type(r).__name__ == "TokenUsage"]
    assert usage.output_tokens == json.loads(events[3][6:])["usageMetadata"]["candidatesTokenCount"]


@pytest.mark.parametrize("per_read", [1, 16])
def test_gemini_text_left_unread_is_bounded(per_read: int) -> None:
    """A long answer of text only: what waits unread stays under the cap
    (plus a read), and the usage recorded is still the newest."""
    from aibridge_asgi.apis.gemini import UNREAD_CAP

    events = gemini_events("word " * 3000, usage=USAGE, pieces=3000)
    api = interception_for(STREAM_GENERATE_CONTENT, "i", BODIES[STREAM_GENERATE_CONTENT])
    follower = EventFollower(api, lambda record: None)
    held = 0
    for at in range(0, len(events) - 1, per_read):
        read = b"".join(events[at : min(at + per_read, len(events) - 1)])
        assert follower.take(read) == read
        held = max(held, sum(len(item) for item in api._unread))  # type: ignore[attr-defined]
    assert sum(map(len, events)) > 3 * UNREAD_CAP
    assert 0 < held <= UNREAD_CAP + len(read)
    api.finish()
    [usage] = [r for r in api.drain() if type(r).__name__ == "TokenUsage"]
    newest = json.loads(events[-2][6:])["usageMetadata"]["candidatesTokenCount"]
    assert usage.output_tokens == newest


def test_needed_in_names_only_the_events_on_event_reads() -> None:
    api = interception_for(MESSAGES, "i", BODIES[MESSAGES])
    events = anthropic_events("", tool_calls=CALLS, thinking="hmm", usage=USAGE)
    chunk = b"".join(events)
    spans = api.needed_in(chunk)
    assert spans is not None
    picked = [chunk[a:b] for a, b in spans]
    names = [e.split(b"\n", 1)[0] for e in picked]
    assert b"event: ping" not in names
    # Pings are passed over; the thinking, signature and tool deltas are
    # shown like the framing events (on_event reads the first and the last).
    assert picked == [e for e in events if not e.startswith(b"event: ping")]
    text = b"".join(anthropic_events("hello there", usage=USAGE, pieces=4))
    spans = api.needed_in(text)
    assert spans is not None
    assert all(b"text_delta" not in text[a:b] for a, b in spans)
    assert len(spans) == 5  # message start, block start and stop, message delta and stop
    # An unknown name is shown to on_event (it decides), a shape the
    # relay cannot vouch for sends the read the long way.
    pong = text.replace(b"event: ping", b"event: pong")
    assert [pong[a : pong.index(b"\n", a)] for a, _ in api.needed_in(pong) or []].count(
        b"event: pong"
    ) == 1
    assert api.needed_in(text.replace(b"event: ping", b"event:ping")) is None


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
    st.booleans(),
)
def test_blocks_found_by_bytes_are_the_scanners_events(
    blocks: list[tuple[list[bytes], bool]], needle: bytes, crlf: bool
) -> None:
    """Whole LF-terminated events, any fields, empty lines between them (or
    whole CRLF-terminated events, Google's framing): the blank lines around
    a needle bound the scanner's event."""
    end = b"\r\n" if crlf else b"\n"
    chunk = b"".join(
        end.join(lines) + (end * 3 if empty and not crlf else end * 2) for lines, empty in blocks
    )
    assert whole_crlf_events(chunk) == crlf
    events = SSEScanner().feed(chunk)
    spans = blocks_holding(chunk, (needle,), end)
    assert [chunk[a:b] for a, b in spans] == [e.raw for e in events if needle in e.raw]
    for a, b in spans:
        assert whole_event(chunk[a:b], end) == next(e for e in events if e.raw == chunk[a:b])
