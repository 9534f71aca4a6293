"""Keras model → signed bundle (manifest.json + model.tflite + manifest.sig.json).

What training calls to make the default bundle (one call does it all):

    from cloud_hub.conversion.bundle_build import build_bundle

    built = build_bundle(
        keras_model,                       # two named inputs window/static, unroll=True
        out_dir,                           # e.g. contracts.paths.default_bundle_dir()
        signing_key,                       # Path to NAME.key, or an Ed25519PrivateKey
        spec=prepared.spec,                # the PreprocessSpec the model was trained with
        representative=prepared.splits["train"],  # or (windows, statics)
        validation=prepared.splits["val"],        # or (windows, statics, labels)
        architecture="gru",
        version="3",                       # e.g. the registry version
        mlflow_run_id=run_id,
        dataset_fingerprint=prepared.fingerprint,
        metrics=evaluation.as_metrics("val"),   # float model's figures; finite floats kept
        threshold=None,                    # None: chosen again on the int8 outputs
    )
    built.folder, built.manifest, built.parity.summary()

Steps: int8 conversion in a child process (`cloud_hub.conversion.tflite.convert_int8`), parity
float vs int8 on validation (refused beyond `Tolerances`: ConversionError), the
threshold (given, or chosen on the int8 validation outputs with training's rule
when `validation` carries `stay`/`scorable`, i.e. is training's `Windows`), golden
windows (real validation windows spread over the risk range, the int8 model's
outputs as expected values), the manifest of `contracts.bundle`, the signature, and
finally the written bundle is verified as a gateway would (`model_runtime.verify`).
Metrics written: the caller's, the parity figures (`parity_*`) and, when the
threshold is chosen here, the int8 model's validation figures (`int8_val_*`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.bundle import (
    GoldenWindow,
    Manifest,
    Threshold,
    key_id,
    load_private_key,
    write_bundle,
)
from contracts.preprocessing import PreprocessSpec
from contracts.timeutil import iso_ms, utc_now
from model_runtime.litert import RiskModel
from model_runtime.verify import Verified, verify_full

from .tflite import (
    DEFAULT_TIMEOUT_S,
    Parity,
    Tolerances,
    as_pair,
    check_parity,
    convert_int8,
)

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

DEFAULT_NAME = "vigil-sepsis"
GOLDEN_COUNT = 8
GOLDEN_TOLERANCE = 0.02  # LiteRT builds may differ by a quantisation step or two (1/256)


@dataclass
class BuiltBundle:
    folder: Path
    manifest: Manifest
    parity: Parity
    verified: Verified
    tflite: bytes


def pick_golden(
    windows: np.ndarray,
    statics: np.ndarray,
    risk: np.ndarray,
    n: int = GOLDEN_COUNT,
    tolerance: float = GOLDEN_TOLERANCE,
) -> list[GoldenWindow]:
    """`n` real windows spread over the risk range (quantiles), with the int8 outputs."""
    order = np.argsort(risk, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [
        GoldenWindow(
            window=windows[order[p]].astype(float).tolist(),
            static=statics[order[p]].astype(float).tolist(),
            expected=float(risk[order[p]]),
            tolerance=tolerance,
        )
        for p in picks
    ]


def _private(key: Path | str | Ed25519PrivateKey) -> Ed25519PrivateKey:
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(Path(key))


def _threshold_on_int8(
    validation: Any, int8_all: np.ndarray
) -> tuple[Threshold, dict[str, float]] | None:
    """Training's rule applied to the int8 outputs, when the validation rows allow it."""
    if not all(hasattr(validation, a) for a in ("y", "stay", "scorable")):
        return None
    from cloud_hub.training import metrics as m

    value, _ = m.choose_threshold(validation.y, int8_all, validation.stay, validation.scorable)
    ev = m.evaluate(validation.y, int8_all, validation.stay, validation.scorable, value)
    figures = {k: v for k, v in ev.as_metrics("int8_val").items() if math.isfinite(v)}
    return Threshold(value=value, method=f"{m.THRESHOLD_RULE}; on the int8 model's outputs"), (
        figures
    )


