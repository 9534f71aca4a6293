"""Alarm burden as the operating point (issue 13): per-hour risks replayed through the
gateway's own alarm machine, threshold by threshold.

A nurse judges the model by how often it alarms. So a threshold is not chosen on a
raw risk crossing but on what the bedside alarm (`contracts/alarms.py`, the very
`AlarmMachine` the gateway runs: minimum duration, hysteresis, escalation) would raise.
Each stay is scored ONCE (`StayRisks`: the risk of every hour the gateway closes, NaN
where it says "insufficient data"); `operating_curve` then replays those risks through
a fresh machine per candidate threshold and reports, per threshold:

- alarm-hours per patient-day: hours whose alarm level after the step is `alarm` or
  `escalated`, over the hours the gateway saw / 24, in NON-septic stays when labels
  are known, in ALL stays when they are not (per-site calibration: a site's own
  history has no labels, and most ICU stays are not septic, so all stays count and
  the burden is slightly overstated);
- the share of septic stays alarmed at some hour in [onset - 12 h, onset - 3 h],
  onset = first SepsisLabel hour + 6 h as the PhysioNet/CinC 2019 challenge defines it;
- the median lead time: onset minus the first alarmed hour, over septic stays first
  alarmed at or before onset (as `cloud_hub/training/metrics.py` counts it).

`choose_threshold(curve, budget)` keeps the points whose burden is within the budget
and takes the one that loses least sensitivity (highest share; ties and unlabelled
data: the lowest threshold, i.e. the earliest alarms the budget allows).

`score_rows` turns a stay's hourly rows into those risks the way the gateway does:
the dense hour grid (hours without a reading are all-missing rows), each value through
`aggregate_readings`, `contracts.preprocessing.stay_windows` on the whole history, the
`min_observed` rule, the bundle in LiteRT (`model_runtime`), clipped to [0, 1].
`tests/test_hub_burden.py` proves it equal, hour by hour, to `vigil edge score`
(edge_agent/score_file.py, the gateway's per-step path).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.alarms import AlarmMachine, AlarmParams
from contracts.messages import ALARM_RANK
from contracts.preprocessing import PreprocessSpec, aggregate_readings, stay_windows

if TYPE_CHECKING:
    from model_runtime.litert import RiskModel

ONSET_AFTER_LABEL_HOURS = 6  # the challenge: SepsisLabel turns 1 six hours before onset
WINDOW_BEFORE_ONSET = (12, 3)  # alarmed in [onset - 12 h, onset - 3 h] counts as in time
CLOCK = datetime(2000, 1, 1, tzinfo=UTC)  # the replay's clock: only differences matter
GRID = tuple(round(x, 3) for x in np.linspace(0.02, 0.98, 49))
QUANTILES = tuple(1.0 - np.geomspace(0.5, 0.001, 30))


class BudgetError(ValueError):
    """No candidate threshold meets the budget, or a budget that is not a budget."""


@dataclass(frozen=True)
class StayRisks:
    """One stay as the gateway scored it: one entry per closed hour, in time order."""

    name: str
    hours: np.ndarray  # [T] int: hour since ICU admission (the step's ICULOS)
    risk: np.ndarray  # [T] float: the risk shown, NaN when not scored (insufficient)
    first_label_hour: float | None = None  # first SepsisLabel = 1 hour; None: not septic
    labelled: bool = False  # SepsisLabel known for this stay

    @property
    def septic(self) -> bool:
        return self.first_label_hour is not None

    @property
    def onset_hour(self) -> float | None:
        if self.first_label_hour is None:
            return None
        return self.first_label_hour + ONSET_AFTER_LABEL_HOURS


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    alarm_hours_per_patient_day: float
    septic_alarmed_share: float | None  # None without labels (or no septic stay)
    median_lead_hours: float | None  # None when no septic stay was alarmed in time

    def as_dict(self) -> dict[str, float | None]:
        return {
            "threshold": self.threshold,
            "alarm_hours_per_patient_day": self.alarm_hours_per_patient_day,
            "septic_alarmed_share": self.septic_alarmed_share,
            "median_lead_hours": self.median_lead_hours,
        }


@dataclass
class Curve:
    """The burden-sensitivity curve of a set of stays, and what it was measured on."""

    points: list[CurvePoint]
    stays: int  # stays counted in the burden (non-septic when labelled, else all)
    septic_stays: int
    hours: int  # hours counted in the burden
    labelled: bool
    params: AlarmParams  # the alarm settings replayed (threshold varies per point)
    scored_risks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def patient_days(self) -> float:
        return self.hours / 24.0

    def at(self, threshold: float) -> CurvePoint:
        """The point of this exact threshold (KeyError if it is not a candidate)."""
        for p in self.points:
            if math.isclose(p.threshold, threshold, abs_tol=1e-9):
                return p
        raise KeyError(threshold)

    def manifest_curve(self, data: str) -> dict[str, Any]:
        """The manifest's `operating_curve` (contracts.bundle.OperatingCurve)."""
        p = self.params
        return {
            "points": [q.as_dict() for q in self.points],
            "data": data,
            "stays": self.stays,
            "septic_stays": self.septic_stays,
            "patient_days": round(self.patient_days, 3),
            "labelled": self.labelled,
            "alarm": {
                "hysteresis": p.hysteresis,
                "min_steps": p.min_steps,
                "escalate_after_steps": p.escalate_after_steps,
                "escalate_margin": p.escalate_margin,
            },
        }


