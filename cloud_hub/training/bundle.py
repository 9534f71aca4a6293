"""From a comparison's champion to a signed int8 bundle, through the converter in
`cloud_hub/conversion/tflite.py` (owned by the conversion part; this module only feeds it).

What the training side contributes: the trained Keras model, the PreprocessSpec the
windows were made with, representative windows from the TRAIN split (int8
calibration), the validation windows and labels (the converter reports the float →
int8 difference on them and refuses beyond its tolerance), the threshold and how it
was chosen, the validation metrics and the MLflow run id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dataset import Windows

if TYPE_CHECKING:
    from .train import Comparison

REPRESENTATIVE_ROWS = 1000


def representative(w: Windows, n: int = REPRESENTATIVE_ROWS, seed: int = 0) -> Windows:
    """A seeded sample of scorable training rows, half of them positive where possible.

    Positives are rare (about 2 % of rows); calibrating int8 ranges on a plain sample
    would under-represent the very inputs that should raise an alarm.
    """
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(w.scorable & (w.y == 1))
    neg = np.flatnonzero(w.scorable & (w.y == 0))
    k_pos = min(pos.size, n // 2)
    idx = np.concatenate(
        [rng.choice(pos, k_pos, replace=False), rng.choice(neg, min(neg.size, n - k_pos), False)]
    )
    idx.sort()
    return subset(w, idx)


def subset(w: Windows, idx: np.ndarray) -> Windows:
    """The rows `idx` of `w` (stay indices kept, so per-stay metrics still work)."""
    return Windows(
        window=w.window[idx],
        static=w.static[idx],
        y=w.y[idx],
        observed=w.observed[idx],
        scorable=w.scorable[idx],
        stay=w.stay[idx],
        row=w.row[idx],
        hour=w.hour[idx],
        stay_ids=w.stay_ids,
        current=w.current[idx],
    )


def bundle_champion(
    comp: Comparison, out: Path, key: Path, *, echo: Callable[[str], None] = print
) -> Path:
    """Convert `comp.champion` (a `train.Comparison`) into a signed int8 bundle in `out`.

    The threshold is chosen again on the int8 model's validation outputs with the same
    rule (`metrics.THRESHOLD_RULE`): the gateway runs the int8 model, so its operating
    point must be the int8 model's. The bundle is also logged to the champion's run.
    """
    import mlflow

    from cloud_hub.conversion.bundle_build import build_bundle

    champ = comp.champion
    if champ is None or champ.model is None:
        raise ValueError("the comparison has no trained network to bundle")
    prepared = comp.prepared
    built = build_bundle(
        champ.model,
        Path(out),
        Path(key),
        spec=prepared.spec,
        representative=representative(prepared.splits["train"], seed=prepared.seed),
        validation=prepared.splits["val"],
        architecture=champ.name,
        version=str(champ.version),
        name=comp.config.registered_model,
        metrics=champ.val.as_metrics("val"),
        mlflow_run_id=champ.run_id,
        dataset_fingerprint=prepared.fingerprint,
        threshold=None,
        echo=echo,
    )
    client = mlflow.MlflowClient(tracking_uri=comp.tracking_uri)
    for k, v in built.parity.as_metrics().items():
        client.log_metric(champ.run_id, k, float(v))
    client.log_metric(champ.run_id, "bundle_size_bytes", float(len(built.tflite)))
    client.log_artifacts(champ.run_id, str(built.folder), "bundle")
    return built.folder