def build_bundle(
    model: keras.Model | str | Path,
    out_dir: Path | str,
    signing_key: Path | str | Ed25519PrivateKey,
    *,
    spec: PreprocessSpec,
    representative: Any,
    validation: Any,
    architecture: str,
    version: str,
    name: str = DEFAULT_NAME,
    threshold: Threshold | tuple[float, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    mlflow_run_id: str = "",
    dataset_fingerprint: str = "",
    horizon_hours: int = 6,
    tolerances: Tolerances = Tolerances(),
    golden_count: int = GOLDEN_COUNT,
    golden_tolerance: float = GOLDEN_TOLERANCE,
    timeout: float = DEFAULT_TIMEOUT_S,
    tflite: bytes | None = None,
    echo: Callable[[str], None] | None = None,
) -> BuiltBundle:
    """Convert, check parity, choose/record the threshold, sign and write a bundle.

    Raises `cloud_hub.conversion.tflite.ConversionError` (conversion failed or refused) or
    `contracts.bundle.BundleError` (the written bundle does not verify); nothing is
    written when conversion or parity fails. `tflite`: the model already converted
    by `convert_int8` (conversion skipped; parity and everything else still run).
    """
    say = echo or log.info
    private = _private(signing_key)
    steps = spec.window.steps
    if tflite is None:
        say(f"converting {architecture} to int8 TFLite (window {steps} h, in a child process)")
        blob = convert_int8(model, representative, timeout=timeout)
    else:
        blob = bytes(tflite)
    say(f"int8 model: {len(blob) / 1024:.1f} KiB")
    parity = check_parity(model, blob, validation, tolerances=tolerances)
    say(parity.summary())

    # int8 risk for every validation row (unscored rows included: the utility needs them).
    val_w, val_s = as_pair(validation)
    scorable = getattr(validation, "scorable", None)
    if scorable is not None:
        int8_all = np.zeros(val_w.shape[0], dtype=np.float32)
        int8_all[np.asarray(scorable, dtype=bool)] = parity.int8_risk
    else:
        int8_all = parity.int8_risk
    figures: dict[str, float] = {
        k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))
    }
    figures.update(parity.as_metrics())
    if threshold is None:
        chosen = _threshold_on_int8(validation, int8_all)
        if chosen is None:
            raise ValueError(
                "threshold: give one (value, method), or validation rows with stay and scorable "
                "(training's Windows) so it can be chosen on the int8 outputs"
            )
        threshold, int8_figures = chosen
        figures.update(int8_figures)
        say(f"threshold {threshold.value:.4f} ({threshold.method})")
    elif not isinstance(threshold, Threshold):
        threshold = Threshold(value=float(threshold[0]), method=str(threshold[1]))

    runner = RiskModel(blob)
    mask = np.ones(val_w.shape[0], bool) if scorable is None else np.asarray(scorable, bool)
    golden = pick_golden(val_w[mask], val_s[mask], parity.int8_risk, golden_count, golden_tolerance)
    manifest: dict[str, Any] = {
        "schema": "vigil.manifest/1",
        "name": name,
        "version": str(version),
        "created_at": iso_ms(utc_now()),
        "mlflow_run_id": mlflow_run_id,
        "architecture": architecture,
        "horizon_hours": horizon_hours,
        "preprocessing": spec.model_dump(),
        "inputs": [runner.inputs[k].as_manifest() for k in ("window", "static")],
        "outputs": [runner.outputs["risk"].as_manifest()],
        "threshold": threshold.model_dump(),
        "metrics": figures,
        "dataset_fingerprint": dataset_fingerprint,
        "golden": [g.model_dump() for g in golden],
        # For the record (signed, not read by the edge): how the model was made.
        "conversion": {
            "quantization": "full int8 (weights and activations), float input/output",
            "ops": "TFLITE_BUILTINS_INT8",
            "batch": 1,
            "internal_quantization": runner.internal_quantization(),
            "tensorflow": _tf_version(),
        },
        "sha256": "",  # filled in by write_bundle
        "size_bytes": 0,
    }
    folder = _write_atomically(Path(out_dir), manifest, blob, private)
    verified = verify_full(folder, {key_id(private.public_key()): private.public_key()})
    say(verified.line())
    return BuiltBundle(folder, verified.manifest, parity, verified, blob)


def _write_atomically(
    out: Path, manifest: dict[str, Any], blob: bytes, private: Ed25519PrivateKey
) -> Path:
    """Write and verify in a sibling folder, then swap it in: never a half-written bundle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700: the gateway's service user must read it
    try:
        write_bundle(tmp, manifest, blob, private)
        verify_full(tmp, {key_id(private.public_key()): private.public_key()})
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _tf_version() -> str:
    try:
        import tensorflow as tf

        return str(tf.__version__)
    except ImportError:  # pragma: no cover - conversion needs TF anyway
        return "unknown"
