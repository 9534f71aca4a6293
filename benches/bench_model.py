"""The committed model's clinical figures, reproduced from the bundle itself.

    .venv/bin/python -m benches.bench_model                      # models/default, seed 2019
    .venv/bin/python -m benches.bench_model --bundle DIR --seed 2019 --bootstrap 200 --json out.json

What the gateway runs is the int8 bundle in LiteRT, so that is what is scored here (not
the float Keras model of the training run). Steps:

1. the canonical table (`data/canonical/physionet2019.parquet`, imported from
   `../shared/data` when missing) must have the bundle's `dataset_fingerprint`;
2. the split is rebuilt with the training seed (`--seed`, the Makefile's `TRAIN_ARGS`
   default 2019) and the normalisation constants fitted on its training part must equal
   the bundle's preprocessing: that proves the test split is the one the bundle was never
   trained on (the same stays, the same rows), without the training run's MLflow store;
3. every test-split row is scored by the bundle through `model_runtime.RiskModel`
   (LiteRT, as on the gateway) and by NEWS2 on the same forward-filled vitals;
4. AUROC, AUPRC, normalised utility, alarms per patient-day, sensitivity and median lead
   time (`cloud_hub/training/metrics.py`) at the bundle's threshold (NEWS2 at >= 5),
   each with a 95 % interval from a bootstrap over stays.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cloud_hub.training import metrics as m
from cloud_hub.training.baselines import NEWS2_MAX, news2_risk
from cloud_hub.training.dataset import Windows, load_table, prepare
from contracts.bundle import Manifest
from contracts.paths import default_bundle_dir, work_dir
from model_runtime.litert import RiskModel

NEWS2_ALARM = 5  # RCP: an aggregate of 5 or more is an urgent response threshold
FIGURES = ("auroc", "auprc", "utility", "alarms_per_patient_day", "sensitivity")


class ProvenanceError(RuntimeError):
    """The data or the split are not the ones the bundle was trained on."""


def canonical_table(path: Path) -> Path:
    """The canonical PhysioNet table, imported from the shared data when missing."""
    if not path.exists():
        from contracts.paths import physionet_archive
        from converters.physionet import import_physionet

        print(f"importing the PhysioNet 2019 archive into {path} ...", file=sys.stderr)
        import_physionet(physionet_archive(), path)
    return path


def check_provenance(manifest: Manifest, fingerprint: str, prepared: Any) -> dict[str, float]:
    """Raise ProvenanceError unless data and split are the bundle's own; else the facts."""
    if fingerprint != manifest.dataset_fingerprint:
        raise ProvenanceError(
            f"dataset fingerprint {fingerprint[:12]} is not the bundle's "
            f"{manifest.dataset_fingerprint[:12]}: other data than the bundle was trained on"
        )
    want = manifest.preprocessing
    got = prepared.spec
    worst = 0.0
    for a, b in zip(
        [*want.features, *want.static_features], [*got.features, *got.static_features], strict=True
    ):
        if a.name != b.name:
            raise ProvenanceError(f"feature {a.name} != {b.name}")
        for k in ("mean", "std", "fill"):
            x, y = float(getattr(a, k)), float(getattr(b, k))
            worst = max(worst, abs(x - y) / max(1e-12, abs(x)))
    if worst > 1e-6:
        raise ProvenanceError(
            f"the training split's normalisation differs from the bundle's (relative {worst:.2g}):"
            " another seed or another split than the bundle's training run"
        )
    return {"normalisation_max_rel_diff": worst}


def score_bundle(model: RiskModel, w: Windows) -> tuple[np.ndarray, float]:
    """Risk of every row through LiteRT (batch 1, as the gateway); seconds taken."""
    t0 = time.perf_counter()
    risk = model.score_many(w.window, w.static)
    return risk, time.perf_counter() - t0


