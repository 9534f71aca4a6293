"""Keras → int8 TFLite, in a child process, and the float-vs-int8 parity check.

API (what training calls; see also `cloud_hub.conversion.bundle_build.build_bundle`):

    from cloud_hub.conversion.tflite import convert_int8, check_parity, Tolerances, ConversionError

    blob = convert_int8(model, (train_windows, train_statics))      # -> bytes
    parity = check_parity(model, blob, (val_windows, val_statics, val_labels))
    # raises ConversionError(reason="parity") beyond Tolerances(); parity.as_metrics()

- `model`: a Keras model with two named inputs, `window` [steps, F] and `static` [S],
  and one sigmoid output (recurrent layers with `unroll=True`), or a `.keras` path.
- Representative data: normalised windows from the TRAINING split (up to
  `max_samples`, a seeded random subset, are used to calibrate the int8 ranges).
- Result: full int8 (int8 weights and activations, builtin int8 ops only
  `TFLITE_BUILTINS_INT8`), float input and output, batch fixed to 1, signature
  inputs `window`/`static` and output `risk`. It runs in `ai-edge-litert` without
  TensorFlow (`model_runtime.litert.RiskModel`).
- The converter runs in `python -m cloud_hub.conversion._convert_worker` with a timeout: a
  converter crash (a signal) or a hang becomes a `ConversionError` naming the
  signal, not a dead process.

Parity tolerances (defaults, `Tolerances`), on the validation windows:
- |AUROC(int8) - AUROC(float)| ≤ 0.02: the ranking the alarms rest on;
- 99th percentile of |float - int8| ≤ 0.08: the bulk of the risks shown;
- max |float - int8| ≤ 0.25: no window grossly off. The maximum is a tail figure
  that grows with the number of windows (quantisation error of the recurrent state
  compounds over the unrolled steps in a few windows): measured 0.09-0.13 over 3,366
  windows of a small GRU(32), and 0.18 over the 118,088 of set A's validation split
  for the champion GRU(32) whose p99 was 0.053 and ΔAUROC -0.0002 (BENCHMARKS.md), so a
  0.1 limit on the maximum would refuse sound models; a broken
  conversion (wrong input mapping, saturated ranges) is off by far more.
Beyond any of them the conversion is refused. Validation windows need both classes
(ΔAUROC is undefined otherwise); pass the rows the gateway scores (`scorable`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.paths import PROJECT_ROOT
from model_runtime.litert import RiskModel

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_SAMPLES = 1000


class ConversionError(RuntimeError):
    """A conversion that failed or was refused; `reason` is a short code.

    Reasons: `crash` (converter killed by a signal), `timeout`, `converter` (the
    converter reported an error), `input` (bad model or data), `parity` (int8 too far
    from float), `runtime` (LiteRT cannot run the result).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Tolerances:
    """How far int8 may stray from float before a conversion is refused."""

    max_abs_diff: float = 0.25
    p99_abs_diff: float = 0.08
    delta_auroc: float = 0.02


@dataclass(frozen=True)
class Parity:
    """Float (Keras) vs int8 (LiteRT) on the same validation windows."""

    n: int
    max_abs_diff: float
    p99_abs_diff: float
    mean_abs_diff: float
    auroc_float: float
    auroc_int8: float
    float_risk: np.ndarray
    int8_risk: np.ndarray
    tolerances: Tolerances

    @property
    def delta_auroc(self) -> float:
        return self.auroc_int8 - self.auroc_float

    def as_metrics(self) -> dict[str, float]:
        """Figures for the manifest's `metrics` and for MLflow."""
        return {
            "parity_windows": float(self.n),
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_p99_abs_diff": self.p99_abs_diff,
            "parity_mean_abs_diff": self.mean_abs_diff,
            "parity_auroc_float": self.auroc_float,
            "parity_auroc_int8": self.auroc_int8,
            "parity_delta_auroc": self.delta_auroc,
            "parity_tolerance_max_abs_diff": self.tolerances.max_abs_diff,
            "parity_tolerance_p99_abs_diff": self.tolerances.p99_abs_diff,
            "parity_tolerance_delta_auroc": self.tolerances.delta_auroc,
        }

    def summary(self) -> str:
        return (
            f"float vs int8 on {self.n} validation windows: max |diff| {self.max_abs_diff:.4f} "
            f"(p99 {self.p99_abs_diff:.4f}, mean {self.mean_abs_diff:.4f}), AUROC {self.auroc_float:.4f} -> "
            f"{self.auroc_int8:.4f} (Δ {self.delta_auroc:+.4f})"
        )


