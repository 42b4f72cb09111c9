"""Benchmark harness: the bridge vs direct-to-upstream vs a reference proxy.

    python bench/run.py            # full run, a few minutes
    python bench/run.py --quick    # smoke run, well under a minute

Starts the fake upstream (bench/upstream.py), the reference proxy
(bench/reference_proxy.py) and one bridge host (bench/bridge_host.py) per
upstream seam, each pinned to a core with ``taskset``; drives load with
``wrk`` (a Lua script supplies POST bodies and headers and prints latency
percentiles as JSON from ``done()``) and measures streaming time to first
byte and memory with bench/stream_client.py, a separate process. Prints one
table and writes it as JSON (default ``bench/results/latest.json``; with
``--quick`` ``bench/results/quick.json``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
PREFIX = "/api/v2/aibridge"
HOST_TOKEN = "bench-host-token"  # bench/bridge_host.py's
PROVIDER_KEYS = {
    "anthropic": "sk-ant-bench-upstream",
    "openai": "sk-bench-upstream",
    "gemini": "bench-google-upstream",
}
# "aiohttp-obs": the default seam with the [prometheus] and [otel] extras on.
SEAM_CLASSES = {
    "httpx": "HttpxUpstream",
    "aiohttp": "AiohttpUpstream",
    "aiohttp-obs": "AiohttpUpstream",
}
#: The bridged APIs whose streams are measured; the non-streaming mix is
#: the first three (JSON_APIS), as in the runs before Gemini was measured.
APIS = ("anthropic", "chat", "responses", "gemini")
JSON_APIS = ("anthropic", "chat", "responses")
GEMINI_MODEL_PATH = "/v1beta/models/gemini-2.5-pro"
API_PATHS = {
    "anthropic": ("anthropic", "/v1/messages"),
    "chat": ("openai", "/v1/chat/completions"),
    "responses": ("openai", "/v1/responses"),
    "gemini": ("gemini", GEMINI_MODEL_PATH + ":generateContent"),
}
P99_LIMIT_US = 100_000
TICK = os.sysconf("SC_CLK_TCK")

__all__ = ["Settings", "available_seams", "main", "run"]


# -- settings -----------------------------------------------------------------


@dataclass
class Settings:
    """Durations and sizes of one run."""

    quick: bool = False
    duration: int = 5  # seconds per wrk run (latency, throughput)
    stream_duration: int = 5  # seconds per wrk streaming run
    warmup: int = 2  # seconds of wrk warm-up per target
    stream_warmup: bool = True  # also warm up each API's streaming path
    settle: float = 1.0  # seconds to wait before reading RSS
    alone_duration: int = 3  # the upstream measured alone
    ttfb_n: int = 300  # streamed requests per TTFB sample
    slow_streams: int = 1000
    growth_first: int = 1000
    growth_total: int = 100_000
    growth_conns: int = 32
    growth_max_seconds: float = 75.0  # a slow target runs fewer growth requests (reported)
    events: int = 200
    stream_conns: int = 16
    throughput_conns: int = 64
    latency_conns: tuple[int, ...] = (1, 32)
    max_throttle_steps: int = 5
    seams: list[str] = field(default_factory=list)
    out: Path = BENCH / "results" / "latest.json"

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            quick=True,
            duration=1,
            stream_duration=1,
            warmup=1,
            stream_warmup=False,
            settle=0.2,
            alone_duration=1,
            ttfb_n=20,
            slow_streams=100,
            growth_first=100,
            growth_total=1000,
            growth_max_seconds=2.0,
            max_throttle_steps=0,
            out=BENCH / "results" / "quick.json",
        )


def available_seams() -> list[str]:
    """The upstream seams aibridge_asgi.upstream offers, by flag name."""
    import aibridge_asgi.upstream as upstream_module

    return [name for name, cls in SEAM_CLASSES.items() if hasattr(upstream_module, cls)]


# -- cores --------------------------------------------------------------------


#: The cores this process may use, read before run() pins it to the load core.
ALL_CPUS = sorted(os.sched_getaffinity(0))


def plan_cpus() -> dict[str, int | None]:
    """Which core each role runs on.

    Three or more cores: load generator, upstream and system under test each
    get one. Two: the system under test gets one core to itself; the load
    generator, the fake upstream and the measuring clients share the other.
    One: no pinning.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 3:
        return {"load": cpus[0], "upstream": cpus[1], "sut": cpus[2]}
    if len(cpus) == 2:
        return {"load": cpus[0], "upstream": cpus[0], "sut": cpus[1]}
    return {"load": None, "upstream": None, "sut": None}


#: Niceness for every process the harness starts (``--nice``; 0 = as is).
NICE = 0


