"""Gateway figures: beds per core at 1 Hz, sample -> MQTT latency, RSS, inference latency.

1. Beds per core: N beds in one Gateway (no line I/O: frames fed to `process_bytes`,
   which is what each bed's thread does with the bytes it reads), real Mosquitto, the
   default bundle. CPU seconds of the whole process (decoder, state, windows,
   aggregation, scoring, SQLite, outbox, paho threads) per reading -> readings per
   CPU-second = beds per core at 1 Hz. Two cadences: real time (1 reading per
   simulated second, one step per 3,600 readings: the run is made at least 3,660
   readings per bed so every bed closes a step) and a worst case where every 30th
   reading closes a step (scored, published). Each run prints what it exercised:
   steps scored and stored, messages the broker acknowledged.
2. Sample -> MQTT latency: a frame that closes a step is written to a real pty that the
   gateway reads; a subscriber on real Mosquitto receives the step's risk message.
   p50/p99 of (receipt - write) over many steps, each receipt paired with its write
   by the step's window_end (a lost message is counted, not mispaired).
3. Gateway RSS: `vigil edge run --headless` in a child process with N beds on ptys fed
   by simulated monitors at 1 Hz (the simulator runs in this process), RSS after warm-up,
   and the child's CPU fraction, at two or more bed counts: beds per core with real
   lines from the marginal CPU per bed. The child runs as on an edge install (the
   hub-only packages unimportable) and reports its own sys.modules at exit.
4. Inference through the gateway path: `BedWindows.model_input()` (stay_windows over a
   48 h history) + `RiskModel.score`, against `score` alone.

    .venv/bin/python -m benches.bench_edge --beds 50 --readings 600 --latency-steps 200 --rss-beds 8,32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.messages import parse_message
from contracts.mllp import frame
from contracts.vitals import VITAL_NAMES
from edge_agent.config import BedConfig, EdgeSettings, SerialSource
from edge_agent.gateway import Gateway
from firmware_sim.hl7 import Observation, build_oru
from tests.support.broker import Mosquitto, Subscriber
from tests.support.edge import edge_settings

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent

ADMIT = datetime(2026, 1, 1, tzinfo=UTC)


def obs_time(i: int, step_every: int) -> datetime:
    """The observation time of a bed's i-th frame (hourly steps aligned to ICU admit)."""
    return ADMIT + timedelta(hours=12, seconds=i * 3600.0 / step_every)


def frames(bed: str, n: int, step_every: int, seed: int, start: int = 0) -> list[bytes]:
    """Frames start..start+n of one bed; obs time advances so that a step closes every
    `step_every`."""
    rng = np.random.default_rng([seed, start])
    base = np.array([80, 96, 37.0, 120, 85, 70, 18])
    out = []
    for i in range(start, start + n):
        vals = dict(zip(VITAL_NAMES, (base + rng.normal(0, 1, 7)).round(1).tolist(), strict=True))
        obs = Observation(
            "MON",
            i + 1,
            bed,
            f"st-{bed}",
            obs_time(i, step_every),
            vals,
            sex="F",
            icu_admit=ADMIT,
            hospital_admit=ADMIT,
        )
        out.append(frame(build_oru(obs)))
    return out


def settings(beds: list[str], port: int, store: Path) -> EdgeSettings:
    return edge_settings(
        store.parent,
        port=port,
        gateway_id="bench",
        beds=[BedConfig(id=b, source=SerialSource(type="serial", port="/dev/null")) for b in beds],
        store=store.name,
    )


CHUNK = 600  # frames per bed built at a time (outside the timed part)


def beds_per_core(port: int, n_beds: int, readings: int, step_every: int, tmp: Path) -> dict:
    """CPU per reading over `readings` per bed; frames are built CHUNK at a time
    outside the timed part. Returns what the run exercised (steps closed and scored,
    rows in SQLite, messages the broker acknowledged) beside the figures."""
    beds = [f"b{i}" for i in range(n_beds)]
    gw = Gateway(settings(beds, port, tmp / f"bpc-{step_every}.sqlite"))
    gw.start(sources=False)
    gw.publisher._connected.wait(10)
    cpu = wall = 0.0
    for start in range(0, readings, CHUNK):
        n = min(CHUNK, readings - start)
        data = {b: frames(b, n, step_every, i, start) for i, b in enumerate(beds)}
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(n):  # round-robin, as the beds' threads interleave
            for b in beds:
                gw.process_bytes(b, data[b][i])
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    c0, w0 = time.process_time(), time.perf_counter()
    idle = gw.publisher.wait_idle(120)  # every message acknowledged by the broker
    cpu += time.process_time() - c0
    wall += time.perf_counter() - w0
    steps = sum(len(gw.store.rows("risk", "bed = ?", [b])) for b in beds)
    stored = len(gw.store.rows("steps"))
    acked = gw.store.sent_size()
    gw.stop()
    n = n_beds * readings
    if steps == 0:
        print(
            f"  note: {readings} readings per bed at 1 step/{step_every} closed no step: "
            "SQLite, the outbox and paho were not exercised; use --readings > "
            f"{step_every}"
        )
    return {
        "readings": n,
        "steps": steps,
        "steps_stored": stored,
        "messages_acked": acked,
        "all_acked": idle,
        "cpu_s": cpu,
        "wall_s": wall,
        "us_per_reading": cpu / n * 1e6,
        "beds_per_core": n / cpu,
    }


