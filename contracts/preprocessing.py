"""The one function that turns hourly rows into model input, for training and the edge.

Train/serve skew is the classic silent failure, so the trainer and the gateway both
call `stay_windows` with the `PreprocessSpec` written into the bundle manifest.
NumPy only: the gateway has no pandas and no TensorFlow.

Rules (also written into every manifest as `imputation`):
1. Raw values outside the catalogue's plausible range become missing (artefacts).
2. Within a stay, a missing value takes the last observed value (forward fill);
   before the first observation it takes the feature's fill value (training mean).
3. Values are normalised: (x - mean) / std.
4. The window for hour t holds rows t-steps+1 .. t; rows before the stay's first
   row are padding and hold 0 (the normalised mean).
5. A window with fewer than `min_observed` raw vital values (before imputation) is
   flagged as insufficient: the edge says so instead of scoring a guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from .vitals import BY_NAME, STATIC_FEATURES, VITAL_NAMES

IMPUTATION_RULE = "plausible-range, forward-fill within stay, then training mean; zero padding"


class FeatureSpec(BaseModel):
    name: str
    unit: str = ""
    mean: float
    std: float = Field(gt=0)
    fill: float


class WindowSpec(BaseModel):
    steps: int = Field(ge=1, le=168)
    step_seconds: int = Field(default=3600, ge=1)


class PreprocessSpec(BaseModel):
    """What the model expects: written by training into the manifest, read by the edge."""

    features: list[FeatureSpec]
    static_features: list[FeatureSpec]
    window: WindowSpec
    imputation: str = IMPUTATION_RULE
    min_observed: int = Field(default=3, ge=0)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def static_names(self) -> list[str]:
        return [f.name for f in self.static_features]


def fit_spec(
    dyn: np.ndarray,
    static: np.ndarray,
    steps: int,
    step_seconds: int = 3600,
    feature_names: Sequence[str] = VITAL_NAMES,
    static_names: Sequence[str] = STATIC_FEATURES,
    min_observed: int = 3,
) -> PreprocessSpec:
    """Normalisation constants from training rows (raw units, NaN for missing)."""
    dyn = mask_implausible(np.asarray(dyn, dtype=np.float64), feature_names)
    static = np.asarray(static, dtype=np.float64)

    def specs(arr: np.ndarray, names: Sequence[str]) -> list[FeatureSpec]:
        out = []
        for i, name in enumerate(names):
            col = arr[:, i]
            col = col[~np.isnan(col)]
            mean = float(col.mean()) if col.size else 0.0
            std = float(col.std()) if col.size > 1 else 1.0
            if not math.isfinite(std) or std < 1e-6:
                std = 1.0
            unit = BY_NAME[name].unit if name in BY_NAME else ""
            out.append(FeatureSpec(name=name, unit=unit, mean=mean, std=std, fill=mean))
        return out

    return PreprocessSpec(
        features=specs(dyn, feature_names),
        static_features=specs(static, static_names),
        window=WindowSpec(steps=steps, step_seconds=step_seconds),
        min_observed=min_observed,
    )


def mask_implausible(dyn: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Copy of `dyn` [T, F] with values outside the plausible range set to NaN."""
    out = np.array(dyn, dtype=np.float64, copy=True)
    for i, name in enumerate(names):
        v = BY_NAME.get(name)
        if v is None:
            continue
        col = out[:, i]
        with np.errstate(invalid="ignore"):
            bad = (col < v.low) | (col > v.high)
        col[bad] = np.nan
    return out


def forward_fill(values: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 0, then replace leading NaNs by `fill` [F]."""
    values = np.asarray(values, dtype=np.float64)
    t = values.shape[0]
    if t == 0:
        return values.copy()
    mask = ~np.isnan(values)
    idx = np.where(mask, np.arange(t)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = values[idx, np.arange(values.shape[1])[None, :]]
    never = ~np.maximum.accumulate(mask, axis=0)
    return np.where(never, fill[None, :], filled)


def stay_windows(
    dyn: np.ndarray, static: np.ndarray, spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs for every hour of one stay.

    dyn: [T, F] raw vital signs (catalogue units, NaN missing), rows hour by hour.
    static: [T, S] raw static features for the same rows (ICULOS changes per row).
    Returns (windows [T, steps, F] float32, static [T, S] float32, observed [T] int):
    the input for predicting hour t is windows[t], static[t]; observed[t] counts raw
    vital values in the window (before imputation).
    """
    dyn = np.asarray(dyn, dtype=np.float64)
    static = np.asarray(static, dtype=np.float64)
    if dyn.ndim != 2 or dyn.shape[1] != len(spec.features):
        raise ValueError(
            f"dynamic rows must be [T, {len(spec.features)}] ({spec.feature_names}), "
            f"got {dyn.shape}"
        )
    if static.shape != (dyn.shape[0], len(spec.static_features)):
        raise ValueError(
            f"static rows must be [{dyn.shape[0]}, {len(spec.static_features)}] "
            f"({spec.static_names}), got {static.shape}"
        )
    steps = spec.window.steps
    t = dyn.shape[0]
    dyn = mask_implausible(dyn, spec.feature_names)
    observed_rows = (~np.isnan(dyn)).sum(axis=1)

    mean = np.array([f.mean for f in spec.features])
    std = np.array([f.std for f in spec.features])
    fill = np.array([f.fill for f in spec.features])
    norm = (forward_fill(dyn, fill) - mean) / std

    padded = np.zeros((t + steps - 1, dyn.shape[1]), dtype=np.float64)
    padded[steps - 1 :] = norm
    windows = np.lib.stride_tricks.sliding_window_view(padded, steps, axis=0)
    windows = np.ascontiguousarray(windows.transpose(0, 2, 1), dtype=np.float32)

    cum = np.concatenate([[0], np.cumsum(observed_rows)])
    lo = np.maximum(np.arange(t) - steps + 1, 0)
    observed = cum[np.arange(t) + 1] - cum[lo]

    s_mean = np.array([f.mean for f in spec.static_features])
    s_std = np.array([f.std for f in spec.static_features])
    s_fill = np.array([f.fill for f in spec.static_features])
    s = np.where(np.isnan(static), s_fill[None, :], static)
    s_norm = ((s - s_mean) / s_std).astype(np.float32)
    return windows, s_norm, observed.astype(np.int64)


def aggregate_readings(values: Iterable[float | None], name: str) -> float:
    """One step's value from many monitor readings: median of the plausible ones.

    Hourly charted values in the training data are spot checks a nurse validated;
    the median of an hour of 1 Hz readings is the closest robust equivalent, and
    drops artefact spikes. NaN when no plausible reading arrived.
    """
    v = BY_NAME[name]
    good = [
        float(x)
        for x in values
        if x is not None and math.isfinite(float(x)) and v.low <= float(x) <= v.high
    ]
    if not good:
        return float("nan")
    if len(good) == 1:  # a charted hour or a cuff cycle: its value (np.median costs ~10 us)
        return good[0]
    if len(good) == 2:
        return (good[0] + good[1]) / 2.0
    return float(np.median(good))