def alarm_params(threshold: float, base: AlarmParams | None = None) -> AlarmParams:
    """The gateway's default alarm settings (edge_agent/config.py `AlarmConfig` has the same
    defaults) at `threshold`, or `base`'s settings at `threshold`."""
    b = base or AlarmParams(threshold=threshold)
    return AlarmParams(
        threshold=threshold,
        hysteresis=b.hysteresis,
        min_steps=b.min_steps,
        escalate_after_steps=b.escalate_after_steps,
        escalate_margin=b.escalate_margin,
        watch_fraction=b.watch_fraction,
        max_silence_seconds=b.max_silence_seconds,
    )


def alarmed_hours(stay: StayRisks, params: AlarmParams) -> np.ndarray:
    """[T] bool: the alarm level after each hour is `alarm` or `escalated`.

    A stay whose risk never reaches the threshold cannot raise (the machine needs
    `min_steps` scored hours at or above it): no replay needed for it."""
    out = np.zeros(stay.hours.shape[0], dtype=bool)
    scored = stay.risk[np.isfinite(stay.risk)]
    if scored.size == 0 or float(scored.max()) < params.threshold:
        return out
    m = AlarmMachine(params)
    alarm = ALARM_RANK["alarm"]
    for i, (h, r) in enumerate(zip(stay.hours.tolist(), stay.risk.tolist(), strict=True)):
        m.on_step(None if math.isnan(r) else r, CLOCK + timedelta(hours=h))
        out[i] = ALARM_RANK[m.s.level] >= alarm
    return out


def candidate_thresholds(risks: np.ndarray) -> list[float]:
    """A fixed grid (0.02 .. 0.98) plus quantiles of the scored risks (50 % .. 99.9 %):
    fine where the risks are, so a budget can be met closely."""
    pts = list(GRID)
    r = risks[np.isfinite(risks)]
    if r.size:
        pts += [round(float(x), 4) for x in np.quantile(r, QUANTILES)]
    return sorted({p for p in pts if 0.0 < p < 1.0})


def operating_curve(
    stays: Sequence[StayRisks],
    thresholds: Iterable[float] | None = None,
    params: AlarmParams | None = None,
) -> Curve:
    """Burden, in-time share and lead per threshold (see the module); every stay replayed
    through the real `AlarmMachine` with `params`' settings at each threshold."""
    if not stays:
        raise BudgetError("no stays to measure the alarm burden on")
    labelled = all(s.labelled for s in stays)
    counted = [s for s in stays if not (labelled and s.septic)]
    septic = [s for s in stays if labelled and s.septic]
    hours = int(sum(s.hours.shape[0] for s in counted))
    if hours == 0:
        raise BudgetError("no non-septic hours to measure the alarm burden on")
    all_risk = np.concatenate([s.risk for s in stays]).astype(np.float32)
    ths = sorted(set(thresholds)) if thresholds is not None else candidate_thresholds(all_risk)
    base = params or AlarmParams(threshold=0.5)
    points = []
    lo, hi = WINDOW_BEFORE_ONSET
    for t in ths:
        p = alarm_params(float(t), base)
        alarm_hours = sum(int(alarmed_hours(s, p).sum()) for s in counted)
        in_time = 0
        leads: list[float] = []
        for s in septic:
            a = alarmed_hours(s, p)
            onset = float(s.onset_hour)  # type: ignore[arg-type]
            h = s.hours.astype(float)
            if np.any(a & (h >= onset - lo) & (h <= onset - hi)):
                in_time += 1
            if a.any() and h[np.argmax(a)] <= onset:
                leads.append(onset - float(h[np.argmax(a)]))
        points.append(
            CurvePoint(
                threshold=float(t),
                alarm_hours_per_patient_day=alarm_hours / (hours / 24.0),
                septic_alarmed_share=in_time / len(septic) if septic else None,
                median_lead_hours=float(np.median(leads)) if leads else None,
            )
        )
    return Curve(
        points=points,
        stays=len(counted),
        septic_stays=len(septic),
        hours=hours,
        labelled=labelled,
        params=base,
        scored_risks=all_risk[np.isfinite(all_risk)],
    )


