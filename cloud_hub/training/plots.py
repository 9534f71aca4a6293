"""The four pictures every run logs: ROC, precision-recall, calibration, lead time.

matplotlib with the Agg backend (no display on a hub); each function returns a
Figure that the caller logs and closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(title: str) -> tuple[Figure, object]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    return fig, ax


def roc_figure(y: np.ndarray, risks: dict[str, np.ndarray]) -> Figure:
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure("ROC (scored rows)")
    for name, r in risks.items():
        fpr, tpr, _ = roc_curve(y, r)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, r):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pr_figure(y: np.ndarray, risks: dict[str, np.ndarray]) -> Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = _figure("Precision-recall (scored rows)")
    for name, r in risks.items():
        p, rec, _ = precision_recall_curve(y, r)
        ax.plot(rec, p, label=f"{name} (AUPRC {average_precision_score(y, r):.3f})")
    ax.axhline(float(np.mean(y)), ls=":", c="grey", label="prevalence")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def calibration_figure(y: np.ndarray, risk: np.ndarray, bins: int = 10) -> Figure:
    """Observed label rate against mean predicted risk, in risk-quantile bins."""
    fig, ax = _figure("Calibration (quantile bins)")
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, len(edges) - 2)
    pred = [float(risk[idx == k].mean()) for k in range(len(edges) - 1) if (idx == k).any()]
    obs = [float(y[idx == k].mean()) for k in range(len(edges) - 1) if (idx == k).any()]
    ax.plot(pred, obs, marker="o", label="model")
    top = max([*pred, *obs, 0.01])
    ax.plot([0, top], [0, top], ls=":", c="grey", label="perfect")
    ax.set_xlabel("mean predicted risk")
    ax.set_ylabel("observed label rate")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def lead_time_figure(lead_hours: list[float], threshold: float) -> Figure:
    fig, ax = _figure(f"First alarm before onset (threshold {threshold:.3f})")
    if lead_hours:
        ax.hist(lead_hours, bins=min(30, max(5, len(lead_hours) // 5)))
        ax.axvline(float(np.median(lead_hours)), c="k", ls="--", label="median")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no septic stay alarmed before onset", ha="center", va="center")
    ax.set_xlabel("hours between first alarm and onset")
    ax.set_ylabel("septic stays")
    return fig
