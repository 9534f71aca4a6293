"""How many simulated monitors one core drives at 1 Hz.

1. CPU time per message (time.process_time, medians of rounds): building an ORU^R01
   and its MLLP frame; a whole monitor cycle (physiology sample, faults, build) with no
   line; the same cycle written to a real pty that a separate `cat` drains.
2. N monitors, one pty each, at 1 Hz (speed 1) and at 10 Hz (speed 10) for a fixed
   time, in a child process (one thread: the MonitorRunner); a separate drain process
   reads every pty like N gateways would. Reports the achieved message rate per bed
   and the child's CPU use (process CPU seconds / wall seconds, 100% = one core);
   capacity at 1 Hz = messages per second the loop sustained / CPU fraction.

    .venv/bin/python -m benches.bench_sim --messages 3000 --rounds 3 --beds 50,200,500 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

from contracts.mllp import frame
from firmware_sim.hl7 import Observation, build_oru
from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.physiology import GeneratedSource
from firmware_sim.transports import PtyTransport


class NullLine:
    address = "null"
    overruns = 0
    bytes_sent = 0

    def write(self, data: bytes) -> bool:
        self.bytes_sent += len(data)
        return True

    def close(self) -> None:
        pass


def per_message(messages: int, rounds: int) -> dict[str, float]:
    obs = Observation(
        "MON01",
        1,
        "bed-1",
        "pn-p000001",
        datetime(2026, 1, 1, tzinfo=UTC),
        {"HR": 80.0, "O2Sat": 97.0, "Temp": 36.9, "SBP": 120.0, "MAP": 85.0, "DBP": 70.0},
        icu_admit=datetime(2025, 12, 31, tzinfo=UTC),
    )
    res: dict[str, list[float]] = {"build": [], "cycle_no_line": [], "cycle_pty": []}
    for _ in range(rounds):
        t = time.process_time()
        for i in range(messages):
            frame(build_oru(Observation(**{**obs.__dict__, "seq": i + 1})))
        res["build"].append((time.process_time() - t) / messages)

        mon = Monitor("bed-1", GeneratedSource("sepsis", 1), NullLine(), speed=1)
        t = time.process_time()
        for n in range(messages):
            mon.cycle(n)
        res["cycle_no_line"].append((time.process_time() - t) / messages)

        pty = PtyTransport(flow_control=1.0)
        drain = subprocess.Popen(["cat", pty.address], stdout=subprocess.DEVNULL)
        time.sleep(0.2)
        mon = Monitor("bed-1", GeneratedSource("sepsis", 1), pty, speed=1)
        t = time.process_time()
        for n in range(messages):
            mon.cycle(n)
        res["cycle_pty"].append((time.process_time() - t) / messages)
        assert mon.stats.overruns == 0
        drain.terminate()
        drain.wait()
        pty.close()
    return {k: statistics.median(v) * 1e6 for k, v in res.items()}


DRAIN = """
import os, selectors, sys
sel = selectors.DefaultSelector()
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    sel.register(fd, selectors.EVENT_READ)
sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
total = 0
while True:
    for key, _ in sel.select():
        if key.fd == sys.stdin.fileno():
            print(total); sys.exit(0)
        try:
            total += len(os.read(key.fd, 65536))
        except BlockingIOError:
            pass
"""


def child(beds: int, seconds: float, speed: float) -> dict:
    """Run `beds` monitors for `seconds` in this process; report rate and CPU."""
    ptys = [PtyTransport() for _ in range(beds)]
    drain = subprocess.Popen(
        [sys.executable, "-c", DRAIN, *[p.address for p in ptys]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5 + beds / 1000)
    monitors = [
        Monitor(
            f"bed-{i}",
            GeneratedSource("stable", i),
            p,
            bed_number=i,
            speed=speed,
            max_rate=speed,
            seed=i,
        )
        for i, p in enumerate(ptys, 1)
    ]
    runner = MonitorRunner(monitors)
    c0, w0 = time.process_time(), time.monotonic()
    runner.run(duration=seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    out, _ = drain.communicate("stop\n", timeout=30)
    sent = sum(m.stats.sent for m in monitors)
    due = beds * seconds * speed
    return {
        "beds": beds,
        "hz": speed,
        "due": due,
        "sent": sent,
        "overruns": sum(m.stats.overruns for m in monitors),
        "rate_per_bed": sent / beds / wall,
        "cpu_frac": cpu / wall,
        "bytes_drained": int(out.strip() or 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beds", default="50,200,500")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.seconds, a.speed)))
        return

    la = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start: {la} ({os.cpu_count()} cores)")
    pm = per_message(a.messages, a.rounds)
    print(f"CPU per message (median of {a.rounds} x {a.messages}), microseconds:")
    for k, v in pm.items():
        print(f"  {k:14s} {v:8.1f} us  -> {1e6 / v:8.0f} msg/s per core")
    print()
    print("beds  Hz   due     sent    overruns  msg/s/bed  CPU%(1 core)  est. beds/core at 1 Hz")
    for hz in (1.0, 10.0):
        for n in [int(x) for x in a.beds.split(",")]:
            cmd = [sys.executable, __file__, "--child", str(n), "--seconds", str(a.seconds)]
            r = json.loads(
                subprocess.run(
                    [*cmd, "--speed", str(hz)], capture_output=True, text=True, check=True
                ).stdout
            )
            msgs_per_s = r["sent"] / a.seconds
            cap = msgs_per_s / r["cpu_frac"] if r["cpu_frac"] > 0 else float("inf")
            print(
                f"{n:5d} {hz:3.0f} {r['due']:7.0f} {r['sent']:8d} {r['overruns']:8d} "
                f"{r['rate_per_bed']:9.2f} {100 * r['cpu_frac']:11.1f}% {cap:12.0f}"
            )
    print("load average at end:", " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
