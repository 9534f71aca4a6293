"""How a risk model is judged: ranking, the challenge's utility, and what nurses live with.

- AUROC, AUPRC over the rows the gateway scores.
- The PhysioNet/CinC 2019 normalised utility (Reyna et al. 2020): per-row rewards for
  predicting 12 to 6 h before onset, decaying to 0 at 3 h after, penalties for late
  misses (down to -2) and for false alarms (-0.05 per row); onset = first label-1 row
  + 6 h; the total is normalised so that never predicting scores 0 and the optimal
  predictor scores 1. Time is the row's position within its stay, as in the
  challenge's scorer.
- At the chosen threshold: alarms per patient-day (an alarm is raised when risk goes
  from below to at/above the threshold; it stays raised while risk stays there),
  sensitivity (share of septic stays alarmed at or before onset) and the median lead
  time (onset minus first alarm, in hours) over the septic stays alarmed in time.

Rows the gateway does not score (window "insufficient") take no alarm here: the
gateway shows "insufficient data" there, never a risk. They are left out of AUROC/AUPRC
and count as "no prediction" in the utility and alarm figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DT_EARLY = -12.0
DT_OPTIMAL = -6.0
DT_LATE = 3.0
MAX_U_TP = 1.0
MIN_U_FN = -2.0
U_FP = -0.05
U_TN = 0.0

THRESHOLD_RULE = "maximise normalised utility on the validation split (grid of risk quantiles)"


def row_utility(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Per-row utility of one stay's binary predictions (PhysioNet 2019 definition)."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(predictions).astype(bool)
    n = labels.shape[0]
    t = np.arange(n, dtype=np.float64)
    u = np.zeros(n, dtype=np.float64)
    if not labels.any():
        u[pred] = U_FP
        u[~pred] = U_TN
        return u
    t_sepsis = float(np.argmax(labels)) - DT_OPTIMAL  # onset: first label + 6 h
    m1 = MAX_U_TP / (DT_OPTIMAL - DT_EARLY)
    b1 = -m1 * DT_EARLY
    m2 = -MAX_U_TP / (DT_LATE - DT_OPTIMAL)
    b2 = -m2 * DT_LATE
    m3 = MIN_U_FN / (DT_LATE - DT_OPTIMAL)
    b3 = -m3 * DT_OPTIMAL
    d = t - t_sepsis
    in_scope = t <= t_sepsis + DT_LATE  # after onset + 3 h nothing counts
    early = d <= DT_OPTIMAL
    tp = pred & in_scope
    fn = ~pred & in_scope
    u[tp & early] = np.maximum(m1 * d[tp & early] + b1, U_FP)
    u[tp & ~early] = m2 * d[tp & ~early] + b2
    u[fn & ~early] = m3 * d[fn & ~early] + b3
    return u


def optimal_predictions(labels: np.ndarray) -> np.ndarray:
    """The challenge's best predictor: 1 from onset-12 h to onset+3 h, else 0."""
    labels = np.asarray(labels).astype(bool)
    n = labels.shape[0]
    best = np.zeros(n, dtype=bool)
    if labels.any():
        t_sepsis = int(np.argmax(labels) - DT_OPTIMAL)
        best[max(0, t_sepsis + int(DT_EARLY)) : min(t_sepsis + int(DT_LATE) + 1, n)] = True
    return best