def choose_threshold(curve: Curve, budget: float) -> CurvePoint:
    """The point within `budget` alarm-hours per patient-day that loses least sensitivity
    (highest in-time share; ties, and unlabelled curves: the lowest threshold)."""
    if not (math.isfinite(budget) and budget > 0):
        raise BudgetError(f"alarm budget must be > 0 alarm-hours per patient-day, got {budget:g}")
    ok = [p for p in curve.points if p.alarm_hours_per_patient_day <= budget]
    if not ok:
        best = min(curve.points, key=lambda p: p.alarm_hours_per_patient_day)
        raise BudgetError(
            f"no threshold meets {budget:g} alarm-hours per patient-day: the lowest burden is "
            f"{best.alarm_hours_per_patient_day:.2f} at threshold {best.threshold:.3f}"
        )
    return min(ok, key=lambda p: (-(p.septic_alarmed_share or 0.0), p.threshold))


# --- scoring hourly rows as the gateway does ------------------------------------------


def dense_rows(
    hours: np.ndarray, dyn: np.ndarray, static: np.ndarray, spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hours, dyn, static) on the gateway's dense hour grid, first to last hour.

    `dyn` [T, F] raw values in `spec.feature_names` order, `static` [T, S] in
    `spec.static_names` order (ICULOS is set to the hour). Several rows in one hour are
    that hour's readings (median of the plausible ones, `aggregate_readings`); an hour
    without a row is an all-missing row with the next row's static data, as at the
    gateway (edge_agent/windows.py)."""
    h = np.floor(np.asarray(hours, dtype=float)).astype(int)
    order = np.argsort(h, kind="stable")
    h, dyn, static = h[order], np.asarray(dyn, float)[order], np.asarray(static, float)[order]
    first, last = int(h[0]), int(h[-1])
    n = last - first + 1
    names = spec.feature_names
    out_dyn = np.full((n, len(names)), np.nan)
    out_static = np.full((n, static.shape[1]), np.nan)
    iculos = spec.static_names.index("ICULOS") if "ICULOS" in spec.static_names else None
    ends = np.flatnonzero(np.r_[h[1:] != h[:-1], True])
    starts = np.r_[0, ends[:-1] + 1]
    filled = np.zeros(n, dtype=bool)
    for a, b in zip(starts, ends, strict=True):
        k = int(h[a]) - first
        out_dyn[k] = [
            aggregate_readings([_opt(x) for x in dyn[a : b + 1, j]], name)
            for j, name in enumerate(names)
        ]
        out_static[k] = static[b]
        filled[k] = True
    nxt = None
    for k in range(n - 1, -1, -1):  # a gap row takes the static data of the step closing it
        if filled[k]:
            nxt = out_static[k].copy()
        elif nxt is not None:
            out_static[k] = nxt
    if iculos is not None:
        out_static[:, iculos] = np.arange(first, last + 1, dtype=float)
    return np.arange(first, last + 1), out_dyn, out_static


def score_rows(
    model: RiskModel,
    spec: PreprocessSpec,
    name: str,
    hours: np.ndarray,
    dyn: np.ndarray,
    static: np.ndarray,
    label: np.ndarray | None = None,
) -> StayRisks:
    """One stay's hourly rows scored with the bundle as the gateway does (module doc)."""
    grid, d, s = dense_rows(hours, dyn, static, spec)
    windows, statics, observed = stay_windows(d, s, spec)
    risk = np.full(grid.shape[0], np.nan)
    ok = observed >= spec.min_observed
    if ok.any():
        risk[ok] = np.clip(model.score_many(windows[ok], statics[ok]), 0.0, 1.0)
    first = None
    if label is not None:
        lab_h = np.floor(np.asarray(hours, float))[np.nan_to_num(label) > 0]
        first = float(lab_h.min()) if lab_h.size else None
    return StayRisks(name, grid, risk, first, label is not None)


def _opt(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def with_operating_point(
    manifest: dict[str, Any],
    curve: Curve,
    point: CurvePoint,
    budget: float,
    *,
    data: str,
    method: str,
    version: str | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of `manifest` whose threshold is `point`'s, carrying the whole curve and the
    budget (and `calibration` provenance); the release stamp is dropped (a new release
    gets its own). Unsigned: `write_bundle` or `make_release` signs it."""
    m = {k: v for k, v in manifest.items() if k != "release"}
    m["threshold"] = {"value": point.threshold, "method": method}
    m["alarm_budget"] = budget
    m["operating_curve"] = curve.manifest_curve(data)
    if version is not None:
        m["version"] = version
    if calibration is not None:
        m["calibration"] = calibration
    return m
