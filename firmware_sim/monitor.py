"""Monitors and the loop that drives them: the simulator's Python API.

A `Monitor` is one bedside monitor: a physiology source, a transport and a fault plan.
`Monitor.cycle(n)` builds and sends the n-th reading cycle. A `MonitorRunner` drives
many monitors from one thread, each on its own wall-clock schedule (beds are staggered
across the interval so the writes spread out), and can run in a background thread::

    runner = MonitorRunner([Monitor.generated("bed-1", PtyTransport(), "sepsis", seed=1)])
    runner.start()            # or runner.run(duration=10)
    print(runner.monitors[0].address)
    runner.stop()

Cadence (HL7.md): one cycle every `interval` simulated seconds at `speed` 1. At high
speed the wall rate is capped at `max_rate` messages per second per bed (default 10),
so a message then stands for speed / max_rate simulated seconds:
wall interval = max(interval / speed, 1 / max_rate), simulated step = wall * speed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contracts.mllp import START_BLOCK, frame
from contracts.vitals import VITAL_NAMES

from .faults import SILENT_KINDS, SPIKES, FaultEvent, FaultLog, FaultPlan, FaultSpec
from .hl7 import DEFAULT_PROFILE, Observation, Profile, birth_date_for, check_id, format_ts
from .hl7 import profile as get_profile
from .physiology import GeneratedSource, PhysiologySource, admission_times
from .transports import Transport

log = logging.getLogger(__name__)

DEFAULT_MAX_RATE = 10.0
NIBP_VITALS = ("SBP", "DBP", "MAP")


@dataclass
class MonitorStats:
    cycles: int = 0
    sent: int = 0  # frames handed to the transport and accepted
    overruns: int = 0  # frames the line could not take (nobody reading)
    silent: int = 0  # cycles not sent because of a fault
    reboots: int = 0


class Monitor:
    """One simulated bedside monitor."""

    def __init__(
        self,
        bed: str,
        source: PhysiologySource,
        transport: Transport,
        *,
        bed_number: int = 1,
        monitor_id: str | None = None,
        speed: float = 1.0,
        interval: float = 1.0,
        max_rate: float = DEFAULT_MAX_RATE,
        clock_start: datetime | None = None,
        faults: Sequence[FaultSpec] = (),
        fault_log: FaultLog | None = None,
        seed: int = 0,
        profile: str | Profile = DEFAULT_PROFILE,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if not max_rate > 0:
            raise ValueError(f"max_rate must be > 0 messages/s, got {max_rate}")
        self.bed = check_id("bed", bed)
        self.bed_number = bed_number
        self.monitor_id = check_id("monitor id", monitor_id or f"MON{bed_number:02d}")
        self.profile = get_profile(profile)
        self.device_id = self.profile.device_id(self.monitor_id)  # EUI-64 in MSH-3/OBX-18
        self._nbp: tuple[datetime, dict[str, float | None]] | None = None  # held cuff values
        self.source = source
        self.transport = transport
        self.speed = speed
        self.wall_interval = max(interval / speed, 1.0 / max_rate)
        self.sim_step = self.wall_interval * speed
        start = clock_start or datetime.now(UTC).replace(microsecond=0)
        self.clock_start = start if start.tzinfo else start.replace(tzinfo=UTC)
        patient = source.patient
        self.icu_admit, self.hospital_admit = admission_times(
            patient, source.start_s, self.clock_start
        )
        self.birth_date = birth_date_for(patient.age_years, self.icu_admit)
        self.fault_log = fault_log if fault_log is not None else FaultLog()
        self.plan = FaultPlan(bed_number, self.wall_interval, seed=seed)
        for spec in faults:
            self.plan.add(spec)
        self.seq = 0
        self.stats = MonitorStats()
        # Called with every Observation built (before faults touch the frame): for
        # tests comparing sent and received values, and for in-process demos.
        self.on_observation: Callable[[Observation], None] | None = None
        self.finished = False

    @classmethod
    def generated(
        cls, bed: str, transport: Transport, scenario: str = "stable", seed: int = 0, **kw: Any
    ) -> Monitor:
        return cls(bed, GeneratedSource(scenario, seed), transport, seed=seed, **kw)

    @property
    def address(self) -> str:
        return self.transport.address

    def inject(self, spec: FaultSpec) -> None:
        """Apply `spec` now (next cycle) or at its scheduled time; thread-safe."""
        self.plan.add(spec)

    def sim_time(self, n: int) -> float:
        """Simulated seconds since ICU admission of cycle `n`."""
        return self.source.start_s + n * self.sim_step

    def _log(
        self, spec: FaultSpec, n: int, seq: int | None, ts: str, visible: bool, detail: str = ""
    ) -> None:
        self.fault_log.record(
            FaultEvent(
                bed=self.bed,
                monitor_id=self.monitor_id,
                kind=spec.kind,
                arg=spec.arg,
                cycle=n,
                seq=seq,
                obs_time=ts,
                visible=visible,
                detail=detail,
                spec=spec.text,
            )
        )

    def cycle(self, n: int) -> bytes | None:
        """Build and send cycle `n` (0-based); the bytes put on the line, if any."""
        t = self.sim_time(n)
        end = self.source.end_s
        if end is not None and t >= end:
            self.finished = True
            return None
        self.stats.cycles += 1
        obs_time = self.clock_start + timedelta(seconds=n * self.sim_step)
        ts = format_ts(obs_time)
        values = self.source.sample(t, self.sim_step)  # sample even if unsent: same stream
        active = self.plan.active(n)
        kinds = {f.kind for f in active}

        if "reboot" in kinds:
            self.stats.silent += 1
            reboot = next(f for f in active if f.kind == "reboot")
            win = self.plan.window(reboot)
            if win is not None and n == win.end - 1:  # restart seq after the silence
                self.seq = 0
                self.stats.reboots += 1
                self._log(reboot, n, None, ts, True, f"silent cycles {win.first}..{n}")
            for f in active:
                if f.kind != "reboot":
                    self._log(f, n, None, ts, False, "hidden by reboot")
            return None

        self.seq += 1
        seq = self.seq
        silent = kinds & set(SILENT_KINDS)
        if silent:
            self.stats.silent += 1
            for f in active:
                if f.kind == "pause":
                    win = self.plan.window(f)
                    if win is not None and n == win.first:
                        self._log(f, n, seq, ts, True, f"silent cycles {win.first}..{win.end - 1}")
                elif f.kind == "dropout":
                    self._log(f, n, seq, ts, True)
                else:
                    self._log(f, n, seq, ts, False, f"hidden by {sorted(silent)[0]}")
            return None

        garbled = "garble" in kinds
        truncated = "truncate" in kinds
        for f in active:
            if f.kind in ("sensor_off", "artefact"):
                for name in f.vitals:
                    values[name] = None if f.kind == "sensor_off" else SPIKES[name]
                hidden = "truncate" if truncated else "garble" if garbled else ""
                self._log(f, n, seq, ts, not hidden, f"hidden by {hidden}" if hidden else "")

        nbp_time = self._hold_nbp(obs_time, values)
        obs = Observation(
            monitor_id=self.monitor_id,
            seq=seq,
            bed=self.bed,
            stay_id=self.source.patient.stay_id,
            obs_time=obs_time,
            values={k: values.get(k) for k in VITAL_NAMES},
            birth_date=self.birth_date,
            sex=self.source.patient.sex,
            icu_admit=self.icu_admit,
            hospital_admit=self.hospital_admit,
            nbp_time=nbp_time,
            sent_at=datetime.now(UTC),
        )
        if self.on_observation is not None:
            self.on_observation(obs)
        body = self.profile.encode(self.profile.build(obs))
        out = b""
        for f in active:
            if f.kind == "noise":
                out += self.plan.noise(f.nbytes)
                self._log(f, n, seq, ts, True, f"{f.nbytes} bytes before frame")
        if garbled:
            g = next(f for f in active if f.kind == "garble")
            body = self.plan.garble(body, g.nbytes)
            self._log(g, n, seq, ts, not truncated, "hidden by truncate" if truncated else "")
        if truncated:
            tr = next(f for f in active if f.kind == "truncate")
            out += START_BLOCK + body[: len(body) // 2]
            self._log(tr, n, seq, ts, True, f"{len(body) // 2} of {len(body)} bytes")
        else:
            out += frame(body)
        if self.transport.write(out):
            self.stats.sent += 1
        else:
            self.stats.overruns += 1
        return out

    def _hold_nbp(self, obs_time: datetime, values: dict[str, float | None]) -> datetime | None:
        """Profiles with an aperiodic cuff: BP measured every `nbp_interval_s` simulated
        seconds and held in between (`values` updated); the measurement time, else None."""
        every = self.profile.nbp_interval_s
        if every is None:
            return None
        if self._nbp is None or (obs_time - self._nbp[0]).total_seconds() >= every:
            self._nbp = (obs_time, {k: values.get(k) for k in NIBP_VITALS})
        values.update(self._nbp[1])
        return self._nbp[0]

    def close(self) -> None:
        self.transport.close()


class MonitorRunner:
    """Drives monitors from one thread on their wall-clock schedules."""

    def __init__(
        self,
        monitors: Sequence[Monitor],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not monitors:
            raise ValueError("a runner needs at least one monitor")
        self.monitors = list(monitors)
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or (lambda s: self._stop.wait(s))
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self, duration: float | None = None) -> None:
        """Run until every monitor finished, `duration` wall seconds passed, or stop()."""
        t0 = self._clock()
        k = len(self.monitors)
        # Beds are staggered over the interval so N beds do not all write at once; a
        # heap of (due time, bed) keeps each wake-up O(log N) for hundreds of beds.
        due = [(i / k * m.wall_interval, i, 0) for i, m in enumerate(self.monitors)]
        heapq.heapify(due)
        pollers = [p for m in self.monitors if (p := getattr(m.transport, "poll", None))]
        last_poll = 0.0
        while due and not self._stop.is_set():
            now = self._clock() - t0
            if duration is not None and now >= duration:
                break
            while due and due[0][0] <= now:
                _, i, n = heapq.heappop(due)
                m = self.monitors[i]
                m.cycle(n)
                if m.finished:
                    log.info("%s: replay finished after %d cycles", m.bed, m.stats.cycles)
                    continue
                at = i / k * m.wall_interval + (n + 1) * m.wall_interval
                heapq.heappush(due, (at, i, n + 1))
            if pollers and now - last_poll >= 0.02:  # TCP: accept clients, push backlog
                for poll in pollers:
                    poll()
                last_poll = now
            if due:
                wait = due[0][0] - (self._clock() - t0)
                if duration is not None:
                    wait = min(wait, duration - (self._clock() - t0))
                if pollers:
                    wait = min(wait, 0.02)
                if wait > 0:
                    self._sleep(wait)

    def start(self, duration: float | None = None) -> threading.Thread:
        """Run in a daemon thread (for tests and `vigil demo`)."""

        def target() -> None:
            try:
                self.run(duration)
            except BaseException as e:  # reported to whoever joins
                self.error = e
                log.exception("monitor runner stopped on error")

        self._thread = threading.Thread(target=target, name="vigil-sim", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError("monitor runner failed") from self.error

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(5)
        for m in self.monitors:
            m.close()


def generated_ward(
    beds: int = 1,
    scenarios: Sequence[str] = ("stable",),
    *,
    seed: int = 0,
    transport: str = "pty",
    tcp_port: int = 0,
    tcp_host: str = "127.0.0.1",
    speed: float = 1.0,
    max_rate: float = DEFAULT_MAX_RATE,
    faults: Sequence[FaultSpec] = (),
    fault_log: FaultLog | None = None,
    clock_start: datetime | None = None,
    profile: str | Profile = DEFAULT_PROFILE,
) -> MonitorRunner:
    """`beds` generated monitors (scenarios cycle over beds, bed i has seed seed+i-1),
    one pty or TCP port each (tcp_port 0: free ports), ready to `start()`.

    For in-process use (gateway tests, `vigil demo`); `runner.monitors[i].address` is
    what bed i's gateway opens.
    """
    from .transports import PtyTransport, TcpServerTransport

    if transport not in ("pty", "tcp"):
        raise ValueError(f"transport must be 'pty' or 'tcp', got {transport!r}")
    flog = fault_log if fault_log is not None else FaultLog()
    monitors = []
    for i in range(beds):
        line: Transport = (
            PtyTransport()
            if transport == "pty"
            else TcpServerTransport(tcp_port + i if tcp_port else 0, tcp_host)
        )
        monitors.append(
            Monitor(
                f"bed-{i + 1}",
                GeneratedSource(scenarios[i % len(scenarios)], seed + i),
                line,
                bed_number=i + 1,
                speed=speed,
                max_rate=max_rate,
                clock_start=clock_start,
                faults=faults,
                fault_log=flog,
                seed=seed + i,
                profile=profile,
            )
        )
    return MonitorRunner(monitors)


def make_monitor(
    bed: str,
    transport: Transport,
    *,
    scenario: str = "stable",
    seed: int = 0,
    replay: str | Path | None = None,
    stay: str | None = None,
    speed: float = 1.0,
    interval: float = 1.0,
    max_rate: float = DEFAULT_MAX_RATE,
    faults: Sequence[str | FaultSpec] = (),
    fault_log: FaultLog | None = None,
    bed_number: int = 1,
    clock_start: datetime | None = None,
    profile: str | Profile = DEFAULT_PROFILE,
    monitor_id: str | None = None,
) -> Monitor:
    """One monitor from plain settings (what a gateway's `sim` source holds).

    `replay` (a canonical table) with `stay` replays that stay, else `scenario` is
    generated from `seed`; `faults` are spec strings (see `firmware_sim.faults`).
    Raises DataError / FaultSpecError / ValueError naming what is wrong.
    """
    from .faults import parse_fault
    from .physiology import load_replay

    if (replay is None) != (stay is None):
        raise ValueError("replay and stay go together (a canonical table and a stay id in it)")
    specs = [parse_fault(f) if isinstance(f, str) else f for f in faults]
    source: PhysiologySource
    if replay is not None and stay is not None:
        (source,) = load_replay(replay, [stay], seed=seed)
    else:
        source = GeneratedSource(scenario, seed)
    return Monitor(
        bed,
        source,
        transport,
        bed_number=bed_number,
        speed=speed,
        interval=interval,
        max_rate=max_rate,
        clock_start=clock_start,
        faults=specs,
        fault_log=fault_log,
        seed=seed,
        profile=profile,
        monitor_id=monitor_id,
    )
