"""The gateway core: one worker thread per bed from line bytes to MQTT events.

Per bed: source bytes -> `MllpDecoder` (MLLP frames, IHE PCD-01 messages, an ACK written
back when the line's `ack` is set) -> `Reading` (a line whose driver makes Readings
itself, IntelliVue Data Export, hands them over with their quality flags: `read_readings`)
-> `GatewayState` (latest vitals; withheld numerics shown and counted by state)
-> `BedWindows` (steps by observation time) -> on each closed step, patient-facing
first: build the model input with the shared preprocessing, score it with the
verified bundle (or say "insufficient data"), compute NEWS2, run the bed's
`AlarmMachine` and show all of it (state, events, log); only then store the step and
publish `vigil.vitals/1`, `vigil.risk/1` (always with the model name and version) and
a `vigil.alarm/1` for every alarm change. Every publish goes through the outbox.

Storage failing (disk full, I/O error, read-only, locked): the store keeps the writes
in memory (edge_agent/store.py) and never stops the data path; the gateway shows
"storage failing" (state, status line, `vigil.status/1` at once, one log line per
transition), hands the kept messages to the broker directly while it is connected,
and a storage thread writes what was kept back, in order, once the store takes writes.

Beds whose source is `mllp-listen` have no worker of their own: one `MllpListener` per
distinct host/port (edge_agent/listener.py) takes the monitors' connections, routes each
message to its bed and hands the readings to `process_reading` on its thread. A message
whose time (MSH-7) is further than `hl7.clock_skew_seconds` from the gateway's clock is
flagged (counters `clock_skew`, `clock_skew_last_seconds`, `clock_skew_beds`; an event).

ADT messages from the hospital on a listener (`_deliver_adt`) set each bed's admission
context (edge_agent/admission.py), kept in memory and in the store (a restart keeps
it): readings of the admitted patient take the ICU admission time, age and sex from it
when the monitor sends none; a reading for another patient is used as sent and counted
(`patient_mismatch`, an event); a discharge ends the context.

Nurse actions (`acknowledge`, `silence`, `feedback`) come from the terminal UI on its
own thread: they take the bed's lock, run the alarm machine, and are stored and
published with the operator's name and time like every other alarm change.
A health thread marks lines stale/down, lets silences expire and mirrors counters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from contracts import topics
from contracts.messages import (
    ACVPU_VALUES,
    EARLIEST,
    LATEST,
    MAX_FLOW_L_MIN,
    OXYGEN_DEVICES,
    Alarm,
    Command,
    Envelope,
    ModelRef,
    ModelRelease,
    News2Out,
    Observation,
    Risk,
    Vitals,
)
from contracts.mllp import frame
from contracts.news2 import RISK_BANDS, News2
from contracts.preprocessing import FeatureSpec, PreprocessSpec, WindowSpec
from contracts.timeutil import iso_ms, utc_now
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

from . import __version__
from .admission import ADMITS, ENDS, MOVES, Admission, fill_reading
from .alarms import ActionRefused, AlarmEvent, AlarmMachine, AlarmParams
from .config import BedConfig, EdgeSettings, MllpListenSource
from .decoder import Decoded, MllpDecoder, Reading
from .listener import ListenerBed, MllpListener, bind_error
from .privacy import load_secret, stay_pseudonym
from .publisher import Publisher, status_payload
from .scoring import RiskModel, load_model, news2_of
from .sources import LineSource, open_line

if TYPE_CHECKING:
    from .pcd01 import AdtEvent, Pcd01Message
    from .shadow import ShadowRunner
from .state import REASSESS_KINDS, AdmissionSnapshot, GatewayState
from .store import Store
from .supervisor import Supervisor
from .windows import BedWindows, ClosedStep

log = logging.getLogger(__name__)

__all__ = ["ActionRefused", "Gateway"]


def fallback_spec(step_seconds: int = 3600) -> PreprocessSpec:
    """Steps without a model: vitals and NEWS2 still flow, risk is not scored."""
    return PreprocessSpec(
        features=[FeatureSpec(name=n, mean=0.0, std=1.0, fill=0.0) for n in VITAL_NAMES],
        static_features=[FeatureSpec(name=n, mean=0.0, std=1.0, fill=0.0) for n in STATIC_FEATURES],
        window=WindowSpec(steps=1, step_seconds=step_seconds),
    )


@dataclass
class Bed:
    id: str
    windows: BedWindows
    alarm: AlarmMachine
    decoder: MllpDecoder
    lock: threading.Lock = field(default_factory=threading.Lock)
    line: LineSource | ListenerBed | None = None
    ack: bool = False  # write an HL7 ACK back on the line for every message
    last_data: float | None = None  # monotonic time of the last valid reading
    errors: int = 0
    wrong_bed: int = 0
    news2_alarm: AlarmMachine | None = None  # the NEWS2 response alarm (its own machine)
    # Nurse observations carried into every NEWS2 until changed: kind -> entry, and the
    # stay they belong to (None: not known yet, the next reading's).
    observations: dict[str, BedObservation] = field(default_factory=dict)
    obs_stay: str | None = None


@dataclass(frozen=True)
class BedObservation:
    """One nurse observation of a bed as the gateway holds it (see `Observation`)."""

    kind: str  # oxygen / acvpu / spo2_scale
    value: str
    by: str
    at: datetime  # gateway clock when entered
    device: str | None = None
    flow_l_min: float | None = None
    reason: str | None = None


NO_PATIENT = "no patient admitted to this bed"
_BAND_RANK = {band: i for i, band in enumerate(RISK_BANDS)}
_SEX_CODE = {"M": 1.0, "F": 0.0}


def news2_alarm_params(alarm_at: str, a: AlarmParams) -> AlarmParams:
    """The NEWS2 response alarm on the alarm machine: its 'risk' is the rank of the RCP
    band (low 0, low-medium 1, medium 2, high 3), raised at once (one step) at
    `alarm_at`, escalated by the band above it or by persisting, resolved below it;
    the band just below `alarm_at` (when not 'low') is 'watch'."""
    t = _BAND_RANK[alarm_at]
    return dataclasses.replace(
        a,
        threshold=float(t),
        hysteresis=0.5,
        min_steps=1,
        escalate_margin=1.0,
        watch_fraction=(t - 1) / t if t >= 2 else 1.0,
    )


class Gateway:
    def __init__(
        self,
        settings: EdgeSettings,
        *,
        model: RiskModel | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = GatewayState(
            settings.gateway_id,
            [b.id for b in settings.beds],
            operator=settings.operator,
            clock=clock,
            reassess_seconds=settings.news2.reassess_minutes * 60.0,
        )
        priv = settings.privacy
        self._stay_secret = load_secret(
            priv.stay_secret.get_secret_value() if priv.stay_secret else None,
            priv.stay_secret_file,
            settings.store_path.parent,
        )
        self._kept_lock = threading.Lock()  # kept messages handed to the broker once
        self.store = Store(settings.store_path, on_storage=self._on_storage)
        if self.store.failing is not None:  # the store could not be opened: boot anyway
            self._on_storage(self.store.failing)
        self.refused: list[str] = []
        if model is None:
            model, self.refused = load_model(settings.bundle_dirs, settings.trusted_keys)
        self.model = model
        if model is None:
            log.error(
                "no verified model bundle: risk is NOT scored (vitals and NEWS2 only): %s",
                "; ".join(self.refused) or "no bundle dirs",
            )
            self.state.event("model", "no verified model bundle: risk not scored")
        else:
            self.state.set_model(model.name, model.version)
            self.state.event("model", f"model {model.name} {model.version} active")
        spec = model.manifest.preprocessing if model else fallback_spec()
        a = settings.alarms
        params = AlarmParams(
            threshold=model.threshold if model else 1.0,
            hysteresis=a.hysteresis,
            min_steps=a.min_steps,
            escalate_after_steps=a.escalate_after_steps,
            escalate_margin=a.escalate_margin,
            watch_fraction=a.watch_fraction,
            max_silence_seconds=a.max_silence_seconds,
        )
        hl7 = settings.hl7
        vocabulary, tz = hl7.vocabulary(), hl7.tzinfo()
        self.beds: dict[str, Bed] = {
            b.id: Bed(
                b.id,
                BedWindows(b.id, spec),
                AlarmMachine(params),
                MllpDecoder(
                    hl7.max_frame_bytes,
                    source=b.id,
                    match=getattr(b.source, "match", None),
                    vocabulary=vocabulary,
                    tz=tz,
                    clock=clock,
                ),
                ack=bool(getattr(b.source, "ack", False)),
                news2_alarm=AlarmMachine(news2_alarm_params(settings.news2.alarm_at, params)),
            )
            for b in settings.beds
        }
        # One listener per distinct host/port of the `mllp-listen` beds.
        self.listeners: list[MllpListener] = []
        for (host, port), beds in settings.listeners().items():
            lst = MllpListener(
                host,
                port,
                [(b.id, b.source.match) for b in beds if isinstance(b.source, MllpListenSource)],
                self._deliver,
                hl7=hl7,
                clock=clock,
                deliver_adt=self._deliver_adt,
            )
            self.listeners.append(lst)
            for b in beds:
                assert isinstance(b.source, MllpListenSource)
                self.beds[b.id].line = ListenerBed(
                    lst, b.id, b.source.match, settings.link.down_after_seconds
                )
        # Per bed, who is admitted there (from ADT), kept across restarts in the store.
        self._adm_lock = threading.Lock()
        self._admissions: dict[str, Admission] = {}
        for row in self.store.rows("admissions"):
            if row["bed"] in self.beds:
                self._admissions[row["bed"]] = Admission.from_row(row)
                self._show_admission(row["bed"])
        self._restore_observations()
        self._mismatched: dict[str, str] = {}  # bed -> patient of its last mismatching reading
        # Neither ADT nor PV1-44: the stay's first reading on the bed is its ICU admission.
        self._first_seen: dict[str, tuple[str, datetime]] = {}  # bed -> (stay, first obs time)
        self._skew_lock = threading.Lock()
        self._skewed: dict[str, float] = {}  # bed -> skew (s) of its last message, while off
        self._skew_count = 0
        self._skew_last = 0.0
        self.release_hooks: list[Callable[[ModelRelease], None]] = []
        self.shadow: ShadowRunner | None = None  # edge_agent/shadow.py: attach_shadow
        self.publisher = Publisher(
            settings,
            self.store,
            self.state,
            status_payload(
                settings,
                self.state,
                failed_threads=self._failed_threads,
                agent_version=__version__,
            ),
            on_command=self._on_command,
            on_release=self._on_release,
            clock=clock,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Every thread the gateway owns runs under it: one that dies is restarted and
        # reported (counters thread_restarts/threads_failed, a `fault` event).
        self.supervisor = Supervisor(self.state, self._stop)
        self.publisher.spawn = self.supervisor.spawn

    @property
    def model_ref(self) -> ModelRef:
        if self.model is None:
            return ModelRef(name="none", version="none")
        return ModelRef(name=self.model.name, version=self.model.version)

    # --- lifecycle -------------------------------------------------------------
    def start(self, *, sources: bool = True) -> None:
        """Connect to the broker and start one worker per bed (sources=False: feed
        readings yourself with `process_bytes`/`process_reading`, for tests/benches)."""
        self.publisher.start()
        sup = self.supervisor
        sup.watch("mqtt-network", self.publisher.network_alive, self.publisher.restart_network)
        if sources:
            for lst in self.listeners:
                self._start_listener(lst)
                sup.watch(
                    f"mllp-{lst.host}:{lst.port}",
                    lambda lst=lst: lst.running or lst.bind_failed or self._stop.is_set(),
                    lambda lst=lst: self._start_listener(lst),
                )
            for cfg in self.settings.beds:
                if isinstance(cfg.source, MllpListenSource):
                    continue  # served by its listener
                t = sup.spawn(f"bed-{cfg.id}", lambda cfg=cfg: self._bed_loop(cfg))
                self._threads.append(t)
        t = sup.spawn("vigil-health", self._health_loop)
        self._threads.append(t)
        t = sup.spawn("vigil-storage", self._storage_loop)
        self._threads.append(t)

    @property
    def stopping(self) -> bool:
        """True once the gateway was told to stop (the terminal closes with it)."""
        return self._stop.is_set()

    def stop(self, flush_timeout: float = 5.0) -> None:
        self._stop.set()
        for lst in self.listeners:
            lst.stop()
        for t in self._threads:
            t.join(5)
        for b in self.beds.values():
            if b.line is not None:
                b.line.close()
                shutdown = getattr(b.line, "shutdown", None)
                if shutdown:
                    shutdown()
        self._mirror_counters()
        self.publisher.stop(flush_timeout)
        self.store.close()

    def wait(self) -> None:
        """Block until `stop()` (from a signal handler or another thread)."""
        while not self._stop.wait(0.5):
            pass

    # --- the data path ---------------------------------------------------------
    def _start_listener(self, lst: MllpListener) -> bool:
        """Bind `lst`; on failure say why (the health loop tries again)."""
        try:
            lst.start()
        except OSError as e:
            why = bind_error(e)
            log.error("MLLP listener %s:%d cannot start: %s", lst.host, lst.port, why)
            self.state.event("link", f"listener {lst.host}:{lst.port} cannot start: {why}")
            return False
        self.state.event("link", f"listening for monitors on {lst.host}:{lst.port}")
        return True

    def _bed_loop(self, cfg: BedConfig) -> None:
        bed = self.beds[cfg.id]
        if bed.line is not None:  # restarted by the supervisor: the old line goes first
            with contextlib.suppress(Exception):
                bed.line.close()
            bed.decoder.reset()
        try:
            bed.line = open_line(cfg.id, cfg.source, self.settings.link, self._stop)
        except Exception as e:
            log.exception("bed %s: cannot set up its source", cfg.id)
            self.state.event("link", f"source cannot start: {e}", bed=cfg.id)
            return
        # A line whose driver makes Readings itself (IntelliVue Data Export) hands them
        # over as they are, quality flags and receipt time included: no HL7 round trip.
        direct = getattr(bed.line, "read_readings", None)
        while not self._stop.is_set():
            if direct is not None:
                readings = direct()
                if readings is None:
                    self.state.event("link", f"line {bed.line.describe()} reset", bed=cfg.id)
                for r in readings or ():
                    self._check_clock(cfg.id, r.obs_time)
                    self.process_reading(cfg.id, r)
                continue
            data = bed.line.read()
            if data is None:
                bed.decoder.reset()
                self.state.event("link", f"line {bed.line.describe()} reset", bed=cfg.id)
                continue
            if data:
                self.process_bytes(cfg.id, data)

    def process_bytes(self, bed_id: str, data: bytes) -> int:
        """Decode `data` from bed `bed_id`'s line, process each reading (ACK each message
        back when the line's `ack` is set); returns the number of readings decoded."""
        bed = self.beds[bed_id]
        n = 0
        for d in bed.decoder.feed_frames(data):
            if d.reason == "wrong_bed":
                bed.wrong_bed += 1
            if d.message is not None:
                self._check_clock(bed_id, d.message.msg_time)
            for r in d.readings:
                self.process_reading(bed_id, r)
            n += len(d.readings)
            if bed.ack:
                self._write_ack(bed, d)
        return n

    def _write_ack(self, bed: Bed, d: Decoded) -> None:
        write = getattr(bed.line, "write", None)
        if write is None or not d.ack:
            return
        try:
            write(frame(d.ack))
        except OSError as e:  # the line's reader notices a lost line and reopens it
            log.info("bed %s: ACK not written: %s", bed.id, e)

    def _deliver(self, bed_id: str, msg: Pcd01Message, readings: list[Reading]) -> None:
        """A listener's message for `bed_id` (the listener's thread)."""
        self._check_clock(bed_id, msg.msg_time)
        for r in readings:
            self.process_reading(bed_id, r)

    def _check_clock(self, bed_id: str, monitor_time: datetime) -> None:
        """Flag a monitor whose clock (MSH-7, a driver's device time) is far off ours."""
        skew = (monitor_time - self.clock()).total_seconds()
        off = abs(skew) > self.settings.hl7.clock_skew_seconds
        with self._skew_lock:
            was = self._skewed.get(bed_id)
            if off:
                self._skew_count += 1
                self._skew_last = skew
                self._skewed[bed_id] = skew
            elif was is not None:
                del self._skewed[bed_id]
        if off and was is None:
            log.warning("bed %s: monitor clock %+.0f s off the gateway's", bed_id, skew)
            self.state.event("clock", f"monitor clock {skew:+.0f} s off the gateway's", bed=bed_id)
        elif not off and was is not None:
            self.state.event("clock", "monitor clock agrees with the gateway's again", bed=bed_id)

    def stay_pseudonym(self, raw: str, admit: datetime | str | None) -> str:
        """The stay id this gateway publishes for PID-3 `raw` and PV1-44 `admit`."""
        return stay_pseudonym(self._stay_secret, raw, admit)

    # --- admission from ADT (listener thread) ------------------------------------
    def admission(self, bed_id: str) -> Admission | None:
        """Who is admitted in `bed_id` from the hospital's ADT messages, if anyone."""
        with self._adm_lock:
            return self._admissions.get(bed_id)

    def _deliver_adt(self, bed_id: str | None, prior_id: str | None, ev: AdtEvent) -> None:
        """An ADT message for `bed_id` (PV1-3) and, for a transfer, `prior_id` (PV1-6)."""
        patient = self.stay_pseudonym(ev.patient_id, None)
        with self._adm_lock:
            if ev.event in ENDS:
                if bed_id is not None:
                    self._end_admission(bed_id, patient, ev, ev.meaning)
            elif ev.event in MOVES:
                moved = None
                if prior_id is not None:
                    moved = self._end_admission(
                        prior_id, patient, ev, f"{ev.meaning} to {bed_id or 'another unit'}"
                    )
                if bed_id is not None:
                    # Within the unit the ICU stay goes on; from elsewhere it starts now.
                    icu_admit = moved.icu_admit if moved else ev.event_time
                    hosp = (moved.hosp_admit if moved else None) or ev.admit_time
                    self._admit(bed_id, patient, ev, icu_admit, hosp)
            elif bed_id is not None:
                cur = self._admissions.get(bed_id)
                if ev.event == "A08" and cur is not None and cur.patient == patient:
                    age = ev.age if ev.age is not None else cur.age
                    sex = ev.sex if ev.sex is not None else cur.sex
                    if (age, sex) != (cur.age, cur.sex):
                        self._put_admission(dataclasses.replace(cur, age=age, sex=sex), ev)
                else:
                    assert ev.event in ADMITS
                    icu_admit = ev.admit_time or ev.event_time
                    self._admit(bed_id, patient, ev, icu_admit, ev.admit_time)

    def _admit(
        self,
        bed_id: str,
        patient: str,
        ev: AdtEvent,
        icu_admit: datetime | None,
        hosp_admit: datetime | None,
    ) -> None:
        cur = self._admissions.get(bed_id)
        adm = Admission(
            bed=bed_id,
            patient=patient,
            stay=self.stay_pseudonym(ev.patient_id, icu_admit),
            icu_admit=icu_admit,
            hosp_admit=hosp_admit,
            age=ev.age,
            sex=ev.sex,
            since=ev.event_time,
            event=ev.event,
        )
        if cur is not None and cur.patient != patient:
            self.state.event(
                "admission", f"{cur.stay} leaves (another patient admitted)", bed=bed_id
            )
        self._put_admission(adm, ev)

    def _show_admission(self, bed_id: str) -> None:
        """Mirror the bed's admission (or none) into the state the terminal reads."""
        adm = self._admissions.get(bed_id)
        self.state.set_admission(
            bed_id,
            None
            if adm is None
            else AdmissionSnapshot(
                stay=adm.stay,
                source=adm.source,
                since=adm.since,
                age=adm.age,
                sex={1.0: "M", 0.0: "F"}.get(adm.sex) if adm.sex is not None else None,  # type: ignore[arg-type]
            ),
        )

    def _put_admission(self, adm: Admission, ev: AdtEvent) -> None:
        self._admissions[adm.bed] = adm
        self._mismatched.pop(adm.bed, None)
        self._show_admission(adm.bed)
        self.store.put_admission(adm.row())
        text = f"ADT {ev.event} ({ev.meaning}) at {ev.event_time:%Y-%m-%d %H:%M}Z: {adm.describe()}"
        log.info("bed %s: %s", adm.bed, text)
        self.state.event("admission", text, bed=adm.bed)

    def _end_admission(self, bed_id: str, patient: str, ev: AdtEvent, why: str) -> Admission | None:
        """End the bed's admission if it is this patient's; returns the ended one."""
        cur = self._admissions.get(bed_id)
        if cur is None or cur.patient != patient:
            if cur is not None:
                self.state.count("adt_not_admitted")
                self.state.event(
                    "admission",
                    f"ADT {ev.event} ({ev.meaning}) for a patient not admitted here: ignored",
                    bed=bed_id,
                )
            return None
        del self._admissions[bed_id]
        self._mismatched.pop(bed_id, None)
        self._show_admission(bed_id)
        self.store.drop_admission(bed_id)
        text = f"ADT {ev.event} ({why}) at {ev.event_time:%Y-%m-%d %H:%M}Z: stay {cur.stay} ends"
        log.info("bed %s: %s", bed_id, text)
        self.state.event("admission", text, bed=bed_id)
        return cur

    # --- the bedside: nurse observations and admission (UI thread) ----------------
    def _known(self, bed_id: str) -> Bed:
        bed = self.beds.get(bed_id)
        if bed is None:
            raise LookupError(f"unknown bed {bed_id!r}")
        return bed

    @staticmethod
    def _who(by: str) -> str:
        if not isinstance(by, str) or not by.strip():
            raise ValueError("who is entering this must be named (by)")
        if len(by.strip()) > 128 or not by.strip().isprintable():
            raise ValueError("the name of who enters this must be at most 128 printable characters")
        return by.strip()

    def _stay_of(self, bed: Bed) -> str:
        adm = self.admission(bed.id)
        return (adm.stay if adm else None) or bed.windows.stay or "-"

    def set_oxygen(
        self,
        bed: str,
        *,
        by: str,
        on_oxygen: bool,
        device: str | None = None,
        flow_l_min: float | None = None,
    ) -> Observation:
        """Record supplemental oxygen (NEWS2: 2 points) or air for `bed`: on oxygen with
        the device (one of `contracts.messages.OXYGEN_DEVICES`) and flow (0-80 L/min)
        when known. LookupError: unknown bed; ValueError: a bad value, in words."""
        b, who = self._known(bed), self._who(by)
        if not isinstance(on_oxygen, bool):
            raise ValueError("on_oxygen must be true (oxygen) or false (air)")
        if not on_oxygen and (device is not None or flow_l_min is not None):
            raise ValueError("a patient on air has no oxygen device or flow")
        if device is not None and device not in OXYGEN_DEVICES:
            raise ValueError(f"oxygen device must be one of {', '.join(OXYGEN_DEVICES)}")
        if flow_l_min is not None:
            if isinstance(flow_l_min, bool) or not isinstance(flow_l_min, int | float):
                raise ValueError("oxygen flow must be a number of L/min")
            if not math.isfinite(flow_l_min) or not 0 <= flow_l_min <= MAX_FLOW_L_MIN:
                raise ValueError(f"oxygen flow must be 0-{MAX_FLOW_L_MIN:g} L/min")
            flow_l_min = float(flow_l_min)
        value = "oxygen" if on_oxygen else "air"
        return self._observe(b, "oxygen", value, who, device=device, flow_l_min=flow_l_min)

    def set_acvpu(self, bed: str, *, by: str, level: str) -> Observation:
        """Record consciousness on the ACVPU scale (A alert 0; C, V, P, U: 3 points)."""
        b, who = self._known(bed), self._who(by)
        lv = level.strip().upper() if isinstance(level, str) else level
        if lv not in ACVPU_VALUES:
            raise ValueError(f"ACVPU level must be one of {', '.join(ACVPU_VALUES)}, got {level!r}")
        return self._observe(b, "acvpu", lv, who)

    def set_spo2_scale(self, bed: str, *, by: str, scale: int, reason: str | None) -> Observation:
        """Set the bed's SpO2 scale, by a clinician: 2 (hypercapnic respiratory failure,
        target 88-92 %) needs a reason; 1 is the default scale."""
        b, who = self._known(bed), self._who(by)
        if isinstance(scale, bool) or scale not in (1, 2):
            raise ValueError(f"SpO2 scale must be 1 or 2, got {scale!r}")
        why = reason.strip() if isinstance(reason, str) and reason.strip() else None
        if scale == 2 and why is None:
            raise ValueError("SpO2 scale 2 needs a reason (e.g. hypercapnic respiratory failure)")
        if why is not None and (len(why) > 500 or not why.isprintable()):
            raise ValueError("the reason must be at most 500 printable characters")
        return self._observe(b, "spo2_scale", str(scale), who, reason=why)

    def _observe(
        self,
        bed: Bed,
        kind: str,
        value: str,
        by: str,
        *,
        device: str | None = None,
        flow_l_min: float | None = None,
        reason: str | None = None,
    ) -> Observation:
        """Shown first (the bed's observations, state, event, log), then stored and
        sent (outbox) like an alarm change; carried into every NEWS2 of the bed until
        changed or the stay ends."""
        now = self.clock()
        gw = self.settings.gateway_id
        with bed.lock:
            msg = Observation(
                gw=gw,
                ts=now,
                bed=bed.id,
                stay=self._stay_of(bed),
                kind=kind,  # type: ignore[arg-type]
                value=value,
                device=device,  # type: ignore[arg-type]
                flow_l_min=flow_l_min,
                reason=reason,
                by=by,
            )
            bed.observations[kind] = BedObservation(
                kind, value, by, now, device=device, flow_l_min=flow_l_min, reason=reason
            )
            bed.obs_stay = msg.stay if msg.stay != "-" else None
            self.state.set_observation(
                bed.id,
                kind,
                value,
                by=by,
                at=now,
                device=device,
                flow_l_min=flow_l_min,
                reason=reason,
            )
        text = _describe_observation(kind, value, device, flow_l_min, reason)
        log.info("bed %s: %s by %s", bed.id, text, by)
        self.state.event("observation", text, bed=bed.id, by=by)
        self.store.add_observation(
            {
                "event_id": str(msg.event_id),
                "ts": iso_ms(now),
                "bed": bed.id,
                "stay": msg.stay,
                "kind": kind,
                "value": value,
                "device": device,
                "flow_l_min": flow_l_min,
                "reason": reason,
                "by": by,
            }
        )
        self._publish(topics.observation(gw, bed.id), msg)
        return msg

    def _restore_observations(self) -> None:
        """At start: each bed's latest observations of its stay (the admitted one, else
        the stay of its last stored step), from the store. A reading of another stay
        clears them (`process_reading`). An entry made while the bed had no stay yet
        (stored with stay "-") is not restored: whose it was is not known."""
        for bed_id, bed in self.beds.items():
            adm = self._admissions.get(bed_id)
            stay = adm.stay if adm is not None else self.store.last_stay(bed_id)
            if stay is None:
                continue
            rows = self.store.rows("observations", "bed = ? AND stay = ?", [bed_id, stay])
            bed.obs_stay = stay if rows else None
            for row in sorted(rows, key=lambda r: r["ts"]):
                o = BedObservation(
                    row["kind"],
                    row["value"],
                    row["by"],
                    datetime.fromisoformat(row["ts"]),
                    device=row["device"],
                    flow_l_min=row["flow_l_min"],
                    reason=row["reason"],
                )
                bed.observations[o.kind] = o
                self.state.set_observation(
                    bed_id,
                    o.kind,
                    o.value,
                    by=o.by,
                    at=o.at,
                    device=o.device,
                    flow_l_min=o.flow_l_min,
                    reason=o.reason,
                )

    def admit(
        self,
        bed: str,
        *,
        by: str,
        patient_id: str,
        age: float | None,
        sex: str | None,
        admitted_at: datetime | None = None,
    ) -> Admission:
        """Admit a patient to `bed` at the bedside (sites without an ADT feed). The
        typed or scanned `patient_id` is pseudonymised here as the ADT path does
        (edge_agent/privacy.py) and never kept; `admitted_at` (default now; naive: UTC)
        is the ICU admission the stay's hours count from. A new stay: the bed's windows,
        NEWS2 observations and alarms start afresh."""
        b, who = self._known(bed), self._who(by)
        pid = patient_id.strip() if isinstance(patient_id, str) else ""
        if not pid:
            raise ValueError("patient id is empty: type or scan it")
        if len(pid) > 64 or any(not c.isprintable() for c in pid):
            raise ValueError("patient id must be at most 64 printable characters")
        if age is not None:
            if isinstance(age, bool) or not isinstance(age, int | float):
                raise ValueError("age must be a number of years")
            if not math.isfinite(age) or not 0 <= age <= 120:
                raise ValueError("age must be 0-120 years")
        if sex is not None and sex not in _SEX_CODE:
            raise ValueError(f"sex must be M or F (or unknown), got {sex!r}")
        now = self.clock()
        at = admitted_at or now
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at > now + timedelta(minutes=5):
            raise ValueError("admission time is in the future")
        if at < now - timedelta(days=365):
            raise ValueError("admission time is more than a year ago")
        patient = self.stay_pseudonym(pid, None)
        with b.lock, self._adm_lock:
            cur = self._admissions.get(bed)
            if cur is not None:
                raise ValueError(f"bed {bed} already has stay {cur.stay}: discharge or transfer it")
            elsewhere = next(
                (a.bed for a in self._admissions.values() if a.patient == patient), None
            )
            if elsewhere is not None:
                raise ValueError(f"this patient is admitted in bed {elsewhere}: transfer instead")
            adm = Admission(
                bed=bed,
                patient=patient,
                stay=self.stay_pseudonym(pid, at),
                icu_admit=at,
                hosp_admit=None,
                age=float(age) if age is not None else None,
                sex=_SEX_CODE[sex] if sex is not None else None,
                since=now,
                event="bedside",
                source="bedside",
            )
            self._new_stay(b, who, "admitted")
            self._admissions[bed] = adm
            self._mismatched.pop(bed, None)
            self._show_admission(bed)
            self.state.set_unscored(bed, None)
        self._admission_changed(bed, f"admitted at the bedside: {adm.describe()}", who)
        self.store.put_admission(adm.row())
        return adm

    def transfer(self, bed: str, *, by: str, to_bed: str) -> Admission:
        """Move `bed`'s admitted patient, with the nurse observations, to `to_bed`
        (the ICU stay goes on; `bed`'s windows and alarms end with it there)."""
        b, who = self._known(bed), self._who(by)
        dst = self._known(to_bed)
        if to_bed == bed:
            raise ValueError(f"the patient is already in bed {bed}")
        first, second = (
            (b, dst) if list(self.beds).index(bed) < list(self.beds).index(to_bed) else (dst, b)
        )
        with first.lock, second.lock, self._adm_lock:
            cur = self._admissions.get(bed)
            if cur is None:
                raise ValueError(f"no patient admitted to bed {bed}")
            there = self._admissions.get(to_bed)
            if there is not None:
                raise ValueError(f"bed {to_bed} already has stay {there.stay}")
            moved = dataclasses.replace(
                cur, bed=to_bed, since=self.clock(), event="transfer", source="bedside"
            )
            observations = dict(b.observations)
            self._new_stay(b, who, f"transferred to {to_bed}")
            self._new_stay(dst, who, f"transferred in from {bed}")
            dst.observations, dst.obs_stay = observations, moved.stay
            for o in observations.values():
                self.state.set_observation(
                    to_bed,
                    o.kind,
                    o.value,
                    by=o.by,
                    at=o.at,
                    device=o.device,
                    flow_l_min=o.flow_l_min,
                    reason=o.reason,
                )
            del self._admissions[bed]
            self._admissions[to_bed] = moved
            self._mismatched.pop(bed, None)
            self._mismatched.pop(to_bed, None)
            self._show_admission(bed)
            self._show_admission(to_bed)
        self._admission_changed(bed, f"stay {cur.stay} transferred to bed {to_bed}", who)
        self._admission_changed(to_bed, f"stay {cur.stay} transferred in from bed {bed}", who)
        self.store.drop_admission(bed)
        self.store.put_admission(moved.row())
        return moved

    def discharge(self, bed: str, *, by: str) -> Admission:
        """End the stay of `bed`'s admitted patient: its windows, observations and
        alarms end (an active alarm is resolved, with who); the next reading of the
        bed starts afresh (and is not scored with `[admission] require = true`)."""
        b, who = self._known(bed), self._who(by)
        with b.lock, self._adm_lock:
            cur = self._admissions.get(bed)
            if cur is None:
                raise ValueError(f"no patient admitted to bed {bed}")
            self._new_stay(b, who, "discharged")
            del self._admissions[bed]
            self._mismatched.pop(bed, None)
            self._show_admission(bed)
        self._admission_changed(bed, f"stay {cur.stay} discharged", who)
        self.store.drop_admission(bed)
        return cur

    def _new_stay(self, bed: Bed, by: str, why: str) -> None:
        """The bed's stay ends (under its lock): windows reset, observations cleared, an
        alarm still raised resolved (with who and why), first-reading anchor dropped."""
        stay = bed.windows.stay or "-"
        for machine, source in ((bed.alarm, "model"), (bed.news2_alarm, "news2")):
            if machine is None:
                continue
            s = machine.s
            machine.s = type(s)()
            if s.level in ("alarm", "escalated"):
                ev = AlarmEvent(self.clock(), "resolved", "none", by, f"stay ended: {why}")
                self._alarm_events(bed, stay, [ev], source=source)
            else:
                self._show_alarms(bed, stay, [], source=source)
        late = bed.windows.late
        bed.windows = BedWindows(bed.id, bed.windows.spec)
        bed.windows.late = late
        bed.observations, bed.obs_stay = {}, None
        self._first_seen.pop(bed.id, None)
        self.state.end_stay(bed.id)
        if self.settings.admission.require:  # until the next admission
            self.state.set_unscored(bed.id, NO_PATIENT)

    def _admission_changed(self, bed: str, text: str, by: str) -> None:
        """Log, show and announce (a status with the beds' stays) an admission change."""
        log.info("bed %s: %s by %s", bed, text, by)
        self.state.event("admission", text, bed=bed, by=by)
        publisher = getattr(self, "publisher", None)
        if publisher is not None and publisher.connected:
            with contextlib.suppress(Exception):  # the periodic status follows anyway
                publisher.client.publish(
                    publisher.topic_status,
                    publisher._status("online").to_json(),
                    qos=1,
                    retain=True,
                )

    def _admitted(self, bed_id: str, r: Reading) -> Reading:
        """`r` (raw PID-3) with its stay pseudonym, completed from the bed's admission
        when it is the admitted patient's (or names no patient)."""
        with self._adm_lock:
            adm = self._admissions.get(bed_id)
            if adm is not None and r.stay:
                patient = self.stay_pseudonym(r.stay, None)
                if patient != adm.patient:
                    first = self._mismatched.get(bed_id) != patient
                    self._mismatched[bed_id] = patient
                    self.state.count("patient_mismatch")
                    if first:
                        log.warning(
                            "bed %s: monitor's patient differs from the admitted one", bed_id
                        )
                        self.state.event(
                            "admission",
                            f"monitor's patient differs from the admitted one ({adm.stay}): "
                            "its readings are used as sent",
                            bed=bed_id,
                        )
                    adm = None
                else:
                    self._mismatched.pop(bed_id, None)
        if adm is None:
            r = dataclasses.replace(r, stay=self.stay_pseudonym(r.stay, r.icu_admit))
            return r if r.icu_admit is not None else self._from_first_reading(bed_id, r)
        if r.icu_admit is None or not r.stay:
            stay = adm.stay  # the admission's stay: PID-3 with the ADT's ICU admission
        else:
            stay = self.stay_pseudonym(r.stay, r.icu_admit)  # the monitor's own PV1-44
        return dataclasses.replace(fill_reading(adm, r), stay=stay)

    def _from_first_reading(self, bed_id: str, r: Reading) -> Reading:
        """No admission time from ADT or PV1-44: the stay's first reading on this bed is
        taken as its ICU admission (ICULOS counts from it; steps are anchored on it)."""
        with self._adm_lock:
            first = self._first_seen.get(bed_id)
            if first is None or first[0] != r.stay:
                first = self._first_seen[bed_id] = (r.stay, r.obs_time)
        static = dict(r.static, ICULOS=(r.obs_time - first[1]) / timedelta(hours=1))
        return dataclasses.replace(r, icu_admit=first[1], static=static)

    def process_reading(self, bed_id: str, r: Reading) -> list[ClosedStep]:
        """Process one decoded reading. Its raw PID-3 stops here: from now on (state,
        windows, store, outbox, MQTT) the stay is its pseudonym (edge_agent/privacy.py).
        The bed's admission from ADT completes it (`_admitted`)."""
        bed = self.beds[bed_id]
        if not EARLIEST <= r.obs_time < LATEST:
            # A garbled observation time (OBX-14 of year 9026, a monitor clock reset to
            # 1970): such a step could never be sent (contracts/messages.py), and the
            # bed's later readings would look late against it. Counted and dropped.
            self.state.count("reading_time_out_of_range")
            log.warning(
                "bed %s: reading dropped: observation time %s outside [%d, %d)",
                bed_id, r.obs_time.isoformat()[:32], EARLIEST.year, LATEST.year,
            )  # fmt: skip
            return []
        r = self._admitted(bed_id, r)
        if r.bed != bed_id:
            bed.wrong_bed += 1
            log.warning(
                "bed %s: reading labelled bed %r dropped (check the cabling/config)", bed_id, r.bed
            )
            return []
        bed.last_data = time.monotonic()
        self.state.record_reading(
            bed_id, r.stay, r.obs_time, r.values, static=r.static, quality=r.quality
        )
        if self.settings.admission.require and self.admission(bed_id) is None:
            # Shown (vitals, above), not scored: no step, no risk, no NEWS2 alarm.
            self.state.set_unscored(bed_id, NO_PATIENT)
            self.state.count("readings_unscored")
            return []
        self.state.set_unscored(bed_id, None)
        with bed.lock:
            if bed.observations and bed.obs_stay is None:
                bed.obs_stay = r.stay  # entered before the bed's first reading
            elif bed.observations and r.stay != bed.obs_stay:
                # Another stay on this bed: the last patient's entries are not this one's.
                bed.observations, bed.obs_stay = {}, None
                self.state.clear_observations(bed_id)
                log.info("bed %s: another stay: nurse observations cleared", bed_id)
                self.state.event(
                    "observation", "another stay on this bed: observations cleared", bed=bed_id
                )
            closed = bed.windows.add(r)
            for step in closed:
                try:
                    self._on_step(bed, step)
                except Exception:  # one bad step must not stop the bed
                    bed.errors += 1
                    log.exception("bed %s: step %s failed", bed_id, step.start)
        return closed

    def _publish(self, topic: str, msg: Envelope) -> None:
        if not self.publisher.publish(topic, msg.to_json()):
            self._publish_kept()  # the store failed: kept in memory, straight to the broker

    def _on_step(self, bed: Bed, step: ClosedStep) -> None:
        """Patient-facing first: score, NEWS2, alarms and the nurse's screen, then store
        and publish (a failing or slow store can neither stop nor delay an alarm)."""
        gw = self.settings.gateway_id
        n2 = self._news2(bed, step.values)
        risk: float | None = None
        observed, insufficient = 0, True
        inp = None
        if self.model is not None:
            inp = step.model_input or bed.windows.model_input()
            observed, insufficient = inp.observed, inp.insufficient
            if not insufficient:
                risk = min(1.0, max(0.0, self.model.score(inp.window, inp.static)))
        now = self.clock()
        # The site's alarms ([news2] alarm): with "news2" only the model is scored,
        # shown and sent but raises nothing; with "model" only NEWS2 raises nothing.
        events = bed.alarm.on_step(risk, now) if self.settings.news2.model_alarm else []
        n2_events = self._news2_step(bed, n2, now)
        s = bed.alarm.s
        threshold = bed.alarm.params.threshold
        msg = Risk(
            gw=gw,
            bed=bed.id,
            stay=step.stay,
            risk=risk,
            threshold=threshold,
            alarm_level=s.level,
            model=self.model_ref,  # type: ignore[arg-type]
            news2=News2Out(
                total=n2.total,
                risk=n2.risk,  # type: ignore[arg-type]
                subscores=dict(n2.subscores),
                missing=list(n2.missing),
                scale=n2.scale,  # type: ignore[arg-type]
                assumed=list(n2.assumed),
                reassess=list(n2.reassess),
            ),
            observed=observed,
            insufficient_data=insufficient,
            window_end=step.end,
        )
        self.state.record_risk(
            bed.id,
            window_end=step.end,
            risk=risk,
            threshold=threshold,
            observed=observed,
            insufficient=insufficient,
            news2=n2,
        )
        alarms = self._show_alarms(bed, step.stay, events)
        alarms += self._show_alarms(bed, step.stay, n2_events, source="news2")
        # --- then storage and the hub (edge_agent/store.py keeps them if the disk fails)
        self.store.add_step(
            {
                "bed": bed.id,
                "stay": step.stay,
                "step_start": iso_ms(step.start),
                "step_seconds": step.step_seconds,
                "values": step.values,
                "static": step.static,
                "readings": step.readings,
            }
        )
        self._publish(
            topics.vitals(gw, bed.id),
            Vitals(
                gw=gw,
                bed=bed.id,
                stay=step.stay,
                step_start=step.start,
                step_seconds=step.step_seconds,
                iculos_hours=step.iculos_hours,
                values=step.values,
                readings=step.readings,
                static={k: v for k, v in step.static.items() if k != "ICULOS"},
                quality=step.quality or None,
            ),
        )
        self._publish(topics.risk(gw, bed.id), msg)
        self.store.add_risk(
            {
                "event_id": str(msg.event_id),
                "bed": bed.id,
                "stay": step.stay,
                "window_end": iso_ms(step.end),
                "risk": risk,
                "threshold": threshold,
                "alarm_level": s.level,
                "insufficient": int(insufficient),
                "observed": observed,
                "news2": n2.total,
                "model": msg.model.name,
                "version": msg.model.version,
            }
        )
        self._keep_alarms(bed, step.stay, alarms)
        if self.shadow is not None:  # last: a candidate scored silently (edge_agent/shadow.py)
            self.shadow.offer(bed.id, step, inp, risk, s.level)

    def _news2(self, bed: Bed, values: dict[str, float | None]) -> News2:
        """NEWS2 of a step: its vitals and the bed's nurse observations; an oxygen or
        ACVPU entry older than `[news2] reassess_minutes` is used and listed in
        `reassess` (call under the bed's lock)."""
        obs = bed.observations
        oxygen, acvpu, scale = obs.get("oxygen"), obs.get("acvpu"), obs.get("spo2_scale")
        n2 = news2_of(
            values,
            on_oxygen=None if oxygen is None else oxygen.value == "oxygen",
            acvpu=None if acvpu is None else acvpu.value,
            scale=int(scale.value) if scale is not None else 1,
        )
        limit = timedelta(minutes=self.settings.news2.reassess_minutes)
        now = self.clock()
        stale = tuple(
            k for k in REASSESS_KINDS if (o := obs.get(k)) is not None and now - o.at > limit
        )
        return dataclasses.replace(n2, reassess=stale) if stale else n2

    def _news2_step(self, bed: Bed, n2: News2, now: datetime) -> list[AlarmEvent]:
        """Run the bed's NEWS2 response alarm on this step's band; events in words."""
        machine = bed.news2_alarm
        if machine is None or not self.settings.news2.news2_alarm:
            return []
        at = self.settings.news2.alarm_at
        events = machine.on_step(float(_BAND_RANK[n2.risk]), now)
        what = f"NEWS2 {n2.total} ({n2.risk})"
        out = []
        for ev in events:
            if ev.action == "raised":
                why = f"{what} at or above the response level {at}"
            elif ev.action == "escalated":
                above = _BAND_RANK[n2.risk] > _BAND_RANK[at]
                why = f"{what}: above {at}" if above else f"{what}: {at} or above persisted"
            elif ev.action == "resolved":
                why = f"{what} below the response level {at}"
            else:
                why = ev.reason
            out.append(dataclasses.replace(ev, reason=why))
        return out

    def _alarm_events(
        self, bed: Bed, stay: str, events: list[AlarmEvent], source: str = "model"
    ) -> None:
        self._keep_alarms(bed, stay, self._show_alarms(bed, stay, events, source=source))

    def _show_alarms(
        self, bed: Bed, stay: str, events: list[AlarmEvent], source: str = "model"
    ) -> list[tuple[AlarmEvent, Alarm]]:
        """The nurse's side of alarm changes (log, events, the bed's level), before any
        storage; returns the messages `_keep_alarms` stores and publishes. `source`:
        the model's risk alarm or the NEWS2 response alarm (no risk, no model)."""
        gw = self.settings.gateway_id
        out: list[tuple[AlarmEvent, Alarm]] = []
        model = source == "model"
        for ev in events:
            msg = Alarm(
                gw=gw,
                ts=ev.ts,
                bed=bed.id,
                stay=stay or "-",
                action=ev.action,  # type: ignore[arg-type]
                level=ev.level,
                by=ev.by,
                reason=ev.reason,
                risk=ev.risk if model else None,  # type: ignore[arg-type]
                model=self.model_ref if model else None,
                silence_seconds=ev.silence_seconds,
                feedback=ev.feedback,
                note=ev.note,  # type: ignore[arg-type]
                source=source,  # type: ignore[arg-type]
            )
            out.append((ev, msg))
            name = "alarm" if model else "NEWS2 alarm"
            log.warning(
                "bed %s %s %s (%s) by %s: %s", bed.id, name, ev.action, ev.level, ev.by, ev.reason
            )
            kind = "feedback" if ev.action == "feedback" else "alarm"
            prefix = "" if model else "NEWS2 alarm "
            self.state.event(
                kind, f"{prefix}{ev.action} ({ev.level}): {ev.reason}", bed=bed.id, by=ev.by
            )
        # Always mirror the level: none <-> watch changes carry no alarm event, and the
        # terminal must still show them.
        if not model:
            assert bed.news2_alarm is not None
            n = bed.news2_alarm.s
            self.state.record_news2_alarm(bed.id, level=n.level, state=n.state)
            return out
        s = bed.alarm.s
        self.state.record_alarm(
            bed.id,
            level=s.level,
            state=s.state,
            acknowledged_by=s.acknowledged_by,
            silenced_until=s.silenced_until,
        )
        return out

    def _keep_alarms(self, bed: Bed, stay: str, alarms: list[tuple[AlarmEvent, Alarm]]) -> None:
        """Store and publish alarm changes already shown (`_show_alarms`)."""
        gw = self.settings.gateway_id
        for ev, msg in alarms:
            self.store.add_alarm(
                {
                    "event_id": str(msg.event_id),
                    "ts": iso_ms(ev.ts),
                    "bed": bed.id,
                    "stay": stay,
                    "action": ev.action,
                    "level": ev.level,
                    "by": ev.by,
                    "reason": ev.reason,
                    "risk": msg.risk,
                    "model": msg.model.name if msg.model else None,
                    "version": msg.model.version if msg.model else None,
                    "silence_seconds": ev.silence_seconds,
                    "feedback": ev.feedback,
                    "note": ev.note,
                    "source": msg.source,
                }
            )
            self._publish(topics.alarm(gw, bed.id), msg)

    # --- storage failing ---------------------------------------------------------
    def _failed_threads(self) -> list[str]:
        """The threads the supervisor gave up (none before it exists)."""
        sup = getattr(self, "supervisor", None)
        return sup.failed() if sup is not None else []

    def _on_storage(self, problem: str | None) -> None:
        """The store fails (`problem`) or recovered (None): shown at once (the store
        logged the transition) and sent to the hub in a status."""
        self.state.set_storage(problem)
        if problem is None:
            self.state.event("storage", "storage recovered: kept data written to the store")
        else:
            self.state.event(
                "storage", f"STORAGE FAILING ({problem}): alarms go on, data kept in memory"
            )
        publisher = getattr(self, "publisher", None)
        if publisher is not None and publisher.connected:
            with contextlib.suppress(Exception):  # the periodic status follows anyway
                publisher.client.publish(
                    publisher.topic_status,
                    publisher._status("online").to_json(),
                    qos=1,
                    retain=True,
                )

    def _publish_kept(self) -> None:
        """Hand the messages the store kept in memory to the broker directly (connected
        only; the others wait, in memory, for the broker or the store)."""
        if not self.publisher.connected:
            return
        client = self.publisher.client
        with self._kept_lock:
            for m in self.store.kept_messages():
                info = client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                if info.rc != 0:  # not connected any more: the rest waits
                    break
                m.info = info

    def _storage_loop(self) -> None:
        """Every second while the store fails: kept messages to the broker, and the kept
        writes back to the store once it takes them (in order)."""
        while not self._stop.wait(1.0):
            try:
                if self.store.failing is not None:
                    self._publish_kept()
                self.store.retry()
            except Exception:  # never let the storage thread die; try again next second
                log.exception("storage retry failed")

    # --- model swap (model updates) ---------------------------------------------
    def activate_model(self, model: RiskModel) -> None:
        """Switch every bed to `model` between two steps, atomically.

        All bed locks are held while the model, the beds' preprocessing specs and the
        alarm thresholds change, so no step is scored with one model's windows and the
        other's interpreter. `model` must already be verified and golden-checked.
        """
        spec = model.manifest.preprocessing
        with contextlib.ExitStack() as stack:
            for bed in self.beds.values():  # dict order: always the same lock order
                stack.enter_context(bed.lock)
            for bed in self.beds.values():
                if not bed.windows.set_spec(spec):
                    log.warning(
                        "bed %s: new model's features/step differ: history restarts", bed.id
                    )
                bed.alarm.params = dataclasses.replace(bed.alarm.params, threshold=model.threshold)
            self.model = model
        self.state.set_model(model.name, model.version)
        self.state.event("model", f"model {model.name} {model.version} active")

    # --- nurse actions (UI thread) -----------------------------------------------
    def _action(
        self,
        bed_id: str,
        fn: Callable[[AlarmMachine, datetime], AlarmEvent],
        *,
        news2: bool = True,
    ) -> AlarmEvent:
        """Run a nurse action on the bed's model alarm and (`news2`) its NEWS2 alarm:
        each one it applies to changes; refused only when it applies to neither (the
        model's refusal is the one shown). Returns the first event."""
        bed = self.beds.get(bed_id)
        if bed is None:
            raise ActionRefused(f"unknown bed {bed_id!r}")
        with bed.lock:
            now, stay = self.clock(), bed.windows.stay or ""
            done: list[AlarmEvent] = []
            refused: ActionRefused | None = None
            machines = [(bed.alarm, "model")]
            if news2 and bed.news2_alarm is not None:
                machines.append((bed.news2_alarm, "news2"))
            for machine, source in machines:
                try:
                    ev = fn(machine, now)
                except ActionRefused as e:
                    refused = refused or e
                    continue
                self._alarm_events(bed, stay, [ev], source=source)
                done.append(ev)
            if not done:
                assert refused is not None
                raise refused
        return done[0]

    def acknowledge(self, bed: str, by: str) -> AlarmEvent:
        """Acknowledge the bed's active alarms (model and NEWS2; never a monitor's)."""
        return self._action(bed, lambda m, now: m.acknowledge(by, now))

    def silence(self, bed: str, by: str, seconds: int) -> AlarmEvent:
        """Silence the bed's alarms (model and NEWS2) for `seconds`."""
        return self._action(bed, lambda m, now: m.silence(by, seconds, now))

    def feedback(self, bed: str, by: str, kind: str, note: str | None = None) -> AlarmEvent:
        """Nurse feedback on the model's alarm (a label for the model's evaluation)."""
        return self._action(bed, lambda m, now: m.feedback(by, kind, note, now), news2=False)

    # --- incoming ----------------------------------------------------------------
    def _on_command(self, cmd: Command) -> None:
        self.state.event("command", f"command {cmd.command} from {cmd.gw}")
        if cmd.command == "report_status" and self.publisher.connected:
            st = self.publisher._status("online")
            self.publisher.client.publish(
                self.publisher.topic_status, st.to_json(), qos=1, retain=True
            )
        elif cmd.command == "resend":
            if cmd.since is None:
                log.warning("resend command %s without 'since': ignored", cmd.event_id)
                self.state.count("mqtt_invalid")
                return
            n = self.publisher.resend(cmd.since)
            log.info("resend from %s: %d messages since %s queued again", cmd.gw, n, cmd.since)
            self.state.event("command", f"resend: {n} messages since {cmd.since:%H:%M:%S} queued")

    def _on_release(self, release: ModelRelease) -> None:
        self.state.count("model_releases")
        name, version = release.manifest.get("name"), release.manifest.get("version")
        name = name[:64] if isinstance(name, str) else "?"  # untrusted until verified
        version = version[:32] if isinstance(version, str) else "?"
        self.state.event(
            "model", f"model release {name} {version} received on {release.channel[:64]}"
        )
        for hook in self.release_hooks:
            try:
                hook(release)
            except Exception as e:  # one hook's bug neither stops the others nor MQTT
                self.state.count("model_release_errors")
                log.error("release hook failed: %s", type(e).__name__, exc_info=True)

    # --- health ------------------------------------------------------------------
    def _health_loop(self) -> None:
        link = self.settings.link
        retry_at = time.monotonic() + 5.0
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if now >= retry_at:  # a listener whose address was taken: try again
                retry_at = now + 5.0
                for lst in self.listeners:
                    if lst.bind_failed:
                        self._start_listener(lst)
            for bed in self.beds.values():
                if bed.line is not None and bed.line.state == "down":
                    self.state.set_link(bed.id, "down")
                elif bed.last_data is not None:
                    age = now - bed.last_data
                    self.state.set_link(
                        bed.id,
                        "down"
                        if age > link.down_after_seconds
                        else "stale"
                        if age > link.stale_after_seconds
                        else "ok",
                    )
                with bed.lock:  # `at`: wall clock; `now` stays monotonic for the next bed
                    at = self.clock()
                    events = bed.alarm.tick(at)
                    self._alarm_events(bed, bed.windows.stay or "", events)
                    if bed.news2_alarm is not None:
                        events = bed.news2_alarm.tick(at)
                        self._alarm_events(bed, bed.windows.stay or "", events, source="news2")
            self._mirror_counters()

    def _mirror_counters(self) -> None:
        tot: dict[str, int] = {
            "frames_ok": 0,
            "frames_bad": 0,
            "noise_bytes": 0,
            "late_readings": 0,
            "reconnects": 0,
            "step_errors": 0,
            "wrong_bed": 0,
            "unknown_bed": 0,
        }

        def add(key: str, n: int) -> None:
            tot[key] = tot.get(key, 0) + n

        for bed in self.beds.values():
            s = bed.decoder.stats
            tot["frames_ok"] += s.frames_ok
            tot["frames_bad"] += s.frames_bad
            tot["noise_bytes"] += s.noise_bytes
            for reason, n in s.bad.items():
                add(f"bad_{reason}", n)
            for reason, n in s.set_aside.items():
                add(f"set_aside_{reason}", n)
            tot["late_readings"] += bed.windows.late
            tot["reconnects"] += bed.line.reconnects if bed.line else 0
            tot["step_errors"] += bed.errors
            tot["wrong_bed"] += bed.wrong_bed
        for lst in self.listeners:
            ls = lst.stats
            tot["frames_ok"] += ls.frames_ok
            tot["frames_bad"] += ls.frames_bad
            tot["noise_bytes"] += ls.noise_bytes
            tot["unknown_bed"] += ls.unknown_bed
            for reason, n in ls.bad.items():
                add(f"bad_{reason}", n)
            for reason, n in ls.set_aside.items():
                add(f"set_aside_{reason}", n)
            for code, n in ls.acks.items():
                add(f"ack_{code}", n)
            add("listener_connections", ls.connections)
            add("listener_open", ls.open)
            add("listener_refused", ls.refused)
            add("listener_idle_closed", ls.idle_closed)
            add("listener_dropped_mid_frame", ls.dropped_mid_frame)
            add("adt_other_location", ls.adt_other_location)
            for event, n in ls.adt.items():
                add(f"adt_{event}", n)
        with self._skew_lock:
            tot["clock_skew"] = self._skew_count
            tot["clock_skew_last_seconds"] = round(self._skew_last)
            tot["clock_skew_beds"] = len(self._skewed)
        for k, v in self.publisher.counters.items():
            tot[f"mqtt_{k}"] = v
        for k, v in self.store.storage_counters.items():
            tot[f"storage_{k}"] = v
        tot["storage_kept_now"], tot["storage_kept_bytes"] = self.store.kept()
        tot["storage_failing"] = int(self.store.failing is not None)
        for k, v in tot.items():
            self.state.set_counter(k, v)


def _describe_observation(
    kind: str, value: str, device: str | None, flow: float | None, reason: str | None
) -> str:
    """A nurse observation in words, for the events screen and the log."""
    if kind == "oxygen":
        if value == "air":
            return "on air (no supplemental oxygen)"
        parts = [p for p in (device, f"{flow:g} L/min" if flow is not None else None) if p]
        return "on supplemental oxygen" + (f" ({', '.join(parts)})" if parts else "")
    if kind == "acvpu":
        names = {"A": "alert", "C": "new confusion", "V": "voice", "P": "pain", "U": "unresponsive"}
        return f"ACVPU {value} ({names[value]})"
    return f"SpO2 scale {value}" + (f": {reason}" if reason else "")
