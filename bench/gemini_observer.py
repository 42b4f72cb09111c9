"""What reading a Gemini stream on the side costs, per chunk, in process.

The relay forwards bytes; this measures only the parsing beside it: the SSE
scanner or the JSON-array splitter plus the Gemini observer, over a
streamed answer of ``--chunks`` text pieces, fed in reads of ``--read``
bytes. The Anthropic observer over an answer of as many text deltas is
printed for comparison (it skips text deltas without decoding them; Gemini
chunks all carry cumulative usage, so each one is decoded).

    python bench/gemini_observer.py [--chunks 400] [--read 1400] [--rounds 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from aibridge_asgi.apis.anthropic_messages import MessagesInterception
from aibridge_asgi.apis.gemini import StreamGenerateContentInterception
from aibridge_asgi.jsonarray import JSONArraySplitter
from aibridge_asgi.sse import SSEScanner
from aibridge_asgi.testing.streams import (
    anthropic_events,
    gemini_chunks,
    gemini_events,
    gemini_json_array,
)

BODY = {"contents": [{"role": "user", "parts": [{"text": "Write a long story."}]}]}
TEXT = "The quick brown fox jumps over the lazy dog. " * 40


def reads(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def sse_run(body: bytes, size: int, make: Callable[[], object]) -> None:
    api = make()
    scanner = SSEScanner()
    for read in reads(body, size):
        for event in scanner.feed(read):
            api.on_event(event)  # type: ignore[attr-defined]
        api.drain()  # type: ignore[attr-defined]
    api.finish()  # type: ignore[attr-defined]


def array_run(body: bytes, size: int) -> None:
    api = StreamGenerateContentInterception("bench", BODY, model="gemini-2.5-pro")
    splitter = JSONArraySplitter()
    for read in reads(body, size):
        for element in splitter.feed(read):
            api.on_element(element)
        api.drain()
    api.finish()


def best(rounds: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--read", type=int, default=1400, help="bytes per upstream read")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    size = args.read
    sse = b"".join(gemini_events(TEXT, pieces=args.chunks))
    array = b"".join(gemini_json_array(TEXT, pieces=args.chunks))
    anthropic = b"".join(anthropic_events(TEXT, pieces=args.chunks))
    n = len(gemini_chunks(TEXT, pieces=args.chunks))  # text pieces come out whole-sized
    gemini_api = lambda: StreamGenerateContentInterception("bench", BODY, model="gemini-2.5-pro")  # noqa: E731
    anthropic_api = lambda: MessagesInterception("bench", {"messages": []})  # noqa: E731
    rows = [
        ("gemini, alt=sse", sse, lambda: sse_run(sse, size, gemini_api)),
        ("gemini, JSON array", array, lambda: array_run(array, size)),
        ("anthropic, SSE (comparison)", anthropic, lambda: sse_run(anthropic, size, anthropic_api)),
    ]
    print(f"{n} chunks, reads of {size} bytes, best of {args.rounds}")
    print(f"{'stream':<30} {'bytes':>8} {'total ms':>9} {'us/chunk':>9} {'MB/s':>7}")
    for name, body, run in rows:
        seconds = best(args.rounds, run)
        print(
            f"{name:<30} {len(body):>8} {seconds * 1000:>9.2f} {seconds / n * 1e6:>9.1f}"
            f" {len(body) / seconds / 1e6:>7.1f}"
        )


if __name__ == "__main__":
    main()
