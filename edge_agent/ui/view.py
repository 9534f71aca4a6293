"""What the nurse terminal shows: immutable views of the gateway, built once per refresh.

The screens render only these dataclasses. `edge_agent.ui.port` builds them from the
gateway core's observable state; tests and snapshots can build them from fixed data
with a fixed clock, so what is drawn is deterministic. Keeping the views frozen means a
refresh never races with the data path: the core is read once, under its own lock, and
the UI works on a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from contracts.messages import ALARM_RANK, AlarmLevel
from contracts.news2 import News2
from contracts.vitals import BY_NAME

# A reading older than this is greyed and shown with its age (monitors send ~1 Hz).
STALE_AFTER_SECONDS = 30.0

# The tiles of the bedside view, in patient-monitor order. Blood pressure is one tile
# (systolic/diastolic with the mean in brackets), as monitors show NIBP.
TILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hr", "HR", ("HR",)),
    ("spo2", "SpO2", ("O2Sat",)),
    ("bp", "BP", ("SBP", "DBP", "MAP")),
    ("resp", "RESP", ("Resp",)),
    ("temp", "TEMP", ("Temp",)),
)

# Units as a nurse reads them (the catalogue holds UCUM codes).
DISPLAY_UNIT = {"/min": "/min", "%": "%", "Cel": "°C", "mm[Hg]": "mmHg"}


def display_unit(vital: str) -> str:
    unit = BY_NAME[vital].unit
    return DISPLAY_UNIT.get(unit, unit)


@dataclass(frozen=True)
class VitalView:
    """The latest reading of one vital sign on one bed."""

    name: str  # catalogue name (HR, O2Sat, ...)
    value: float | None
    age_seconds: float | None  # since the reading; None: never seen
    history: tuple[float, ...] = ()  # recent values, oldest first, for the sparkline
    # Why the monitor withheld its latest value (invalid, demo_data, calibration, ...):
    # shown instead of a number, never the last valid one (edge_agent/state.py quality).
    withheld: str | None = None

    @property
    def missing(self) -> bool:
        return self.value is None

    @property
    def stale(self) -> bool:
        return self.age_seconds is not None and self.age_seconds > STALE_AFTER_SECONDS


@dataclass(frozen=True)
class ObservationView:
    """A nurse's entry at the bedside that NEWS2 uses until it is changed: supplemental
    oxygen (air, or a device and a flow), consciousness (ACVPU) or the SpO2 scale."""

    kind: str  # oxygen / acvpu / spo2_scale
    value: str  # air / oxygen; A C V P U; 1 / 2
    by: str
    at: datetime
    age_seconds: float
    reassess: bool = False  # older than the site's re-assess time: flagged, not trusted
    device: str | None = None
    flow_l_min: float | None = None
    reason: str | None = None  # why SpO2 scale 2


@dataclass(frozen=True)
class AdmissionView:
    """The patient admitted to a bed: from the hospital's ADT, at the bedside, or the
    monitor's first reading (no ADT)."""

    stay: str
    source: str  # adt / bedside / monitor
    since: datetime | None
    age: float | None = None
    sex: str | None = None


