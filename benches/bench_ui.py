"""Does the nurse terminal slow the data path? 64 beds at 1 Hz, without and with the UI.

A real `Gateway` (verified LiteRT bundle, alarms, SQLite store and outbox, MQTT to a
real broker) is fed one reading per bed per second by a feeder thread (firmware_sim's
generated patients, simulated time running 5 min per reading so hourly steps close,
get scored and published every 12 readings per bed; beds staggered). Each call of the
data path (`Gateway.process_reading`: state, windows, and on a closed step: store,
score, NEWS2, alarm, publish) is timed, alternately with no UI and with the real
Textual app over the same gateway (headless at 160x48, refreshing every second, the Pilot
switching ward / bedside / events every 2 s). Prints medians, p99, max and how many
feeder ticks ran late, plus how often the UI refreshed.

    python -m benches.bench_ui          # 64 beds, 3 rounds of 10 s per phase, broker 127.0.0.1:1883
    python -m benches.bench_ui --beds 64 --seconds 10 --rounds 3 --port 1883 --screenshot docs/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.decoder import Reading
from edge_agent.gateway import Gateway
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort
from firmware_sim.physiology import GeneratedSource
from tests.support.edge import edge_settings

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SIM_SECONDS_PER_READING = 300.0  # 12 readings close one hourly step
SCENARIOS = ("stable", "stable", "stable", "sepsis", "hypotension", "desaturation")


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)  # calls that closed a step (scored)
    tick_ms: list[float] = field(default_factory=list)  # all beds' readings of one second
    late_ticks: int = 0
    ticks: int = 0
    max_tick_lag_ms: float = 0.0
    steps_closed: int = 0
    ui_refreshes: int | None = None
    ui_max_gap_s: float | None = None

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        return {
            "phase": self.name,
            "calls": len(lat),
            "median_ms": _r(statistics.median(lat)) if lat else None,
            "p99_ms": _r(pct(lat, 0.99)) if lat else None,
            "max_ms": _r(lat[-1]) if lat else None,
            "steps_closed": self.steps_closed,
            "step_median_ms": _r(statistics.median(self.step_ms)) if self.step_ms else None,
            "step_p95_ms": _r(pct(sorted(self.step_ms), 0.95)) if self.step_ms else None,
            "tick_median_ms": _r(statistics.median(self.tick_ms)) if self.tick_ms else None,
            "tick_max_ms": _r(max(self.tick_ms)) if self.tick_ms else None,
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "max_tick_lag_ms": round(self.max_tick_lag_ms, 1),
            "ui_refreshes": self.ui_refreshes,
            "ui_max_gap_s": None if self.ui_max_gap_s is None else round(self.ui_max_gap_s, 2),
        }


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[int(q * (len(sorted_values) - 1))]


def _r(x: float) -> float:
    return round(x, 3)


class Ward:
    """`n` simulated patients and the readings they send, one per bed per tick."""

    def __init__(self, n: int) -> None:
        self.beds = [f"bed-{i + 1:02d}" for i in range(n)]
        self.sources = [GeneratedSource(SCENARIOS[i % len(SCENARIOS)], seed=i) for i in range(n)]
        self.seq = [0] * n

    def reading(self, i: int) -> Reading:
        src = self.sources[i]
        k = self.seq[i]
        self.seq[i] += 1
        # Stagger beds by a fraction of a step so their hourly steps close on different ticks.
        t = src.start_s + (k + (i % 12)) * SIM_SECONDS_PER_READING
        values = src.sample(t, SIM_SECONDS_PER_READING)
        admit = T0 - timedelta(seconds=src.start_s)
        p = src.patient
        static = {
            "Age": p.age_years,
            "Gender": 1.0 if p.sex == "M" else 0.0,
            "HospAdmTime": p.hosp_adm_hours,
            "ICULOS": t / 3600.0,
        }
        obs = admit + timedelta(seconds=t)
        return Reading(self.beds[i], p.stay_id, f"MON{i:02d}", k, obs, values, static, admit)


def make_gateway(n_beds: int, port: int, store_dir: Path) -> Gateway:
    settings = edge_settings(
        store_dir,
        port=port,
        gateway_id="bench-ui",
        operator="bench nurse",
        beds=[f"bed-{i + 1:02d}" for i in range(n_beds)],
    )
    gw = Gateway(settings)
    if gw.model is None:
        raise SystemExit(f"no verified model bundle: {gw.refused}")
    gw.start(sources=False)
    return gw


def feed(gw: Gateway, ward: Ward, phase: Phase, seconds: float, stop: threading.Event) -> None:
    """One reading per bed per second, on a fixed schedule; time every data-path call."""
    start = time.monotonic()
    tick = 0
    while not stop.is_set():
        due = start + tick
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        lag = (time.monotonic() - due) * 1000
        phase.max_tick_lag_ms = max(phase.max_tick_lag_ms, lag)
        for i, bed in enumerate(ward.beds):
            r = ward.reading(i)
            t0 = time.perf_counter_ns()
            closed = gw.process_reading(bed, r)
            ms = (time.perf_counter_ns() - t0) / 1e6
            phase.latencies_ms.append(ms)
            if closed:
                phase.step_ms.append(ms)
            phase.steps_closed += len(closed)
        took = time.monotonic() - due
        phase.tick_ms.append(took * 1000)
        phase.ticks += 1
        if took > 1.0:  # the tick's readings were not all processed within their second
            phase.late_ticks += 1
        tick += 1


def run_without_ui(gw: Gateway, ward: Ward, seconds: float) -> Phase:
    phase = Phase("without UI")
    feed(gw, ward, phase, seconds, threading.Event())
    return phase


def run_with_ui(
    gw: Gateway, ward: Ward, seconds: float, size=(160, 48), screenshot: Path | None = None
) -> Phase:
    phase = Phase("with UI")
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(gw, ward, phase, seconds, stop), daemon=True)
    app = VigilApp(GatewayPort(gw), operator="bench nurse", blink=True)
    gaps: list[float] = []

    async def drive() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            feeder.start()
            last, last_t = app.refreshes, time.monotonic()
            keys = ["enter", "escape", "e", "w", "down", "enter", "w"]
            k = 0
            next_key = time.monotonic() + 2
            while feeder.is_alive():
                await asyncio.sleep(0.1)
                now = time.monotonic()
                if app.refreshes != last:
                    gaps.append(now - last_t)
                    last, last_t = app.refreshes, now
                if now >= next_key:
                    await pilot.press(keys[k % len(keys)])
                    k += 1
                    next_key = now + 2
            gaps.append(time.monotonic() - last_t)
            if screenshot is not None:
                await save_screenshots(app, pilot, screenshot)

    try:
        asyncio.run(drive())
    finally:
        stop.set()
        feeder.join(5)
    phase.ui_refreshes = app.refreshes
    phase.ui_max_gap_s = max(gaps[1:] or gaps)  # the first gap includes start-up
    return phase


async def save_screenshots(app: VigilApp, pilot, folder: Path) -> None:
    """The README's screenshots, from this real run: ward, then the sickest bed."""
    folder.mkdir(parents=True, exist_ok=True)
    await pilot.press("w")
    app.poll()
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.save_screenshot("ui-ward.svg", path=str(folder))
    (folder / "ui-ward.txt").write_text(app.screen_text())
    await pilot.press("home", "enter")
    app.poll()
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.save_screenshot("ui-bedside.svg", path=str(folder))
    (folder / "ui-bedside.txt").write_text(app.screen_text())


