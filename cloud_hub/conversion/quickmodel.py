"""A small model trained on a few real PhysioNet stays, for conversion tests and benchmarks.

When no trained model is at hand (no default bundle, no MLflow champion), the
conversion tests and `benches/bench_inference.py` still need a real Keras model fed
real windows. This reads the first N stays straight from the PhysioNet 2019 archive
(no importer needed), splits them by stay, fits the preprocessing on the training
stays and makes windows with the shared `contracts.preprocessing` (via training's
`make_windows`), then trains one of training's architectures for a few epochs.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contracts.paths import physionet_archive
from contracts.preprocessing import PreprocessSpec, fit_spec
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

if TYPE_CHECKING:
    import keras

    from cloud_hub.training.dataset import Stay, Windows


def read_stays(n: int, archive: Path | None = None) -> list[Stay]:
    """The first `n` stays of the PhysioNet 2019 archive (tar.gz of .psv files)."""
    import pandas as pd

    from cloud_hub.training.dataset import Stay

    archive = Path(archive or physionet_archive())
    if not archive.exists():
        raise FileNotFoundError(f"PhysioNet archive {archive} not found (set VIGIL_DATA_DIR)")
    stays: list[Stay] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith(".psv"):
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            df = pd.read_csv(io.BytesIO(f.read()), sep="|")
            stay_id = "physionet2019:" + Path(member.name).stem
            stays.append(
                Stay(
                    stay_id=stay_id,
                    hours=np.arange(len(df), dtype=np.int64),
                    dyn=df[list(VITAL_NAMES)].to_numpy(dtype=np.float64),
                    static=df[list(STATIC_FEATURES)].to_numpy(dtype=np.float64),
                    label=df["SepsisLabel"].to_numpy(dtype=np.int8),
                )
            )
            if len(stays) >= n:
                break
    return stays


@dataclass
class SmallData:
    spec: PreprocessSpec
    train: Windows
    val: Windows


def small_data(n_stays: int = 300, steps: int = 12, seed: int = 7) -> SmallData:
    """Train/validation windows of `n_stays` real stays, split by stay (70/15/15)."""
    from cloud_hub.training.dataset import make_windows, split_stays

    split = split_stays(read_stays(n_stays), seed)
    train = split["train"]
    spec = fit_spec(
        np.concatenate([s.dyn for s in train]),
        np.concatenate([s.static for s in train]),
        steps=steps,
    )
    return SmallData(spec, make_windows(train, spec), make_windows(split["val"], spec))


def train_small_model(
    data: SmallData, arch: str = "gru", units: int = 16, epochs: int = 2, seed: int = 7
) -> keras.Model:
    """One of training's architectures (two named inputs, unroll=True), briefly trained."""
    import keras

    from cloud_hub.training.models import build_model
    from cloud_hub.training.train import class_weights

    keras.utils.set_random_seed(seed)
    model = build_model(arch, data.spec.window.steps, units)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(
        data.train.inputs(),
        data.train.y.astype(np.float32),
        epochs=epochs,
        batch_size=256,
        class_weight=class_weights(data.train.y, "auto"),
        verbose=0,
    )
    return model
