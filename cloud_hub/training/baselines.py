"""Baselines every comparison carries: NEWS2 and logistic regression.

- NEWS2 (`contracts.news2`, the very score the gateway shows) on the row's current
  vitals as the gateway holds them (implausible values dropped, last value carried
  forward); a monitor gives no oxygen/consciousness flags, so air and Alert are
  assumed. Risk = total / 20, so a threshold t means "NEWS2 >= 20 t".
- Logistic regression (scikit-learn) on the flattened normalised window + static
  features: the same inputs as the networks, no recurrence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from contracts.news2 import news2
from contracts.vitals import VITAL_NAMES

from .dataset import Windows

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

NEWS2_MAX = 20.0  # 3+3+3+3+3 (resp, SpO2, SBP, HR) + 2 (temp) + 3 (consciousness) = 20


def news2_risk(w: Windows) -> np.ndarray:
    """NEWS2 total / 20 for every row of `w`, from its forward-filled raw vitals."""
    col = {n: i for i, n in enumerate(VITAL_NAMES)}  # `current` is in catalogue order
    cur = w.current.astype(np.float64)
    out = np.empty(cur.shape[0], dtype=np.float32)
    for i, row in enumerate(cur):
        out[i] = news2(
            resp=row[col["Resp"]],
            spo2=row[col["O2Sat"]],
            sbp=row[col["SBP"]],
            hr=row[col["HR"]],
            temp=row[col["Temp"]],
        ).total
    return out / NEWS2_MAX


def flat_features(w: Windows) -> np.ndarray:
    """[N, steps*7 + 4]: the window flattened, then the static features."""
    return np.concatenate([w.window.reshape(len(w), -1), w.static], axis=1)


def fit_logistic(
    w: Windows, class_weight: str | None, seed: int, max_iter: int = 300
) -> LogisticRegression:
    """Logistic regression on the training split's flattened inputs."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        max_iter=max_iter,
        class_weight="balanced" if class_weight == "auto" else None,
        random_state=seed,
    )
    model.fit(flat_features(w), w.y.astype(int))
    return model


def logistic_risk(model: LogisticRegression, w: Windows) -> np.ndarray:
    return model.predict_proba(flat_features(w))[:, 1].astype(np.float32)
