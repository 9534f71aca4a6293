"""`vigil hub train --alarm-budget B`: the threshold from the burden curve (issue 13).

Training's side of `cloud_hub/burden.py`: the validation rows (`dataset.Windows`, every
hour of every stay, "insufficient" ones included) become `StayRisks` (the hours the
gateway would close, NaN where it would not score); the curve replays them through the
gateway's alarm machine; the threshold is the one within the budget that loses least
sensitivity, instead of the one of best utility (`metrics.THRESHOLD_RULE`).

For the bundle (`bundle_at_budget`) the curve is measured again on the INT8 model's
validation outputs in LiteRT (what the gateway runs), the threshold chosen on it, and
the manifest rewritten and re-signed with the whole curve and the budget, so a site can
move along it; the bundle is verified as a gateway would and logged to the champion's
MLflow run with the curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloud_hub.burden import (
    BudgetError,
    Curve,
    CurvePoint,
    StayRisks,
    choose_threshold,
    operating_curve,
    with_operating_point,
)

if TYPE_CHECKING:
    from .dataset import Windows
    from .train import Comparison

RULE = (
    "alarm budget {budget:g} alarm-hours per patient-day (non-septic validation stays, "
    "the gateway's alarm machine replayed); within it, the highest share of septic stays "
    "alarmed in [onset-12 h, onset-3 h]"
)


def stays_from_windows(w: Windows, risk: np.ndarray) -> list[StayRisks]:
    """One `StayRisks` per stay of `w`: its rows in time order, NaN where not scorable."""
    out = []
    order = np.lexsort((w.row, w.stay))
    stay, hour = w.stay[order], w.hour[order]
    r = np.where(w.scorable[order], risk[order], np.nan).astype(float)
    y = w.y[order]
    bounds = np.flatnonzero(np.r_[True, stay[1:] != stay[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        h = hour[a:b].astype(int)
        pos = h[y[a:b] > 0]
        first = float(pos.min()) if pos.size else None
        out.append(StayRisks(w.stay_ids[int(stay[a])], h, r[a:b], first, True))
    return out


def threshold_for_budget(w: Windows, risk: np.ndarray, budget: float) -> tuple[float, Curve]:
    """The validation threshold for `budget`; when none meets it (a weak baseline), the
    least-burden point, said so in the run's tag `alarm_budget_met`."""
    curve = operating_curve(stays_from_windows(w, risk))
    try:
        return choose_threshold(curve, budget).threshold, curve
    except BudgetError:
        best = min(curve.points, key=lambda p: (p.alarm_hours_per_patient_day, p.threshold))
        return best.threshold, curve


def log_curve(curve: Curve, threshold: float, budget: float, data: str) -> None:
    """The curve as an artifact and the chosen point as metrics of the active run."""
    import mlflow

    p = curve.at(threshold)
    mlflow.log_dict(curve.manifest_curve(data), "operating_curve.json")
    mlflow.set_tags(
        {"alarm_budget": f"{budget:g}", "alarm_budget_met": str(_met(p, budget)).lower()}
    )
    figures = {
        "alarm_budget": budget,
        "val_budget_alarm_hours_per_patient_day": p.alarm_hours_per_patient_day,
        "val_budget_septic_alarmed_share": p.septic_alarmed_share,
        "val_budget_median_lead_hours": p.median_lead_hours,
    }
    mlflow.log_metrics({k: float(v) for k, v in figures.items() if _finite(v)})


def bundle_at_budget(
    comp: Comparison,
    folder: Path,
    key: Path,
    budget: float,
    *,
    echo: Callable[[str], None] = print,
) -> CurvePoint:
    """Rewrite the champion's bundle in `folder` at the budget's threshold (module doc).

    Raises BudgetError (no threshold of the int8 model meets the budget) or BundleError
    (the rewritten bundle does not verify); the bundle is left as it was then."""
    import mlflow

    from contracts.bundle import MANIFEST, MODEL, key_id, load_private_key, write_bundle
    from model_runtime.litert import RiskModel
    from model_runtime.verify import verify_full

    from . import metrics

    folder = Path(folder)
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    blob = (folder / MODEL).read_bytes()
    val = comp.prepared.splits["val"]
    ok = np.asarray(val.scorable, bool)
    int8 = np.zeros(len(val), dtype=np.float32)
    int8[ok] = np.clip(RiskModel(blob).score_many(val.window[ok], val.static[ok]), 0.0, 1.0)
    curve = operating_curve(stays_from_windows(val, int8))
    point = choose_threshold(curve, budget)
    ev = metrics.evaluate(val.y, int8, val.stay, val.scorable, point.threshold)
    m = with_operating_point(
        manifest,
        curve,
        point,
        budget,
        data=f"validation split: {val.n_stays} stays (seed {comp.prepared.seed}), int8 model",
        method=RULE.format(budget=budget) + "; on the int8 model's outputs",
    )
    m["metrics"] = {
        **{k: v for k, v in manifest.get("metrics", {}).items() if not k.startswith("int8_val")},
        **{k: v for k, v in ev.as_metrics("int8_val").items() if math.isfinite(v)},
    }
    private = load_private_key(key)
    write_bundle(folder, m, blob, private)
    verify_full(folder, {key_id(private.public_key()): private.public_key()})
    share = point.septic_alarmed_share
    echo(
        f"alarm budget {budget:g}: threshold {point.threshold:.4f} gives "
        f"{point.alarm_hours_per_patient_day:.2f} alarm-hours per patient-day"
        + (f", {share:.2f} of septic stays alarmed in time" if share is not None else "")
        + " (int8 model, validation split)"
    )
    champ = comp.champion
    if champ is not None:
        client = mlflow.MlflowClient(tracking_uri=comp.tracking_uri)
        client.log_dict(champ.run_id, curve.manifest_curve("int8 validation"), "bundle_curve.json")
        client.log_metric(champ.run_id, "bundle_threshold", point.threshold)
        client.log_metric(
            champ.run_id, "bundle_alarm_hours_per_patient_day", point.alarm_hours_per_patient_day
        )
        client.log_artifacts(champ.run_id, str(folder), "bundle")
    return point


def _met(p: CurvePoint, budget: float) -> bool:
    return p.alarm_hours_per_patient_day <= budget


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