def latency(port: int, n_steps: int, tmp: Path) -> dict:
    import termios
    import tty

    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    dev = os.ttyname(slave)
    s = settings(["lat"], port, tmp / "lat.sqlite")
    s.beds[0].source = SerialSource(type="serial", port=dev)
    sub = Subscriber(port, "vigil/v1/gw/bench/bed/lat/risk")
    recv: dict[datetime, float] = {}  # the step's window_end -> receipt
    orig = sub.client.on_message

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.perf_counter()
        end = parse_message(msg.payload).window_end
        recv.setdefault(end, t)  # a duplicate (resent) keeps the first receipt
        orig(client, userdata, msg)

    sub.client.on_message = on_message
    gw = Gateway(s)
    gw.start()
    fr = frames("lat", n_steps + 1, 1, 5)  # each frame closes the previous frame's step
    while gw.beds["lat"].line is None or gw.beds["lat"].line.state != "up":
        time.sleep(0.02)
    time.sleep(0.3)
    # Frame i closes the step that ends at its own observation time: the risk message
    # of that step carries window_end = obs_time(i), so each receipt is paired with
    # the write that caused it by that id (a lost message leaves a gap, not a shift).
    sent: dict[datetime, float] = {}
    for i, f in enumerate(fr):
        sent[obs_time(i, 1)] = time.perf_counter()
        os.write(master, f)
        time.sleep(0.02)
    deadline = time.monotonic() + 30
    while len(recv) < n_steps and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.stop()
    sub.close()
    os.close(master)
    os.close(slave)
    paired = [end for end in recv if end in sent]
    lat = [(recv[end] - sent[end]) * 1000 for end in paired]
    return {
        "n": len(lat),
        "lost": n_steps - len(paired),
        "unpaired": len(recv) - len(paired),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def rss(port: int, n_beds: int, seconds: float, tmp: Path) -> dict:
    import psutil

    from firmware_sim.monitor import Monitor, MonitorRunner
    from firmware_sim.transports import PtyTransport

    monitors = [
        Monitor.generated(f"r{i}", PtyTransport(), "sepsis", seed=i, bed_number=i + 1, speed=1.0)
        for i in range(n_beds)
    ]
    cfg = tmp / "rss.toml"
    beds = "".join(
        f'[[beds]]\nid = "r{i}"\nsource = {{ type = "serial", port = "{m.address}" }}\n'
        for i, m in enumerate(monitors)
    )
    cfg.write_text(
        f'gateway_id = "bench-rss"\nstore_path = "{tmp / "rss.sqlite"}"\n'
        f'log_level = "WARNING"\n{beds}[mqtt]\nport = {port}\n'
    )
    mods_file = tmp / f"rss-{n_beds}-modules.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(mods_file), "edge", "run", "--config", str(cfg),
         "--headless"],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(2)
    runner = MonitorRunner(monitors)
    runner.start()
    p = psutil.Process(proc.pid)
    c0 = p.cpu_times()
    time.sleep(seconds)
    c1 = p.cpu_times()
    mem = p.memory_info().rss / 2**20
    proc.terminate()
    proc.wait(30)
    runner.close()
    cpu = (c1.user + c1.system - c0.user - c0.system) / seconds
    # What the measured process had imported, written by it at exit (CHILD).
    mods = json.loads(mods_file.read_text()) if mods_file.exists() else None
    return {
        "beds": n_beds,
        "rss_mib": mem,
        "cpu_fraction": cpu,
        "beds_per_core_with_lines": n_beds / cpu if cpu > 0 else float("inf"),
        "heavy_modules_loaded": None if mods is None else mods["heavy"],
        "heavy_probed_and_refused": None if mods is None else mods["probed"],
        "modules_loaded": None if mods is None else mods["modules"],
    }


