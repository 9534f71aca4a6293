"""Fixed ward data for the terminal UI's snapshot tests: a fixed clock, fixed readings.

NEWS2 is computed with the real `contracts.news2`, so what the tiles show is what the
gateway would compute from the same readings.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from contracts.news2 import news2
from edge_agent.ui.view import (
    BedView,
    EventView,
    GatewayView,
    News2View,
    VitalView,
    WardView,
)

FIXED_NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
MODEL = ("vigil-gru", "1.4.0")


def _wave(base: float, amp: float, n: int, phase: float) -> tuple[float, ...]:
    return tuple(round(base + amp * math.sin(phase + k / 4), 1) for k in range(n))


def fixed_bed(
    i: int,
    *,
    risk: float | None,
    level: str = "none",
    state: str = "none",
    stale: tuple[str, ...] = (),
    missing: tuple[str, ...] = (),
) -> BedView:
    """Bed `i` with deterministic vitals; `stale` readings are 95 s old, `missing` absent."""
    base = {
        "HR": 78 + (i * 7) % 40,
        "O2Sat": 99 - (i % 6),
        "SBP": 128 - (i * 5) % 35,
        "DBP": 72 - (i * 3) % 15,
        "MAP": 90 - (i * 4) % 20,
        "Resp": 14 + (i * 3) % 12,
        "Temp": 36.6 + (i % 5) * 0.4,
    }
    vitals = {}
    for name, v in base.items():
        if name in missing:
            vitals[name] = VitalView(name, None, None)
            continue
        hist = _wave(float(v), 2.0 if name != "Temp" else 0.1, 40, phase=i)
        age = 95.0 if name in stale else 1.0 + (i % 3)
        vitals[name] = VitalView(name, float(hist[-1]), age, hist)
    vals = {k: (x.value if x.value is not None else None) for k, x in vitals.items()}
    n2 = news2(
        resp=vals["Resp"], spo2=vals["O2Sat"], sbp=vals["SBP"], hr=vals["HR"], temp=vals["Temp"]
    )
    hist = (
        ()
        if risk is None
        else tuple(round(max(0.0, risk - 0.012 * (30 - k)), 3) for k in range(31))
    )
    return BedView(
        bed=f"bed{i:02d}",
        stay=f"stay-{1000 + i}",
        vitals=vitals,
        risk=risk,
        risk_history=hist,
        threshold=0.5,
        alarm_level=level,
        alarm_state=state,
        model_name=MODEL[0],
        model_version=MODEL[1],
        news2=News2View(n2.total, n2.risk, dict(n2.subscores), n2.missing),
        insufficient_data=risk is None,
    )


def fixed_ward(
    n_beds: int = 8,
    *,
    alarm_bed: int | None = 3,
    alarm_state: str = "active",
    broker_connected: bool = True,
    outbox: int = 0,
) -> WardView:
    beds = []
    for i in range(n_beds):
        if i == alarm_bed:
            beds.append(fixed_bed(i, risk=0.83, level="alarm", state=alarm_state))
        elif i == 1:
            beds.append(fixed_bed(i, risk=0.41, level="watch", stale=("SBP", "DBP", "MAP")))
        elif i == 2:
            beds.append(fixed_bed(i, risk=None, missing=("Temp",)))
        else:
            beds.append(fixed_bed(i, risk=round(0.05 + (i * 37 % 30) / 100, 2)))
    gw = GatewayView(
        gw="gw-icu-01",
        broker_connected=broker_connected,
        outbox=outbox,
        serial_link="ok",
        model_name=MODEL[0],
        model_version=MODEL[1],
        now=FIXED_NOW,
    )
    events = (
        EventView(FIXED_NOW.replace(minute=0, second=0), "connection", None, "broker connected"),
        EventView(FIXED_NOW.replace(second=0, minute=0), "model", None, "active vigil-gru 1.4.0"),
    )
    if alarm_bed is not None:
        events += (
            EventView(
                FIXED_NOW, "alarm", f"bed{alarm_bed:02d}", "raised: risk 0.83 ≥ 0.50", "system"
            ),
        )
    return WardView(gateway=gw, beds=tuple(beds), events=events)


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
