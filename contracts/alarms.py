"""The risk alarm of one bed: a pure state machine (no I/O, time passed in).

It lives in contracts because two parts run the very same machine: the gateway on
every scored step (`edge_agent/alarms.py` re-exports it) and the hub when it replays
per-hour risks to measure a threshold's alarm burden (`cloud_hub/burden.py`, issue 13):
a burden promised in a manifest is what the bedside machine really raises.

This alarm ASSISTS: it is raised beside the patient monitor's own alarms and has no
way to mute, delay, acknowledge or replace them: the gateway only reads the monitor's
export line and never writes to it. Silencing here silences this risk alarm only.

Levels: none < watch < alarm < escalated. Per scored step (`on_step`):
- `watch`: risk >= watch_fraction x threshold, informational (no alarm event).
- raised: risk >= threshold for `min_steps` consecutive scored steps (minimum
  duration: one noisy step does not alarm).
- hysteresis: once raised, the alarm holds until risk < threshold - hysteresis
  (then `resolved`); inside the band the persistence count neither grows nor resets.
- escalated: risk >= threshold + escalate_margin, or the alarm persisted
  `escalate_after_steps` scored steps. Escalation is new information: it makes an
  acknowledged or silenced alarm active again.
- a silenced alarm still active when the silence expires is `re-alarmed` (`tick`).
- insufficient data (risk None) changes nothing: a missing window neither raises
  nor resolves an alarm.
Nurse actions: acknowledge (active alarm only), silence (alarm only, bounded
duration), feedback (any time). Every change returns an `AlarmEvent` with who, when
and why, for the store, the hub and the nurse terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from contracts.messages import ALARM_RANK, AlarmLevel

SYSTEM = "system"


class ActionRefused(ValueError):
    """A nurse action that does not apply now (e.g. nothing to acknowledge, unknown bed);
    the text says why. The nurse terminal shows it as a warning."""


@dataclass(frozen=True)
class AlarmParams:
    threshold: float
    hysteresis: float = 0.05
    min_steps: int = 2
    escalate_after_steps: int = 3
    escalate_margin: float = 0.2
    watch_fraction: float = 0.8
    max_silence_seconds: int = 3600


@dataclass(frozen=True)
class AlarmEvent:
    ts: datetime
    action: str  # raised / escalated / acknowledged / silenced / resolved / re-alarmed / feedback
    level: AlarmLevel
    by: str
    reason: str
    risk: float | None = None
    silence_seconds: int | None = None
    feedback: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class AlarmState:
    level: AlarmLevel = "none"
    state: str = "none"  # none / active / acknowledged / silenced
    above: int = 0  # consecutive scored steps at or above threshold
    in_alarm: int = 0  # scored steps since raised
    acknowledged_by: str | None = None
    silenced_until: datetime | None = None
    last_risk: float | None = None


class AlarmMachine:
    """One bed's alarm; methods return (new state kept inside) the events of the change."""

    def __init__(self, params: AlarmParams) -> None:
        self.params = params
        self.s = AlarmState()

    def on_step(self, risk: float | None, now: datetime) -> list[AlarmEvent]:
        p, s = self.params, self.s
        events = self.tick(now)
        s = self.s
        if risk is None:
            return events
        hi = p.threshold
        lo = p.threshold - p.hysteresis
        above = s.above + 1 if risk >= hi else (0 if risk < lo else s.above)
        s = replace(s, above=above, last_risk=risk)
        alarming = ALARM_RANK[s.level] >= ALARM_RANK["alarm"]
        if alarming:
            if risk < lo:
                self.s = AlarmState(level=self._quiet_level(risk), last_risk=risk)
                return events + [
                    AlarmEvent(
                        now,
                        "resolved",
                        self.s.level,
                        SYSTEM,
                        f"risk {risk:.3f} < {lo:.3f} (threshold - hysteresis)",
                        risk,
                    )
                ]
            s = replace(s, in_alarm=s.in_alarm + 1)
            if s.level == "alarm":
                why = None
                if risk >= hi + p.escalate_margin:
                    why = f"risk {risk:.3f} >= {hi + p.escalate_margin:.3f} (threshold + margin)"
                elif s.in_alarm >= p.escalate_after_steps:
                    why = f"alarm persisted {s.in_alarm} steps (>= {p.escalate_after_steps})"
                if why:
                    self.s = replace(
                        s,
                        level="escalated",
                        state="active",
                        acknowledged_by=None,
                        silenced_until=None,
                    )
                    return events + [AlarmEvent(now, "escalated", "escalated", SYSTEM, why, risk)]
            self.s = s
            return events
        if above >= p.min_steps:
            self.s = replace(
                s,
                level="alarm",
                state="active",
                in_alarm=1,
                acknowledged_by=None,
                silenced_until=None,
            )
            ev = AlarmEvent(
                now,
                "raised",
                "alarm",
                SYSTEM,
                f"risk {risk:.3f} >= threshold {hi:.3f} for {above} steps",
                risk,
            )
            return events + [ev] + self._escalate_at_once(risk, now)
        self.s = replace(s, level=self._quiet_level(risk))
        return events

    def _escalate_at_once(self, risk: float, now: datetime) -> list[AlarmEvent]:
        p = self.params
        if risk >= p.threshold + p.escalate_margin:
            self.s = replace(self.s, level="escalated")
            why = f"risk {risk:.3f} >= {p.threshold + p.escalate_margin:.3f} (threshold + margin)"
            return [AlarmEvent(now, "escalated", "escalated", SYSTEM, why, risk)]
        return []

    def _quiet_level(self, risk: float) -> str:
        return "watch" if risk >= self.params.watch_fraction * self.params.threshold else "none"

    def tick(self, now: datetime) -> list[AlarmEvent]:
        """Silence expiry: a still-raised alarm whose silence ran out alarms again."""
        s = self.s
        if s.state == "silenced" and s.silenced_until is not None and now >= s.silenced_until:
            self.s = replace(s, state="active", silenced_until=None)
            return [AlarmEvent(now, "re-alarmed", s.level, SYSTEM, "silence expired", s.last_risk)]
        return []

    def acknowledge(self, by: str, now: datetime) -> AlarmEvent:
        s = self.s
        if ALARM_RANK[s.level] < ALARM_RANK["alarm"] or s.state not in ("active", "silenced"):
            raise ActionRefused(f"nothing to acknowledge (alarm {s.level}, {s.state})")
        self.s = replace(s, state="acknowledged", acknowledged_by=by, silenced_until=None)
        return AlarmEvent(now, "acknowledged", s.level, by, "acknowledged by operator", s.last_risk)

    def silence(self, by: str, seconds: int, now: datetime) -> AlarmEvent:
        s, p = self.s, self.params
        if ALARM_RANK[s.level] < ALARM_RANK["alarm"]:
            raise ActionRefused(f"nothing to silence (alarm {s.level})")
        if not 0 < seconds <= p.max_silence_seconds:
            raise ActionRefused(f"silence must be 1..{p.max_silence_seconds} s, got {seconds}")
        self.s = replace(s, state="silenced", silenced_until=now + timedelta(seconds=seconds))
        return AlarmEvent(
            now,
            "silenced",
            s.level,
            by,
            f"silenced for {seconds} s",
            s.last_risk,
            silence_seconds=seconds,
        )

    def feedback(self, by: str, kind: str, note: str | None, now: datetime) -> AlarmEvent:
        if kind not in ("deteriorating", "false_alarm"):
            raise ActionRefused(f"feedback must be deteriorating or false_alarm, got {kind!r}")
        return AlarmEvent(
            now,
            "feedback",
            self.s.level,
            by,
            f"nurse feedback: {kind}",
            self.s.last_risk,
            feedback=kind,
            note=note,
        )
