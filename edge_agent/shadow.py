"""Shadow evaluation on the gateway (issue 13): a candidate bundle scored silently beside
the active one, and what it WOULD have done, for the hub's `--gate shadow`.

`attach_shadow(gateway, updater)` (after `attach_updater`, before `gateway.start()`):

- a release whose signed stamp says `mode: shadow` (published retained on
  `vigil/v1/models/{channel}/shadow` by `vigil hub rollout --shadow`) is proven by
  `ModelUpdater.prove_shadow` with every check an active bundle gets, on a worker
  thread (never the MQTT network loop), and kept behind the bundle store's `shadow`
  pointer; a restart reloads it (`boot_shadow`). A refused one is reported to the hub
  (`vigil.shadow/1`, state refused, the reason) and the gateway goes on.
- `Gateway._on_step` hands each closed step to `offer` AFTER the patient-facing path
  (score, NEWS2, alarms, the nurse's screen, store, publish): the step's model input is
  queued (bounded, `[shadow] queue_steps`; a full queue skips the step for the shadow
  and counts it) and scored on the shadow's own thread with the shadow's own
  `AlarmMachine` per bed. Nothing here writes to a bed, its alarm machine, the gateway
  state's beds or the store: the shadow cannot delay, change or raise a nurse's alarm.
- a shadow model that fails to score is dropped (pointer removed), reported with the
  reason, and the active one goes on as before.
- every `[shadow] report_minutes`, and on the hub's `report_shadow` command, a
  `vigil.shadow/1` summary of the period goes through the outbox: per model (active
  and shadow) steps, risk histogram, alarm steps and alarms raised; and the agreement
  of their alarm states per step (both / only active / only shadow / neither, from
  which the hub computes Cohen's kappa and alarm-hours per patient-day).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from contracts import topics
from contracts.bundle import BundleError
from contracts.messages import (
    ALARM_RANK,
    SHADOW_BINS,
    Command,
    ModelRef,
    ModelRelease,
    ModelSummary,
    ShadowSummary,
)

from .alarms import AlarmMachine
from .model_update import LoadedBundle, ModelUpdater, release_digest, release_mode

if TYPE_CHECKING:
    from .gateway import Gateway
    from .windows import ClosedStep, ModelInput

log = logging.getLogger(__name__)

__all__ = ["ShadowRunner", "attach_shadow"]


def _alarming(level: str) -> bool:
    return ALARM_RANK.get(level, 0) >= ALARM_RANK["alarm"]


@dataclass
class _Tally:
    """One model over one reporting period."""

    name: str
    version: str
    threshold: float
    steps: int = 0
    scored: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * SHADOW_BINS)
    alarm_steps: int = 0
    raised: int = 0

    def add(self, risk: float | None, alarming: bool, raised: bool) -> None:
        self.steps += 1
        if risk is not None:
            self.scored += 1
            self.histogram[min(SHADOW_BINS - 1, int(risk * SHADOW_BINS))] += 1
        self.alarm_steps += int(alarming)
        self.raised += int(raised)

    def summary(self) -> ModelSummary:
        return ModelSummary(
            name=self.name,
            version=self.version,
            threshold=self.threshold,
            steps=self.steps,
            scored=self.scored,
            histogram=list(self.histogram),
            alarm_steps=self.alarm_steps,
            raised=self.raised,
        )


@dataclass(frozen=True)
class _Step:
    bed: str
    step_seconds: int
    window: np.ndarray
    static: np.ndarray
    insufficient: bool
    active_risk: float | None
    active_level: str
    active_name: str
    active_version: str
    active_threshold: float
    at: datetime


class ShadowRunner:
    """The shadow model of one gateway, its alarm machines and its period tallies."""

    def __init__(self, gateway: Gateway, updater: ModelUpdater) -> None:
        self.gateway = gateway
        self.updater = updater
        self.cfg = gateway.settings.shadow
        self.loaded: LoadedBundle | None = None
        self._lock = threading.Lock()
        self._steps: queue.Queue[_Step] = queue.Queue(maxsize=self.cfg.queue_steps)
        self._releases: queue.Queue[ModelRelease] = queue.Queue(maxsize=8)
        self._machines: dict[str, AlarmMachine] = {}
        self._last_alarm: dict[tuple[str, str], bool] = {}  # (model side, bed) -> alarming
        self._refused_digest: str | None = None
        self.counters = {"steps": 0, "skipped": 0, "dropped": 0, "refused": 0, "reports": 0}
        self._reset(gateway.clock())

    # --- the period ----------------------------------------------------------------
    def _reset(self, now: datetime) -> None:
        self._start = now
        self._step_seconds = 0
        self._active: _Tally | None = None
        self._shadow: _Tally | None = None
        self._agree = {"both": 0, "only_active": 0, "only_shadow": 0, "neither": 0}

    def _take(
        self, trigger: str, state: str, reason: str = "", candidate: ModelRef | None = None
    ) -> ShadowSummary:
        """The period's summary (and a fresh period); caller holds the lock."""
        now = self.gateway.clock()
        spec = self.gateway.model.manifest.preprocessing if self.gateway.model else None
        step_seconds = self._step_seconds or (spec.window.step_seconds if spec else 3600)
        msg = ShadowSummary(
            gw=self.gateway.settings.gateway_id,
            channel=self.updater.channel,
            trigger=trigger,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            reason=reason[:2000],
            candidate=candidate,
            period_start=self._start,
            period_end=max(now, self._start),
            step_seconds=step_seconds,
            active=self._active.summary() if self._active else None,
            shadow=self._shadow.summary() if self._shadow else None,
            **self._agree,
        )
        self._reset(now)
        return msg

    def _send(self, msg: ShadowSummary) -> None:
        gw = self.gateway.settings.gateway_id
        self.gateway._publish(topics.shadow(gw), msg)
        self.counters["reports"] += 1
        self._mirror()

    def _mirror(self) -> None:
        for k, v in self.counters.items():
            self.gateway.state.set_counter(f"shadow_{k}", v)

    # --- the data path (the gateway's bed thread) ----------------------------------
    def offer(
        self,
        bed: str,
        step: ClosedStep,
        inp: ModelInput | None,
        active_risk: float | None,
        active_level: str,
    ) -> None:
        """Queue one closed step for the shadow model; never blocks, never raises."""
        if self.loaded is None or inp is None:
            return
        model = self.gateway.model
        try:
            self._steps.put_nowait(
                _Step(
                    bed,
                    step.step_seconds,
                    np.array(inp.window, dtype=np.float32, copy=True),
                    np.array(inp.static, dtype=np.float32, copy=True),
                    inp.insufficient,
                    active_risk,
                    active_level,
                    model.name if model else "none",
                    model.version if model else "none",
                    self.gateway.beds[bed].alarm.params.threshold,
                    self.gateway.clock(),
                )
            )
        except queue.Full:
            self.counters["skipped"] += 1
        except Exception:  # the shadow must never cost the patient-facing path a step
            self.counters["skipped"] += 1
            log.exception("shadow: step of bed %s not queued", bed)

    def _work_steps(self) -> None:
        while not self.gateway._stop.is_set():  # ends with the gateway (gateway.stop)
            try:
                item = self._steps.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._score(item)
            except Exception:  # never let one step end shadow evaluation
                log.exception("shadow: step of bed %s failed", item.bed)
            finally:
                self._steps.task_done()

    def _score(self, st: _Step) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        m = loaded.manifest
        if (st.active_name, st.active_version) == (m.name, m.version):
            # Promoted (e.g. by `--gate shadow`): nothing left to compare it with.
            self._drop(loaded, f"promoted: {m.name} {m.version} is now the active model")
            return
        risk: float | None = None
        if not st.insufficient:
            try:
                risk = min(1.0, max(0.0, float(loaded.model.score(st.window, st.static))))
            except Exception as e:  # a failing candidate is dropped; the active goes on
                self._drop(loaded, f"scoring failed: {type(e).__name__}: {e}")
                return
            if risk != risk:  # NaN from a broken graph
                self._drop(loaded, "scoring failed: the model returned NaN")
                return
        with self._lock:
            if self.loaded is not loaded:
                return
            machine = self._machines.get(st.bed)
            if machine is None:
                params = dataclasses.replace(
                    self.gateway.beds[st.bed].alarm.params, threshold=loaded.model.threshold
                )
                machine = self._machines[st.bed] = AlarmMachine(params)
            machine.on_step(risk, st.at)
            shadow_on = _alarming(machine.s.level)
            active_on = _alarming(st.active_level)
            if self._active is None or (self._active.name, self._active.version) != (
                st.active_name,
                st.active_version,
            ):
                if self._active is not None and self._active.steps:
                    # The active model changed mid-period: one summary per model pair.
                    self._send(self._take("periodic", "running"))
                self._active = _Tally(st.active_name, st.active_version, st.active_threshold)
            if self._shadow is None:
                m = loaded.manifest
                self._shadow = _Tally(m.name, m.version, loaded.model.threshold)
            self._step_seconds = st.step_seconds
            was_a = self._last_alarm.get(("active", st.bed), False)
            was_s = self._last_alarm.get(("shadow", st.bed), False)
            self._active.add(st.active_risk, active_on, active_on and not was_a)
            self._shadow.add(risk, shadow_on, shadow_on and not was_s)
            self._last_alarm["active", st.bed] = active_on
            self._last_alarm["shadow", st.bed] = shadow_on
            key = (
                "both"
                if active_on and shadow_on
                else "only_active"
                if active_on
                else "only_shadow"
                if shadow_on
                else "neither"
            )
            self._agree[key] += 1
            self.counters["steps"] += 1

    def _drop(self, loaded: LoadedBundle, reason: str) -> None:
        m = loaded.manifest
        with self._lock:
            if self.loaded is not loaded:
                return
            self.loaded = None
            self.counters["dropped"] += 1
            msg = self._take("dropped", "dropped", reason, ModelRef(name=m.name, version=m.version))
            self._machines.clear()
        log.error("shadow model %s %s dropped: %s", m.name, m.version, reason)
        self.gateway.state.event("model", f"shadow model {m.name} {m.version} dropped: {reason}")
        try:
            self.updater.drop_shadow()
        except OSError as e:
            log.error("shadow bundle could not be removed: %s", e)
        self._send(msg)

    # --- releases and commands -----------------------------------------------------
    def on_release(self, release: ModelRelease) -> None:
        """Release hook (MQTT network thread): shadow releases go to the release worker."""
        if release_mode(release.manifest) != "shadow":
            return
        if not self.cfg.enabled:
            log.info("shadow release ignored: [shadow] enabled = false")
            return
        try:
            self._releases.put_nowait(release)
        except queue.Full:
            log.warning("shadow release queue full: release %s dropped", release.event_id)

    def _work_releases(self) -> None:
        while not self.gateway._stop.is_set():
            try:
                release = self._releases.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.handle_release(release)
            except Exception:
                log.exception("shadow release failed")

    def handle_release(self, release: ModelRelease) -> LoadedBundle | None:
        """Prove and load a shadow release (its own thread); refusals are reported."""
        if release.channel != self.updater.channel:
            log.warning("shadow release for channel %s ignored", release.channel[:64])
            return None
        digest = release_digest(release)
        if digest == self._refused_digest:  # the retained refusal, delivered again
            return None
        raw = release.manifest
        name = raw.get("name") if isinstance(raw.get("name"), str) else "?"
        version = raw.get("version") if isinstance(raw.get("version"), str) else "?"
        try:
            loaded = self.updater.prove_shadow(release)
        except (BundleError, OSError, ValueError) as e:
            self._refuse(digest, ModelRef(name=name[:128], version=version[:64]), str(e))
            return None
        if loaded is None:
            return self.loaded
        self.use(loaded)
        return loaded

    def _refuse(self, digest: str, candidate: ModelRef, reason: str) -> None:
        self._refused_digest = digest
        self.counters["refused"] += 1
        log.warning("shadow release %s %s refused: %s", candidate.name, candidate.version, reason)
        self.gateway.state.event(
            "model", f"shadow model {candidate.name} {candidate.version} refused: {reason}"
        )
        # No tallies: the running candidate's period (if any) goes on and is reported
        # under its own name, never under the refused one's.
        now = self.gateway.clock()
        spec = self.gateway.model.manifest.preprocessing if self.gateway.model else None
        msg = ShadowSummary(
            gw=self.gateway.settings.gateway_id,
            channel=self.updater.channel,
            trigger="refused",
            state="refused",
            reason=reason[:2000],
            candidate=candidate,
            period_start=now,
            period_end=now,
            step_seconds=spec.window.step_seconds if spec else 3600,
        )
        self._send(msg)

    def use(self, loaded: LoadedBundle) -> None:
        """Run `loaded` as the shadow model from the next step (the last one's period is
        reported first, so each summary is about one candidate)."""
        with self._lock:
            previous = self._take("periodic", "running") if self._shadow else None
            self.loaded = loaded
            self._machines.clear()
            self._last_alarm = {k: v for k, v in self._last_alarm.items() if k[0] == "active"}
        if previous is not None:
            self._send(previous)
        m = loaded.manifest
        log.info("shadow model %s %s running beside the active model", m.name, m.version)
        self.gateway.state.event("model", f"shadow model {m.name} {m.version} running (silent)")
        self._mirror()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued step is scored (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self._steps.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def report(self, trigger: str = "periodic") -> ShadowSummary | None:
        """Send this period's summary (None: no shadow model ran, nothing to say)."""
        if trigger == "on_demand":
            self.drain()
        with self._lock:
            if self._shadow is None:
                return None
            msg = self._take(trigger, "running")
        self._send(msg)
        return msg

    def _report_loop(self) -> None:
        stop = self.gateway._stop
        while not stop.wait(self.cfg.report_minutes * 60.0):
            try:
                self.report("periodic")
            except Exception:
                log.exception("shadow report failed")

    def on_command(self, cmd: Command) -> None:
        if cmd.command == "report_shadow":
            threading.Thread(
                target=lambda: self.report("on_demand"), name="vigil-shadow-report", daemon=True
            ).start()


def attach_shadow(gateway: Gateway, updater: ModelUpdater | None) -> ShadowRunner | None:
    """Hook shadow evaluation into the gateway (see module doc); None without updates."""
    if updater is None:
        return None
    runner = ShadowRunner(gateway, updater)
    try:
        loaded = updater.boot_shadow() if runner.cfg.enabled else None
    except BundleError as e:
        gateway.state.event("model", f"shadow bundle dropped at boot: {e}")
        loaded = None
    if loaded is not None:
        runner.use(loaded)
    spawn = gateway.supervisor.spawn
    spawn("vigil-shadow", runner._work_steps)
    spawn("vigil-shadow-release", runner._work_releases)
    spawn("vigil-shadow-report", runner._report_loop)
    gateway.release_hooks.append(runner.on_release)
    pub = gateway.publisher
    previous = pub.on_command

    def on_command(cmd: Command) -> None:
        old = updater.channel
        if previous is not None:
            previous(cmd)
        runner.on_command(cmd)
        if updater.channel != old:  # joined another channel: its candidate, not ours
            pub.topic_shadow = topics.shadow_models(updater.channel)
            if pub.connected:
                pub.client.unsubscribe(topics.shadow_models(old))
                pub.client.subscribe(pub.topic_shadow, 1)
            if runner.loaded is not None:
                runner._drop(runner.loaded, f"gateway joined channel {updater.channel}")

    pub.on_command = on_command
    pub.topic_shadow = topics.shadow_models(updater.channel)
    gateway.shadow = runner
    return runner
