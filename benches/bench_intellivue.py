"""IntelliVue driver benchmark: CPU per monitor at 1 Hz polling, and beds per core (issue 16).

1. Per poll, in one thread (median of repeats): what the gateway does for one monitor
   each second with the Data Export driver: build and frame the poll request, deframe
   and check the poll result (8 numerics, one compound NBP), decode it, make the
   `Reading` (what the gateway's bed worker takes from the line: `read_readings`); then,
   for comparison, the PCD-01 bridge of `IntelliVueLine.read()` (build the ORU^R01 and
   parse it again with `MllpDecoder`). Beds per core = 1 s / (cost per poll).
2. Real lines: N simulated IntelliVues (`vigil sim --protocol intellivue`, another
   process) on ptys, N `IntelliVueLine`s in this process polling at 1 Hz through
   pyserial for `--seconds`, read as the gateway reads them (`read_readings`; `--bridge`:
   `read()`, the PCD-01 bytes); this process's CPU time / (N x seconds) is the CPU per
   monitor, with every thread and syscall the gateway's line readers cost (the scoring,
   store and MQTT of the gateway are measured by benches/bench_edge.py).

    .venv/bin/python -m benches.bench_intellivue --polls 3000 --repeats 5 --beds 8,32 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

from contracts.mllp import frame as mllp_frame
from edge_agent.config import IntelliVueSource, LinkConfig
from edge_agent.decoder import MllpDecoder
from edge_agent.intellivue import protocol as p
from edge_agent.intellivue.driver import Session
from edge_agent.intellivue.framing import FrameDecoder, frame
from edge_agent.intellivue.line import IntelliVueLine, to_pcd01
from firmware_sim.intellivue import IntelliVueSim


def _poll_result_frame() -> bytes:
    """One real-sized poll result as the simulated monitor frames it."""
    sim = IntelliVueSim(pty=False)
    sim._send(sim._result_frame(1, 1))
    return bytes(sim.wire)


def per_poll(polls: int, repeats: int) -> dict[str, float]:
    wire = _poll_result_frame()
    results: dict[str, list[float]] = {"driver": [], "driver+bridge": []}
    for _ in range(repeats):
        session = Session("bench")
        session.state = "polling"
        frames = FrameDecoder()
        t0 = time.perf_counter()
        for i in range(polls):
            frame(p.extended_poll_request(i & 0xFFFF, i & 0xFFFF))
            for body in frames.feed(wire):
                session.receive(body)
        results["driver"].append((time.perf_counter() - t0) / polls)
        mllp = MllpDecoder(source="bench")
        t0 = time.perf_counter()
        for i in range(polls):
            frame(p.extended_poll_request(i & 0xFFFF, i & 0xFFFF))
            for body in frames.feed(wire):
                for r in session.receive(body):
                    mllp.feed(mllp_frame(to_pcd01(r, session.last_terms, "IntelliVue-bench")))
        results["driver+bridge"].append((time.perf_counter() - t0) / polls)
        assert mllp.stats.frames_ok == polls, mllp.stats
    return {k: statistics.median(v) for k, v in results.items()}


def real_lines(beds: int, seconds: float, bridge: bool = False) -> dict[str, float]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "sim", "--protocol", "intellivue", "--pty",
         "--beds", str(beds), "--duration", f"{int(seconds + 30)}s"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    addresses = [sim.stdout.readline().split()[1] for _ in range(beds)]
    stop = threading.Event()
    link = LinkConfig()
    lines = [
        IntelliVueLine(f"bed-{i}", IntelliVueSource(type="intellivue", port=a), link, stop)
        for i, a in enumerate(addresses)
    ]
    got = [0] * beds

    def run(i: int) -> None:
        line = lines[i]
        while not stop.is_set():
            if bridge:
                data = line.read()
                got[i] += data.count(b"\x1c\x0d") if data else 0
            else:
                got[i] += len(line.read_readings() or ())
        line.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(beds)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 15
    while sum(1 for x in lines if x.associated) < beds and time.monotonic() < deadline:
        time.sleep(0.1)
    start_got = sum(got)
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    polls = sum(got) - start_got
    stop.set()
    for t in threads:
        t.join(5)
    sim.terminate()
    sim.wait(10)
    return {
        "beds": beds,
        "associated": sum(1 for x in lines if x.session.stats.associations),
        "polls": polls,
        "polls_per_bed_per_s": polls / beds / wall,
        "cpu_per_bed_ms_per_s": cpu / wall / beds * 1000,
        "cpu_total_pct": cpu / wall * 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--beds", default="8,32")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bridge", action="store_true", help="real lines read as PCD-01 bytes")
    a = ap.parse_args()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip
    pp = per_poll(a.polls, a.repeats)
    for k, v in pp.items():
        print(
            f"per poll, {k:<14}: {v * 1e6:8.1f} us  -> at 1 Hz {v * 100:.3f} % of a core per"
            f" monitor, {1 / v:,.0f} beds per core"
        )
    for n in (int(x) for x in a.beds.split(",") if x):
        r = real_lines(n, a.seconds, a.bridge)
        print(
            f"real lines{' (PCD-01 bridge)' if a.bridge else ''}, {r['beds']} beds on ptys for {a.seconds:g} s: associated"
            f" {r['associated']}, {r['polls_per_bed_per_s']:.2f} polls/bed/s,"
            f" CPU {r['cpu_per_bed_ms_per_s']:.2f} ms per bed per s"
            f" ({r['cpu_per_bed_ms_per_s'] / 10:.3f} % of a core), process {r['cpu_total_pct']:.1f} %"
            f" -> {1000 / r['cpu_per_bed_ms_per_s']:,.0f} beds per core"
        )


if __name__ == "__main__":
    main()