@dataclass(frozen=True)
class BedView:
    """Everything the bedside tile set and the ward row show for one bed."""

    bed: str
    stay: str
    vitals: dict[str, VitalView]
    risk: float | None  # None: not scored yet (insufficient data)
    risk_history: tuple[float, ...]
    threshold: float
    alarm_level: AlarmLevel
    alarm_state: str  # none / active / acknowledged / silenced
    model_name: str
    model_version: str
    news2: News2 | None = None
    silenced_seconds_left: float | None = None
    acknowledged_by: str | None = None
    link: str = "ok"  # ok / stale / down (the monitor line of this bed)
    insufficient_data: bool = False
    # Neither the monitor (PID-7) nor the hospital's ADT gave the patient's age: the
    # model uses the bundle's fill value, and the bedside title says "age unknown".
    age_unknown: bool = False
    # Nurse entries (oxygen, ACVPU, SpO2 scale), newest per kind, with their age.
    observations: tuple[ObservationView, ...] = ()
    admission: AdmissionView | None = None
    # Readings arrive but are not scored (e.g. no patient admitted): shown, with why.
    unscored_reason: str | None = None
    news2_scale: int = 1  # SpO2 scale NEWS2 used (2: hypercapnic respiratory failure)
    # Parameters never recorded and scored as air / alert; entries past re-assess time.
    news2_assumed: tuple[str, ...] = ()
    news2_reassess: tuple[str, ...] = ()
    news2_alarm_level: AlarmLevel = "none"  # NEWS2's own alarm, beside the model's
    news2_alarm_state: str = "none"  # none / active / acknowledged / silenced

    @property
    def model_alarming(self) -> bool:
        """The model's risk alarm, not yet acknowledged or silenced."""
        return self.alarm_level in ("alarm", "escalated") and self.alarm_state == "active"

    @property
    def news2_alarming(self) -> bool:
        """The NEWS2 response alarm, not yet acknowledged or silenced."""
        return (
            self.news2_alarm_level in ("alarm", "escalated") and self.news2_alarm_state == "active"
        )

    @property
    def alarming(self) -> bool:
        """An alarm (the model's or NEWS2's) the nurse has not yet acknowledged or
        silenced: the banner shows and the terminal rings (a ward using NEWS2 only
        has no model alarm at all)."""
        return self.model_alarming or self.news2_alarming

    @property
    def top_alarm_level(self) -> AlarmLevel:
        """The higher of the model's and the NEWS2 alarm levels (for sorting)."""
        return max(self.alarm_level, self.news2_alarm_level, key=lambda x: ALARM_RANK.get(x, 0))

    def vital(self, name: str) -> VitalView:
        return self.vitals.get(name) or VitalView(name=name, value=None, age_seconds=None)

    def observation(self, kind: str) -> ObservationView | None:
        """The latest entry of one kind (oxygen / acvpu / spo2_scale), None: never recorded."""
        return next((o for o in self.observations if o.kind == kind), None)

    @property
    def reassess(self) -> bool:
        """Some nurse entry NEWS2 uses is older than the re-assess time."""
        return bool(self.news2_reassess) or any(o.reassess for o in self.observations)


@dataclass(frozen=True)
class GatewayView:
    """The gateway's own health, for the status line."""

    gw: str
    broker_connected: bool
    outbox: int
    serial_link: str  # ok / stale / down
    model_name: str
    model_version: str
    now: datetime
    counters: dict[str, int] = field(default_factory=dict)
    storage: str = "ok"  # or what fails in the local store: full, io_error, read_only, ...


@dataclass(frozen=True)
class EventView:
    """One line of the events screen: alarms, feedback, model changes, connection state."""

    ts: datetime
    kind: str  # alarm / feedback / model / connection / ...
    bed: str | None
    text: str
    by: str | None = None


@dataclass(frozen=True)
class WardView:
    gateway: GatewayView
    beds: tuple[BedView, ...]
    events: tuple[EventView, ...] = ()

    def bed(self, bed: str) -> BedView | None:
        return next((b for b in self.beds if b.bed == bed), None)

    def by_risk(self) -> tuple[BedView, ...]:
        """Sickest first: unacknowledged alarms, then alarm level (the model's or NEWS2's),
        then model risk, then NEWS2."""
        return tuple(sorted(self.beds, key=ward_sort_key))


def ward_sort_key(b: BedView) -> tuple:
    return (
        0 if b.alarming else 1,
        -ALARM_RANK.get(b.top_alarm_level, 0),
        -(b.risk if b.risk is not None else -1.0),
        -(b.news2.total if b.news2 else -1),
        b.bed,
    )


def format_age(seconds: float | None) -> str:
    """Compact age for a reading: 12s, 4m, 2h."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def format_value(name: str, value: float | None) -> str:
    if value is None:
        return "---"
    if name == "Temp":
        return f"{value:.1f}"
    return f"{value:.0f}"
