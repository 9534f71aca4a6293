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
5. As deployed (issue 13; `--charted-only` skips it, `--stays N` takes N test stays):
   each test stay is played as a bedside monitor measures it
   (`firmware_sim.bedside.BedsideSource`: continuous vitals interpolated between the
   charted values with beat-to-beat noise, NIBP per cuff cycle, Temp per probe or spot
   check, one reading every `--cadence` seconds) and the readings go, as the gateway's
   decoder hands them over (static data as a monitor carries them: Age in whole years,
   Gender, no HospAdmTime, ICULOS from the observation time), through the gateway's own
   `edge_agent.windows.BedWindows` (hourly median by `aggregate_readings`, the dense
   history, `stay_windows(history)[-1]`, `min_observed`); the row with ICULOS = k gets
   the model input of step k (none: not scored), scored by the same bundle. Every figure
   is then given both ways with the paired difference (same bootstrap draws), plus
   alarm-hours per patient-day of the non-septic stays and the share of septic stays
   alarmed in [onset-12 h, onset-3 h] (onset = first SepsisLabel + 6 h; alarm = a
   scored row at/over threshold). `tests/test_model_asdeployed.py` proves this offline
   transform equal to the simulator -> MLLP/pty -> real gateway path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from cloud_hub.training import metrics as m
from cloud_hub.training.baselines import NEWS2_MAX, news2_risk
from cloud_hub.training.dataset import (
    Stay,
    Windows,
    load_table,
    prepare,
    split_stays,
    stays_from_table,
)
from contracts.bundle import Manifest
from contracts.paths import default_bundle_dir, work_dir
from contracts.preprocessing import PreprocessSpec, forward_fill, mask_implausible
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES
from edge_agent.decoder import Reading
from edge_agent.windows import BedWindows, ClosedStep
from firmware_sim.bedside import BedsideConfig, BedsideSource
from firmware_sim.physiology import Patient
from model_runtime.litert import RiskModel

NEWS2_ALARM = 5  # RCP: an aggregate of 5 or more is an urgent response threshold
FIGURES = ("auroc", "auprc", "utility", "alarms_per_patient_day", "sensitivity")
# Issue 13's burden and timeliness figures (both ways in the as-deployed table).
EXTRA = ("alarm_hours_per_patient_day", "septic_alarmed_12_3")
ADMIT = datetime(2026, 1, 1, tzinfo=UTC)  # the offline ICU admission (any time will do)
BED = "bed-1"


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


def figures(
    w: Windows, risk: np.ndarray, threshold: float, scorable: np.ndarray | None = None
) -> dict[str, float]:
    scorable = w.scorable if scorable is None else scorable
    ev = m.evaluate(w.y, risk, w.stay, scorable, threshold)
    out = {k: float(getattr(ev, k)) for k in (*FIGURES, "median_lead_hours")}
    out.update(burden(w.y, m.effective_alarm(risk, scorable, threshold), w.stay, w.row))
    return out


def burden(y: np.ndarray, alarm: np.ndarray, stay: np.ndarray, row: np.ndarray) -> dict:
    """Alarm-hours per patient-day of the non-septic stays; share of septic stays with an
    alarmed row in [onset-12 h, onset-3 h] (onset = first label row + 6 h, as the
    challenge's utility; rows grouped by stay, `row` the hour within the stay)."""
    n = int(stay.max()) + 1 if stay.size else 0
    septic = np.zeros(n, dtype=bool)
    np.logical_or.at(septic, stay, y.astype(bool))
    calm = ~septic[stay]
    days = calm.sum() / 24.0
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, stay[y > 0], row[y > 0])
    onset = first[stay] - m.DT_OPTIMAL
    early = alarm & septic[stay] & (row >= onset - 12) & (row <= onset - 3)
    hit = np.zeros(n, dtype=bool)
    np.logical_or.at(hit, stay, early)
    return {
        "alarm_hours_per_patient_day": float(alarm[calm].sum() / days) if days else math.nan,
        "septic_alarmed_12_3": float(hit[septic].mean()) if septic.any() else math.nan,
    }