def _stay_slices(stay: np.ndarray) -> list[slice]:
    """Contiguous row ranges of each stay (rows are grouped by stay, in time order)."""
    stay = np.asarray(stay)
    if stay.size == 0:
        return []
    bounds = np.flatnonzero(stay[1:] != stay[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [stay.size]])
    return [slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


@dataclass
class UtilityTable:
    """Per-row utility if alarmed (`u1`) and if not (`u0`) for a cohort.

    Each row's utility depends only on its own prediction, so a cohort's total for any
    predictions is sum(where(pred, u1, u0)): threshold searches need no per-stay loop.
    """

    u0: np.ndarray
    u1: np.ndarray
    best: float  # total of the challenge's optimal predictor
    inaction: float  # total of never predicting

    @classmethod
    def build(cls, labels: np.ndarray, stay: np.ndarray) -> UtilityTable:
        labels = np.asarray(labels)
        u0 = np.zeros(labels.shape[0])
        u1 = np.zeros(labels.shape[0])
        best = 0.0
        for sl in _stay_slices(stay):
            lab = labels[sl]
            n = lab.shape[0]
            u0[sl] = row_utility(lab, np.zeros(n, dtype=bool))
            u1[sl] = row_utility(lab, np.ones(n, dtype=bool))
            best += float(row_utility(lab, optimal_predictions(lab)).sum())
        return cls(u0=u0, u1=u1, best=best, inaction=float(u0.sum()))

    def score(self, predictions: np.ndarray) -> float:
        """Normalised utility: (observed - inaction) / (optimal - inaction)."""
        observed = float(np.where(np.asarray(predictions, dtype=bool), self.u1, self.u0).sum())
        if self.best == self.inaction:  # no septic stay: nothing to gain, only false alarms
            return observed - self.inaction
        return (observed - self.inaction) / (self.best - self.inaction)


def normalised_utility(labels: np.ndarray, predictions: np.ndarray, stay: np.ndarray) -> float:
    """Normalised utility over a cohort of stays (rows grouped by `stay`, in time order)."""
    return UtilityTable.build(labels, stay).score(predictions)


@dataclass
class AlarmStats:
    alarms_per_patient_day: float
    sensitivity: float  # septic stays alarmed at/before onset / septic stays
    median_lead_hours: float  # NaN when no septic stay was alarmed in time
    lead_hours: list[float] = field(default_factory=list)
    septic_stays: int = 0
    alarms: int = 0


def alarm_stats(labels: np.ndarray, alarm: np.ndarray, stay: np.ndarray) -> AlarmStats:
    """Alarm burden and early detection for binary alarm states per row."""
    n_alarms = 0
    rows = 0
    septic = 0
    leads: list[float] = []
    for sl in _stay_slices(stay):
        lab = np.asarray(labels[sl]).astype(bool)
        a = np.asarray(alarm[sl]).astype(bool)
        rows += lab.shape[0]
        # Rising edges: a raised alarm that stays raised is one alarm, not one per hour.
        n_alarms += int(a[0]) + int((a[1:] & ~a[:-1]).sum())
        if lab.any():
            septic += 1
            onset = int(np.argmax(lab) - DT_OPTIMAL)
            first = int(np.argmax(a)) if a.any() else None
            if first is not None and first <= onset:
                leads.append(float(onset - first))
    days = rows / 24.0
    return AlarmStats(
        alarms_per_patient_day=n_alarms / days if days else float("nan"),
        sensitivity=len(leads) / septic if septic else float("nan"),
        median_lead_hours=float(np.median(leads)) if leads else float("nan"),
        lead_hours=leads,
        septic_stays=septic,
        alarms=n_alarms,
    )


def auroc_auprc(y: np.ndarray, risk: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    if y.min() == y.max():  # one class only: undefined
        return float("nan"), float("nan")
    return float(roc_auc_score(y, risk)), float(average_precision_score(y, risk))


def effective_alarm(risk: np.ndarray, scorable: np.ndarray, threshold: float) -> np.ndarray:
    """Alarm state per row as the gateway would show it (unscored rows never alarm)."""
    return (np.asarray(risk) >= threshold) & np.asarray(scorable, dtype=bool)


def choose_threshold(
    y: np.ndarray, risk: np.ndarray, stay: np.ndarray, scorable: np.ndarray, n_grid: int = 60
) -> tuple[float, float]:
    """The threshold maximising normalised utility on these rows; returns (threshold, utility).

    Candidates are the distinct scored risks when there are few (NEWS2 has 21), else
    quantiles of them (upper tail denser: alarms are rare), so the grid adapts to each
    model's calibration.
    """
    r = np.asarray(risk)[np.asarray(scorable, dtype=bool)]
    if r.size == 0:
        raise ValueError("no scorable rows to choose a threshold on")
    upper = 1 - np.geomspace(0.01, 0.0005, n_grid // 2)
    qs = np.unique(np.concatenate([np.linspace(0.5, 0.99, n_grid // 2), upper]))
    distinct = np.unique(r)
    cands = distinct if distinct.size <= 4 * n_grid else np.unique(np.quantile(r, qs))
    table = UtilityTable.build(y, stay)
    best_t, best_u = float(cands[-1]), -np.inf
    for t in cands:
        u = table.score(effective_alarm(risk, scorable, float(t)))
        if u > best_u:
            best_t, best_u = float(t), u
    return best_t, float(best_u)


@dataclass
class Evaluation:
    """All figures of one model on one split at one threshold."""

    auroc: float
    auprc: float
    utility: float
    alarms_per_patient_day: float
    sensitivity: float
    median_lead_hours: float
    threshold: float
    rows: int
    scored_rows: int
    lead_hours: list[float] = field(default_factory=list)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        keys = (
            "auroc",
            "auprc",
            "utility",
            "alarms_per_patient_day",
            "sensitivity",
            "median_lead_hours",
            "threshold",
        )
        return {f"{prefix}_{k}": float(getattr(self, k)) for k in keys}


def evaluate(
    y: np.ndarray, risk: np.ndarray, stay: np.ndarray, scorable: np.ndarray, threshold: float
) -> Evaluation:
    """Every figure for risks `risk` on rows grouped by `stay`, alarms at `threshold`."""
    y = np.asarray(y)
    scorable = np.asarray(scorable, dtype=bool)
    auroc, auprc = auroc_auprc(y[scorable], np.asarray(risk)[scorable])
    alarm = effective_alarm(risk, scorable, threshold)
    stats = alarm_stats(y, alarm, stay)
    return Evaluation(
        auroc=auroc,
        auprc=auprc,
        utility=normalised_utility(y, alarm, stay),
        alarms_per_patient_day=stats.alarms_per_patient_day,
        sensitivity=stats.sensitivity,
        median_lead_hours=stats.median_lead_hours,
        threshold=float(threshold),
        rows=int(y.shape[0]),
        scored_rows=int(scorable.sum()),
        lead_hours=stats.lead_hours,
    )
