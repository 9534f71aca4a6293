"""Run every benchmark with the command BENCHMARKS.md records for it (`make bench`).

Each one runs as its own process, one after the other (they would disturb each
other's figures if run together), prints its own tables, and is followed by a line
with its wall time and exit code. The run fails (exit 1) if any benchmark failed.
Long: about 15-20 minutes on 2 cores, mostly the headline (inference, hub,
rollout) and the load runs.

    .venv/bin/python -m benches.run_all [--only edge,hub] [--list]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> module and arguments after `python -m`; the commands of BENCHMARKS.md.
BENCHES: dict[str, list[str]] = {
    "headline": ["benches.bench_headline", "--json", "/tmp/headline.json"],
    "load": ["benches.bench_load", "--json", "/tmp/load.json"],
    "security": [
        "benches.bench_security",
        *("--connects", "40", "--messages", "2000", "--rounds", "3"),
    ],
    "hub": ["benches.bench_hub", "--messages", "10000", "--repeat", "3", "--amqtt"],
    "sim": [
        "benches.bench_sim",
        *("--messages", "3000", "--rounds", "3", "--beds", "100,500,1000,2000"),
        *("--seconds", "10"),
    ],
    "import": ["benches.bench_import", "--repeat", "3", "--baseline-files", "2000"],
    "inference": ["benches.bench_inference"],
    "edge": [
        "benches.bench_edge",
        *("--beds", "50", "--readings", "600", "--latency-steps", "200"),
        *("--rss-beds", "32", "--rss-seconds", "20"),
    ],
    "rollout": ["benches.bench_rollout"],
    "ui": ["benches.bench_ui", "--beds", "64", "--seconds", "10", "--rounds", "3"],
    "parser": ["benches.bench_parser", "--messages", "4000", "--repeats", "7"],
    "model": ["benches.bench_model", "--bootstrap", "200", "--json", "/tmp/model.json"],
    "durability": ["benches.bench_durability", "--writes", "2000", "--rounds", "3"],
    "score": ["benches.bench_score", "--stays", "4000", "--jobs", "2"],
    "burden": ["benches.bench_burden"],
    "intellivue": [
        "benches.bench_intellivue",
        *("--polls", "3000", "--repeats", "5", "--beds", "8,32", "--seconds", "20"),
    ],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated names (default: all)")
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    results = []
    for name in names:
        cmd = [sys.executable, "-m", *BENCHES[name]]
        shown = " ".join(["python", "-m", *BENCHES[name]])
        if a.list:
            print(f"{name}: {shown}")
            continue
        print(f"\n=== {name}: {shown}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=ROOT)
        results.append((name, rc, time.monotonic() - t0))
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
    if results:
        print("\nbenchmark  exit  wall s")
        for name, rc, secs in results:
            print(f"{name:<10} {rc:>4}  {secs:>6.0f}")
    return 1 if any(rc for _, rc, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
