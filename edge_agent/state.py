"""The gateway's observable state: what the nurse terminal (and tests) read.

The data path (decoder, windows, scoring, alarms, publisher) writes into one
`GatewayState`; readers take `snapshot()`, an immutable, consistent copy built under
the state's lock, so a screen refresh never races with the data path and never holds
it up for longer than the copy. Changes are observable: `subscribe(fn)` calls `fn`
with a `Change` after every update (from the writer's thread: keep it short, e.g. put
it on a queue), and `changes()` gives such a queue ready-made.

Stable interface for the UI (edge_agent/ui): `GatewayState.snapshot()` ->
`GatewaySnapshot` (gateway health, counters, events) with one `BedSnapshot` per bed
(latest vitals with their age, risk history, NEWS2 with sub-scores, alarm level and
state, model name/version, monitor link; the NEWS2 response alarm's level; the nurse
observations carried into NEWS2 with their age and "re-assess" flag; who is admitted
and from where; why a bed is not scored; `quality`: vital -> why the monitor withheld
it in the latest reading, e.g. "invalid" or "demo_data", and `withheld`: state ->
numerics withheld so far, from drivers that report validity, edge_agent/intellivue/). Nurse actions do not go through here: they
go to `Gateway.acknowledge/silence/feedback` and the bedside entries
(`set_oxygen/set_acvpu/set_spo2_scale/admit/transfer/discharge`), which run the
alarm/observation path and then update this state.

Time: wall-clock UTC from an injectable `clock`; reading ages are measured on that
clock from when the reading ARRIVED (observation times run accelerated in replays).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from contracts.messages import AlarmLevel
from contracts.news2 import News2
from contracts.timeutil import utc_now
from contracts.vitals import VITAL_NAMES

VITAL_HISTORY = 120  # readings per vital kept for sparklines
RISK_HISTORY = 48  # scored steps kept per bed
EVENT_HISTORY = 500  # events kept for the events screen


@dataclass(frozen=True)
class Change:
    """What changed: kind is reading / risk / alarm / link / broker / outbox / model /
    storage / event / observation / admission."""

    kind: str
    bed: str | None = None


@dataclass(frozen=True)
class VitalSnapshot:
    name: str
    value: float | None  # None: sensor off or never seen
    age_seconds: float | None  # since the reading arrived; None: never seen
    obs_time: datetime | None  # the monitor's observation time of that reading
    history: tuple[float, ...] = ()  # recent valid values, oldest first


@dataclass(frozen=True)
class RiskPoint:
    window_end: datetime  # observation time at which the scored step closed
    risk: float | None  # None: insufficient data


# Nurse observations older than this are flagged "re-assess" (kinds below only; the
# gateway sets it from `[news2] reassess_minutes`).
REASSESS_KINDS = ("oxygen", "acvpu")


@dataclass(frozen=True)
class ObservationSnapshot:
    """A nurse observation carried into the bed's NEWS2 until changed."""

    kind: str  # oxygen / acvpu / spo2_scale
    value: str  # "air"/"oxygen", "A".."U", "1"/"2"
    device: str | None
    flow_l_min: float | None
    reason: str | None
    by: str
    at: datetime  # when it was entered (gateway clock)
    age_seconds: float
    reassess: bool  # older than the site's re-assessment age: still used, flagged


@dataclass(frozen=True)
class AdmissionSnapshot:
    """Who is in the bed: `source` "adt" (hospital feed), "bedside" (admitted at the
    terminal) or "monitor" (no admission: the monitor's patient, since its first
    reading here)."""

    stay: str
    source: str
    since: datetime
    age: float | None
    sex: str | None  # "M" / "F" / None


@dataclass(frozen=True)
class BedSnapshot:
    bed: str
    stay: str
    vitals: Mapping[str, VitalSnapshot]
    risk: float | None  # latest model risk; None: not scored (insufficient data / no model)
    risk_history: tuple[RiskPoint, ...]
    threshold: float
    insufficient_data: bool
    observed: int  # raw vital values in the latest window
    news2: News2 | None
    alarm_level: AlarmLevel
    alarm_state: str  # none / active / acknowledged / silenced
    acknowledged_by: str | None
    silenced_until: datetime | None
    silenced_seconds_left: float | None
    model_name: str
    model_version: str
    link: str  # ok / stale / down: the monitor line of this bed
    readings: int  # decoded readings for this bed since start
    last_obs_time: datetime | None
    age: float | None = None  # the patient's age (static feature) of the last reading
    age_unknown: bool = False  # readings arrive but neither monitor nor ADT gave the age
    observations: tuple[ObservationSnapshot, ...] = ()
    admission: AdmissionSnapshot | None = None
    unscored_reason: str | None = None  # vitals shown but not scored, and why
    news2_alarm_level: AlarmLevel = "none"  # the NEWS2 response alarm (beside the model's)
    news2_alarm_state: str = "none"  # none / active / acknowledged / silenced
    # vital -> state that withheld its numeric in the latest reading (invalid,
    # questionable, unavailable, calibration, test_data, demo_data; several joined by
    # ","): that vital shows no value. `withheld`: state -> numerics withheld so far.
    quality: Mapping[str, str] = field(default_factory=dict)
    withheld: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EventSnapshot:
    ts: datetime
    kind: str  # alarm / feedback / model / connection / link / decoder
    bed: str | None
    text: str
    by: str | None = None


