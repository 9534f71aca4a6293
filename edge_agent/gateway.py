"""The gateway core: one worker thread per bed from line bytes to MQTT events.

Per bed: source bytes -> `MllpDecoder` -> `Reading` -> `GatewayState` (latest vitals)
-> `BedWindows` (steps by observation time) -> on each closed step: store the step,
publish `vigil.vitals/1`, build the model input with the shared preprocessing, score
it with the verified bundle (or say "insufficient data"), compute NEWS2, run the
bed's `AlarmMachine`, publish `vigil.risk/1` (always with the model name and version)
and a `vigil.alarm/1` for every alarm change. Every publish goes through the outbox.

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
from datetime import datetime

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
from contracts.preprocessing import FeatureSpec, PreprocessSpec, WindowSpec
from contracts.timeutil import iso_ms, utc_now
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

from . import __version__
from .alarms import ActionRefused, AlarmEvent, AlarmMachine, AlarmParams
from .config import BedConfig, EdgeSettings
from .decoder import MllpDecoder, Reading
from .privacy import load_secret, stay_pseudonym
from .publisher import Publisher, status_payload
from .scoring import RiskModel, load_model, news2_of
from .sources import LineSource, open_line
from .state import GatewayState
from .store import Store
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
    line: LineSource | None = None
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
        self.store = Store(settings.store_path)
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
        self.beds: dict[str, Bed] = {
            b.id: Bed(b.id, BedWindows(b.id, spec), AlarmMachine(params), MllpDecoder(source=b.id))
            for b in settings.beds
        }
        self.release_hooks: list[Callable[[ModelRelease], None]] = []
        self.publisher = Publisher(
            settings,
            self.store,
            self.state,
            status_payload(settings, self.state, agent_version=__version__),
            on_command=self._on_command,
            on_release=self._on_release,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

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
        if sources:
            for cfg in self.settings.beds:
                t = threading.Thread(
                    target=self._bed_loop, args=(cfg,), name=f"bed-{cfg.id}", daemon=True
                )
                t.start()
                self._threads.append(t)
        t = threading.Thread(target=self._health_loop, name="vigil-health", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def stopping(self) -> bool:
        """True once the gateway was told to stop (the terminal closes with it)."""
        return self._stop.is_set()

    def stop(self, flush_timeout: float = 5.0) -> None:
        self._stop.set()
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
    def _bed_loop(self, cfg: BedConfig) -> None:
        bed = self.beds[cfg.id]
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
        """Decode `data` from bed `bed_id`'s line and process each reading; returns count."""
        bed = self.beds[bed_id]
        readings = bed.decoder.feed(data)
        for r in readings:
            self.process_reading(bed_id, r)
        return len(readings)

    def stay_pseudonym(self, raw: str, admit: datetime | str | None) -> str:
        """The stay id this gateway publishes for PID-3 `raw` and PV1-44 `admit`."""
        return stay_pseudonym(self._stay_secret, raw, admit)

    def process_reading(self, bed_id: str, r: Reading) -> list[ClosedStep]:
        """Process one decoded reading. Its raw PID-3 stops here: from now on (state,
        windows, store, outbox, MQTT) the stay is its pseudonym (edge_agent/privacy.py)."""
        bed = self.beds[bed_id]
        r = dataclasses.replace(r, stay=self.stay_pseudonym(r.stay, r.icu_admit))
        if r.bed != bed_id:
            bed.wrong_bed += 1
            log.warning(
                "bed %s: reading labelled bed %r dropped (check the cabling/config)", bed_id, r.bed
            )
            return []
        bed.last_data = time.monotonic()
        self.state.record_reading(bed_id, r.stay, r.obs_time, r.values)
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
        self.publisher.publish(topic, msg.to_json())

    def _on_step(self, bed: Bed, step: ClosedStep) -> None:
        gw = self.settings.gateway_id
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
        self.state.record_risk(
            bed.id,
            window_end=step.end,
            risk=risk,
            threshold=threshold,
            observed=observed,
            insufficient=insufficient,
            news2=n2,
        )
        self._alarm_events(bed, step.stay, events)

    def _alarm_events(self, bed: Bed, stay: str, events: list[AlarmEvent]) -> None:
        gw = self.settings.gateway_id
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
        name = release.manifest.get("name", "?")
        version = release.manifest.get("version", "?")
        self.state.event("model", f"model release {name} {version} received on {release.channel}")
        for hook in self.release_hooks:
            hook(release)

    # --- health ------------------------------------------------------------------
    def _health_loop(self) -> None:
        link = self.settings.link
        while not self._stop.wait(1.0):
            now = time.monotonic()
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
        }
        for bed in self.beds.values():
            s = bed.decoder.stats
            tot["frames_ok"] += s.frames_ok
            tot["frames_bad"] += s.frames_bad
            tot["noise_bytes"] += s.noise_bytes
            for reason, n in s.bad.items():
                tot[f"bad_{reason}"] = tot.get(f"bad_{reason}", 0) + n
            tot["late_readings"] += bed.windows.late
            tot["reconnects"] += bed.line.reconnects if bed.line else 0
            tot["step_errors"] += bed.errors
            tot["wrong_bed"] += bed.wrong_bed
        for k, v in self.publisher.counters.items():
            tot[f"mqtt_{k}"] = v
        for k, v in tot.items():
            self.state.set_counter(k, v)
