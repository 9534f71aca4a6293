"""Canonical table → per-stay arrays → patient-level split → model inputs.

The split is by stay (a patient never has rows on both sides), seeded and stratified
by "septic stay" so the validation and test splits hold the same share of septic
stays as the whole. Normalisation constants are fitted on the TRAIN split only
(`contracts.preprocessing.fit_spec`) and every window is made by the one shared
function, `contracts.preprocessing.stay_windows`, the very one the gateway runs.

Rows whose window is "insufficient" (fewer than `min_observed` raw vital values) are
kept for training (the model sees them and learns they carry little), and are marked
in `Windows.scorable` so evaluation can treat them as the gateway does: not scored,
hence no alarm (see `metrics.evaluate`).

Rows with an unknown label (<NA>, e.g. MIMIC-III stays) cannot be trained on or
scored: they are dropped, counted, and logged.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from contracts.canonical import LABEL_COLUMN
from contracts.preprocessing import PreprocessSpec, fit_spec, stay_windows
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES
from converters.canonical_io import load_canonical

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """The canonical table cannot be used for training; the message says why."""


@dataclass
class Stay:
    """One ICU stay, rows in hour order, raw units (NaN missing)."""

    stay_id: str
    hours: np.ndarray  # [T] int
    dyn: np.ndarray  # [T, 7] raw vital signs
    static: np.ndarray  # [T, 4] raw static features
    label: np.ndarray  # [T] int8 0/1

    @property
    def septic(self) -> bool:
        return bool(self.label.any())


@dataclass
class Windows:
    """Model inputs for every row of a set of stays, plus what per-stay metrics need."""

    window: np.ndarray  # [N, steps, 7] float32, normalised
    static: np.ndarray  # [N, 4] float32, normalised
    y: np.ndarray  # [N] int8
    observed: np.ndarray  # [N] raw vital values in the window
    scorable: np.ndarray  # [N] bool: observed >= min_observed (the edge scores it)
    stay: np.ndarray  # [N] int index into `stay_ids`
    row: np.ndarray  # [N] 0-based row position within the stay (the utility's time)
    hour: np.ndarray  # [N] the canonical `hour`
    stay_ids: list[str]
    current: np.ndarray  # [N, 7] raw vitals of the row, forward-filled (for NEWS2)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_stays(self) -> int:
        return len(self.stay_ids)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model's two named inputs."""
        return {"window": self.window, "static": self.static}


@dataclass
class Prepared:
    """Everything a training run needs, and what it must record."""

    spec: PreprocessSpec
    splits: dict[str, Windows]
    seed: int
    fingerprint: str
    split_fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)

    def params(self) -> dict[str, str | int]:
        """Split facts to log as run parameters."""
        out: dict[str, str | int] = {"split_seed": self.seed, "split_hash": self.split_fingerprint}
        for name, w in self.splits.items():
            out[f"{name}_stays"] = w.n_stays
            out[f"{name}_rows"] = len(w)
            out[f"{name}_septic_stays"] = int(_septic_per_stay(w).sum())
        out.update({k: v for k, v in self.counts.items()})
        return out


def _septic_per_stay(w: Windows) -> np.ndarray:
    out = np.zeros(w.n_stays, dtype=bool)
    np.logical_or.at(out, w.stay, w.y.astype(bool))
    return out


def stays_from_table(df: pd.DataFrame) -> tuple[list[Stay], dict[str, int]]:
    """Split the canonical table into stays (rows sorted by hour).

    Returns the stays and counts of what was set aside (unknown-label rows, stays
    left with no rows).
    """
    needed = ["stay_id", "hour", *VITAL_NAMES, *STATIC_FEATURES, LABEL_COLUMN]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DatasetError(
            f"canonical table lacks columns {missing}; expected those of contracts.canonical"
        )
    counts = {"rows_in": len(df), "rows_unknown_label": 0, "stays_unknown_label": 0}
    unknown = df[LABEL_COLUMN].isna().to_numpy()
    if unknown.any():
        counts["rows_unknown_label"] = int(unknown.sum())
        counts["stays_unknown_label"] = int(df.loc[unknown, "stay_id"].nunique())
        log.warning(
            "dropping %d rows with an unknown label (%d stays): they cannot be trained on",
            counts["rows_unknown_label"],
            counts["stays_unknown_label"],
        )
        df = df.loc[~unknown]
    if df.empty:
        raise DatasetError("no labelled rows in the canonical table")
    df = df.sort_values(["stay_id", "hour"], kind="stable")
    ids = df["stay_id"].astype(str).to_numpy()
    hours = df["hour"].to_numpy(dtype=np.int64)
    dyn = df[list(VITAL_NAMES)].to_numpy(dtype=np.float64, na_value=np.nan)
    static = df[list(STATIC_FEATURES)].to_numpy(dtype=np.float64, na_value=np.nan)
    label = df[LABEL_COLUMN].to_numpy(dtype=np.int8)
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ids)]])
    stays = [
        Stay(ids[a], hours[a:b], dyn[a:b], static[a:b], label[a:b])
        for a, b in zip(starts, ends, strict=True)
    ]
    counts["stays"] = len(stays)
    return stays, counts


