"""Measuring client for the streaming figures, run as its own process.

``ttfb``: sends ``--n`` streamed requests one after another on one
keep-alive connection (blocking sockets, no event loop) and prints, as one
JSON line, the time to first byte (the first full SSE event of the body,
not just the status line) and the whole-stream time, in microseconds, plus
the events seen per stream. The client's own cost is the same for every
target, so differences between targets are what the proxy adds.

``hold``: opens ``--n`` concurrent slow streams (uvloop), waits for the first
event of each, prints ``READY {json}``, keeps them open until a line arrives
on stdin (or ``--hold-max`` seconds pass), then closes them all and prints
``CLOSED``.

The request comes from ``--request-file``: a JSON object with ``path``,
``headers`` (a list of [name, value]) and ``body`` (a string).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from typing import Any

__all__ = ["ChunkedReader", "build_request", "main"]


def build_request(spec: dict[str, Any], host: str, port: int) -> bytes:
    body = spec["body"].encode()
    lines = [f"POST {spec['path']} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in spec["headers"]]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ChunkedReader:
    """Incremental HTTP/1.1 response reader (chunked or Content-Length)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.head_done = False
        self.chunked = False
        self.remaining = -1  # body bytes left (Content-Length), or in the current chunk
        self.body = bytearray()
        self.done = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            del self.buf[: end + 4]
            self.head_done = True
            self.status = int(head.split(b" ", 2)[1])
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            if not self.chunked:
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("response has neither chunked framing nor a length")
                stop = head.find(b"\r\n", at + 2)
                self.remaining = int(head[at + 17 : stop if stop >= 0 else None])
        if not self.chunked:
            take = min(len(self.buf), self.remaining)
            self.body += self.buf[:take]
            del self.buf[:take]
            self.remaining -= take
            self.done = self.remaining == 0
            return
        while not self.done:
            if self.remaining <= 0:
                line_end = self.buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
                if size == 0:
                    if len(self.buf) < line_end + 4:
                        return
                    del self.buf[: line_end + 4]  # "0\r\n\r\n" (no trailers)
                    self.done = True
                    return
                if len(self.buf) < line_end + 2 + size + 2:
                    return
                start = line_end + 2
                self.body += self.buf[start : start + size]
                del self.buf[: start + size + 2]
            else:  # pragma: no cover - chunks are consumed whole above
                return


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def _has_event(body: bytearray) -> bool:
    """Whether ``body`` holds a whole SSE event (a blank line, after LF or
    CRLF line ends: Google ends its lines with CRLF)."""
    return b"\n\n" in body or b"\n\r\n" in body


def ttfb(host: str, port: int, spec: dict[str, Any], n: int, warmup: int) -> dict[str, Any]:
    request = build_request(spec, host, port)
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    firsts: list[float] = []
    totals: list[float] = []
    events: list[int] = []
    perf = time.perf_counter_ns
    for i in range(warmup + n):
        reader = ChunkedReader()
        t0 = perf()
        sock.sendall(request)
        first = 0
        while not reader.done:
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("server closed the connection mid-response")
            reader.feed(data)
            if not first and _has_event(reader.body):
                first = perf()
        end = perf()
        if reader.status != 200:
            raise RuntimeError(f"status {reader.status}: {bytes(reader.body[:300])!r}")
        if i >= warmup:
            firsts.append((first - t0) / 1000)
            totals.append((end - t0) / 1000)
            events.append(reader.body.count(b"\n\n") + reader.body.count(b"\n\r\n"))
    sock.close()
    return {
        "n": n,
        "ttfb_us": {
            "p50": statistics.median(firsts),
            "p90": _percentile(firsts, 90),
            "p99": _percentile(firsts, 99),
            "mean": statistics.fmean(firsts),
        },
        "total_us": {"p50": statistics.median(totals), "mean": statistics.fmean(totals)},
        "events": {"min": min(events), "max": max(events)},
    }


_DRAINS: set[asyncio.Task[None]] = set()


async def _open_stream(
    host: str, port: int, request: bytes, within: float
) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    except (OSError, TimeoutError):
        return None
    writer.write(request)
    parsed = ChunkedReader()
    try:
        async with asyncio.timeout(within):
            while not _has_event(parsed.body):
                data = await reader.read(65536)
                if not data:
                    writer.close()
                    return None
                parsed.feed(data)
    except TimeoutError:
        writer.close()
        return None

    async def drain() -> None:  # keep reading so the server never blocks on us
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    task = asyncio.get_running_loop().create_task(drain())
    _DRAINS.add(task)  # keep a reference: the loop holds tasks only weakly
    task.add_done_callback(_DRAINS.discard)
    return writer


async def hold(
    host: str, port: int, spec: dict[str, Any], n: int, parallel: int, hold_max: float
) -> None:
    request = build_request(spec, host, port)
    gate = asyncio.Semaphore(parallel)
    t0 = time.monotonic()

    async def one() -> asyncio.StreamWriter | None:
        async with gate:
            return await _open_stream(host, port, request, 30.0)

    writers = await asyncio.gather(*(one() for _ in range(n)))
    opened = [w for w in writers if w is not None]
    info = {"opened": len(opened), "failed": n - len(opened), "seconds": time.monotonic() - t0}
    print("READY " + json.dumps(info), flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), hold_max)
    for w in opened:
        w.close()
    await asyncio.sleep(0.2)
    print("CLOSED", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["ttfb", "hold"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request-file", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=100, help="hold: connects in flight")
    parser.add_argument("--hold-max", type=float, default=120.0)
    args = parser.parse_args(argv)
    with open(args.request_file) as f:
        spec = json.load(f)
    if args.mode == "ttfb":
        print(json.dumps(ttfb(args.host, args.port, spec, args.n, args.warmup)), flush=True)
    else:
        import uvloop

        uvloop.run(hold(args.host, args.port, spec, args.n, args.parallel, args.hold_max))


if __name__ == "__main__":
    main()