def merge(into: Phase, part: Phase) -> None:
    into.latencies_ms += part.latencies_ms
    into.step_ms += part.step_ms
    into.tick_ms += part.tick_ms
    into.late_ticks += part.late_ticks
    into.ticks += part.ticks
    into.max_tick_lag_ms = max(into.max_tick_lag_ms, part.max_tick_lag_ms)
    into.steps_closed += part.steps_closed
    if part.ui_refreshes is not None:
        into.ui_refreshes = (into.ui_refreshes or 0) + part.ui_refreshes
        into.ui_max_gap_s = max(into.ui_max_gap_s or 0.0, part.ui_max_gap_s or 0.0)


def measure(
    n_beds: int, seconds: float, port: int, screenshot: Path | None = None, rounds: int = 1
) -> tuple[Phase, Phase]:
    """`rounds` x (`seconds` without UI, then `seconds` with it), on one gateway.

    Alternating the phases makes a shared machine's load fall on both alike.
    """
    without, with_ui = Phase("without UI"), Phase("with UI")
    with tempfile.TemporaryDirectory() as tmp:
        gw = make_gateway(n_beds, port, Path(tmp))
        ward = Ward(n_beds)
        try:
            warm = Phase("warm-up")  # fills windows so both phases score
            feed(gw, ward, warm, min(seconds, 12.0), threading.Event())
            for r in range(rounds):
                merge(without, run_without_ui(gw, ward, seconds))
                last = r == rounds - 1
                merge(
                    with_ui, run_with_ui(gw, ward, seconds, screenshot=screenshot if last else None)
                )
        finally:
            gw.stop(flush_timeout=5)
    return without, with_ui


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beds", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternations without/with UI")
    ap.add_argument("--port", type=int, default=1883, help="MQTT broker port on 127.0.0.1")
    ap.add_argument("--screenshot", type=Path, default=None, help="save UI screenshots here")
    a = ap.parse_args()
    without, with_ui = measure(a.beds, a.seconds, a.port, a.screenshot, a.rounds)
    a_, b_ = without.summary(), with_ui.summary()
    for s in (a_, b_):
        print(json.dumps(s))
    if not (a_["step_median_ms"] and b_["step_median_ms"]):
        # A run too short to close an hourly step in both phases: say so, do not crash.
        print(
            f"{a.beds} beds: no scored step closed in one of the phases "
            f"(steps closed {a_['steps_closed']} -> {b_['steps_closed']}); "
            "run longer (--seconds >= 12) to measure scored steps"
        )
        return
    print(
        f"{a.beds} beds at 1 Hz, {a.rounds} x {a.seconds:.0f} s per phase (without -> with UI): "
        f"reading median {a_['median_ms']} -> {b_['median_ms']} ms; scored step median "
        f"{a_['step_median_ms']} -> {b_['step_median_ms']} ms (ratio "
        f"{b_['step_median_ms'] / a_['step_median_ms']:.2f}), p95 {a_['step_p95_ms']} -> "
        f"{b_['step_p95_ms']} ms; one second of {a.beds} readings median "
        f"{a_['tick_median_ms']} -> {b_['tick_median_ms']} ms, max {a_['tick_max_ms']} -> "
        f"{b_['tick_max_ms']} ms; late ticks {a_['late_ticks']} -> "
        f"{b_['late_ticks']}; UI refreshed {b_['ui_refreshes']} times, max gap "
        f"{b_['ui_max_gap_s']} s"
    )


if __name__ == "__main__":
    main()
