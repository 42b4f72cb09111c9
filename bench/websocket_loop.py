"""A 10-turn agent loop through the bridge: Responses over WebSocket vs HTTP.

Three processes: the library's fake upstream (which speaks the Responses
API over HTTP and over WebSocket) under uvicorn, ``bench/bridge_host.py``
(the bridge in a Starlette host, aiohttp seam) and this client. One agent
loop is ``--turns`` ``response.create`` calls whose input grows each turn (a
user message, then a tool call and its output per turn), as a coding agent
sends them; every answer is a streamed Responses answer of 11 events.

Modes:

* ``websocket``: one socket per loop, every turn a text frame on it;
* ``http``: one POST per turn on a keep-alive connection (aiohttp's pool);
* ``http-new``: one POST per turn on a new connection each time.

For each mode it runs ``--loops`` loops one after another (latency of a
loop) and then ``--concurrency`` loops at once (turns per second), and
reads the bridge process's CPU time from ``/proc`` around each run.

    .venv/bin/python bench/websocket_loop.py              # ~30 s
    .venv/bin/python bench/websocket_loop.py --loops 5    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bridge_host import HOST_TOKEN, OPENAI_KEY, PREFIX  # noqa: E402

COMPRESS = int(os.environ.get("BENCH_WS_COMPRESS", "15"))
MODES = ("websocket", "http", "http-new")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_upstream(port: int) -> None:
    """The fake upstream, with the bench's provider key (``--serve-upstream``)."""
    import uvicorn

    from aibridge_asgi.testing import FakeUpstream

    app = FakeUpstream(openai_key=OPENAI_KEY)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def turn_body(turn: int) -> dict[str, Any]:
    """The request of turn ``turn`` (0-based) of the loop: the whole history."""
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": "Fix the failing test in parser.py."}
    ]
    for n in range(turn):
        call = f"call_{n}"
        args = json.dumps({"cmd": f"sed -n {n * 40},{n * 40 + 40}p parser.py"})
        items.append({"type": "function_call", "call_id": call, "name": "shell", "arguments": args})
        items.append({"type": "function_call_output", "call_id": call, "output": "x" * 2000})
    return {"model": "gpt-5", "stream": True, "input": items, "tools": [{"type": "function",
            "name": "shell", "parameters": {"type": "object"}}]}  # fmt: skip


async def loop_websocket(session: aiohttp.ClientSession, base: str, turns: int) -> None:
    url = base.replace("http://", "ws://", 1) + "/openai/v1/responses"
    headers = {"Authorization": f"Bearer {HOST_TOKEN}"}
    async with session.ws_connect(url, headers=headers, max_msg_size=0, compress=COMPRESS) as ws:
        for turn in range(turns):
            await ws.send_str(json.dumps({"type": "response.create", **turn_body(turn)}))
            while True:
                text = await ws.receive_str()
                if '"response.completed"' in text[:40]:
                    break


async def loop_http(session: aiohttp.ClientSession, base: str, turns: int) -> None:
    url = base + "/openai/v1/responses"
    headers = {"Authorization": f"Bearer {HOST_TOKEN}"}
    for turn in range(turns):
        async with session.post(url, json=turn_body(turn), headers=headers) as response:
            assert response.status == 200, response.status
            await response.read()


async def run_mode(
    mode: str, base: str, turns: int, loops: int, concurrency: int, bridge_pid: int
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0, force_close=mode == "http-new")
    async with aiohttp.ClientSession(connector=connector) as session:
        one = loop_websocket if mode == "websocket" else loop_http
        await one(session, base, turns)  # warm up
        durations: list[float] = []
        cpu0 = cpu_seconds(bridge_pid)
        for _ in range(loops):
            began = time.perf_counter()
            await one(session, base, turns)
            durations.append(time.perf_counter() - began)
        cpu_seq = cpu_seconds(bridge_pid) - cpu0
        cpu0 = cpu_seconds(bridge_pid)
        began = time.perf_counter()
        await asyncio.gather(*(one(session, base, turns) for _ in range(concurrency)))
        wall = time.perf_counter() - began
        cpu_par = cpu_seconds(bridge_pid) - cpu0
    durations.sort()
    return {
        "loop_ms_p50": statistics.median(durations) * 1000,
        "loop_ms_p90": durations[int(len(durations) * 0.9) - 1 if len(durations) > 1 else 0] * 1000,
        "turn_ms_p50": statistics.median(durations) * 1000 / turns,
        "turns_per_s_concurrent": concurrency * turns / wall,
        "bridge_cpu_us_per_turn": (cpu_seq + cpu_par) / ((loops + concurrency) * turns) * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--loops", type=int, default=40, help="sequential loops per mode")
    parser.add_argument("--concurrency", type=int, default=20, help="loops at once per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    up_port, bridge_port = free_port(), free_port()
    procs = [
        subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port)]),
    ]
    try:
        wait_port(up_port)
        bridge = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "bridge_host.py"),
                "--port",
                str(bridge_port),
                "--upstream-url",
                f"http://127.0.0.1:{up_port}",
                "--seam",
                "aiohttp",
            ]
        )
        procs.append(bridge)
        wait_port(bridge_port)
        base = f"http://127.0.0.1:{bridge_port}{PREFIX}"
        rows = {}
        for mode in args.modes.split(","):
            rows[mode] = asyncio.run(
                run_mode(mode, base, args.turns, args.loops, args.concurrency, bridge.pid)
            )
        print(
            f"\n{args.turns}-turn agent loop through the bridge "
            f"({args.loops} loops in a row, then {args.concurrency} at once)"
        )
        columns = list(next(iter(rows.values())))
        print(f"{'mode':<10}" + "".join(f"{c:>24}" for c in columns))
        for mode, row in rows.items():
            print(f"{mode:<10}" + "".join(f"{row[c]:>24.2f}" for c in columns))
        print(json.dumps(rows))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


if __name__ == "__main__":
    main()
