"""Fixed ward data for the terminal UI's tests: the real GatewayState, a fixed clock;
`textual_test`, `settle` and `until` to drive the app with Textual's Pilot.

NEWS2 is computed with the real `contracts.news2`, so what the tiles show is what the
gateway would compute from the same readings.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from textual.pilot import Pilot

from contracts.news2 import News2 as News2Snapshot
from contracts.news2 import news2
from contracts.vitals import VITAL_NAMES
from edge_agent.decoder import Reading
from edge_agent.state import GatewayState
from edge_agent.ui.gateway_port import ward_view
from edge_agent.ui.view import WardView
from tests.support.edge import T0

if TYPE_CHECKING:
    import numpy as np

    from edge_agent.gateway import Gateway

P = ParamSpec("P")
R = TypeVar("R")

FIXED_NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
MODEL = ("vigil-gru", "1.4.0")


def _wave(base: float, amp: float, n: int, phase: float) -> list[float]:
    return [round(base + amp * math.sin(phase + k / 4), 1) for k in range(n)]


class FixedClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _base(i: int) -> dict[str, float]:
    return {
        "HR": 78 + (i * 7) % 40,
        "O2Sat": 99 - (i % 6),
        "SBP": 128 - (i * 5) % 35,
        "DBP": 72 - (i * 3) % 15,
        "MAP": 90 - (i * 4) % 20,
        "Resp": 14 + (i * 3) % 12,
        "Temp": 36.6 + (i % 5) * 0.4,
    }


def fill_bed(
    state: GatewayState,
    clock: FixedClock,
    i: int,
    *,
    risk: float | None,
    level: str = "none",
    alarm_state: str = "none",
    stale: tuple[str, ...] = (),
    missing: tuple[str, ...] = (),
    readings: int = 40,
) -> None:
    """Write bed `i`'s fixed readings, risk and alarm into the real `GatewayState`.

    Readings arrive one a second ending at FIXED_NOW; `stale` vitals stop 95 s earlier,
    `missing` ones are never seen.
    """
    bed, stay = f"bed{i:02d}", f"stay-{1000 + i}"
    base = _base(i)
    waves = {n: _wave(v, 2.0 if n != "Temp" else 0.1, readings, phase=i) for n, v in base.items()}
    start = FIXED_NOW - timedelta(seconds=readings - 1)
    for k in range(readings):
        clock.now = start + timedelta(seconds=k)
        late = k >= readings - 95
        values = {
            n: (None if n in missing else w[k])
            for n, w in waves.items()
            if not (n in stale and late) and n not in missing
        }
        state.record_reading(bed, stay, clock.now, values)
    last = {n: waves[n][-1] for n in base if n not in missing}
    n2 = news2(
        resp=last.get("Resp"),
        spo2=last.get("O2Sat"),
        sbp=last.get("SBP"),
        hr=last.get("HR"),
        temp=last.get("Temp"),
    )
    n2snap = News2Snapshot(n2.total, n2.risk, dict(n2.subscores), n2.missing)
    steps = 31 if risk is not None else 1
    for k in range(steps):
        r = None if risk is None else round(max(0.0, risk - 0.012 * (steps - 1 - k)), 3)
        state.record_risk(
            bed,
            window_end=FIXED_NOW - timedelta(minutes=5 * (steps - 1 - k)),
            risk=r,
            threshold=0.5,
            observed=readings * 7,
            insufficient=r is None,
            news2=n2snap,
        )
    if level != "none":
        state.record_alarm(
            bed,
            level=level,
            state=alarm_state,
            acknowledged_by="Ann Nurse" if alarm_state == "acknowledged" else None,
        )
    clock.now = FIXED_NOW


def fixed_state(
    n_beds: int = 8,
    *,
    alarm_bed: int | None = 3,
    alarm_state: str = "active",
    broker_connected: bool = True,
    outbox: int = 0,
) -> GatewayState:
    """A real `GatewayState` with fixed data: one alarm, one watch with stale BP, one
    unscored bed without temperature, the rest calm."""
    clock = FixedClock()
    state = GatewayState("gw-icu-01", [f"bed{i:02d}" for i in range(n_beds)], clock=clock)
    clock.now = FIXED_NOW - timedelta(minutes=30)
    state.set_model(*MODEL)
    state.set_broker(True)
    state.event("connection", "broker connected")
    state.event("model", f"active {MODEL[0]} {MODEL[1]}")
    for i in range(n_beds):
        if i == alarm_bed:
            fill_bed(state, clock, i, risk=0.83, level="alarm", alarm_state=alarm_state)
            state.event("alarm", "raised: risk 0.83 ≥ 0.50", bed=f"bed{i:02d}", by="system")
        elif i == 1:
            fill_bed(
                state,
                clock,
                i,
                risk=0.41,
                level="watch",
                alarm_state="active",
                stale=("SBP", "DBP", "MAP"),
                readings=140,
            )
        elif i == 2:
            fill_bed(state, clock, i, risk=None, missing=("Temp",))
        else:
            fill_bed(state, clock, i, risk=round(0.05 + (i * 37 % 30) / 100, 2))
    state.set_broker(broker_connected)
    state.set_outbox(outbox)
    clock.now = FIXED_NOW
    return state


def fixed_ward(n_beds: int = 8, **kw) -> WardView:
    """The `WardView` the UI gets from `fixed_state` through the real adapter."""
    return ward_view(fixed_state(n_beds, **kw).snapshot())


class FixedPort:
    """A `CorePort` over a fixed view; records actions (for rendering tests only)."""

    def __init__(self, view: WardView) -> None:
        self.view = view
        self.calls: list[tuple] = []

    def ward_view(self) -> WardView:
        return self.view

    def acknowledge(self, bed: str, by: str) -> None:
        self.calls.append(("acknowledge", bed, by))

    def silence(self, bed: str, by: str, seconds: int) -> None:
        self.calls.append(("silence", bed, by, seconds))

    def feedback(self, bed: str, by: str, kind: str, note: str | None) -> None:
        self.calls.append(("feedback", bed, by, kind, note))

    # The bedside entries (oxygen, ACVPU, SpO2 scale, admission): recorded, as above.
    def set_oxygen(
        self, bed: str, by: str, on_oxygen: bool, device: str | None, flow_l_min: float | None
    ) -> None:
        self.calls.append(("set_oxygen", bed, by, on_oxygen, device, flow_l_min))

    def set_acvpu(self, bed: str, by: str, level: str) -> None:
        self.calls.append(("set_acvpu", bed, by, level))

    def set_spo2_scale(self, bed: str, by: str, scale: int, reason: str | None) -> None:
        self.calls.append(("set_spo2_scale", bed, by, scale, reason))

    def admit(
        self, bed: str, by: str, patient_id: str, age: float | None, sex: str | None,
        admitted_at: datetime | None,
    ) -> None:  # fmt: skip
        self.calls.append(("admit", bed, by, patient_id, age, sex, admitted_at))

    def transfer(self, bed: str, by: str, to_bed: str) -> None:
        self.calls.append(("transfer", bed, by, to_bed))

    def discharge(self, bed: str, by: str) -> None:
        self.calls.append(("discharge", bed, by))


def replay_until_alarm(gw: Gateway, bed: str, arr: np.ndarray, readings_per_hour: int = 2) -> int:
    """Feed a real stay's hourly rows to `gw` (its data path) until `bed` alarms.

    Returns the readings fed; fails if the stay ends without an alarm.
    """
    admit = T0
    n = 0
    for row in arr:
        hour = float(row["ICULOS"])
        for k in range(readings_per_hour):
            obs = admit + timedelta(hours=hour, minutes=60 * k / readings_per_hour)
            values = {
                name: (None if math.isnan(float(row[name])) else float(row[name]))
                for name in VITAL_NAMES
            }
            static = {
                "Age": float(row["Age"]),
                "Gender": float(row["Gender"]),
                "HospAdmTime": float(row["HospAdmTime"]),
                "ICULOS": hour + k / readings_per_hour,
            }
            r = Reading(bed, "pn-stay", "MON01", n, obs, values, static, icu_admit=admit)
            gw.process_reading(bed, r)
            n += 1
        b = gw.state.snapshot().bed(bed)
        if b.alarm_level in ("alarm", "escalated") and b.alarm_state == "active":
            return n
    raise AssertionError(f"the stay ended after {n} readings without a risk alarm on {bed}")


def textual_test(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """Run an async Textual test on its own asyncio loop (no pytest async plugin needed)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return asyncio.run(fn(*args, **kwargs))

    return run


async def settle(pilot: Pilot) -> None:
    """Let the app's worker threads finish and the screen catch up."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def until(
    pilot: Pilot, ok: Callable[[], object], timeout: float = 10.0, poll: bool = False
) -> None:
    """Actions run in worker threads: wait until `ok()` holds, failing with the screen.

    `poll`: fetch a fresh view from the gateway each round (what the app's timer does;
    for apps over the real gateway core, whose view changes underneath).
    """
    deadline = time.monotonic() + timeout
    while True:
        if poll:
            pilot.app.poll()
        await settle(pilot)
        if ok():
            return
        assert time.monotonic() < deadline, pilot.app.screen_text()
        await pilot.pause(0.02 if not poll else 0.05)
