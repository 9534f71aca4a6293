"""Helpers for the bedside tests (issue 15): a gateway clock the test moves, and
hourly monitor readings fed straight into a real gateway (`Gateway.process_reading`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from contracts.timeutil import utc_now
from edge_agent.decoder import Reading

# NEWS2 0 on every monitor parameter: resp 16, SpO2 97, SBP 120, HR 80, temp 37.0.
CALM = {"HR": 80.0, "O2Sat": 97.0, "Temp": 37.0, "SBP": 120.0, "MAP": 85.0, "DBP": 70.0}
CALM["Resp"] = 16.0


class Clock:
    """The gateway's clock (`Gateway(clock=...)`): starts at the machine's time, moves
    only when the test says (`advance`), so ages are exact and nothing sleeps."""

    def __init__(self) -> None:
        self.now = utc_now().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def reading(
    bed: str,
    hour: int,
    *,
    t0: datetime,
    patient: str = "MRN-0001",
    icu_admit: datetime | None = None,
    **values: float,
) -> Reading:
    """One monitor reading of `bed` in hour `hour` after `t0` (CALM vitals unless given);
    `patient` is the monitor's raw PID-3 ("" for a monitor that sends none)."""
    return Reading(
        bed=bed,
        stay=patient,
        monitor_id="MON-1",
        seq=hour,
        obs_time=t0 + timedelta(hours=hour, minutes=1),
        values=CALM | values,
        static={"Age": 70.0, "Gender": 0.0} if patient else {},
        icu_admit=icu_admit,
    )


def hour_start(clock: Clock) -> datetime:
    """The hour the test's observation times start at (steps are whole hours)."""
    return clock.now.replace(minute=0, second=0) - timedelta(hours=12)
