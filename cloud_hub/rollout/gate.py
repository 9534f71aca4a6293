"""The shadow gate of a rollout (issue 13): promote a candidate only if it was tested on
this site's patients and its alarm burden there is within the site's budget.

`shadow_gate(engine, channel, name, version, budget, min_patient_days)` reads the
`shadow_summaries` the channel's gateways sent (`vigil.shadow/1`, edge_agent/shadow.py)
for that candidate and decides:

- per gateway: patient-days observed (steps x step length), alarm-hours per
  patient-day of the shadow and of the active model (steps after which the model's
  alarm machine was at alarm or above, as it really runs: hysteresis, minimum
  duration), and their agreement per step (both / only active / only shadow /
  neither, in hours, and Cohen's kappa);
- refused, one line per reason, when: no gateway of the channel sent evidence; a
  gateway of the channel (as its last status says) sent none; the candidate's last
  report at a gateway says it was refused or dropped there (the reason); fewer than
  `min_patient_days` patient-days were observed at the site; or the site's shadow
  burden is above `budget` ("shadow burden 3.1 alarm-hours/patient-day > budget 1.0
  at gw-a, gw-b": the pooled figure and the gateways each above it).

`vigil hub rollout --gate shadow` (cloud_hub/cli_rollout.py) prints the figures and,
when the gate passes, publishes the candidate on the channel through the same release
path as any rollout (`make_release`, `publish_release`: the key stays in the hub).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud_hub.store.models import Gateway, ShadowSummaryEvent
from contracts.messages import cohen_kappa

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass
class GatewayEvidence:
    """What one gateway reported about the candidate (summed over its summaries)."""

    gw: str
    steps: int = 0
    step_hours: float = 0.0  # patient hours (steps x step length)
    shadow_alarm_hours: float = 0.0
    active_alarm_hours: float = 0.0
    both: float = 0.0  # hours
    only_active: float = 0.0
    only_shadow: float = 0.0
    neither: float = 0.0
    agree_steps: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    last_state: str = "running"
    last_reason: str = ""
    summaries: int = 0

    @property
    def patient_days(self) -> float:
        return self.step_hours / 24.0

    @property
    def burden(self) -> float | None:
        """Shadow alarm-hours per patient-day (None: no patient time)."""
        return self.shadow_alarm_hours / self.patient_days if self.patient_days else None

    @property
    def active_burden(self) -> float | None:
        return self.active_alarm_hours / self.patient_days if self.patient_days else None

    @property
    def kappa(self) -> float | None:
        return cohen_kappa(*self.agree_steps)

    def add(self, row: Any) -> None:
        hours = row.step_seconds / 3600.0
        self.summaries += 1
        shadow, active = row.shadow or {}, row.active or {}
        steps = int(shadow.get("steps", 0))
        self.steps += steps
        self.step_hours += steps * hours
        self.shadow_alarm_hours += int(shadow.get("alarm_steps", 0)) * hours
        self.active_alarm_hours += int(active.get("alarm_steps", 0)) * hours
        for i, key in enumerate(("both", "only_active", "only_shadow", "neither")):
            n = int(getattr(row, key))
            self.agree_steps[i] += n
            setattr(self, key, getattr(self, key) + n * hours)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@dataclass
class GateDecision:
    """The gate's verdict: `passed`, the refusal `reasons` (one line each), the figures."""

    channel: str
    name: str
    version: str
    budget: float
    min_patient_days: float
    gateways: list[GatewayEvidence]
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def site(self) -> GatewayEvidence:
        """The channel's gateways pooled."""
        site = GatewayEvidence(gw=self.channel)
        for g in self.gateways:
            site.steps += g.steps
            site.step_hours += g.step_hours
            site.shadow_alarm_hours += g.shadow_alarm_hours
            site.active_alarm_hours += g.active_alarm_hours
            for key in ("both", "only_active", "only_shadow", "neither"):
                setattr(site, key, getattr(site, key) + getattr(g, key))
            site.agree_steps = [a + b for a, b in zip(site.agree_steps, g.agree_steps, strict=True)]
        return site

    def lines(self) -> list[str]:
        """The figures (per gateway, then the site), then the verdict and its reasons."""
        out = [f"shadow evidence for {self.name} {self.version} on channel {self.channel}:"]
        rows = [(g.gw, g) for g in self.gateways]
        rows += [(f"site {self.channel}", self.site)] if self.gateways else []
        for label, g in rows:
            out.append(
                f"  {label}: {g.patient_days:.2f} patient-days; alarm-hours/patient-day "
                f"active {_fmt(g.active_burden, 2)}, shadow {_fmt(g.burden, 2)}; agreement "
                f"both {g.both:.0f} h, only active {g.only_active:.0f} h, only shadow "
                f"{g.only_shadow:.0f} h, neither {g.neither:.0f} h, kappa {_fmt(g.kappa, 2)}"
            )
        if self.passed:
            out.append(
                f"gate passed: shadow burden {_fmt(self.site.burden, 2)} <= budget "
                f"{self.budget:g} over {self.site.patient_days:.2f} patient-days"
            )
        else:
            out.append("gate refused:")
            out.extend(f"  {r}" for r in self.reasons)
        return out


def shadow_gate(
    engine: Engine,
    channel: str,
    name: str,
    version: str,
    *,
    budget: float,
    min_patient_days: float = 1.0,
) -> GateDecision:
    """Decide from the hub store (see module doc); never publishes anything."""
    t = ShadowSummaryEvent.__table__
    g = Gateway.__table__
    with engine.connect() as c:
        rows = c.execute(
            select(t)
            .where(t.c.channel == channel, t.c.shadow_name == name, t.c.shadow_version == version)
            .order_by(t.c.ts, t.c.id)
        ).all()
        members = sorted(r.gw for r in c.execute(select(g.c.gw).where(g.c.channel == channel)))
    by_gw: dict[str, GatewayEvidence] = defaultdict(lambda: GatewayEvidence(gw=""))
    for row in rows:
        ev = by_gw[row.gw]
        ev.gw = row.gw
        ev.add(row)
        ev.last_state, ev.last_reason = row.state, row.reason
    gateways = [by_gw[k] for k in sorted(by_gw)]
    reasons: list[str] = []
    if not gateways:
        reasons.append(
            f"no shadow evidence for {name} {version} on channel {channel}: publish it with "
            f"--shadow and let the gateways report"
        )
    silent = [m for m in members if m not in by_gw]
    if silent and gateways:
        reasons.append(
            f"no shadow summary of {name} {version} from {', '.join(silent)} "
            f"(on channel {channel}): untested on those patients"
        )
    for ev in gateways:
        if ev.last_state in ("refused", "dropped"):
            reasons.append(f"shadow model {ev.last_state} at {ev.gw}: {ev.last_reason}")
    decision = GateDecision(channel, name, version, budget, min_patient_days, gateways, reasons)
    site = decision.site
    if gateways and site.patient_days < min_patient_days:
        reasons.append(
            f"only {site.patient_days:.2f} patient-days observed at {channel} "
            f"< --min-patient-days {min_patient_days:g}"
        )
    if site.burden is not None and site.burden > budget:
        over = [ev.gw for ev in gateways if ev.burden is not None and ev.burden > budget]
        reasons.append(
            f"shadow burden {site.burden:.1f} alarm-hours/patient-day > budget {budget:g} "
            f"at {', '.join(over or [ev.gw for ev in gateways])}"
        )
    return decision
