"""Which real ICU stays the demo replays: a few septic stays the default model flags
early, beside stays that never became septic.

The choice is made from the data at start (not a list typed in): every septic stay
of the canonical table whose sepsis label starts early enough is scored hour by hour
with the gateway's own bundle and preprocessing (LiteRT, the shared `stay_windows`),
and the stays whose risk starts below the threshold and crosses it within the first
day are shown first, so a newcomer sees risk rise within a minute at the default
speed. This is a showcase selection; BENCHMARKS.md's clinical summary holds the
honest held-out figures over all stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoStay:
    stay: str
    septic: bool
    hours: int
    onset_hour: int | None  # first hour with SepsisLabel 1 (6 h before clinical onset)
    crossing_hour: int | None  # first hour the model's risk reached its threshold


def _table(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    cols = ["stay_id", "hour", *VITAL_NAMES, *STATIC_FEATURES, "label"]
    return pq.read_table(path, columns=cols).to_pandas()


def pick_stays(
    table: Path,
    bundle_dir: Path,
    trusted_keys: Path,
    beds: int,
    *,
    septic_share: float = 0.5,
    min_hours: int = 36,
    max_candidates: int = 400,
    seed: int = 7,
) -> list[DemoStay]:
    """`beds` stays: about `septic_share` septic ones flagged early, the rest non-septic."""
    from edge_agent.scoring import load_model

    model, refused = load_model([bundle_dir], [trusted_keys])
    if model is None:
        raise RuntimeError(f"no verified bundle in {bundle_dir}: {'; '.join(refused)}")
    from contracts.preprocessing import stay_windows

    spec = model.manifest.preprocessing
    df = _table(table)
    g = df.groupby("stay_id", sort=False)
    index = g.indices  # stay -> row positions: one pass, not a filter per stay
    size = g.size()
    onset = df[df["label"] == 1].groupby("stay_id")["hour"].min()
    first = g["hour"].min()
    rng = np.random.default_rng(seed)
    long_enough = size[size >= min_hours].index
    long_set = set(long_enough)
    septic_ids = [s for s in onset.index if s in long_set]
    septic_ids = [s for s in septic_ids if 8 <= onset[s] - first[s] <= 48]
    rng.shuffle(septic_ids)
    n_septic = max(1, round(beds * septic_share)) if beds > 1 else 1
    threshold = model.threshold

    def first_crossing(sid: str) -> tuple[int | None, float]:
        rows = df.iloc[index[sid]].sort_values("hour")
        dyn = rows[list(spec.feature_names)].to_numpy(dtype=np.float64)
        st = rows[list(spec.static_names)].to_numpy(dtype=np.float64)
        w, s, obs = stay_windows(dyn, st, spec)
        risks = [model.score(w[i], s[i]) for i in range(len(w))]
        early = max(risks[:4]) if risks else 1.0
        for i, r in enumerate(risks):
            if r >= threshold and obs[i] >= spec.min_observed:
                return i, early
        return None, early

    chosen: list[DemoStay] = []
    for sid in septic_ids[:max_candidates]:
        cross, early = first_crossing(sid)
        # Starts calm, crosses within the first day: risk visibly rising on screen.
        if cross is not None and 6 <= cross <= 24 and early < threshold * 0.7:
            chosen.append(DemoStay(sid, True, int(size[sid]), int(onset[sid] - first[sid]), cross))
            if len(chosen) >= n_septic:
                break
    septic_set = set(onset.index)
    calm_ids = [s for s in long_enough if s not in septic_set]
    rng.shuffle(calm_ids)
    for sid in calm_ids[:max_candidates]:
        if len(chosen) >= beds:
            break
        cross, _ = first_crossing(sid)
        if cross is None:
            chosen.append(DemoStay(sid, False, int(size[sid]), None, None))
    if len(chosen) < beds:
        raise RuntimeError(f"only {len(chosen)} suitable stays found in {table} for {beds} beds")
    # Septic and calm beds alternate, so the ward screen shows both at once.
    sep = [c for c in chosen if c.septic]
    calm = [c for c in chosen if not c.septic]
    out: list[DemoStay] = []
    while sep or calm:
        if sep:
            out.append(sep.pop(0))
        if calm:
            out.append(calm.pop(0))
    return out[:beds]