@dataclass(frozen=True)
class GatewaySnapshot:
    gw: str
    operator: str | None
    now: datetime
    broker_connected: bool
    outbox: int  # messages written but not yet acknowledged by the broker
    serial_link: str  # worst link over the beds: ok / stale / down
    model_name: str
    model_version: str
    counters: Mapping[str, int]
    beds: tuple[BedSnapshot, ...]
    events: tuple[EventSnapshot, ...] = ()
    # "ok", or what fails in the local store (full, io_error, read_only, locked,
    # unavailable, corrupt): alarms go on, writes are kept in memory until it recovers.
    storage: str = "ok"

    @property
    def storage_failing(self) -> bool:
        return self.storage != "ok"

    @property
    def buffering(self) -> bool:
        """Messages are waiting in the outbox (broker down or slow)."""
        return (not self.broker_connected) or self.outbox > 0

    def bed(self, bed: str) -> BedSnapshot | None:
        return next((b for b in self.beds if b.bed == bed), None)


_LINK_RANK = {"ok": 0, "stale": 1, "down": 2}


@dataclass
class _Vital:
    value: float | None = None
    at: datetime | None = None
    obs_time: datetime | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=VITAL_HISTORY))


@dataclass(frozen=True)
class _Obs:
    kind: str
    value: str
    device: str | None
    flow_l_min: float | None
    reason: str | None
    by: str
    at: datetime


_SEX = {1.0: "M", 0.0: "F"}


@dataclass
class _Bed:
    bed: str
    stay: str = ""
    vitals: dict[str, _Vital] = field(default_factory=lambda: {n: _Vital() for n in VITAL_NAMES})
    risk: float | None = None
    risk_history: deque = field(default_factory=lambda: deque(maxlen=RISK_HISTORY))
    threshold: float = 0.0
    insufficient: bool = True
    observed: int = 0
    news2: News2 | None = None
    alarm_level: AlarmLevel = "none"
    alarm_state: str = "none"
    acknowledged_by: str | None = None
    silenced_until: datetime | None = None
    link: str = "down"
    readings: int = 0
    last_obs_time: datetime | None = None
    age: float | None = None
    sex: float | None = None
    static_seen: bool = False  # a reading said what it knows of the static features
    stay_since: datetime | None = None  # arrival of the first reading of `stay`
    observations: dict[str, _Obs] = field(default_factory=dict)
    admission: AdmissionSnapshot | None = None
    unscored_reason: str | None = None
    news2_alarm_level: AlarmLevel = "none"
    news2_alarm_state: str = "none"
    quality: dict[str, str] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)