def pinned(cpu: int | str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` pinned to ``cpu`` (a core, or a taskset list such as ``"0,1"``),
    and re-niced when ``--nice`` asks."""
    out = ["taskset", "-c", str(cpu), *argv] if cpu is not None else list(argv)
    return ["nice", "-n", str(NICE), *out] if NICE else out


_T0 = time.monotonic()


def log(message: str) -> None:
    """A progress line, with seconds since the start."""
    print(f"[{time.monotonic() - _T0:5.0f}s] {message}", flush=True)


# -- /proc ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def system_busy() -> float:
    """Busy CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process on a loopback port, pinned to a core."""

    def __init__(
        self, name: str, argv: list[str], port: int, cpu: int | str | None, logdir: Path
    ) -> None:
        self.name, self.port, self.cpu = name, port, cpu
        self.log = logdir / f"{name}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            pinned(cpu, argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.proc.pid
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")

    def log_tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def get_json(self, path: str) -> Any:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    path: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def spec(self) -> dict[str, Any]:
        return {"path": self.path, "headers": [list(h) for h in self.headers], "body": self.body}


def _body(api: str, stream: bool, marker: str | None = None) -> str:
    prompt = "Write a haiku about tail latency."
    body: dict[str, Any]
    if api == "anthropic":
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": prompt}],
        }
    elif api == "chat":
        body = {
            "model": "gpt-5",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": prompt},
            ],
        }
    elif api == "gemini":  # the model and the streaming are in the path
        text = f"{prompt} {marker}" if marker else prompt  # no metadata field
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return json.dumps(body, separators=(",", ":"))
    else:
        body = {"model": "gpt-5", "instructions": "You are terse.", "input": prompt}
    if stream:
        body["stream"] = True
        if api == "chat":
            body["stream_options"] = {"include_usage": True}
    if marker:  # tells the fake upstream how to pace the stream
        body["metadata"] = {"user_id": marker}
    return json.dumps(body, separators=(",", ":"))


def make_req(target: str, api: str, stream: bool, marker: str | None = None) -> Req:
    provider, path = API_PATHS[api]
    if api == "gemini" and stream:
        path = GEMINI_MODEL_PATH + ":streamGenerateContent?alt=sse"
    direct = target == "direct"
    if not direct:
        path = f"{PREFIX}/{provider}{path}"
    token = PROVIDER_KEYS[provider] if direct else HOST_TOKEN
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if provider == "anthropic":
        headers += [("X-Api-Key", token), ("Anthropic-Version", "2023-06-01")]
    elif provider == "gemini":
        headers.append(("X-Goog-Api-Key", token))
    else:
        headers.append(("Authorization", f"Bearer {token}"))
    headers.append(("User-Agent", "aibridge-bench/1.0"))
    return Req(path, tuple(headers), _body(api, stream, marker))


def json_mix(target: str) -> list[Req]:
    """The non-streaming load: Anthropic, Chat and Responses in turn."""
    return [make_req(target, api, stream=False) for api in JSON_APIS]


# -- wrk --------------------------------------------------------------------------


def _lua_string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= code < 127:
            out.append(ch)
        else:
            out.extend(f"\\{b}" for b in ch.encode())
    out.append('"')
    return "".join(out)


_LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"min":%d,"max":%d,"mean":%.3f,"stdev":%.3f,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


_LUA_TIMING = r"""
-- Our own per-request latency (wrk's own percentiles add synthetic samples
-- for slow responses, a coordinated-omission correction that turns one
-- stall of a closed loop into hundreds of samples). One connection per
-- thread, so request() and response() of a thread belong together.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
hist = {}
local t_start = 0
function response(status, headers, body)
  local us = math.floor(now_us() - t_start + 0.5)
  hist[us] = (hist[us] or 0) + 1
end
local function write_hist()
  local merged = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("hist")) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = k .. ":" .. v end
  io.write("WRK_HIST " .. table.concat(parts, ",") .. "\n")
end
"""


def lua_script(
    reqs: Sequence[Req],
    delay_ms: float | None = None,
    stop_after: int | None = None,
    timed: bool = False,
) -> str:
    """A wrk script: requests in turn; optional random think time before each
    request (mean ``delay_ms``), stop after N responses (one thread), or
    per-request timing (one connection per thread)."""
    if timed and stop_after is not None:
        raise ValueError("timed and stop_after do not mix")
    lines = [
        "local reqs = {}",
        "local n, i = 0, 0",
        "local threads = {}",
        "function setup(thread)",
        "  threads[#threads + 1] = thread",
        "  thread:set('thread_seed', #threads)",
        "end",
    ]
    if timed:
        lines.append(_LUA_TIMING)
    lines += ["function init(args)", "  math.randomseed(os.time() * 1000 + thread_seed)"]
    for r in reqs:
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.headers)
        lines.append(
            f'  reqs[#reqs + 1] = wrk.format("POST", {_lua_string(r.path)}, '
            f"{{{headers}}}, {_lua_string(r.body)})"
        )
    lines += ["  n = #reqs", "end", "function request()", "  i = i % n + 1"]
    if timed:
        lines.append("  t_start = now_us()")
    lines += ["  return reqs[i]", "end"]
    if delay_ms is not None:
        # Exponential think times (seeded per thread): the connections'
        # requests together arrive about as a Poisson stream, not in waves.
        lines += [
            f"local dmean = {delay_ms:.4f}",
            "function delay()",
            "  local d = -dmean * math.log(1 - math.random())",
            "  local whole = math.floor(d)",
            "  if math.random() < d - whole then return whole + 1 end",
            "  return whole",
            "end",
        ]
    if stop_after is not None:
        lines += [
            f"local count, stop_after = 0, {stop_after}",
            "function response(status, headers, body)",
            "  count = count + 1",
            "  if count == stop_after then",
            '    io.write("WRK_STOPPED\\n")',
            "    io.flush()",
            "    wrk.thread:stop()",
            "  end",
            "end",
        ]
    done = _LUA_DONE
    if timed:
        done = done.replace(
            "  local e = summary.errors", "  write_hist()\n  local e = summary.errors"
        )
    return "\n".join(lines) + done


def hist_stats(text: str) -> dict[str, float]:
    """Count, mean and percentiles (µs) of a ``us:count,...`` histogram."""
    pairs = sorted(
        (int(k), int(v)) for k, v in (item.split(":") for item in text.split(",") if item)
    )
    total = sum(v for _, v in pairs)
    out: dict[str, float] = {"count": total}
    if not total:
        return {**out, "mean": 0, "p50": 0, "p75": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0}
    out["mean"] = sum(k * v for k, v in pairs) / total
    out["max"] = pairs[-1][0]
    for name, q in (("p50", 50), ("p75", 75), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        want, seen = q / 100 * total, 0
        for k, v in pairs:
            seen += v
            if seen >= want:
                out[name] = k
                break
    return out


def _run_wrk(argv: list[str], timeout: float) -> str:
    """Run wrk; when the script stopped its thread (a request count was
    reached), interrupt wrk's main thread, which otherwise sleeps out ``-d``."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("WRK_STOPPED"):
                proc.send_signal(signal.SIGINT)
            if time.monotonic() > deadline:
                break
        proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines)


@dataclass
class Bench:
    """What one run needs: settings, cores, the upstream, a scratch dir."""

    settings: Settings
    cpus: dict[str, int | None]
    tmp: Path
    upstream: Server | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    _scripts: int = 0

    def wrk(
        self,
        port: int,
        reqs: Sequence[Req],
        conns: int,
        duration: int,
        *,
        watch: Sequence[int] = (),
        delay_ms: float | None = None,
        stop_after: int | None = None,
        timed: bool = False,
        label: str = "",
    ) -> dict[str, Any]:
        """Run wrk and return its figures plus the CPU use of ``watch``.

        ``timed``: one thread per connection and latency percentiles of our
        own (see ``_LUA_TIMING``); otherwise one thread and wrk's own.
        """
        self._scripts += 1
        script = self.tmp / f"wrk{self._scripts}.lua"
        script.write_text(lua_script(reqs, delay_ms, stop_after, timed))
        argv = pinned(
            self.cpus["load"],
            [
                "wrk",
                f"-t{conns if timed else 1}",
                f"-c{conns}",
                f"-d{duration}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
            ],
        )
        pids = list(watch)
        up_pid = self.upstream.pid if self.upstream is not None else None
        before = [cpu_seconds(p) for p in pids]
        up_before = cpu_seconds(up_pid) if up_pid else 0.0
        sys_before, kids_before, t0 = system_busy(), children_cpu(), time.monotonic()
        stdout = _run_wrk(argv, duration + 120)
        wall = time.monotonic() - t0
        wrk_cpu = children_cpu() - kids_before
        sys_busy = system_busy() - sys_before
        cpu = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        up_cpu = (cpu_seconds(up_pid) - up_before) if up_pid else 0.0
        line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result:\n{stdout}")
        result: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
        if timed:
            hist = next((x for x in stdout.splitlines() if x.startswith("WRK_HIST ")), None)
            if hist is None:
                raise RuntimeError(f"wrk gave no latency histogram:\n{stdout}")
            keys = ("mean", "p50", "p75", "p90", "p99", "p999", "max")
            result["wrk_corrected"] = {k: result[k] for k in keys}
            raw = hist_stats(hist[len("WRK_HIST ") :])
            result.update({k: raw[k] for k in keys})
            result["latency_source"] = "per-request (uncorrected)"
        else:
            result["latency_source"] = "wrk (coordinated-omission corrected)"
        seconds = result["duration_us"] / 1e6
        result["rps"] = result["requests"] / seconds if seconds else 0.0
        result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
        result["cpu_s"] = cpu
        result["wrk_cpu_s"] = wrk_cpu
        result["upstream_cpu_s"] = up_cpu
        result["wall_s"] = wall
        ours = wrk_cpu + sum(cpu) + (up_cpu if up_pid not in pids else 0.0)
        ncpu = os.cpu_count() or 1
        result["other_load_pct"] = max(0.0, (sys_busy - ours) / wall / ncpu * 100)
        result["label"] = label
        result["conns"] = conns
        if delay_ms is not None:
            result["delay_ms"] = delay_ms
        self.runs.append(result)
        if result["errors"]:
            print(
                f"    ! {label}: {result['errors']} errors "
                f"(status {result['status']}, timeout {result['timeout']}, "
                f"connect {result['connect']}, read {result['read']})",
                flush=True,
            )
        return result

    def client(self, mode: str, port: int, req: Req, n: int, **extra: Any) -> dict[str, Any]:
        spec = self.tmp / f"req{abs(hash(req))}.json"
        spec.write_text(json.dumps(req.spec()))
        argv = pinned(
            self.cpus["load"],
            [PY, str(BENCH / "stream_client.py"), mode, "--port", str(port)]
            + ["--request-file", str(spec), "--n", str(n)]
            + [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()],
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"stream_client {mode} failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- targets ------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # direct, reference, bridge-httpx, bridge-aiohttp
    port: int
    server: Server | None  # None for direct (the upstream itself)

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None


def start_target(
    bench: Bench,
    name: str,
    upstream_port: int,
    keep_records: int | None = None,
    workers: int = 1,
    cpus: int | str | None = None,
) -> Target:
    port = free_port()
    url = f"http://127.0.0.1:{upstream_port}"
    if name == "reference":
        argv = [PY, str(BENCH / "reference_proxy.py")]
    elif name in ("floor", "floor-governed"):  # bench/underload.py only
        argv = [PY, str(BENCH / "floor_bridge.py")]
        if name == "floor-governed":
            argv.append("--governed")
    else:
        argv = [PY, str(BENCH / "bridge_host.py"), "--seam", name.removeprefix("bridge-")]
        if keep_records is not None:
            argv += ["--keep", str(keep_records)]
        if workers > 1:
            argv += ["--workers", str(workers)]
    argv += ["--port", str(port), "--upstream-url", url]
    server = Server(name, argv, port, bench.cpus["sut"] if cpus is None else cpus, bench.tmp)
    return Target(name, port, server)


def start_upstream(bench: Bench, cpu: int | None, slow_interval: float = 10.0) -> Server:
    port = free_port()
    argv = [PY, str(BENCH / "upstream.py"), "--port", str(port)]
    argv += ["--events", str(bench.settings.events), "--slow-interval", str(slow_interval)]
    return Server("upstream", argv, port, cpu, bench.tmp)


# -- figures --------------------------------------------------------------------------


def measure_upstream_alone(bench: Bench) -> dict[str, Any]:
    """The fake upstream on its own core, loaded by wrk from another."""
    s = bench.settings
    server = start_upstream(bench, bench.cpus["sut"])
    try:
        pid = [server.pid]
        bench.wrk(server.port, json_mix("direct"), 64, 1, label="upstream alone, warm-up")
        js = bench.wrk(
            server.port,
            json_mix("direct"),
            64,
            s.alone_duration,
            watch=pid,
            label="upstream alone, json",
        )
        st = bench.wrk(
            server.port,
            [make_req("direct", "anthropic", stream=True)],
            s.stream_conns,
            s.alone_duration,
            watch=pid,
            label="upstream alone, stream",
        )
    finally:
        server.stop()
    return {
        "json_rps_c64": js["rps"],
        "json_p99_ms_c64": js["p99"] / 1000,
        "json_cpu_us_per_req": js["cpu_s"][0] / js["requests"] * 1e6 if js["requests"] else None,
        "stream_rps": st["rps"],
        "stream_events_per_s": st["rps"] * s.events,
        "errors": js["errors"] + st["errors"],
    }


def _per_req_cpu(result: dict[str, Any]) -> float | None:
    if not result["requests"] or not result["cpu_s"]:
        return None
    return float(result["cpu_s"][0] / result["requests"] * 1e6)


def _watch(target: Target, bench: Bench) -> list[int]:
    if target.pid is not None:
        return [target.pid]
    assert bench.upstream is not None
    return [bench.upstream.pid]


#: Offered rates tried, as fractions of the closed-loop rate, when the closed
#: loop's p99 is over the limit.
THROTTLE_STEPS = (0.9, 0.75, 0.6, 0.45, 0.3)


def max_rps(bench: Bench, t: Target, idle_latency_ms: float) -> dict[str, Any]:
    """Requests/s at 64 connections with p99 under 100 ms.

    Closed loop first. If its p99 is over the limit, each connection waits a
    random (exponential) time before each request, so that together they
    offer a given rate, stepping down from 90% of the closed-loop rate until
    p99 is under the limit. ``idle_latency_ms`` (the 1-connection mean) is
    taken off each connection's cycle when computing its wait.

    The figure is the rate of the first run that met the limit; when none
    did, the run with the lowest p99 (``met`` False, shown with ``!``).
    """
    s = bench.settings
    conns = s.throughput_conns
    reqs = json_mix(t.name)
    watch = _watch(t, bench)
    first = bench.wrk(
        t.port, reqs, conns, s.duration, watch=watch, timed=True, label=f"{t.name} max c64"
    )
    tried = [first]
    chosen = first if first["p99"] < P99_LIMIT_US else None
    for fraction in THROTTLE_STEPS[: s.max_throttle_steps] if chosen is None else ():
        rate = first["rps"] * fraction
        delay_ms = max(0.0, conns / rate * 1000 - idle_latency_ms)
        run = bench.wrk(
            t.port,
            reqs,
            conns,
            s.duration,
            watch=watch,
            delay_ms=delay_ms,
            timed=True,
            label=f"{t.name} max c64 offered {rate:.0f}/s",
        )
        run["offered_rps"] = rate
        tried.append(run)
        if run["p99"] < P99_LIMIT_US:
            chosen = run
            break
    met = chosen is not None
    best = chosen if chosen is not None else min(tried, key=lambda r: r["p99"])
    return {
        "closed": first,
        "chosen": best,
        "met": met,
        "rps": best["rps"],
        "p99_ms": best["p99"] / 1000,
        "steps": [
            {"offered_rps": r.get("offered_rps"), "rps": r["rps"], "p50": r["p50"], "p99": r["p99"]}
            for r in tried
        ],
    }


def measure_targets(bench: Bench, targets: list[Target]) -> dict[str, dict[str, Any]]:
    s = bench.settings
    res: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    log("  warm-up")
    for t in targets:
        bench.wrk(t.port, json_mix(t.name), 64, s.warmup, label=f"{t.name} warm-up")
        for api in APIS if s.stream_warmup else ():
            bench.wrk(
                t.port,
                [make_req(t.name, api, stream=True)],
                s.stream_conns,
                1,
                label=f"{t.name} warm-up {api} stream",
            )
    for conns in s.latency_conns:
        log(f"  (1) latency, non-streaming, {conns} connection(s)")
        for t in targets:
            r = bench.wrk(
                t.port,
                json_mix(t.name),
                conns,
                s.duration,
                watch=_watch(t, bench),
                timed=True,
                label=f"{t.name} latency c{conns}",
            )
            res[t.name][f"latency_c{conns}"] = r
    log("  (2) max requests/s at 64 connections, p99 < 100 ms")
    for t in targets:
        idle = res[t.name][f"latency_c{min(s.latency_conns)}"]["mean"] / 1000
        res[t.name]["max_rps"] = max_rps(bench, t, idle)
    for api in APIS:
        log(f"  (3) streaming {api}: relayed events/s, time to first byte")
        for t in targets:
            r = bench.wrk(
                t.port,
                [make_req(t.name, api, stream=True)],
                s.stream_conns,
                s.stream_duration,
                watch=_watch(t, bench),
                label=f"{t.name} stream {api}",
            )
            res[t.name][f"stream_{api}"] = r
        for t in targets:
            req = make_req(t.name, api, stream=True, marker="bench-ttfb")
            got = bench.client("ttfb", t.port, req, s.ttfb_n, warmup=min(20, max(5, s.ttfb_n // 4)))
            if got["events"]["min"] != s.events or got["events"]["max"] != s.events:
                log(f"  ! {t.name} {api}: streams had {got['events']} events, not {s.events}")
            res[t.name][f"ttfb_{api}"] = got
    for t in targets:
        if t.server is not None and t.name.startswith("bridge-"):
            res[t.name]["records"] = t.server.get_json("/_bench/stats")
    return res


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (uvicorn's workers), without
    multiprocessing's idle resource tracker."""
    out = [pid]
    for parent in out:  # grows as children are found
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    out += [int(child) for child in f.read().split()]
        except OSError:
            continue

    def tracker(p: int) -> bool:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                return b"resource_tracker" in f.read()
        except OSError:
            return True

    return [p for p in out if p == pid or not tracker(p)]


def worker_cores(bench: Bench) -> str:
    """Where a multi-worker bridge runs: every core but the load side's, when
    that leaves two; otherwise (2 cores) both, sharing one with the load side."""
    free = [c for c in ALL_CPUS if c not in (bench.cpus["load"], bench.cpus["upstream"])]
    return ",".join(str(c) for c in (free if len(free) >= 2 else ALL_CPUS))


def measure_workers(bench: Bench, upstream_port: int) -> dict[str, Any]:
    """(6) The default bridge under uvicorn with 1 and with 2 worker processes:
    non-streaming requests/s at 64 connections (closed loop) and Anthropic
    streams at 16, with the CPU each worker used. On a 2-core machine the
    load side (wrk, the fake upstream) shares a core with the second worker,
    so the raw speed-up understates what a second core gives; CPU per request
    is the comparable figure."""
    s = bench.settings
    seams = available_seams()
    seam = "aiohttp" if "aiohttp" in seams else seams[0]
    out: dict[str, Any] = {
        "seam": seam,
        "load_cores": sorted({bench.cpus["load"], bench.cpus["upstream"]} - {None}),
    }
    for workers in (1, 2):
        cores = str(bench.cpus["sut"]) if workers == 1 else worker_cores(bench)
        target = start_target(bench, f"bridge-{seam}", upstream_port, workers=workers, cpus=cores)
        assert target.server is not None
        try:
            deadline = time.monotonic() + 20
            pids = process_tree(target.server.pid)
            while len(pids) < workers + (workers > 1) and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = process_tree(target.server.pid)
            label = f"{workers} worker(s)"
            bench.wrk(target.port, json_mix(target.name), 64, s.warmup, label=f"{label} warm-up")
            js = bench.wrk(
                target.port,
                json_mix(target.name),
                64,
                s.duration,
                watch=pids,
                label=f"{label} json",
            )
            st = bench.wrk(
                target.port,
                [make_req(target.name, "anthropic", stream=True)],
                s.stream_conns,
                s.stream_duration,
                watch=pids,
                label=f"{label} stream anthropic",
            )
        finally:
            target.server.stop()
        figures: dict[str, Any] = {"cores": cores, "pids": len(pids)}
        for key, r, per in (("json", js, 1), ("stream_anthropic", st, s.events)):
            cpu = sum(r["cpu_s"])
            seconds = r["wall_s"] or 1.0
            # The supervisor (pids[0] with 2 workers) only watches its workers.
            worker_cpu = r["cpu_s"][1:] if workers > 1 else r["cpu_s"]
            figures[key] = {
                "rps": r["rps"],
                "events_per_s": r["rps"] * per if per > 1 else None,
                "cpu_us_per_req": cpu / r["requests"] * 1e6 if r["requests"] else None,
                "worker_busy_pct": [round(c / seconds * 100, 1) for c in worker_cpu],
                "errors": r["errors"],
            }
        out[str(workers)] = figures
    return out


def measure_pricing_policy(bench: Bench) -> dict[str, Any]:
    """(7) CPU per non-streaming request in process (bench/inprocess.py):
    the bridge without prices, with its default price book, and with a
    memory-store policy too (when the bridge has ``policy=``)."""
    n = 500 if bench.settings.quick else 4000
    argv = pinned(
        bench.cpus["sut"],
        [
            PY,
            str(BENCH / "inprocess.py"),
            "--json-only",
            "--n",
            str(n),
            "--configs",
            "noprice,plain,policy",
        ],
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"inprocess.py failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("json us/request"))
    noprice, plain, policy = (float(v) for v in line.split()[2:5])
    import inspect

    from aibridge_asgi import create_bridge

    has_policy = "policy" in inspect.signature(create_bridge).parameters
    return {
        "requests": n,
        "cpu_us_no_prices": noprice,
        "cpu_us_prices": plain,
        "cpu_us_prices_policy": policy if has_policy else None,
        "added_us_pricing": plain - noprice,
        "added_us_pricing_policy": (policy - noprice) if has_policy else None,
    }


def format_extra(workers: dict[str, Any], costs: dict[str, Any]) -> str:
    lines = [f"(6) workers ({workers['seam']} seam; load side on core(s) {workers['load_cores']}):"]
    for n in ("1", "2"):
        w = workers[n]
        js, st = w["json"], w["stream_anthropic"]
        lines.append(
            f"    {n} worker(s) on core(s) {w['cores']}: json {js['rps']:,.0f} req/s c=64,"
            f" {js['cpu_us_per_req']:.0f} us CPU/req, workers busy {js['worker_busy_pct']} %;"
            f" anthropic streams {st['rps']:,.0f}/s, {st['cpu_us_per_req']:.0f} us CPU/stream"
        )
    policy = costs["added_us_pricing_policy"]
    lines.append(
        "(7) in process, CPU us per non-streaming request: "
        f"no prices {costs['cpu_us_no_prices']:.1f}, prices {costs['cpu_us_prices']:.1f}"
        + (
            f", prices + memory-store policy {costs['cpu_us_prices_policy']:.1f}"
            f" (added {policy:.1f} us; target < 40)"
            if policy is not None
            else " (no policy= in this bridge)"
        )
    )
    return "\n".join(lines)


def measure_memory(bench: Bench, name: str, upstream_port: int) -> dict[str, Any]:
    """Fresh process: RSS after the first requests vs after many; then the
    RSS increase with many concurrent slow streams open."""
    s = bench.settings
    # The recorder keeps the newest records only; make it full (4 records a
    # request) before the first reading, so that growth is the bridge's own.
    t = start_target(bench, name, upstream_port, keep_records=2 * s.growth_first)
    assert t.server is not None and t.pid is not None
    try:
        reqs = json_mix(name)
        first = bench.wrk(
            t.port,
            reqs,
            s.growth_conns,
            600,
            stop_after=s.growth_first,
            watch=[t.pid],
            label=f"{name} growth first",
        )
        time.sleep(s.settle)
        rss_first = rss_kib(t.pid)
        count = s.growth_total - s.growth_first
        if first["rps"] and count / first["rps"] > s.growth_max_seconds:
            count = int(first["rps"] * s.growth_max_seconds)
            log(f"  {name} is slow: growth run cut to {count + s.growth_first:,} requests")
        rest = bench.wrk(
            t.port,
            reqs,
            s.growth_conns,
            1200,
            stop_after=count,
            watch=[t.pid],
            label=f"{name} growth rest",
        )
        time.sleep(s.settle)
        rss_total = rss_kib(t.pid)
        total_requests = first["requests"] + rest["requests"]
        idle = rss_kib(t.pid)
        spec = bench.tmp / f"slow-{name}.json"
        spec.write_text(
            json.dumps(make_req(name, "anthropic", stream=True, marker="bench-slow").spec())
        )
        argv = pinned(
            bench.cpus["load"],
            [
                *(PY, str(BENCH / "stream_client.py"), "hold", "--port", str(t.port)),
                *("--request-file", str(spec), "--n", str(s.slow_streams), "--hold-max", "120"),
            ],
        )
        holder = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert holder.stdout is not None and holder.stdin is not None
        ready = holder.stdout.readline()
        if not ready.startswith("READY "):
            holder.kill()
            raise RuntimeError(f"slow-stream client failed: {ready!r}\n{t.server.log_tail()}")
        info = json.loads(ready[6:])
        time.sleep(s.settle)
        rss_open = rss_kib(t.pid)
        holder.stdin.write("close\n")
        holder.stdin.flush()
        holder.stdout.readline()
        holder.wait(30)
        time.sleep(s.settle)
        rss_closed = rss_kib(t.pid)
        opened = info["opened"]
        return {
            "requests_first": first["requests"],
            "requests_total": total_requests,
            "rss_first_kib": rss_first,
            "rss_total_kib": rss_total,
            "growth_kib": rss_total - rss_first,
            "growth_rps": rest["rps"],
            "slow_streams_opened": opened,
            "slow_streams_failed": info["failed"],
            "rss_idle_kib": idle,
            "rss_open_kib": rss_open,
            "rss_closed_kib": rss_closed,
            "per_stream_kib": (rss_open - idle) / opened if opened else None,
            "errors": first["errors"] + rest["errors"],
        }
    finally:
        t.server.stop()


# -- table --------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    values: dict[str, float | None]  # by target; for "added" rows the added value
    raw_direct: float | None = None  # "added" rows: the direct baseline
    added: bool = False
    fmt: str = "{:.3f}"
    higher_is_better: bool = False
    flagged: dict[str, bool] = field(default_factory=dict)  # shown with "!"


def _added(res: dict[str, dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> Row:
    direct = get(res["direct"])
    values: dict[str, float | None] = {"direct": None}
    for name, r in res.items():
        if name != "direct":
            values[name] = get(r) - direct
    return Row("", "", values, raw_direct=direct, added=True)


def build_rows(
    res: dict[str, dict[str, Any]], memory: dict[str, dict[str, Any]], s: Settings
) -> list[Row]:
    rows: list[Row] = []

    def add(row: Row, key: str, label: str, fmt: str = "{:.3f}", higher: bool = False) -> None:
        row.key, row.label, row.fmt, row.higher_is_better = key, label, fmt, higher
        rows.append(row)

    for conns in s.latency_conns:
        for p in ("p50", "p99"):
            row = _added(res, lambda r, c=conns, p=p: r[f"latency_c{c}"][p] / 1000)
            add(row, f"latency_c{conns}_{p}_added_ms", f"(1) added {p} latency c={conns}, ms")
    values = {n: r["max_rps"]["rps"] for n, r in res.items()}
    flagged = {n: not r["max_rps"]["met"] for n, r in res.items()}
    row = Row("", "", values, flagged=flagged)
    add(row, "max_rps_c64", "(2) max req/s c=64, p99<100ms", "{:.0f}", True)
    values = {n: r["max_rps"]["p99_ms"] for n, r in res.items()}
    add(Row("", "", values), "max_rps_c64_p99_ms", "    p99 at that rate, ms", "{:.1f}")
    for api in APIS:
        row = _added(res, lambda r, a=api: r[f"ttfb_{a}"]["ttfb_us"]["p50"] / 1000)
        add(row, f"ttfb_{api}_added_ms", f"(3) added TTFB p50 {api}, ms")
    for api in APIS:
        values = {n: r[f"stream_{api}"]["rps"] * s.events for n, r in res.items()}
        label = f"(3) events/s {api} ({s.events}/stream, c={s.stream_conns})"
        add(Row("", "", values), f"events_per_s_{api}", label, "{:.0f}", True)
    values = {n: _per_req_cpu(r["max_rps"]["closed"]) for n, r in res.items()}
    add(Row("", "", values), "cpu_us_per_req", "(4) CPU us/request, non-streaming c=64", "{:.0f}")
    for api in APIS:
        values = {n: _per_req_cpu(r[f"stream_{api}"]) for n, r in res.items()}
        add(Row("", "", values), f"cpu_us_per_stream_{api}", f"(4) CPU us/stream {api}", "{:.0f}")
    mem_names = ["direct", *memory]

    def mem_row(key: str, label: str, get: Callable[[dict[str, Any]], Any], fmt: str) -> None:
        values = {n: (get(memory[n]) if n in memory else None) for n in mem_names}
        add(Row("", "", values), key, label, fmt)

    mem_row(
        "kib_per_open_stream",
        f"(5) KiB RSS per open slow stream ({s.slow_streams})",
        lambda m: m["per_stream_kib"],
        "{:.1f}",
    )
    mem_row(
        "rss_after_first_mib",
        f"(5) RSS MiB after {s.growth_first:,} requests",
        lambda m: m["rss_first_kib"] / 1024,
        "{:.1f}",
    )
    mem_row(
        "growth_requests",
        "(5) requests of the growth run",
        lambda m: m["requests_total"],
        "{:,.0f}",
    )
    mem_row(
        "rss_after_total_mib",
        f"(5) RSS MiB after them (target {s.growth_total:,})",
        lambda m: m["rss_total_kib"] / 1024,
        "{:.1f}",
    )
    mem_row("rss_growth_mib", "(5) RSS growth, MiB", lambda m: m["growth_kib"] / 1024, "{:.1f}")
    return rows


def _ratio(row: Row, name: str) -> float | None:
    ref, val = row.values.get("reference"), row.values.get(name)
    if ref is None or val is None or ref <= 0 or (row.added and val < 0):
        return None
    return val / ref


def format_table(rows: list[Row], names: list[str]) -> str:
    bridges = [n for n in names if n.startswith("bridge-")]
    header = ["figure", *names, *(f"{b.removeprefix('bridge-')}/ref" for b in bridges)]
    lines: list[list[str]] = [header]
    for row in rows:
        cells = [row.label]
        for n in names:
            if n == "direct" and row.added:
                v = row.raw_direct
                cells.append("(" + row.fmt.format(v) + ")" if v is not None else "-")
            else:
                v = row.values.get(n)
                cell = row.fmt.format(v) if v is not None else "-"
                cells.append(cell + ("!" if row.flagged.get(n) else ""))
        for b in bridges:
            r = _ratio(row, b)
            cells.append(f"{r:.2f}" if r is not None else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        text = "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(line)
        )
        out.append(text.rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def check_targets(rows: list[Row], names: list[str]) -> list[dict[str, Any]]:
    """The issue's targets, per bridge seam."""
    by_key = {r.key: r for r in rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, what: str, value: float | None, ok: bool | None) -> None:
        checks.append({"seam": name, "target": what, "value": value, "met": ok})

    for b in (n for n in names if n.startswith("bridge-")):
        r = _ratio(by_key["max_rps_c64"], b)
        check(b, "non-streaming req/s >= 70% of reference", r, r is not None and r >= 0.7)
        row = by_key["latency_c1_p50_added_ms"]
        bv, rv = row.values.get(b), row.values.get("reference")
        diff = bv - rv if bv is not None and rv is not None else None
        check(
            b,
            "added p50 latency c=1 within 0.3 ms of reference (ms over)",
            diff,
            diff is not None and diff <= 0.3,
        )
        for api in APIS:
            r = _ratio(by_key[f"events_per_s_{api}"], b)
            check(b, f"{api} events/s >= 90% of reference", r, r is not None and r >= 0.9)
            v = by_key[f"ttfb_{api}_added_ms"].values.get(b)
            check(b, f"{api} added TTFB < 1 ms", v, v is not None and v < 1.0)
        v = by_key["kib_per_open_stream"].values.get(b)
        check(b, "< 50 KB per open idle stream (KiB)", v, v is not None and v * 1.024 < 50)
        v = by_key["rss_growth_mib"].values.get(b)
        check(b, "no RSS growth over the requests (< 5 MiB, MiB)", v, v is not None and v < 5)
    return checks


def format_checks(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        value = "-" if c["value"] is None else f"{c['value']:.3f}"
        mark = "met" if c["met"] else "NOT MET"
        lines.append(f"  {c['seam']:<15} {c['target']:<62} {value:>9}  {mark}")
    return "\n".join(lines)


# -- orchestration ------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {}
    for dist in (
        "aibridge_asgi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "httpx",
        "aiohttp",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    out["wrk"] = (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else ""
    return out


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench: {', '.join(missing)} not found on PATH. Install it first: "
            "apt-get install -y wrk (taskset is in util-linux)."
        )
    for module in ("uvloop", "httptools", "aiohttp", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            raise SystemExit(
                f"bench: Python package {module!r} is missing: pip install -e '.[bench]'"
            ) from None


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@contextlib.contextmanager
def _servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                server.stop()


def run(settings: Settings) -> dict[str, Any]:
    """Run the whole benchmark; print progress and the table; return the results."""
    check_tools()
    _raise_fd_limit()
    seams = settings.seams or available_seams()
    cpus = plan_cpus()
    if cpus["load"] is not None:
        os.sched_setaffinity(0, {cpus["load"]})
    started_at = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    load_before = os.getloadavg()
    missing = [s for s in SEAM_CLASSES if s not in available_seams()]
    print(
        f"bench: seams {', '.join(seams)}"
        + (f" (not in aibridge_asgi.upstream: {', '.join(missing)})" if missing else "")
        + f"; cores: load generator {cpus['load']}, upstream {cpus['upstream']}, "
        f"system under test {cpus['sut']}; load average {load_before[0]:.2f}"
        + (f"; niceness {NICE}" if NICE else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="aibridge-bench-") as tmpdir, _servers() as servers:
        bench = Bench(settings, cpus, Path(tmpdir))
        log("upstream alone (own core, wrk on another):")
        alone = measure_upstream_alone(bench)
        print(
            f"  json: {alone['json_rps_c64']:,.0f} req/s at c=64"
            f" (p99 {alone['json_p99_ms_c64']:.2f} ms,"
            f" {alone['json_cpu_us_per_req']:.0f} us CPU/req); "
            f"streams: {alone['stream_rps']:,.0f}/s = {alone['stream_events_per_s']:,.0f} events/s",
            flush=True,
        )
        upstream = start_upstream(bench, cpus["upstream"])
        servers.append(upstream)
        bench.upstream = upstream
        targets = [Target("direct", upstream.port, None)]
        for name in ["reference", *(f"bridge-{s}" for s in seams)]:
            target = start_target(bench, name, upstream.port)
            assert target.server is not None
            servers.append(target.server)
            targets.append(target)
        log("figures 1-4 (targets interleaved per figure):")
        res = measure_targets(bench, targets)
        for target in targets:
            if target.server is not None:
                target.server.stop()
                servers.remove(target.server)
        log("figure 5, memory (a fresh process per target):")
        memory: dict[str, dict[str, Any]] = {}
        for name in [t.name for t in targets if t.server is not None]:
            log(f"  {name}")
            memory[name] = measure_memory(bench, name, upstream.port)
        log("(6) 1 and 2 workers:")
        workers = measure_workers(bench, upstream.port)
        log("(7) pricing and policy, in process:")
        costs = measure_pricing_policy(bench)
        runs = bench.runs

    names = [t.name for t in targets]
    rows = build_rows(res, memory, settings)
    checks = check_targets(rows, names)
    other = [r["other_load_pct"] for r in runs if r["wall_s"] > 0.5]
    errors = sum(r["errors"] for r in runs)
    core0 = [  # proxied runs only: direct ones saturate the load core by design
        (r["wrk_cpu_s"] + r["upstream_cpu_s"]) / r["wall_s"] * 100
        for r in runs
        if r["wall_s"] > 0.5 and not r["label"].startswith(("upstream alone", "direct"))
    ]
    meta = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t_start, 1),
        "quick": settings.quick,
        "machine": _machine(),
        "versions": _versions(),
        "cpus": cpus,
        "nice": NICE,
        "seams": seams,
        "seams_missing": missing,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "other_load_pct_mean": sum(other) / len(other) if other else None,
        "other_load_pct_max": max(other) if other else None,
        "load_core_busy_pct_max": max(core0) if core0 else None,
        "wrk_errors": errors,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()},
    }
    table = format_table(rows, names)
    out = {
        "meta": meta,
        "upstream_alone": alone,
        "table": [
            {
                "key": r.key,
                "label": r.label,
                "values": r.values,
                "direct_baseline": r.raw_direct,
                "added": r.added,
                "ratio_to_reference": {n: _ratio(r, n) for n in names if n.startswith("bridge-")},
                "not_met": [n for n, flag in r.flagged.items() if flag],
            }
            for r in rows
        ],
        "targets": checks,
        "figures": res,
        "memory": memory,
        "workers": workers,
        "pricing_policy": costs,
        "table_text": table,
    }
    print()
    print(table)
    print(
        "\n(added rows: the direct column is the raw direct-to-upstream value in brackets, the\n"
        " others what each proxy adds to it; x/ref: the bridge's figure over the reference's;\n"
        " !: p99 stayed over 100 ms at every rate tried, the figure is the run with the lowest p99)"
    )
    print()
    print(format_extra(workers, costs))
    print("\ntargets (issue 6):")
    print(format_checks(checks))
    print(
        f"\nload: average {load_before[0]:.2f} before, {meta['load_average_after'][0]:.2f} after;"
        f" other processes used {meta['other_load_pct_mean'] or 0:.1f}% of the machine on"
        f" average (max {meta['other_load_pct_max'] or 0:.1f}%) during the runs;"
        f" load-generator core (wrk + upstream) busy at most"
        f" {meta['load_core_busy_pct_max'] or 0:.0f}% in proxied runs;"
        f" wrk errors: {errors}; {meta['seconds']:.0f} s",
    )
    for name, r in res.items():
        if "records" in r:
            print(f"{name} records: {r['records']['records']}, ended: {r['records']['ended']}")
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"written to {settings.out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run of a few seconds per figure"
    )
    parser.add_argument(
        "--seams", help="comma-separated upstream seams to bridge through (default: all available)"
    )
    parser.add_argument("--out", type=Path, help="where to write the JSON results")
    parser.add_argument("--events", type=int, help="events per SSE stream (default 200)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run")
    parser.add_argument("--growth-requests", type=int, help="requests of the growth test")
    parser.add_argument("--slow-streams", type=int, help="open slow streams of the memory test")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every benchmark process at this niceness (e.g. -10, as root) so that "
        "other work on the machine disturbs the figures less",
    )
    args = parser.parse_args(argv)
    settings = Settings.quick_settings() if args.quick else Settings()
    if args.seams:
        settings.seams = [s.strip() for s in args.seams.split(",") if s.strip()]
        unknown = [s for s in settings.seams if s not in SEAM_CLASSES]
        if unknown:
            parser.error(f"unknown seams {unknown}; known: {sorted(SEAM_CLASSES)}")
    if args.out:
        settings.out = args.out
    if args.events:
        settings.events = args.events
    if args.duration:
        settings.duration = settings.stream_duration = args.duration
    if args.growth_requests:
        settings.growth_total = args.growth_requests
    if args.slow_streams:
        settings.slow_streams = args.slow_streams
    if args.nice:
        global NICE
        NICE = args.nice
    run(settings)


if __name__ == "__main__":
    main()