def _subset(w: Windows, stays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of the resampled stays (a stay drawn twice counts twice, as a new stay)."""
    starts = np.searchsorted(w.stay, np.arange(w.n_stays))
    ends = np.searchsorted(w.stay, np.arange(w.n_stays), side="right")
    idx = np.concatenate([np.arange(starts[s], ends[s]) for s in stays])
    new_stay = np.concatenate([np.full(ends[s] - starts[s], i) for i, s in enumerate(stays)])
    return idx, new_stay


def figures(w: Windows, risk: np.ndarray, threshold: float) -> dict[str, float]:
    ev = m.evaluate(w.y, risk, w.stay, w.scorable, threshold)
    return {k: float(getattr(ev, k)) for k in (*FIGURES, "median_lead_hours")}


def bootstrap(
    w: Windows, risk: np.ndarray, threshold: float, n: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95 % intervals of each figure from `n` resamples of the stays."""
    if n <= 0:
        return {}
    assert np.all(np.diff(w.stay) >= 0), "rows must be grouped by stay"
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in FIGURES}
    for _ in range(n):
        stays = rng.integers(0, w.n_stays, w.n_stays)
        idx, stay = _subset(w, stays)
        ev = m.evaluate(w.y[idx], risk[idx], stay, w.scorable[idx], threshold)
        for k in FIGURES:
            v = float(getattr(ev, k))
            if math.isfinite(v):
                draws[k].append(v)
    return {
        k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for k, v in draws.items()
        if v
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    bundle = Path(args.bundle)
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    df, fingerprint = load_table(str(canonical_table(Path(args.data))))
    prepared = prepare(
        df,
        steps=manifest.preprocessing.window.steps,
        seed=args.seed,
        fingerprint=fingerprint,
        min_observed=manifest.preprocessing.min_observed,
    )
    facts = check_provenance(manifest, fingerprint, prepared)
    test = prepared.splits["test"]
    model = RiskModel((bundle / "model.tflite").read_bytes(), manifest=manifest, folder=bundle)
    risk, seconds = score_bundle(model, test)
    news = news2_risk(test)
    out: dict[str, Any] = {
        "bundle": f"{manifest.name} {manifest.version}",
        "mlflow_run_id": manifest.mlflow_run_id,
        "dataset_fingerprint": fingerprint,
        "seed": args.seed,
        "split_hash": prepared.split_fingerprint,
        "test_stays": test.n_stays,
        "test_rows": len(test),
        "test_septic_stays": int(
            np.bincount(test.stay, weights=test.y, minlength=test.n_stays).astype(bool).sum()
        ),
        "scoring_seconds": seconds,
        "us_per_window": seconds / max(1, len(test)) * 1e6,
        **facts,
        "models": {},
    }
    for name, r, thr in (
        ("int8 bundle (LiteRT)", risk, model.threshold),
        (f"NEWS2 >= {NEWS2_ALARM}", news, NEWS2_ALARM / NEWS2_MAX),
    ):
        out["models"][name] = {
            "threshold": thr,
            "figures": figures(test, r, thr),
            "ci95": bootstrap(test, r, thr, args.bootstrap, args.seed),
        }
    return out


def render(out: dict[str, Any]) -> str:
    lines = [
        f"bundle {out['bundle']} (MLflow run {out['mlflow_run_id']}), data "
        f"{out['dataset_fingerprint'][:12]}, seed {out['seed']}, split {out['split_hash']}",
        f"test split: {out['test_stays']} stays ({out['test_septic_stays']} septic), "
        f"{out['test_rows']} rows; scored in {out['scoring_seconds']:.1f} s "
        f"({out['us_per_window']:.1f} µs per window through LiteRT)",
        "training split normalisation = bundle's (max relative difference "
        f"{out['normalisation_max_rel_diff']:.1g})",
        "",
        f"| {'model':<22} | " + " | ".join(f"{k:<24}" for k in FIGURES) + " | lead h |",
        "| " + " | ".join(["---"] * (len(FIGURES) + 2)) + " |",
    ]
    for name, d in out["models"].items():
        cells = []
        for k in FIGURES:
            v = d["figures"][k]
            lo, hi = d["ci95"].get(k, (float("nan"), float("nan")))
            cells.append(f"{v:.3f} ({lo:.3f}-{hi:.3f})".ljust(24))
        lead = d["figures"]["median_lead_hours"]
        lines.append(f"| {name:<22} | " + " | ".join(cells) + f" | {lead:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(default_bundle_dir()))
    p.add_argument("--data", default=str(work_dir() / "canonical" / "physionet2019.parquet"))
    p.add_argument("--seed", type=int, default=2019, help="the training run's split seed")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples of stays (0: none)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    try:
        out = run(args)
    except ProvenanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
