"""Training: challenge utility and alarm metrics, patient-level split, architectures, and a
short real training run on real PhysioNet stays tracked in a real MLflow SQLite store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_hub.training import metrics
from cloud_hub.training.dataset import Stay, make_windows, split_hash, split_stays
from contracts.preprocessing import fit_spec, stay_windows
from tests.support import data as shared

# ---------------------------------------------------------------- utility (pure logic)


def _septic(n: int, first_label: int) -> np.ndarray:
    y = np.zeros(n, dtype=np.int8)
    y[first_label:] = 1
    return y


def test_row_utility_matches_the_challenge_definition_by_hand():
    # First label at row 10 -> onset t_sepsis = 16. Rewards relative to onset:
    y = _septic(25, 10)
    u1 = metrics.row_utility(y, np.ones(25, dtype=bool))
    u0 = metrics.row_utility(y, np.zeros(25, dtype=bool))
    assert u1[2] == pytest.approx(-0.05)  # 14 h early: a false alarm
    assert u1[4] == pytest.approx(0.0)  # 12 h early: no reward yet
    assert u1[7] == pytest.approx(0.5)  # 9 h early: half way up
    assert u1[10] == pytest.approx(1.0)  # 6 h early: full reward
    assert u1[16] == pytest.approx(1 / 3)  # at onset: decaying
    assert u1[19] == pytest.approx(0.0)  # 3 h late: nothing
    assert u1[20] == 0.0 and u0[20] == 0.0  # beyond onset + 3 h nothing counts
    assert u0[10] == pytest.approx(0.0)  # missing early is not yet penalised
    assert u0[16] == pytest.approx(-4 / 3)  # missing at onset
    assert u0[19] == pytest.approx(-2.0)  # missing 3 h late: worst
    clean = np.zeros(5, dtype=np.int8)
    assert metrics.row_utility(clean, np.array([1, 0, 1, 0, 0])).tolist() == [
        -0.05,
        0.0,
        -0.05,
        0.0,
        0.0,
    ]


def _cohort() -> tuple[np.ndarray, np.ndarray]:
    ys = [_septic(30, 20), np.zeros(40, np.int8), _septic(8, 0), np.zeros(12, np.int8)]
    y = np.concatenate(ys)
    stay = np.concatenate([np.full(len(a), i) for i, a in enumerate(ys)])
    return y, stay


def test_the_optimal_predictor_scores_one_and_never_predicting_scores_zero():
    y, stay = _cohort()
    best = np.concatenate([metrics.optimal_predictions(y[stay == i]) for i in range(4)])
    assert metrics.normalised_utility(y, best, stay) == pytest.approx(1.0)
    assert metrics.normalised_utility(y, np.zeros_like(y, dtype=bool), stay) == pytest.approx(0.0)
    always = metrics.normalised_utility(y, np.ones_like(y, dtype=bool), stay)
    assert always < 1.0


def test_normalised_utility_of_a_small_cohort_by_hand():
    # A septic stay labelled from row 0 (onset at row 6, 8 rows) and a clean stay of 4 rows.
    y = np.array([1] * 8 + [0] * 4, dtype=np.int8)
    stay = np.array([0] * 8 + [1] * 4)
    # Hours from onset d = -6..1. Never predicting: 0 at d=-6, then (-2d-12)/9 each:
    inaction = -(2 + 4 + 6 + 8 + 10 + 12 + 14) / 9  # -56/9
    # The optimal predictor alarms every row: 1 at d=-6, then 1/3 - d/9 each:
    best = 1 + (8 + 7 + 6 + 5 + 4 + 3 + 2) / 9  # 44/9
    pred = np.zeros(12, dtype=bool)
    pred[5] = True  # d = -1: 4/9 instead of the miss's -10/9
    pred[9] = True  # a false alarm on the clean stay: -0.05
    observed = inaction + 4 / 9 + 10 / 9 - 0.05
    assert (observed - inaction) / (best - inaction) == pytest.approx(0.1355)
    assert metrics.normalised_utility(y, pred, stay) == pytest.approx(0.1355)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(-1, 70)), min_size=1, max_size=8),
    st.integers(0, 2**31 - 1),
)
def test_no_predictions_beat_the_optimal_predictor(stays, seed):
    """Any alarms score at most 1, and the cohort score is the sum of per-stay rows."""
    ys = [_septic(n, f) if 0 <= f < n else np.zeros(n, np.int8) for n, f in stays]
    y = np.concatenate(ys)
    stay = np.concatenate([np.full(len(a), i) for i, a in enumerate(ys)])
    pred = np.random.default_rng(seed).random(y.size) < 0.3
    score = metrics.normalised_utility(y, pred, stay)
    observed = sum(metrics.row_utility(ys[i], pred[stay == i]).sum() for i in range(len(ys)))
    inaction = sum(metrics.row_utility(a, np.zeros(len(a), bool)).sum() for a in ys)
    best = sum(metrics.row_utility(a, metrics.optimal_predictions(a)).sum() for a in ys)
    if best > inaction:
        assert score <= 1.0 + 1e-9
        assert score == pytest.approx((observed - inaction) / (best - inaction))
    else:  # no septic stay: only false alarms count
        assert score == pytest.approx(-0.05 * pred.sum())


def test_alarms_count_rising_edges_and_lead_time_is_onset_minus_first_alarm():
    y = np.concatenate([_septic(30, 20), np.zeros(18, np.int8)])  # onset at row 26
    stay = np.array([0] * 30 + [1] * 18)
    alarm = np.zeros(48, dtype=bool)
    alarm[10:14] = True  # first alarm at 10: 16 h lead
    alarm[22:30] = True
    alarm[35] = True  # one blip on the clean stay
    s = metrics.alarm_stats(y, alarm, stay)
    assert s.alarms == 3
    assert s.alarms_per_patient_day == pytest.approx(3 / (48 / 24))
    assert s.sensitivity == 1.0 and s.median_lead_hours == 16.0
    late = np.zeros(48, dtype=bool)
    late[27] = True  # after onset: not detected in time
    s = metrics.alarm_stats(y, late, stay)
    assert s.sensitivity == 0.0 and math.isnan(s.median_lead_hours)


def test_unscored_rows_never_alarm_and_the_threshold_maximises_validation_utility():
    y, stay = _cohort()
    best = np.concatenate([metrics.optimal_predictions(y[stay == i]) for i in range(4)])
    risk = np.where(best, 0.9, 0.1)
    scorable = np.ones(y.size, dtype=bool)
    t, u = metrics.choose_threshold(y, risk, stay, scorable)
    assert t == pytest.approx(0.9) and u == pytest.approx(1.0)
    ev = metrics.evaluate(y, risk, stay, np.zeros(y.size, dtype=bool) | (risk < 0.5), t)
    assert ev.utility == pytest.approx(0.0)  # every would-be alarm was unscorable
    assert ev.scored_rows == int((risk < 0.5).sum())


# ---------------------------------------------------------------- split and windows


def _stays(n: int, seed: int = 0) -> list[Stay]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(8, 40))
        dyn = rng.normal([80, 97, 37, 120, 80, 60, 18], [10, 2, 0.5, 15, 10, 8, 3], (t, 7))
        dyn[rng.random((t, 7)) < 0.3] = np.nan
        static = np.column_stack(
            [np.full(t, 60.0), np.full(t, i % 2), np.full(t, -5.0), np.arange(1, t + 1)]
        )
        label = _septic(t, t // 2) if i % 5 == 0 else np.zeros(t, np.int8)
        out.append(Stay(f"s{i:03d}", np.arange(t), dyn, static, label))
    return out


def test_split_is_by_stay_seeded_and_stratified():
    stays = _stays(100)
    a = split_stays(stays, seed=7)
    b = split_stays(list(reversed(stays)), seed=7)
    ids = {k: {s.stay_id for s in v} for k, v in a.items()}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == 100
    assert split_hash(a) == split_hash(b)  # the table's row order does not matter
    assert split_hash(split_stays(stays, seed=8)) != split_hash(a)
    assert [sum(s.septic for s in a[k]) for k in ("train", "val", "test")] == [14, 3, 3]


def test_windows_are_the_shared_preprocessing_of_each_stay():
    stays = _stays(6)
    spec = fit_spec(
        np.concatenate([s.dyn for s in stays]), np.concatenate([s.static for s in stays]), steps=5
    )
    w = make_windows(stays, spec)
    s = stays[3]
    expected, static, observed = stay_windows(s.dyn, s.static, spec)
    rows = w.stay == 3
    assert np.array_equal(w.window[rows], expected) and np.array_equal(w.static[rows], static)
    assert np.array_equal(w.scorable[rows], observed >= spec.min_observed)
    assert w.row[rows].tolist() == list(range(len(s.label)))


@pytest.mark.parametrize("arch", ["lstm", "gru", "two_branch"])
def test_architectures_take_named_inputs_and_unroll_their_recurrence(arch):
    from cloud_hub.training.models import build_model

    m = build_model(arch, steps=6, units=8)
    assert sorted(t.name for t in m.inputs) == ["static", "window"]
    assert m.output_shape == (None, 1) and m.layers[-1].name == "risk"
    recurrent = [layer for layer in m.layers if hasattr(layer, "unroll")]
    assert recurrent and all(layer.unroll for layer in recurrent)
    risk = m({"window": np.zeros((2, 6, 7), np.float32), "static": np.zeros((2, 4), np.float32)})
    assert np.all((np.asarray(risk) > 0) & (np.asarray(risk) < 1))


# ---------------------------------------------------------------- real data, real MLflow


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory):
    """200 real PhysioNet 2019 stays through the project's importer."""
    from converters import physionet

    out = tmp_path_factory.mktemp("canonical") / "physionet_subset.parquet"
    physionet.import_physionet(shared.physionet(), out, limit=200)
    return out