def as_pair(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(windows, statics) from a tuple or an object with `.window`/`.static` (training's)."""
    if hasattr(data, "window") and hasattr(data, "static"):
        w, s = data.window, data.static
    else:
        w, s = data[0], data[1]
    w = np.asarray(w, dtype=np.float32)
    s = np.asarray(s, dtype=np.float32)
    if w.ndim != 3 or s.ndim != 2 or w.shape[0] != s.shape[0]:
        raise ConversionError(
            "input", f"windows must be [N, steps, F] and statics [N, S]; got {w.shape}, {s.shape}"
        )
    if w.shape[0] == 0:
        raise ConversionError("input", "no windows given")
    if not (np.isfinite(w).all() and np.isfinite(s).all()):
        raise ConversionError("input", "windows hold NaN or inf: pass preprocessed windows")
    return w, s


def _sample(w: np.ndarray, s: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if w.shape[0] <= n:
        return w, s
    idx = np.sort(np.random.default_rng(seed).choice(w.shape[0], size=n, replace=False))
    return w[idx], s[idx]


def _unrolled_hint(model: Any) -> str:
    """Name recurrent layers without unroll=True (the known converter segfault)."""
    try:
        bad = [
            layer.name
            for layer in getattr(model, "layers", [])
            if hasattr(layer, "unroll") and not layer.unroll
        ]
    except Exception:  # a hint only; never mask the real error
        return ""
    if not bad:
        return ""
    return (
        f"; recurrent layer(s) {bad} have unroll=False, which the int8 converter cannot "
        'handle (rebuild with unroll=True, docs/ARCHITECTURE.md "Known pitfalls")'
    )


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _run_worker(
    model: keras.Model | str | Path,
    representative: Any,
    mode: str,
    timeout: float,
    max_samples: int,
    seed: int,
) -> bytes:
    w, s = as_pair(representative)
    w, s = _sample(w, s, max_samples, seed)
    with tempfile.TemporaryDirectory(prefix="vigil-convert-") as tmp:
        tmpdir = Path(tmp)
        if isinstance(model, str | Path):
            keras_path = Path(model)
            if not keras_path.exists():
                raise ConversionError("input", f"Keras model {keras_path} not found")
            hint_model = None
        else:
            keras_path = tmpdir / "model.keras"
            model.save(keras_path)
            hint_model = model
        data_path = tmpdir / "representative.npz"
        np.savez(data_path, window=w, static=s)
        out = tmpdir / "model.tflite"
        cmd = [
            sys.executable,
            "-m",
            "cloud_hub.conversion._convert_worker",
            "--keras",
            str(keras_path),
            "--data",
            str(data_path),
            "--out",
            str(out),
            "--mode",
            mode,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=PROJECT_ROOT
            )
        except subprocess.TimeoutExpired:
            raise ConversionError(
                "timeout", f"the {mode} converter did not finish within {timeout:.0f} s"
            ) from None
        secs = time.perf_counter() - t0
        if proc.returncode < 0:
            sig = -proc.returncode
            raise ConversionError(
                "crash",
                f"the {mode} converter was killed by {_signal_name(sig)} (exit signal {sig}) "
                f"after {secs:.1f} s{_unrolled_hint(hint_model)}",
            )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            detail = lines[-1][len("error:") :].strip() if lines else _tail(proc.stderr)
            raise ConversionError(
                "converter", f"{mode} conversion failed (exit {proc.returncode}): {detail}"
            )
        if not out.exists():
            raise ConversionError("converter", f"the {mode} converter wrote no model")
        blob = out.read_bytes()
    log.info("%s conversion: %d bytes in %.1f s", mode, len(blob), secs)
    return blob


def _tail(text: str, n: int = 5) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "no output"


def convert_int8(
    model: keras.Model | str | Path,
    representative: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
) -> bytes:
    """Full int8 TFLite (float I/O, batch 1, builtin int8 ops only); raises ConversionError.

    `representative`: (windows [N, steps, F], statics [N, S]) normalised training
    windows, or an object with `.window` and `.static` (cloud_hub's `Windows`).
    The result is checked to load in LiteRT with inputs `window`/`static`.
    """
    blob = _run_worker(model, representative, "int8", timeout, max_samples, seed)
    try:
        RiskModel(blob)
    except Exception as e:
        raise ConversionError("runtime", f"LiteRT cannot run the converted model: {e}") from e
    return blob


def convert_float(
    model: keras.Model | str | Path,
    representative: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bytes:
    """Float32 TFLite of the same model (batch 1): for size and latency comparisons."""
    return _run_worker(model, representative, "float", timeout, 1, 0)


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def keras_risk(model: keras.Model, windows: np.ndarray, statics: np.ndarray) -> np.ndarray:
    """Float risk from Keras in batches (the parity reference)."""
    out = model.predict({"window": windows, "static": statics}, batch_size=4096, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def check_parity(
    model: keras.Model | str | Path,
    tflite: bytes,
    validation: Any,
    *,
    tolerances: Tolerances = Tolerances(),
    raise_on_failure: bool = True,
) -> Parity:
    """Compare Keras float with LiteRT int8 on validation windows; refuse beyond tolerance.

    `validation`: (windows, statics, labels) or an object with `.window`, `.static`,
    `.y` (and optionally `.scorable`, a mask of the rows the gateway scores).
    """
    import keras

    scorable = getattr(validation, "scorable", None)
    labels = validation.y if hasattr(validation, "y") else validation[2]
    w, s = as_pair(validation)
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != w.shape[0]:
        raise ConversionError("input", f"{w.shape[0]} validation windows but {y.shape[0]} labels")
    if scorable is not None:
        mask = np.asarray(scorable, dtype=bool)
        w, s, y = w[mask], s[mask], y[mask]
    if isinstance(model, str | Path):
        model = keras.models.load_model(model, compile=False)
    float_risk = keras_risk(model, w, s)
    try:
        int8_risk = RiskModel(tflite).score_many(w, s)
    except Exception as e:
        raise ConversionError("runtime", f"LiteRT cannot run the converted model: {e}") from e
    diff = np.abs(float_risk.astype(np.float64) - int8_risk.astype(np.float64))
    a_float, a_int8 = auroc(y, float_risk), auroc(y, int8_risk)
    if math.isnan(a_float):
        raise ConversionError(
            "input",
            f"validation labels hold one class only ({int(y.sum())} positive of {y.shape[0]}): "
            "ΔAUROC cannot be measured; pass validation windows of both classes",
        )
    parity = Parity(
        n=int(w.shape[0]),
        max_abs_diff=float(diff.max()),
        p99_abs_diff=float(np.percentile(diff, 99)),
        mean_abs_diff=float(diff.mean()),
        auroc_float=a_float,
        auroc_int8=a_int8,
        float_risk=float_risk,
        int8_risk=int8_risk,
        tolerances=tolerances,
    )
    problems = []
    if parity.max_abs_diff > tolerances.max_abs_diff:
        problems.append(
            f"max |float - int8| {parity.max_abs_diff:.4f} > {tolerances.max_abs_diff:g}"
        )
    if parity.p99_abs_diff > tolerances.p99_abs_diff:
        problems.append(
            f"p99 |float - int8| {parity.p99_abs_diff:.4f} > {tolerances.p99_abs_diff:g}"
        )
    if abs(parity.delta_auroc) > tolerances.delta_auroc:
        problems.append(f"|ΔAUROC| {abs(parity.delta_auroc):.4f} > {tolerances.delta_auroc:g}")
    if problems and raise_on_failure:
        raise ConversionError(
            "parity", f"int8 model refused: {'; '.join(problems)} ({parity.summary()})"
        )
    return parity
