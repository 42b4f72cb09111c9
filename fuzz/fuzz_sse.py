"""atheris target: the SSE scanner, arbitrary bytes split at arbitrary places.

Checks, for every input: no exception, the same events whether the bytes
come whole or in pieces, and every input byte accounted for (the events'
raw bytes plus the pending tail are the input).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_sse.py CORPUS_DIR -max_total_time=60

tests/test_fuzz.py runs it for a few seconds when atheris is installed.
"""

from __future__ import annotations

import itertools
import sys

import atheris

with atheris.instrument_imports(include=["aibridge_asgi"]):
    from aibridge_asgi.sse import SSEEvent, SSEScanner


def scan(chunks: list[bytes]) -> tuple[list[SSEEvent], bytes]:
    scanner = SSEScanner()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += scanner.feed(chunk)
    last, rest = scanner.finish()
    return events + last, rest


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    pieces = [raw[a:b] for a, b in itertools.pairwise(points)]
    whole = scan([raw])
    if scan(pieces) != whole:
        raise AssertionError(f"split at {points} changed the events of {raw!r}")
    events, rest = whole
    if b"".join(e.raw for e in events) + rest != raw:
        raise AssertionError(f"bytes lost or added for {raw!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