def test_a_short_real_run_is_tracked_registered_and_crowned_in_mlflow(real_subset, tmp_path):
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from cloud_hub.training.dataset import load_table, prepare
    from contracts.bundle import generate_key, load_private_key, verify_bundle
    from contracts.preprocessing import PreprocessSpec
    from vigil_cli.main import app

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    key, _, kid = generate_key(tmp_path / "keys")
    args = [
        "hub",
        "train",
        "--data",
        str(real_subset),
        "--tracking-uri",
        uri,
        "--epochs",
        "1",
        "--window",
        "6",
        "--units",
        "8",
        "--arch",
        "gru,two_branch",
        "--seed",
        "11",
        "--bundle",
        str(tmp_path / "bundle"),
        "--key",
        str(key),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for row in ("news2", "logistic", "gru", "two_branch", "(champion)", "alarms/patient-day"):
        assert row in res.output

    client = MlflowClient(tracking_uri=uri)
    champ = client.get_model_version_by_alias("vigil-sepsis", "champion")
    versions = client.search_model_versions("name='vigil-sepsis'")
    assert len(versions) == 2
    run = client.get_run(champ.run_id)
    df, fingerprint = load_table(str(real_subset))
    assert run.data.params["dataset_fingerprint"] == fingerprint
    assert run.data.params["seed"] == "11" and run.data.params["window_steps"] == "6"
    for metric in (
        "val_auroc",
        "val_auprc",
        "val_utility",
        "val_alarms_per_patient_day",
        "val_sensitivity",
        "test_auroc",
        "train_seconds",
    ):
        assert metric in run.data.metrics
    # The champion has the best validation utility among the registered networks.
    best = max(versions, key=lambda v: client.get_run(v.run_id).data.metrics["val_utility"])
    assert (
        client.get_run(best.run_id).data.metrics["val_utility"] == run.data.metrics["val_utility"]
    )
    artifacts = {a.path for a in client.list_artifacts(champ.run_id, "plots")}
    assert {
        "plots/roc_val.png",
        "plots/pr_val.png",
        "plots/calibration_val.png",
        "plots/lead_time_val.png",
    } <= artifacts
    assert (tmp_path / "mlflow" / "artifacts").is_dir()  # not ./mlruns

    # The champion became a signed int8 bundle made with the run's own preprocessing.
    manifest = verify_bundle(tmp_path / "bundle", {kid: load_private_key(key).public_key()})
    assert manifest.mlflow_run_id == champ.run_id and manifest.version == str(champ.version)
    logged_spec = client.download_artifacts(champ.run_id, "preprocess_spec.json", str(tmp_path))
    assert manifest.preprocessing == PreprocessSpec.model_validate_json(
        Path(logged_spec).read_text()
    )
    assert manifest.dataset_fingerprint == fingerprint
    assert "parity_delta_auroc" in client.get_run(champ.run_id).data.metrics
    assert {a.path for a in client.list_artifacts(champ.run_id, "bundle")} >= {
        "bundle/manifest.json",
        "bundle/model.tflite",
    }

    # The registered model, loaded back from the store, reproduces the logged AUROC on the
    # same split (rebuilt from the seed recorded with the run).
    import mlflow.keras

    mlflow.set_tracking_uri(uri)
    model = mlflow.keras.load_model("models:/vigil-sepsis@champion")
    prepared = prepare(df, steps=6, seed=11, fingerprint=fingerprint)
    assert prepared.split_fingerprint == run.data.params["split_hash"]
    val = prepared.splits["val"]
    risk = model.predict(val.inputs(), verbose=0).reshape(-1)
    auroc, _ = metrics.auroc_auprc(val.y[val.scorable], risk[val.scorable])
    assert auroc == pytest.approx(run.data.metrics["val_auroc"], abs=1e-4)


def test_train_refuses_bad_options_with_a_clear_message(tmp_path):
    from typer.testing import CliRunner

    from vigil_cli.main import app

    r = CliRunner().invoke(app, ["hub", "train", "--arch", "transformer", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "transformer" in r.output and "two_branch" in r.output
    r = CliRunner().invoke(app, ["hub", "train", "--data", str(tmp_path / "none.parquet")])
    assert r.exit_code == 2 and "none.parquet" in r.output and "not found" in r.output
    r = CliRunner().invoke(
        app, ["hub", "train", "--bundle", str(tmp_path / "b"), "--key", str(tmp_path / "k.key")]
    )
    assert r.exit_code == 2 and "k.key" in r.output and "keys init" in r.output
    r = CliRunner().invoke(app, ["hub", "train", "--class-weight", "sometimes"])
    assert r.exit_code == 2 and "sometimes" in r.output


def test_keys_init_makes_a_pair_and_refuses_to_overwrite(tmp_path):
    from typer.testing import CliRunner

    from contracts.bundle import load_private_key, load_trusted_keys
    from vigil_cli.main import app

    r = CliRunner().invoke(app, ["hub", "keys", "init", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    key = load_private_key(tmp_path / "signing.key")
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    (kid,) = load_trusted_keys([tmp_path]).keys()
    assert kid in r.output and key.public_key() is not None
    r = CliRunner().invoke(app, ["hub", "keys", "init", "--dir", str(tmp_path)])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output
