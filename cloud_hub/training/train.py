"""Train, evaluate, track and register: one architecture (`train`) or a comparison (`compare`).

A comparison is one MLflow parent run holding one child run per model (the networks
and the NEWS2 and logistic-regression baselines), all on the same patient-level
split. Each child run records its parameters (architecture, window, units, epochs,
learning rate, class weighting, seed, split sizes), the dataset fingerprint, the
metrics on validation and test at its threshold, the four plots, and the model.
The networks are registered as versions of one registered model; the alias
`champion` goes to the network with the best VALIDATION normalised utility (ties:
higher validation AUROC). Baselines are tracked but not registered: the gateway runs
only networks converted to int8 TFLite.

Thresholds are chosen on the validation split (`metrics.THRESHOLD_RULE`), never on
test; test figures are reported at the validation threshold.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.paths import work_dir

from . import baselines, metrics, plots, tracking
from .dataset import Prepared, Windows, load_table, prepare
from .models import ARCHITECTURES, build_model

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


def default_data_path() -> Path:
    return work_dir() / "canonical" / "physionet2019.parquet"


@dataclass
class TrainConfig:
    """Hyper-parameters and where things go; every field is logged with the run."""

    archs: tuple[str, ...] = ARCHITECTURES
    steps: int = 12
    units: int = 32
    dropout: float = 0.1
    epochs: int = 12
    lr: float = 2e-3
    batch_size: int = 1024
    class_weight: str = "auto"  # auto: balanced by class frequency; none
    patience: int = 3  # epochs without a better validation AUROC before stopping
    seed: int = 2019
    limit_stays: int | None = None
    min_observed: int = 3
    data: Path = field(default_factory=default_data_path)
    tracking_uri: str | None = None
    experiment: str = tracking.DEFAULT_EXPERIMENT
    registered_model: str = tracking.DEFAULT_REGISTERED_MODEL
    baselines: bool = True
    # Alarm-hours per patient-day: the threshold is then chosen on the burden curve
    # (training/burden.py), not on utility; None keeps the utility rule.
    alarm_budget: float | None = None

    def __post_init__(self) -> None:
        bad = [a for a in self.archs if a not in ARCHITECTURES]
        if bad or not self.archs:
            raise ValueError(
                f"--arch: unknown {bad or 'empty list'}; choose from {', '.join(ARCHITECTURES)}"
            )
        if self.class_weight not in ("auto", "none"):
            raise ValueError(f"--class-weight must be auto or none, got {self.class_weight!r}")
        for name in ("steps", "units", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if not (0 <= self.dropout < 1):
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not (0 < self.lr < 1):
            raise ValueError(f"--lr must be in (0, 1), got {self.lr}")
        if self.alarm_budget is not None and not (
            math.isfinite(self.alarm_budget) and self.alarm_budget > 0
        ):
            raise ValueError(
                f"--alarm-budget must be > 0 alarm-hours per patient-day, got {self.alarm_budget:g}"
            )


@dataclass
class ModelResult:
    """One row of the comparison."""

    name: str
    kind: str  # "network" or "baseline"
    run_id: str
    val: metrics.Evaluation
    test: metrics.Evaluation
    train_seconds: float = 0.0
    version: str | None = None  # registry version (networks)
    model: Any = None  # the trained Keras model (networks), kept for bundling
    val_risk: np.ndarray | None = None


@dataclass
class Comparison:
    results: list[ModelResult]
    champion: ModelResult | None
    parent_run_id: str
    tracking_uri: str
    prepared: Prepared
    config: TrainConfig
    seconds: float = 0.0

    def table(self, split: str = "val") -> str:
        return comparison_table(self.results, split, self.champion)


def set_seeds(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow (Keras sets all three)."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """Balanced weights n / (2 n_c) under `auto` (the same rule as sklearn's 'balanced')."""
    if mode == "none":
        return None
    n = y.shape[0]
    pos = int(y.sum())
    if pos == 0 or pos == n:
        return None
    return {0: n / (2.0 * (n - pos)), 1: n / (2.0 * pos)}


def _echo_default(msg: str) -> None:
    print(msg, flush=True)


def _epoch_callback(name: str, epochs: int, echo: Echo) -> keras.callbacks.Callback:
    import keras
    import mlflow

    class EpochLine(keras.callbacks.Callback):
        """A compact line per epoch, and the epoch's figures into MLflow."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            dt = time.perf_counter() - self._t0
            figures = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
            echo(f"  {name} epoch {epoch + 1}/{epochs} {figures} ({dt:.0f} s)")
            mlflow.log_metrics(
                {f"epoch_{k}": float(v) for k, v in logs.items() if math.isfinite(float(v))},
                step=epoch + 1,
            )

    return EpochLine()


def _predict(model: keras.Model, w: Windows) -> np.ndarray:
    return model.predict(w.inputs(), batch_size=4096, verbose=0).reshape(-1).astype(np.float32)


def _evaluate_both(
    prepared: Prepared,
    val_risk: np.ndarray,
    test_risk: np.ndarray,
    alarm_budget: float | None = None,
) -> tuple[metrics.Evaluation, metrics.Evaluation]:
    """Threshold on validation (utility, or the alarm budget's curve, logged to the active
    run), then both splits at it."""
    val, test = prepared.splits["val"], prepared.splits["test"]
    if alarm_budget is None:
        threshold, _ = metrics.choose_threshold(val.y, val_risk, val.stay, val.scorable)
    else:
        from .burden import log_curve, threshold_for_budget

        threshold, curve = threshold_for_budget(val, val_risk, alarm_budget)
        log_curve(curve, threshold, alarm_budget, f"validation split: {val.n_stays} stays")
    return (
        metrics.evaluate(val.y, val_risk, val.stay, val.scorable, threshold),
        metrics.evaluate(test.y, test_risk, test.stay, test.scorable, threshold),
    )


def _log_evaluation(
    name: str,
    prepared: Prepared,
    val_risk: np.ndarray,
    ev_val: metrics.Evaluation,
    ev_test: metrics.Evaluation,
    rule: str = metrics.THRESHOLD_RULE,
) -> None:
    """Metrics, threshold rule and the four plots into the active run."""
    import mlflow

    mlflow.log_metrics({k: v for k, v in ev_val.as_metrics("val").items() if math.isfinite(v)})
    mlflow.log_metrics({k: v for k, v in ev_test.as_metrics("test").items() if math.isfinite(v)})
    mlflow.log_dict(
        {
            "value": ev_val.threshold,
            "method": rule,
            "insufficient_windows": "not scored: no alarm, left out of AUROC/AUPRC",
        },
        "threshold.json",
    )
    mlflow.set_tag("threshold_rule", rule)
    val = prepared.splits["val"]
    y, r = val.y[val.scorable], val_risk[val.scorable]
    figures = {
        "plots/roc_val.png": plots.roc_figure(y, {name: r}),
        "plots/pr_val.png": plots.pr_figure(y, {name: r}),
        "plots/calibration_val.png": plots.calibration_figure(y, r),
        "plots/lead_time_val.png": plots.lead_time_figure(ev_val.lead_hours, ev_val.threshold),
    }
    for path, fig in figures.items():
        mlflow.log_figure(fig, path)


def _rule(cfg: TrainConfig) -> str:
    """How the threshold is chosen under `cfg`, in words (MLflow, threshold.json)."""
    if cfg.alarm_budget is None:
        return metrics.THRESHOLD_RULE
    from .burden import RULE

    return RULE.format(budget=cfg.alarm_budget)


def _common_params(cfg: TrainConfig, prepared: Prepared) -> dict[str, Any]:
    return {
        "window_steps": prepared.spec.window.steps,
        "step_seconds": prepared.spec.window.step_seconds,
        "min_observed": prepared.spec.min_observed,
        "seed": cfg.seed,
        "limit_stays": cfg.limit_stays if cfg.limit_stays is not None else "all",
        "data": str(cfg.data),
        "dataset_fingerprint": prepared.fingerprint,
        **prepared.params(),
    }


def train(
    arch: str,
    prepared: Prepared,
    cfg: TrainConfig,
    *,
    echo: Echo = _echo_default,
    register: bool = True,
) -> ModelResult:
    """Train one network in its own MLflow run (nested if a run is active) and register it."""
    import keras
    import mlflow
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    set_seeds(cfg.seed)
    train_w, val_w = prepared.splits["train"], prepared.splits["val"]
    model = build_model(arch, prepared.spec.window.steps, cfg.units, dropout=cfg.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    weights = class_weights(train_w.y, cfg.class_weight)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=arch, nested=nested) as run:
        mlflow.set_tags({"kind": "network", "architecture": arch})
        mlflow.log_params(
            {
                **_common_params(cfg, prepared),
                "architecture": arch,
                "units": cfg.units,
                "dropout": cfg.dropout,
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "batch_size": cfg.batch_size,
                "patience": cfg.patience,
                "class_weight": cfg.class_weight,
                "class_weight_values": json.dumps(weights) if weights else "none",
                "parameters": model.count_params(),
            }
        )
        mlflow.log_dict(prepared.spec.model_dump(), "preprocess_spec.json")
        echo(f"{arch}: {model.count_params()} parameters, {len(train_w)} training rows")
        t0 = time.perf_counter()
        model.fit(
            train_w.inputs(),
            train_w.y.astype(np.float32),
            validation_data=(val_w.inputs(), val_w.y.astype(np.float32)),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            class_weight=weights,
            shuffle=True,
            verbose=0,
            callbacks=[
                _epoch_callback(arch, cfg.epochs, echo),
                # Keep the epoch with the best validation AUROC, not merely the last.
                keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=cfg.patience, restore_best_weights=True
                ),
            ],
        )
        train_seconds = time.perf_counter() - t0
        mlflow.log_metric("train_seconds", train_seconds)
        val_risk = _predict(model, val_w)
        test_risk = _predict(model, prepared.splits["test"])
        ev_val, ev_test = _evaluate_both(prepared, val_risk, test_risk, cfg.alarm_budget)
        _log_evaluation(arch, prepared, val_risk, ev_val, ev_test, _rule(cfg))

        example = {k: v[:4] for k, v in val_w.inputs().items()}
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example, verbose=0)),
            # Explicit requirements: inference would re-import the model in a subprocess.
            pip_requirements=[f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"],
            registered_model_name=cfg.registered_model if register else None,
        )
        version = None
        if register and info.registered_model_version is not None:
            version = str(info.registered_model_version)
            client = mlflow.MlflowClient()
            for k, v in ev_val.as_metrics("val").items():
                client.set_model_version_tag(cfg.registered_model, version, k, f"{v:.6g}")
            client.set_model_version_tag(cfg.registered_model, version, "architecture", arch)
        echo(
            f"{arch}: val AUROC {ev_val.auroc:.3f} utility {ev_val.utility:.3f} "
            f"({train_seconds:.0f} s){f', registered v{version}' if version else ''}"
        )
        return ModelResult(
            name=arch,
            kind="network",
            run_id=run.info.run_id,
            val=ev_val,
            test=ev_test,
            train_seconds=train_seconds,
            version=version,
            model=model,
            val_risk=val_risk,
        )


def run_baselines(
    prepared: Prepared, cfg: TrainConfig, echo: Echo = _echo_default
) -> list[ModelResult]:
    """NEWS2 and logistic regression, each in its own (nested) run, same split and metrics."""
    import mlflow
    import mlflow.sklearn
    import sklearn

    out: list[ModelResult] = []
    val, test = prepared.splits["val"], prepared.splits["test"]
    with mlflow.start_run(run_name="news2", nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"kind": "baseline", "architecture": "news2"})
        mlflow.log_params(
            {
                **_common_params(cfg, prepared),
                "architecture": "news2",
                "risk": "NEWS2 total / 20 on forward-filled current vitals",
            }
        )
        t0 = time.perf_counter()
        val_risk, test_risk = baselines.news2_risk(val), baselines.news2_risk(test)
        ev_val, ev_test = _evaluate_both(prepared, val_risk, test_risk, cfg.alarm_budget)
        _log_evaluation("NEWS2", prepared, val_risk, ev_val, ev_test, _rule(cfg))
        echo(
            f"news2: val AUROC {ev_val.auroc:.3f} utility {ev_val.utility:.3f} "
            f"(NEWS2 >= {ev_val.threshold * baselines.NEWS2_MAX:.0f})"
        )
        out.append(
            ModelResult(
                "news2",
                "baseline",
                run.info.run_id,
                ev_val,
                ev_test,
                time.perf_counter() - t0,
                val_risk=val_risk,
            )
        )
    with mlflow.start_run(run_name="logistic", nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"kind": "baseline", "architecture": "logistic"})
        mlflow.log_params(
            {
                **_common_params(cfg, prepared),
                "architecture": "logistic",
                "class_weight": cfg.class_weight,
                "features": "flattened window + static",
            }
        )
        t0 = time.perf_counter()
        model = baselines.fit_logistic(prepared.splits["train"], cfg.class_weight, cfg.seed)
        secs = time.perf_counter() - t0
        mlflow.log_metric("train_seconds", secs)
        val_risk = baselines.logistic_risk(model, val)
        test_risk = baselines.logistic_risk(model, test)
        ev_val, ev_test = _evaluate_both(prepared, val_risk, test_risk, cfg.alarm_budget)
        _log_evaluation("logistic", prepared, val_risk, ev_val, ev_test, _rule(cfg))
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
        )
        echo(f"logistic: val AUROC {ev_val.auroc:.3f} utility {ev_val.utility:.3f} ({secs:.0f} s)")
        out.append(
            ModelResult(
                "logistic", "baseline", run.info.run_id, ev_val, ev_test, secs, val_risk=val_risk
            )
        )
    return out


def pick_champion(results: list[ModelResult]) -> ModelResult | None:
    """Best registered network by validation utility, then validation AUROC."""
    nets = [r for r in results if r.kind == "network" and r.version is not None]

    def key(r: ModelResult) -> tuple[float, float]:
        u = r.val.utility if math.isfinite(r.val.utility) else -math.inf
        a = r.val.auroc if math.isfinite(r.val.auroc) else -math.inf
        return (u, a)

    return max(nets, key=key) if nets else None


COLUMNS = (
    ("AUROC", "auroc", "{:.3f}"),
    ("AUPRC", "auprc", "{:.3f}"),
    ("utility", "utility", "{:.3f}"),
    ("alarms/patient-day", "alarms_per_patient_day", "{:.2f}"),
    ("sensitivity", "sensitivity", "{:.2f}"),
    ("median lead h", "median_lead_hours", "{:.1f}"),
    ("threshold", "threshold", "{:.3f}"),
)


def comparison_table(
    results: list[ModelResult], split: str = "val", champion: ModelResult | None = None
) -> str:
    """A Markdown table of the figures on `split` ("val" or "test")."""
    head = ["model", *[c[0] for c in COLUMNS], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ev = getattr(r, split)
        name = r.name + (" (champion)" if champion is not None and r is champion else "")
        cells = [name]
        for _, attr, fmt in COLUMNS:
            v = getattr(ev, attr)
            cells.append(fmt.format(v) if math.isfinite(v) else "n/a")
        cells.append(f"{r.train_seconds:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(
    cfg: TrainConfig, *, echo: Echo = _echo_default, prepared: Prepared | None = None
) -> Comparison:
    """Train every requested network and the baselines on one split; crown the champion."""
    import mlflow

    t_start = time.perf_counter()
    if prepared is None:
        echo(f"reading {cfg.data}")
        df, fingerprint = load_table(str(cfg.data))
        t0 = time.perf_counter()
        prepared = prepare(
            df,
            steps=cfg.steps,
            seed=cfg.seed,
            fingerprint=fingerprint,
            limit_stays=cfg.limit_stays,
            min_observed=cfg.min_observed,
        )
        del df
        sizes = ", ".join(
            f"{k} {w.n_stays} stays/{len(w)} rows" for k, w in prepared.splits.items()
        )
        echo(f"split (seed {cfg.seed}): {sizes} [{time.perf_counter() - t0:.0f} s]")
    uri, _ = tracking.setup(cfg.tracking_uri, cfg.experiment)
    echo(f"tracking: {uri} (experiment {cfg.experiment})")
    results: list[ModelResult] = []
    with mlflow.start_run(run_name="compare") as parent:
        mlflow.set_tag("kind", "comparison")
        mlflow.log_params(
            {
                **_common_params(cfg, prepared),
                "archs": ",".join(cfg.archs),
                "units": cfg.units,
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "batch_size": cfg.batch_size,
                "class_weight": cfg.class_weight,
                "champion_rule": "best validation normalised utility (ties: validation AUROC)",
            }
        )
        if cfg.baselines:
            results.extend(run_baselines(prepared, cfg, echo))
        for arch in cfg.archs:
            results.append(train(arch, prepared, cfg, echo=echo))
        champion = pick_champion(results)
        if champion is not None:
            mlflow.MlflowClient().set_registered_model_alias(
                cfg.registered_model, tracking.CHAMPION_ALIAS, champion.version
            )
            mlflow.set_tags({"champion": champion.name, "champion_version": champion.version})
            echo(f"champion: {champion.name} (version {champion.version}, by validation utility)")
        val = prepared.splits["val"]
        mask = val.scorable
        risks = {r.name: r.val_risk[mask] for r in results if r.val_risk is not None}
        mlflow.log_figure(plots.roc_figure(val.y[mask], risks), "plots/roc_val_all.png")
        mlflow.log_figure(plots.pr_figure(val.y[mask], risks), "plots/pr_val_all.png")
        seconds = time.perf_counter() - t_start
        comp = Comparison(results, champion, parent.info.run_id, uri, prepared, cfg, seconds)
        mlflow.log_text(
            f"## validation\n\n{comp.table('val')}\n\n## test\n\n{comp.table('test')}\n",
            "comparison.md",
        )
        mlflow.log_metric("total_seconds", seconds)
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "config.json"
            p.write_text(json.dumps(asdict(cfg), default=str, indent=2))
            mlflow.log_artifact(str(p))
    return comp
