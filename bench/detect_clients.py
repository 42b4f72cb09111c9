"""How long client detection takes per request, on what real clients sent.

Runs :func:`aibridge_asgi.clients.detect_client` over the requests stored in
``tests/clients/captured/`` (headers as sent, the body fields detection
reads) and prints the time per call. The bridge calls it once per
interception with the body it has already parsed, so its cost does not grow
with the body: the figure is the same for a 60 kB Claude Code request.

    .venv/bin/python bench/detect_clients.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from aibridge_asgi.clients import detect_client

CAPTURED = Path(__file__).resolve().parent.parent / "tests" / "clients" / "captured"


def requests() -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    found = []
    for path in sorted(CAPTURED.glob("*.json")):
        for request in json.loads(path.read_text(encoding="utf-8"))["requests"]:
            found.append((path.stem, request["headers"], request["body"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    sample = requests()
    for _, headers, body in sample:  # warm up
        detect_client(headers, body)
    rows = []
    for name in sorted({n for n, _, _ in sample}):
        mine = [(h, b) for n, h, b in sample if n == name]
        began = time.perf_counter()
        for _ in range(args.rounds):
            for headers, body in mine:
                detect_client(headers, body)
        per_call = (time.perf_counter() - began) / (args.rounds * len(mine))
        rows.append((name, detect_client(*mine[0]), per_call))
    width = max(len(name) for name, _, _ in rows)
    for name, (client, _), per_call in rows:
        print(f"{name:<{width}}  {per_call * 1e6:6.2f} µs  {client}")
    worst = max(per_call for _, _, per_call in rows)
    print(f"{len(sample)} captured requests, worst {worst * 1e6:.2f} µs per call")


if __name__ == "__main__":
    main()