# The measured gateway: `vigil edge run` run as __main__, as on an edge install: the
# hub-only packages (not in the `edge` extra) are made unimportable, as
# tests/test_edge_gateway.py does, so a hard import of one fails the run, and an
# optional probe (sqlite-utils tries pandas) is answered "not installed" and listed.
# At exit the process writes what its own sys.modules held.
CHILD = """
import atexit, json, runpy, sys
out = sys.argv[1]
sys.argv = ["vigil"] + sys.argv[2:]
HEAVY = {"tensorflow", "keras", "pandas", "mlflow", "sklearn", "sqlalchemy", "pyarrow"}
tried = set()
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            tried.add(name.split(".")[0])
            raise ImportError(f"{name} is not installed on a gateway")
sys.meta_path.insert(0, Block())
def dump():
    top = {m.split(".")[0] for m in list(sys.modules)}
    with open(out, "w") as fh:
        json.dump({"modules": len(sys.modules), "heavy": sorted(top & HEAVY),
                   "probed": sorted(tried)}, fh)
atexit.register(dump)
runpy.run_module("vigil_cli.main", run_name="__main__", alter_sys=True)
"""


def lines_scaling(port: int, counts: list[int], seconds: float, tmp: Path) -> dict:
    """RSS and CPU of the real gateway process at several bed counts; beds per core
    from the marginal CPU per bed between the smallest and largest count (measured,
    not extrapolated from one point)."""
    runs = [rss(port, n, seconds, tmp) for n in counts]
    for r in runs:
        print("  gateway with real lines:", r)
        if r["heavy_modules_loaded"] is None:
            print("  WARNING: the gateway wrote no module list (did it exit cleanly?)")
        elif r["heavy_modules_loaded"]:
            print(f"  WARNING: the gateway imported {r['heavy_modules_loaded']}")
    lo, hi = runs[0], runs[-1]
    per_bed = (hi["cpu_fraction"] - lo["cpu_fraction"]) / (hi["beds"] - lo["beds"])
    return {
        "counts": counts,
        "cpu_per_bed": per_bed,
        "beds_per_core_marginal": 1 / per_bed if per_bed > 0 else float("inf"),
        "base_cpu_fraction": lo["cpu_fraction"] - per_bed * lo["beds"],
        "rss_mib": {r["beds"]: round(r["rss_mib"], 1) for r in runs},
    }


def inference() -> dict:
    from contracts.paths import default_bundle_dir, default_trusted_keys_dir
    from edge_agent.decoder import MllpDecoder
    from edge_agent.scoring import load_model
    from edge_agent.windows import BedWindows

    model, _ = load_model([default_bundle_dir()], [default_trusted_keys_dir()])
    bw = BedWindows("inf", model.manifest.preprocessing)
    d = MllpDecoder()
    for f in frames("inf", 48 * 4 + 1, 4, 9):  # 48 h of history
        for r in d.feed(f):
            bw.add(r)
    path, bare, prep = [], [], []
    inp = bw.model_input()
    for _ in range(2000):
        t0 = time.perf_counter()
        i2 = bw.model_input()
        t1 = time.perf_counter()
        model.score(i2.window, i2.static)
        t2 = time.perf_counter()
        path.append(t2 - t0)
        prep.append(t1 - t0)
        t3 = time.perf_counter()
        model.score(inp.window, inp.static)
        bare.append(time.perf_counter() - t3)
    med = statistics.median
    return {
        "path_us_p50": med(path) * 1e6,
        "path_us_p99": float(np.percentile(path, 99)) * 1e6,
        "windows_us_p50": med(prep) * 1e6,
        "score_only_us_p50": med(bare) * 1e6,
        "model": f"{model.name} {model.version}",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beds", type=int, default=50)
    ap.add_argument("--readings", type=int, default=600)
    ap.add_argument("--latency-steps", type=int, default=200)
    ap.add_argument(
        "--rss-beds",
        default="8,32",
        help="bed counts for the real-lines run, comma-separated (two or more)",
    )
    ap.add_argument("--rss-seconds", type=float, default=10)
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        broker = Mosquitto(tmp).start()
        try:
            print("inference through the gateway path:", inference())
            for step_every, label, readings in (
                # Real time: long enough that every bed closes at least one step.
                (3600, "real time (1 step/3600 readings)", max(a.readings, 3600 + 60)),
                (30, "worst case (1 step/30 readings)", a.readings),
            ):
                print(
                    f"beds per core at 1 Hz, {label}:",
                    beds_per_core(broker.port, a.beds, readings, step_every, tmp),
                )
            print("sample -> MQTT latency:", latency(broker.port, a.latency_steps, tmp))
            counts = sorted({int(x) for x in a.rss_beds.split(",")})
            if len(counts) < 2:
                raise SystemExit("--rss-beds: give two or more bed counts, e.g. 8,32")
            print(
                "beds per core with real lines:",
                lines_scaling(broker.port, counts, a.rss_seconds, tmp),
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
