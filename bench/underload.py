"""CPU per request under load, for a few targets and cases, in about a minute.

Starts the fake upstream and each target as ``run.py`` does (same pinning:
the target on its own core, wrk and the upstream on the other), drives each
case with wrk for ``--duration`` seconds, and prints requests/s and the
target's CPU per request. With ``--py-spy DIR`` (py-spy on PATH) each run of
a bridge is also sampled, one folded-stack file per target and case, for a
profile taken under load rather than in process.

    .venv/bin/python bench/underload.py --targets reference,bridge-aiohttp \\
        --cases json,anthropic,chat,responses

Targets: ``reference``, ``floor`` (``floor_bridge.py``), ``floor-governed``
(``floor_bridge.py --governed``) or ``bridge-SEAM``.
Cases: ``json`` (the non-streaming mix at 64 connections) or an API name
(its 200-event stream at 16 connections).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import run as R

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="reference,bridge-aiohttp")
    parser.add_argument("--cases", default="json," + ",".join(R.APIS))
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--py-spy", dest="py_spy", type=Path, default=None)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") if args.py_spy else None
    if args.py_spy and spy is None:
        parser.error("--py-spy: py-spy is not on PATH")
    R.check_tools()
    R._raise_fd_limit()
    cpus = R.plan_cpus()
    if cpus["load"] is not None:
        os.sched_setaffinity(0, {cpus["load"]})
    bench = R.Bench(R.Settings(), cpus, Path(tempfile.mkdtemp(prefix="underload-")))
    upstream = bench.upstream = R.start_upstream(bench, cpus["upstream"])
    try:
        for name in args.targets.split(","):
            target = R.start_target(bench, name, upstream.port)
            assert target.server is not None
            try:
                bench.wrk(target.port, R.json_mix(name), 64, 2, label=f"{name} warm-up")
                for case in args.cases.split(","):
                    if case == "json":
                        reqs, conns = R.json_mix(name), 64
                    else:
                        reqs, conns = [R.make_req(name, case, stream=True)], R.Settings.stream_conns
                        bench.wrk(target.port, reqs, conns, 1, label=f"{name} {case} warm-up")
                    sampler = None
                    if spy is not None and args.py_spy is not None:
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        out = args.py_spy / f"{name}-{case}.txt"
                        record = ["record", "-p", str(target.pid), "-d", str(args.duration)]
                        # --nonblocking: pausing the process to sample it (the
                        # default) lands the samples on system calls in this VM.
                        record += ["-r", "200", "-f", "raw", "--nonblocking"]
                        sampler = subprocess.Popen(
                            [spy, *record, "-o", str(out)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    result = bench.wrk(
                        target.port, reqs, conns, args.duration, watch=[target.server.pid]
                    )
                    if sampler is not None:
                        sampler.wait()
                    cpu = result["cpu_s"][0] / result["requests"] * 1e6 if result["requests"] else 0
                    print(
                        f"{name:16} {case:10} {result['rps']:8.0f} req/s  {cpu:7.1f} us CPU/request"
                        f"  other load {result['other_load_pct']:.0f} %  errors {result['errors']}",
                        flush=True,
                    )
            finally:
                target.server.stop()
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