def bootstrap(
    w: Windows, risk: np.ndarray, threshold: float, n: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95 % intervals of each figure from `n` resamples of the stays."""
    return paired_bootstrap(w, [(risk, w.scorable)], threshold, n, seed)[0]


def paired_bootstrap(
    w: Windows,
    ways: list[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    n: int,
    seed: int,
    keys: tuple[str, ...] = FIGURES,
) -> list[dict[str, tuple[float, float]]]:
    """95 % intervals of each figure for each (risk, scorable) in `ways` from the SAME
    `n` resamples of the stays; with two ways a third entry: their difference (2 - 1)."""
    if n <= 0:
        return [{} for _ in range(len(ways) + (len(ways) == 2))]
    assert np.all(np.diff(w.stay) >= 0), "rows must be grouped by stay"
    rng = np.random.default_rng(seed)
    draws: list[dict[str, list[float]]] = [
        {k: [] for k in keys} for _ in range(len(ways) + (len(ways) == 2))
    ]
    for _ in range(n):
        stays = rng.integers(0, w.n_stays, w.n_stays)
        idx, stay = _subset(w, stays)
        got = []
        for risk, scorable in ways:
            ev = m.evaluate(w.y[idx], risk[idx], stay, scorable[idx], threshold)
            f = {k: float(getattr(ev, k)) for k in FIGURES}
            if any(k in EXTRA for k in keys):
                alarm = m.effective_alarm(risk[idx], scorable[idx], threshold)
                f.update(burden(w.y[idx], alarm, stay, w.row[idx]))
            got.append(f)
        if len(ways) == 2:
            got.append({k: got[1][k] - got[0][k] for k in keys})
        for d, f in zip(draws, got, strict=True):
            for k in keys:
                if math.isfinite(f[k]):
                    d[k].append(f[k])
    return [
        {
            k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
            for k, v in d.items()
            if v
        }
        for d in draws
    ]


# --- as deployed: the bedside stream through the gateway's own windows ------------------


def bedside_source(stay: Stay, seed: int, config: BedsideConfig) -> BedsideSource:
    """The monitor of one test stay (its rows at their ICULOS; the patient's statics)."""
    col = {n: i for i, n in enumerate(STATIC_FEATURES)}
    iculos = stay.static[:, col["ICULOS"]]
    iculos = np.where(np.isnan(iculos), stay.hours, iculos)
    age, gender, hosp = (stay.static[0, col[k]] for k in ("Age", "Gender", "HospAdmTime"))
    patient = Patient(
        stay_id=stay.stay_id,
        age_years=float(age) if math.isfinite(age) else None,
        sex={1.0: "M", 0.0: "F"}.get(float(gender), "U"),
        hosp_adm_hours=float(hosp) if math.isfinite(hosp) else None,
    )
    return BedsideSource(stay.stay_id, iculos, stay.dyn, patient, seed=seed, config=config)


def deployed_steps(
    src: BedsideSource, spec: PreprocessSpec, admit: datetime = ADMIT, flush: bool = True
) -> list[ClosedStep]:
    """The gateway's closed steps for `src`'s whole stream (readings as the PCD-01
    decoder hands them to the bed: static data as a monitor carries them)."""
    p = src.patient
    age = float(math.floor(p.age_years)) if p.age_years is not None else None
    gender = {"M": 1.0, "F": 0.0}.get(p.sex)
    windows = BedWindows(BED, spec)
    times = src.times()
    vals = src.values(times)
    steps: list[ClosedStep] = []
    for seq, (t, row) in enumerate(zip(times.tolist(), vals.tolist(), strict=True), 1):
        r = Reading(
            bed=BED,
            stay=src.stay_id,
            monitor_id="MON01",
            seq=seq,
            obs_time=admit + timedelta(seconds=t),
            values={n: (None if x != x else x) for n, x in zip(VITAL_NAMES, row, strict=True)},
            static={"Age": age, "Gender": gender, "HospAdmTime": None, "ICULOS": t / 3600.0},
            icu_admit=admit,
        )
        steps.extend(windows.add(r))
    if flush and (last := windows.flush()) is not None:
        steps.append(last)
    return steps


_WORKER: dict[str, Any] = {}


def _init(spec: PreprocessSpec, config: BedsideConfig, seed: int) -> None:
    _WORKER.update(spec=spec, config=config, seed=seed)


def _deploy_stay(job: tuple[int, Stay]) -> tuple[np.ndarray, ...]:
    """Per row of the stay: window, static, scorable, raw step values (NaN: no step)."""
    i, stay = job
    spec: PreprocessSpec = _WORKER["spec"]
    src = bedside_source(stay, _WORKER["seed"] + i, _WORKER["config"])
    by_index = {s.index: s for s in deployed_steps(src, spec)}
    n, steps, f = len(stay.label), spec.window.steps, len(spec.features)
    window = np.zeros((n, steps, f), dtype=np.float32)
    static = np.zeros((n, len(spec.static_features)), dtype=np.float32)
    scorable = np.zeros(n, dtype=bool)
    raw = np.full((n, f), np.nan)
    for r, k in enumerate(np.floor(src.iculos).astype(int)):
        s = by_index.get(int(k))
        if s is None or s.model_input is None:
            continue
        window[r], static[r] = s.model_input.window, s.model_input.static
        scorable[r] = not s.model_input.insufficient
        raw[r] = [np.nan if s.values[v] is None else s.values[v] for v in spec.feature_names]
    return window, static, scorable, raw


def as_deployed(
    stays: list[Stay], spec: PreprocessSpec, config: BedsideConfig, seed: int, workers: int
) -> dict[str, np.ndarray]:
    """The test rows as the gateway would see them (in `stays` order, rows per stay)."""
    jobs = list(enumerate(stays))
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init, initargs=(spec, config, seed)) as pool:
            parts = pool.map(_deploy_stay, jobs, chunksize=16)
    else:
        _init(spec, config, seed)
        parts = [_deploy_stay(j) for j in jobs]
    window, static, scorable, raw = (np.concatenate(x) for x in zip(*parts, strict=True))
    current = []
    for p in parts:  # NEWS2: the gateway's held values
        masked = mask_implausible(p[3], spec.feature_names)
        current.append(forward_fill(masked, np.full(masked.shape[1], np.nan)))
    return {
        "window": window,
        "static": static,
        "scorable": scorable,
        "current": np.concatenate(current).astype(np.float32),
    }


def subset_stays(w: Windows, keep: np.ndarray) -> Windows:
    """The rows of stays `keep` (sorted indices into `w.stay_ids`), renumbered 0..n-1."""
    keep = np.asarray(keep, dtype=np.int64)
    if keep.size == w.n_stays:
        return w
    rows = np.isin(w.stay, keep)
    fields = {
        f.name: getattr(w, f.name)[rows]
        for f in dataclasses.fields(w)
        if isinstance(getattr(w, f.name), np.ndarray)
    }
    fields["stay"] = np.searchsorted(keep, fields["stay"]).astype(w.stay.dtype)
    return dataclasses.replace(w, stay_ids=[w.stay_ids[i] for i in keep], **fields)


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
    if getattr(args, "deployed", False):
        out["deployed"] = run_deployed(args, df, manifest, model, test, risk, news)
    return out


def run_deployed(
    args: argparse.Namespace,
    df: Any,
    manifest: Manifest,
    model: RiskModel,
    test: Windows,
    risk: np.ndarray,
    news: np.ndarray,
) -> dict[str, Any]:
    """Every figure as charted and as deployed (see the module docstring, step 5)."""
    stays, _ = stays_from_table(df)
    test_stays = split_stays(stays, args.seed)["test"]
    assert [s.stay_id for s in test_stays] == test.stay_ids, "test stays out of order"
    keep = np.arange(len(test_stays))
    if args.stays and args.stays < len(test_stays):  # a seeded sample of the stays
        pick = np.random.default_rng(args.seed).choice(keep, args.stays, replace=False)
        keep = np.sort(pick)
    rows_kept = np.isin(test.stay, keep)
    w = subset_stays(test, keep)
    chosen = [test_stays[i] for i in keep]
    rows = len(w)
    config = BedsideConfig(
        cadence_s=args.cadence, cuff_interval_s=args.cuff * 60.0, max_gap_h=args.max_gap
    )
    t0 = time.perf_counter()
    dep = as_deployed(chosen, manifest.preprocessing, config, args.seed, max(1, args.workers))
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    d_risk = np.zeros(rows, dtype=np.float32)
    sc = dep["scorable"]
    d_risk[sc] = model.score_many(dep["window"][sc], dep["static"][sc])
    score_s = time.perf_counter() - t0
    d_news = news2_risk(dataclasses.replace(w, current=dep["current"]))
    keys = (*FIGURES, *EXTRA)
    out: dict[str, Any] = {
        "stays": w.n_stays,
        "rows": rows,
        "config": dataclasses.asdict(config),
        "readings": int(sum(bedside_source(s, 0, config).times().size for s in chosen)),
        "stream_and_windows_seconds": stream_s,
        "scoring_seconds": score_s,
        "scorable_rows": {"charted": int(w.scorable.sum()), "deployed": int(sc.sum())},
        "models": {},
    }
    for name, r_c, r_d, thr in (
        ("int8 bundle (LiteRT)", risk[rows_kept], d_risk, model.threshold),
        (f"NEWS2 >= {NEWS2_ALARM}", news[rows_kept], d_news, NEWS2_ALARM / NEWS2_MAX),
    ):
        charted = figures(w, r_c, thr)
        deployed = figures(w, r_d, thr, sc)
        ci = paired_bootstrap(
            w, [(r_c, w.scorable), (r_d, sc)], thr, args.bootstrap, args.seed, keys
        )
        out["models"][name] = {
            "threshold": thr,
            "charted": charted,
            "deployed": deployed,
            "difference": {k: deployed[k] - charted[k] for k in keys},
            "ci95": {"charted": ci[0], "deployed": ci[1], "difference": ci[2]},
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
    if "deployed" in out:
        lines += ["", *render_deployed(out["deployed"])]
    return "\n".join(lines)


def render_deployed(dep: dict[str, Any]) -> list[str]:
    """The figures both ways and their difference (Markdown, as in BENCHMARKS.md)."""
    c = dep["config"]
    keys = (*FIGURES, *EXTRA)
    lines = [
        f"as deployed: {dep['stays']} test stays, {dep['rows']} rows, {dep['readings']} "
        f"bedside readings (one per {c['cadence_s']:.0f} s, cuff every "
        f"{c['cuff_interval_s'] / 60:.0f} min, gaps over {c['max_gap_h']:.0f} h off) through "
        f"BedWindows in {dep['stream_and_windows_seconds']:.0f} s, scored in "
        f"{dep['scoring_seconds']:.0f} s; scorable rows {dep['scorable_rows']['charted']} "
        f"charted, {dep['scorable_rows']['deployed']} deployed",
        "",
        "| model | way | " + " | ".join(keys) + " |",
        "| " + " | ".join(["---"] * (len(keys) + 2)) + " |",
    ]
    for name, d in dep["models"].items():
        for way in ("charted", "deployed", "difference"):
            cells = []
            for k in keys:
                v = d[way][k]
                lo, hi = d["ci95"][way].get(k, (math.nan, math.nan))
                sign = "+" if way == "difference" else ""
                cells.append(f"{v:{sign}.3f} ({lo:{sign}.3f} to {hi:{sign}.3f})")
            lines.append(f"| {name} | {way} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(default_bundle_dir()))
    p.add_argument("--data", default=str(work_dir() / "canonical" / "physionet2019.parquet"))
    p.add_argument("--seed", type=int, default=2019, help="the training run's split seed")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples of stays (0: none)")
    p.add_argument("--json", help="write the figures here too")
    p.add_argument(
        "--charted-only",
        dest="deployed",
        action="store_false",
        help="skip the as-deployed figures (the bedside stream through the gateway's windows)",
    )
    p.add_argument(
        "--stays", type=int, default=0, help="as deployed: N test stays drawn by --seed (0: all)"
    )
    p.add_argument("--cadence", type=float, default=60.0, help="seconds between readings")
    p.add_argument("--cuff", type=float, default=30.0, help="NIBP cuff cycle, minutes")
    p.add_argument("--max-gap", type=float, default=4.0, help="hours interpolated at most")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    if args.stays < 0 or args.workers < 1:
        p.error("--stays must be >= 0 and --workers >= 1")
    try:
        out = run(args)
    except (ProvenanceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
