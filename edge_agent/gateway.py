"""The gateway core: one worker thread per bed from line bytes to MQTT events.

Per bed: source bytes -> `MllpDecoder` (MLLP frames, IHE PCD-01 messages, an ACK written
back when the line's `ack` is set) -> `Reading` -> `GatewayState` (latest vitals)
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from contracts import topics
from contracts.messages import (
    Alarm,
    Command,
    Envelope,
    ModelRef,
    ModelRelease,
    News2Out,
    Risk,
    Vitals,
)
from contracts.mllp import frame
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
from .state import GatewayState
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
        self._mismatched: dict[str, str] = {}  # bed -> patient of its last mismatching reading
        # Neither ADT nor PV1-44: the stay's first reading on the bed is its ICU admission.
        self._first_seen: dict[str, tuple[str, datetime]] = {}  # bed -> (stay, first obs time)
        self._skew_lock = threading.Lock()
        self._skewed: dict[str, float] = {}  # bed -> skew (s) of its last message, while off
        self._skew_count = 0
        self._skew_last = 0.0
        self.release_hooks: list[Callable[[ModelRelease], None]] = []
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
        while not self._stop.is_set():
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
                self._check_clock(bed_id, d.message)
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
        self._check_clock(bed_id, msg)
        for r in readings:
            self.process_reading(bed_id, r)

    def _check_clock(self, bed_id: str, msg: Pcd01Message) -> None:
        """Flag a monitor whose clock (MSH-7) is far off the gateway's."""
        skew = (msg.msg_time - self.clock()).total_seconds()
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

    def _put_admission(self, adm: Admission, ev: AdtEvent) -> None:
        self._admissions[adm.bed] = adm
        self._mismatched.pop(adm.bed, None)
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
        self.store.drop_admission(bed_id)
        text = f"ADT {ev.event} ({why}) at {ev.event_time:%Y-%m-%d %H:%M}Z: stay {cur.stay} ends"
        log.info("bed %s: %s", bed_id, text)
        self.state.event("admission", text, bed=bed_id)
        return cur

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
        r = self._admitted(bed_id, r)
        if r.bed != bed_id:
            bed.wrong_bed += 1
            log.warning(
                "bed %s: reading labelled bed %r dropped (check the cabling/config)", bed_id, r.bed
            )
            return []
        bed.last_data = time.monotonic()
        self.state.record_reading(bed_id, r.stay, r.obs_time, r.values, static=r.static)
        with bed.lock:
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
        n2 = news2_of(step.values)
        risk: float | None = None
        observed, insufficient = 0, True
        if self.model is not None:
            inp = step.model_input or bed.windows.model_input()
            observed, insufficient = inp.observed, inp.insufficient
            if not insufficient:
                risk = min(1.0, max(0.0, self.model.score(inp.window, inp.static)))
        events = bed.alarm.on_step(risk, self.clock())
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
                total=n2.total, risk=n2.risk, subscores=n2.subscores, missing=list(n2.missing)
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

    def _alarm_events(self, bed: Bed, stay: str, events: list[AlarmEvent]) -> None:
        self._keep_alarms(bed, stay, self._show_alarms(bed, stay, events))

    def _show_alarms(
        self, bed: Bed, stay: str, events: list[AlarmEvent]
    ) -> list[tuple[AlarmEvent, Alarm]]:
        """The nurse's side of alarm changes (log, events, the bed's level), before any
        storage; returns the messages `_keep_alarms` stores and publishes."""
        gw = self.settings.gateway_id
        out: list[tuple[AlarmEvent, Alarm]] = []
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
                risk=ev.risk,  # type: ignore[arg-type]
                model=self.model_ref,
                silence_seconds=ev.silence_seconds,
                feedback=ev.feedback,
                note=ev.note,  # type: ignore[arg-type]
            )
            out.append((ev, msg))
            log.warning(
                "bed %s alarm %s (%s) by %s: %s", bed.id, ev.action, ev.level, ev.by, ev.reason
            )
            kind = "feedback" if ev.action == "feedback" else "alarm"
            self.state.event(kind, f"{ev.action} ({ev.level}): {ev.reason}", bed=bed.id, by=ev.by)
        # Always mirror the level: none <-> watch changes carry no alarm event, and the
        # terminal must still show them.
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
                    "risk": ev.risk,
                    "model": msg.model.name if msg.model else None,
                    "version": msg.model.version if msg.model else None,
                    "silence_seconds": ev.silence_seconds,
                    "feedback": ev.feedback,
                    "note": ev.note,
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
        self, bed_id: str, fn: Callable[[AlarmMachine, datetime], AlarmEvent]
    ) -> AlarmEvent:
        bed = self.beds.get(bed_id)
        if bed is None:
            raise ActionRefused(f"unknown bed {bed_id!r}")
        with bed.lock:
            ev = fn(bed.alarm, self.clock())
            self._alarm_events(bed, bed.windows.stay or "", [ev])
        return ev

    def acknowledge(self, bed: str, by: str) -> AlarmEvent:
        return self._action(bed, lambda m, now: m.acknowledge(by, now))

    def silence(self, bed: str, by: str, seconds: int) -> AlarmEvent:
        return self._action(bed, lambda m, now: m.silence(by, seconds, now))

    def feedback(self, bed: str, by: str, kind: str, note: str | None = None) -> AlarmEvent:
        return self._action(bed, lambda m, now: m.feedback(by, kind, note, now))

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
                with bed.lock:
                    events = bed.alarm.tick(self.clock())
                    self._alarm_events(bed, bed.windows.stay or "", events)
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