def split_stays(
    stays: list[Stay], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, list[Stay]]:
    """Patient-level split, stratified by septic stay, reproducible from `seed`."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise DatasetError(f"split fractions must be positive and sum to 1, got {fractions}")
    if len(stays) < 3:
        raise DatasetError(f"need at least 3 stays to split train/val/test, got {len(stays)}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[Stay]] = {s: [] for s in SPLITS}
    # Sort first so the split depends on the stays, not on the table's row order.
    ordered = sorted(stays, key=lambda s: s.stay_id)
    for septic in (True, False):
        group = [s for s in ordered if s.septic == septic]
        idx = rng.permutation(len(group))
        n_train = int(round(fractions[0] * len(group)))
        n_val = int(round(fractions[1] * len(group)))
        for k, i in enumerate(idx):
            name = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            out[name].append(group[i])
    for name, group in out.items():
        if not group:
            raise DatasetError(f"the {name} split is empty: too few stays ({len(stays)})")
    return out


def split_hash(split: dict[str, list[Stay]]) -> str:
    """Short hash of which stay went where (to prove two runs used the same split)."""
    h = hashlib.sha256()
    for name in SPLITS:
        for s in sorted(split[name], key=lambda s: s.stay_id):
            h.update(f"{name}:{s.stay_id}\n".encode())
    return h.hexdigest()[:16]


def _forward_filled_raw(dyn: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The row's current raw vitals as the gateway holds them (for NEWS2): masked, ffilled."""
    from contracts.preprocessing import forward_fill, mask_implausible

    masked = mask_implausible(dyn, spec.feature_names)
    return forward_fill(masked, np.full(masked.shape[1], np.nan))


def make_windows(stays: list[Stay], spec: PreprocessSpec) -> Windows:
    """Every row of every stay as model input, via the shared `stay_windows`."""
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("window", "static", "observed", "y", "stay", "row", "hour", "current")
    }
    for i, s in enumerate(stays):
        w, st, obs = stay_windows(s.dyn, s.static, spec)
        parts["window"].append(w)
        parts["static"].append(st)
        parts["observed"].append(obs)
        parts["y"].append(s.label)
        parts["stay"].append(np.full(len(s.label), i, dtype=np.int32))
        parts["row"].append(np.arange(len(s.label), dtype=np.int32))
        parts["hour"].append(s.hours)
        parts["current"].append(_forward_filled_raw(s.dyn, spec).astype(np.float32))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Windows(
        window=cat["window"],
        static=cat["static"],
        y=cat["y"].astype(np.int8),
        observed=cat["observed"],
        scorable=cat["observed"] >= spec.min_observed,
        stay=cat["stay"],
        row=cat["row"],
        hour=cat["hour"],
        stay_ids=[s.stay_id for s in stays],
        current=cat["current"],
    )


def limit(stays: list[Stay], n: int | None, seed: int) -> list[Stay]:
    """A seeded random subset of `n` stays (for quick runs); all when n is None."""
    if n is None or n >= len(stays):
        return stays
    if n < 3:
        raise DatasetError(f"--limit-stays must be at least 3, got {n}")
    ordered = sorted(stays, key=lambda s: s.stay_id)
    idx = np.random.default_rng(seed + 1).choice(len(ordered), size=n, replace=False)
    return [ordered[i] for i in sorted(idx)]


def prepare(
    df: pd.DataFrame,
    *,
    steps: int,
    seed: int,
    fingerprint: str,
    limit_stays: int | None = None,
    min_observed: int = 3,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Prepared:
    """Canonical table → split → spec fitted on train → windows for each split."""
    stays, counts = stays_from_table(df)
    stays = limit(stays, limit_stays, seed)
    split = split_stays(stays, seed, fractions)
    train = split["train"]
    spec = fit_spec(
        np.concatenate([s.dyn for s in train]),
        np.concatenate([s.static for s in train]),
        steps=steps,
        min_observed=min_observed,
    )
    windows = {name: make_windows(split[name], spec) for name in SPLITS}
    for name, w in windows.items():
        counts[f"{name}_rows_insufficient"] = int((~w.scorable).sum())
    return Prepared(
        spec=spec,
        splits=windows,
        seed=seed,
        fingerprint=fingerprint,
        split_fingerprint=split_hash(split),
        counts=counts,
    )


def load_table(path: str) -> tuple[pd.DataFrame, str]:
    """Read a canonical Parquet table and its dataset fingerprint (the importer's)."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise DatasetError(
            f"canonical table {p} not found: import one first "
            "(vigil convert physionet --out data/canonical/physionet2019.parquet)"
        )
    return load_canonical(p)  # the importers' reader: checks the columns, gives the fingerprint
