"""The clinical figures in BENCHMARKS.md belong to the committed int8 bundle.

`benches/bench_model.py` rebuilds the test split from the training seed, proves it is the
bundle's own (dataset fingerprint and normalisation constants), and scores the bundle
through LiteRT as the gateway does. This test recomputes the point figures and compares
them with the BENCHMARKS.md table, so a new bundle with old figures fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from benches import bench_model
from contracts.bundle import Manifest
from contracts.paths import default_bundle_dir
from tests.support.data import needs_physionet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    needs_physionet,
]
SECTION = "## Model figures of the committed bundle (int8, test split)"


def _table_row(name: str) -> list[float]:
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {name} |"))
    cells = [c.strip() for c in line.strip("|").split("|")][2:7]
    return [float(re.match(r"[-0-9.]+", c).group()) for c in cells]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from contracts.paths import work_dir

    shipped = work_dir() / "canonical" / "physionet2019.parquet"
    return shipped if shipped.exists() else tmp_path_factory.mktemp("c") / "physionet2019.parquet"


def _args(table: Path, seed: int = 2019) -> argparse.Namespace:
    return argparse.Namespace(
        bundle=str(default_bundle_dir()), data=str(table), seed=seed, bootstrap=0, json=None
    )


def test_benchmarks_figures_are_the_committed_bundles_on_its_own_test_split(table: Path) -> None:
    out = bench_model.run(_args(table))
    manifest = Manifest.model_validate_json((default_bundle_dir() / "manifest.json").read_text())
    assert out["mlflow_run_id"] == manifest.mlflow_run_id
    assert out["normalisation_max_rel_diff"] <= 1e-6  # the split the bundle was trained on
    section = (ROOT / "BENCHMARKS.md").read_text().split(SECTION, 1)[1]
    assert manifest.mlflow_run_id in section.split("\n## ", 1)[0]
    keys = ("auroc", "auprc", "utility", "alarms_per_patient_day", "sensitivity")
    for name in ("int8 bundle (LiteRT)", "NEWS2 >= 5"):
        got = [round(out["models"][name]["figures"][k], 3) for k in keys]
        assert got == pytest.approx(_table_row(name), abs=0.0015), name


def test_another_split_is_refused_as_not_the_bundles(table: Path) -> None:
    with pytest.raises(bench_model.ProvenanceError, match="normalisation differs"):
        bench_model.run(_args(table, seed=7))
