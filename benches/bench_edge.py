"""Gateway figures: beds per core at 1 Hz, sample -> MQTT latency, RSS, inference latency.

1. Beds per core: N beds in one Gateway (no line I/O: frames fed to `process_bytes`,
   which is what each bed's thread does with the bytes it reads), real Mosquitto, the
   default bundle. CPU seconds of the whole process (decoder, state, windows,
   aggregation, scoring, SQLite, outbox, paho threads) per reading -> readings per
   CPU-second = beds per core at 1 Hz. Two cadences: real time (1 reading per
   simulated second, one step per 3,600 readings) and a worst case where every 30th
   reading closes a step (scored, published).
2. Sample -> MQTT latency: a frame that closes a step is written to a real pty that the
   gateway reads; a subscriber on real Mosquitto receives the step's risk message.
   p50/p99 of (receipt - write) over many steps.
3. Gateway RSS: `vigil edge run --headless` in a child process with N beds on ptys fed
   by simulated monitors at 1 Hz (the simulator runs in this process), RSS after warm-up,
   and the child's CPU fraction: beds per core with real lines and one thread per bed.
4. Inference through the gateway path: `BedWindows.model_input()` (stay_windows over a
   48 h history) + `RiskModel.score`, against `score` alone.

    .venv/bin/python -m benches.bench_edge --beds 50 --readings 600 --latency-steps 200 --rss-beds 8
"""

from __future__ import annotations

import argparse
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


def frames(bed: str, n: int, step_every: int, seed: int) -> list[bytes]:
    """n frames of one bed; obs time advances so that a step closes every `step_every`."""
    rng = np.random.default_rng(seed)
    dt = 3600.0 / step_every
    base = np.array([80, 96, 37.0, 120, 85, 70, 18])
    out = []
    for i in range(n):
        vals = dict(zip(VITAL_NAMES, (base + rng.normal(0, 1, 7)).round(1).tolist(), strict=True))
        obs = Observation(
            "MON",
            i + 1,
            bed,
            f"st-{bed}",
            ADMIT + timedelta(hours=12, seconds=i * dt),
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


def beds_per_core(port: int, n_beds: int, readings: int, step_every: int, tmp: Path) -> dict:
    beds = [f"b{i}" for i in range(n_beds)]
    data = {b: frames(b, readings, step_every, i) for i, b in enumerate(beds)}
    gw = Gateway(settings(beds, port, tmp / f"bpc-{step_every}.sqlite"))
    gw.start(sources=False)
    gw.publisher._connected.wait(10)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(readings):  # round-robin, as the beds' threads interleave
        for b in beds:
            gw.process_bytes(b, data[b][i])
    gw.publisher.wait_idle(120)  # every message acknowledged by the broker
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    steps = sum(len(gw.store.rows("risk", "bed = ?", [b])) for b in beds)
    gw.stop()
    n = n_beds * readings
    return {
        "readings": n,
        "steps": steps,
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
    recv: list[float] = []
    orig = sub.client.on_message

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        recv.append(time.perf_counter())
        orig(client, userdata, msg)

    sub.client.on_message = on_message
    gw = Gateway(s)
    gw.start()
    fr = frames("lat", n_steps + 1, 1, 5)  # each frame closes the previous frame's step
    while gw.beds["lat"].line is None or gw.beds["lat"].line.state != "up":
        time.sleep(0.02)
    time.sleep(0.3)
    sent: list[float] = []
    for f in fr:
        sent.append(time.perf_counter())
        os.write(master, f)
        time.sleep(0.02)
    deadline = time.monotonic() + 30
    while len(recv) < n_steps and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.stop()
    sub.close()
    os.close(master)
    os.close(slave)
    lat = [(r - w) * 1000 for w, r in zip(sent[1:], recv, strict=False)]
    return {
        "n": len(lat),
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "edge", "run", "--config", str(cfg), "--headless"],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    runner = MonitorRunner(monitors)
    runner.start()
    p = psutil.Process(proc.pid)
    c0 = p.cpu_times()
    time.sleep(seconds)
    c1 = p.cpu_times()
    mem = p.memory_info().rss / 2**20
    mods = "tensorflow/pandas absent"  # checked by tests/test_edge_gateway.py
    proc.terminate()
    proc.wait(30)
    runner.close()
    cpu = (c1.user + c1.system - c0.user - c0.system) / seconds
    return {
        "beds": n_beds,
        "rss_mib": mem,
        "cpu_fraction": cpu,
        "beds_per_core_with_lines": n_beds / cpu if cpu > 0 else float("inf"),
        "note": mods,
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
    ap.add_argument("--rss-beds", type=int, default=8)
    ap.add_argument("--rss-seconds", type=float, default=10)
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        broker = Mosquitto(tmp).start()
        try:
            print("inference through the gateway path:", inference())
            for step_every, label in (
                (3600, "real time (1 step/3600 readings)"),
                (30, "worst case (1 step/30 readings)"),
            ):
                print(
                    f"beds per core at 1 Hz, {label}:",
                    beds_per_core(broker.port, a.beds, a.readings, step_every, tmp),
                )
            print("sample -> MQTT latency:", latency(broker.port, a.latency_steps, tmp))
            print("gateway RSS:", rss(broker.port, a.rss_beds, a.rss_seconds, tmp))
        finally:
            broker.stop()


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