class GatewayState:
    """Thread-safe, observable state of one gateway; see the module docstring."""

    def __init__(
        self,
        gw: str,
        beds: list[str],
        *,
        operator: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        reassess_seconds: float = 3600.0,
    ) -> None:
        self.gw = gw
        self.operator = operator
        self._clock = clock
        self.reassess_seconds = reassess_seconds
        self._lock = threading.Lock()
        self._beds: dict[str, _Bed] = {b: _Bed(bed=b) for b in beds}
        self._broker_connected = False
        self._outbox = 0
        self._storage = "ok"
        self._model = ("", "")
        self._counters: dict[str, int] = {}
        self._events: deque[EventSnapshot] = deque(maxlen=EVENT_HISTORY)
        self._listeners: list[Callable[[Change], None]] = []

    # --- observing -------------------------------------------------------------
    def subscribe(self, fn: Callable[[Change], None]) -> Callable[[], None]:
        """Call `fn(change)` after every update; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return unsubscribe

    def changes(self, maxsize: int = 10_000) -> queue.Queue[Change]:
        """A queue that receives every Change (oldest dropped when full: a slow reader
        must never block the data path)."""
        q: queue.Queue[Change] = queue.Queue(maxsize=maxsize)

        def put(c: Change) -> None:
            try:
                q.put_nowait(c)
            except queue.Full:
                try:
                    q.get_nowait()
                    q.put_nowait(c)
                except (queue.Empty, queue.Full):
                    pass

        self.subscribe(put)
        return q

    def _notify(self, change: Change) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            fn(change)

    def _bed(self, bed: str) -> _Bed:
        b = self._beds.get(bed)
        if b is None:  # a bed not in the config announced itself: show it anyway
            b = self._beds[bed] = _Bed(bed=bed)
        return b

    # --- writers (the data path) -----------------------------------------------
    def record_reading(
        self,
        bed: str,
        stay: str,
        obs_time: datetime,
        values: Mapping[str, float | None],
        *,
        static: Mapping[str, float | None] | None = None,
        quality: Mapping[str, str] | None = None,
    ) -> None:
        """A reading arrived. A vital in `quality` (withheld by the monitor) shows no
        value from now on, not the last valid one, and its state is counted."""
        now = self._clock()
        with self._lock:
            b = self._bed(bed)
            if stay != b.stay or b.stay_since is None:
                b.stay_since = now
            b.stay = stay
            if static is not None:
                b.age, b.static_seen = static.get("Age"), True
                b.sex = static.get("Gender")
            b.readings += 1
            b.last_obs_time = obs_time
            b.link = "ok"
            for name, value in values.items():
                v = b.vitals.get(name)
                if v is None:
                    continue
                v.value, v.at, v.obs_time = value, now, obs_time
                if value is not None:
                    v.history.append(float(value))
            b.quality = dict(quality or {})
            for name, why in b.quality.items():
                v = b.vitals.get(name)
                if v is not None and name not in values:
                    v.value, v.at, v.obs_time = None, now, obs_time
                for state in why.split(","):
                    b.withheld[state] = b.withheld.get(state, 0) + 1
                    key = f"withheld_{state}"
                    self._counters[key] = self._counters.get(key, 0) + 1
        self._notify(Change("reading", bed))

    def record_risk(
        self,
        bed: str,
        *,
        window_end: datetime,
        risk: float | None,
        threshold: float,
        observed: int,
        insufficient: bool,
        news2: News2 | None,
    ) -> None:
        with self._lock:
            b = self._bed(bed)
            b.risk, b.threshold, b.observed, b.insufficient = (
                risk,
                threshold,
                observed,
                insufficient,
            )
            b.news2 = news2
            b.risk_history.append(RiskPoint(window_end, risk))
        self._notify(Change("risk", bed))

    def record_alarm(
        self,
        bed: str,
        *,
        level: AlarmLevel,
        state: str,
        acknowledged_by: str | None = None,
        silenced_until: datetime | None = None,
    ) -> None:
        with self._lock:
            b = self._bed(bed)
            b.alarm_level, b.alarm_state = level, state
            b.acknowledged_by, b.silenced_until = acknowledged_by, silenced_until
        self._notify(Change("alarm", bed))

    def record_news2_alarm(self, bed: str, *, level: AlarmLevel, state: str) -> None:
        """The NEWS2 response alarm of `bed` (edge_agent/alarms.py, its own machine)."""
        with self._lock:
            b = self._bed(bed)
            b.news2_alarm_level, b.news2_alarm_state = level, state
        self._notify(Change("alarm", bed))

    def set_observation(
        self,
        bed: str,
        kind: str,
        value: str,
        *,
        by: str,
        at: datetime,
        device: str | None = None,
        flow_l_min: float | None = None,
        reason: str | None = None,
    ) -> None:
        """A nurse observation of `bed`, replacing the previous one of its kind."""
        with self._lock:
            self._bed(bed).observations[kind] = _Obs(
                kind, value, device, flow_l_min, reason, by, at
            )
        self._notify(Change("observation", bed))

    def clear_observations(self, bed: str) -> None:
        """`bed`'s nurse observations end (a new stay on its monitor)."""
        with self._lock:
            self._bed(bed).observations = {}
        self._notify(Change("observation", bed))

    def set_admission(self, bed: str, admission: AdmissionSnapshot | None) -> None:
        """Who is admitted in `bed` (ADT or bedside); None: nobody (the monitor's
        patient, if any, is then shown with source "monitor")."""
        with self._lock:
            b = self._bed(bed)
            b.admission = admission
            if admission is not None and admission.stay != b.stay:
                b.stay, b.stay_since = admission.stay, admission.since
        self._notify(Change("admission", bed))

    def set_unscored(self, bed: str, reason: str | None) -> None:
        """`bed`'s readings are shown but not scored, because of `reason` (None: scored)."""
        with self._lock:
            b = self._bed(bed)
            if b.unscored_reason == reason:
                return
            b.unscored_reason = reason
            if reason is not None:  # nothing scored is shown as current
                b.risk, b.news2, b.insufficient, b.observed = None, None, True, 0
        self._notify(Change("risk", bed))

    def end_stay(self, bed: str) -> None:
        """The bed's stay ended (discharge, transfer out): its risk, NEWS2, history and
        observations go; the vitals stay on screen until the next reading."""
        with self._lock:
            b = self._bed(bed)
            b.stay, b.stay_since = "", None
            b.risk, b.news2, b.insufficient, b.observed = None, None, True, 0
            b.risk_history.clear()
            b.observations = {}
            b.admission = None
            b.age, b.sex, b.static_seen = None, None, False
        self._notify(Change("risk", bed))

    def set_link(self, bed: str, link: str) -> None:
        with self._lock:
            b = self._bed(bed)
            if b.link == link:
                return
            b.link = link
        self._notify(Change("link", bed))

    def set_broker(self, connected: bool) -> None:
        with self._lock:
            if self._broker_connected == connected:
                return
            self._broker_connected = connected
        self._notify(Change("broker"))

    def set_outbox(self, size: int) -> None:
        with self._lock:
            if self._outbox == size:
                return
            self._outbox = size
        self._notify(Change("outbox"))

    def set_storage(self, problem: str | None) -> None:
        """The local store fails (`problem`: full, io_error, ...) or works again (None)."""
        value = problem or "ok"
        with self._lock:
            if self._storage == value:
                return
            self._storage = value
        self._notify(Change("storage"))

    def set_model(self, name: str, version: str) -> None:
        with self._lock:
            self._model = (name, version)
        self._notify(Change("model"))

    def count(self, counter: str, n: int = 1) -> None:
        """Add `n` to a named counter (frames_ok, frames_bad, published, ...)."""
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + n

    def set_counter(self, counter: str, value: int) -> None:
        with self._lock:
            self._counters[counter] = value

    def event(self, kind: str, text: str, *, bed: str | None = None, by: str | None = None) -> None:
        with self._lock:
            self._events.append(EventSnapshot(self._clock(), kind, bed, text, by))
        self._notify(Change("event", bed))

    # --- readers ---------------------------------------------------------------
    def snapshot(self) -> GatewaySnapshot:
        """A consistent immutable copy of everything, taken under the lock."""
        with self._lock:
            now = self._clock()
            beds = tuple(self._bed_snapshot(b, now) for b in self._beds.values())
            worst = max((b.link for b in beds), key=lambda x: _LINK_RANK.get(x, 2), default="ok")
            return GatewaySnapshot(
                gw=self.gw,
                operator=self.operator,
                now=now,
                broker_connected=self._broker_connected,
                outbox=self._outbox,
                serial_link=worst,
                model_name=self._model[0],
                model_version=self._model[1],
                counters=dict(self._counters),
                beds=beds,
                events=tuple(self._events),
                storage=self._storage,
            )

    def _bed_snapshot(self, b: _Bed, now: datetime) -> BedSnapshot:
        vitals = {
            n: VitalSnapshot(
                name=n,
                value=v.value,
                age_seconds=(now - v.at).total_seconds() if v.at else None,
                obs_time=v.obs_time,
                history=tuple(v.history),
            )
            for n, v in b.vitals.items()
        }
        left = None
        if b.silenced_until is not None:
            left = max(0.0, (b.silenced_until - now).total_seconds())
        observations = []
        for o in b.observations.values():
            age = (now - o.at).total_seconds()
            observations.append(
                ObservationSnapshot(
                    kind=o.kind,
                    value=o.value,
                    device=o.device,
                    flow_l_min=o.flow_l_min,
                    reason=o.reason,
                    by=o.by,
                    at=o.at,
                    age_seconds=age,
                    reassess=o.kind in REASSESS_KINDS and age > self.reassess_seconds,
                )
            )
        admission = b.admission
        if admission is None and b.stay and b.stay_since is not None:
            admission = AdmissionSnapshot(
                stay=b.stay,
                source="monitor",
                since=b.stay_since,
                age=b.age,
                sex=_SEX.get(b.sex) if b.sex is not None else None,  # type: ignore[arg-type]
            )
        return BedSnapshot(
            bed=b.bed,
            stay=b.stay,
            vitals=vitals,
            risk=b.risk,
            risk_history=tuple(b.risk_history),
            threshold=b.threshold,
            insufficient_data=b.insufficient,
            observed=b.observed,
            news2=b.news2,
            alarm_level=b.alarm_level,
            alarm_state=b.alarm_state,
            acknowledged_by=b.acknowledged_by,
            silenced_until=b.silenced_until,
            silenced_seconds_left=left,
            model_name=self._model[0],
            model_version=self._model[1],
            link=b.link,
            readings=b.readings,
            last_obs_time=b.last_obs_time,
            age=b.age,
            age_unknown=b.static_seen and b.age is None,
            observations=tuple(observations),
            admission=admission,
            unscored_reason=b.unscored_reason,
            news2_alarm_level=b.news2_alarm_level,
            news2_alarm_state=b.news2_alarm_state,
            quality=dict(b.quality),
            withheld=dict(b.withheld),
        )
