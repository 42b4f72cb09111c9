"""The benchmark harness still runs end to end (bench/run.py --quick).

Asserts that every figure of the table came out as a number, not that it is
fast. Needs ``wrk`` (apt-get install -y wrk) and the ``bench`` extra
(uvloop, httptools, aiohttp, uvicorn); installs nothing itself.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the benchmark tools: deselected by -m 'not slow'.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"

#: Every row the table must have (the bridge seams come on top).
EXPECTED_ROWS = {
    "latency_c1_p50_added_ms",
    "latency_c1_p99_added_ms",
    "latency_c32_p50_added_ms",
    "latency_c32_p99_added_ms",
    "max_rps_c64",
    "max_rps_c64_p99_ms",
    "ttfb_anthropic_added_ms",
    "ttfb_chat_added_ms",
    "ttfb_responses_added_ms",
    "events_per_s_anthropic",
    "events_per_s_chat",
    "events_per_s_responses",
    "cpu_us_per_req",
    "cpu_us_per_stream_anthropic",
    "cpu_us_per_stream_chat",
    "cpu_us_per_stream_responses",
    "kib_per_open_stream",
    "rss_after_first_mib",
    "growth_requests",
    "rss_after_total_mib",
    "rss_growth_mib",
}

#: Rows that have no direct-to-upstream figure (the bridge's own memory).
NO_DIRECT = {
    "kib_per_open_stream",
    "rss_after_first_mib",
    "growth_requests",
    "rss_after_total_mib",
    "rss_growth_mib",
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_bench_quick_run_produces_every_figure(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail(
            "wrk is not installed, so the benchmark harness cannot run: "
            "apt-get install -y wrk (scripts/test installs it)"
        )
    missing = [
        m for m in ("uvloop", "httptools", "aiohttp", "uvicorn") if not importlib.util.find_spec(m)
    ]
    if missing:
        pytest.fail(f"the bench extra is not installed ({missing}): pip install -e '.[bench]'")

    out = tmp_path / "quick.json"
    try:
        done = subprocess.run(
            [sys.executable, str(RUN), "--quick", "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"bench/run.py --quick took over 180 s:\n{exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, f"bench/run.py --quick failed:\n{done.stdout}\n{done.stderr}"
    assert "figure" in done.stdout  # the table was printed

    result = json.loads(out.read_text())
    seams = result["meta"]["seams"]
    assert seams, "no upstream seam was benchmarked"
    targets = ["direct", "reference", *(f"bridge-{s}" for s in seams)]
    rows = {row["key"]: row for row in result["table"]}
    assert set(rows) >= EXPECTED_ROWS, f"rows missing: {EXPECTED_ROWS - set(rows)}"
    for key, row in rows.items():
        for target in targets:
            value = row["values"].get(target)
            if target == "direct" and (key in NO_DIRECT or row["added"]):
                if row["added"]:
                    assert _number(row["direct_baseline"]), (key, row)
                continue
            assert _number(value), f"{key}: no figure for {target} ({value!r})"
        for seam in seams:
            ratio = row["ratio_to_reference"][f"bridge-{seam}"]
            assert ratio is None or _number(ratio), (key, seam, ratio)
    alone = result["upstream_alone"]
    assert _number(alone["json_rps_c64"]) and alone["json_rps_c64"] > 0
    assert _number(alone["stream_events_per_s"]) and alone["stream_events_per_s"] > 0
    assert {c["seam"] for c in result["targets"]} == {f"bridge-{s}" for s in seams}
    for workers in ("1", "2"):
        figures = result["workers"][workers]
        assert figures["pids"] >= int(workers), figures  # every worker was watched
        if workers == "2":  # never squeezed onto one core
            assert "," in figures["cores"] or len(os.sched_getaffinity(0)) < 2, figures
        for key in ("json", "stream_anthropic"):
            assert _number(figures[key]["rps"]) and figures[key]["rps"] > 0, figures
            assert _number(figures[key]["cpu_us_per_req"]), figures
            assert len(figures[key]["worker_busy_pct"]) == int(workers), figures
    costs = result["pricing_policy"]
    assert _number(costs["cpu_us_no_prices"]) and _number(costs["cpu_us_prices"]), costs


def test_underload_reports_cpu_per_request_for_each_case() -> None:
    """bench/underload.py (the quick profile-under-load loop) drives each
    case and reports a rate and CPU per request, with no errors."""
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: apt-get install -y wrk (scripts/test installs it)")
    cases = ["--targets", "bridge-aiohttp", "--cases", "json,chat"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "underload.py"), "--duration", "1", *cases],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if " us CPU/request" in line]
    assert [(line[0], line[1]) for line in lines] == [
        ("bridge-aiohttp", "json"),
        ("bridge-aiohttp", "chat"),
    ]
    for line in lines:
        assert float(line[2]) > 0 and float(line[4]) > 0, line
        assert line[-1] == "0", line  # errors
