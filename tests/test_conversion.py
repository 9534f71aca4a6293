"""Conversion: Keras → int8 TFLite (builtin ops, int8 inside, runs in LiteRT without
TensorFlow), float/int8 parity and refusal, converter crashes as clear errors, and the
signed bundle that `vigil convert verify` accepts or refuses for the right reason.

One small GRU (two named inputs, unroll=True) trained briefly on real PhysioNet stays
and converted once per session: the real converter, the real LiteRT interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cloud_hub.conversion.tflite import (  # noqa: E402
    ConversionError,
    Tolerances,
    as_pair,
    check_parity,
    convert_int8,
)
from contracts.bundle import (  # noqa: E402
    MANIFEST,
    MODEL,
    SIGNATURE,
    generate_key,
    load_private_key,
    sign_manifest,
)
from contracts.paths import PROJECT_ROOT  # noqa: E402
from model_runtime.litert import RiskModel  # noqa: E402
from tests.support import data as shared

pytest.importorskip("tensorflow")

STEPS = 12
# Builtin TFLite kernels this model family needs; anything else (Flex, custom) would
# not run in plain LiteRT on a gateway.
BUILTIN_OPS = {
    "ADD",
    "CONCATENATION",
    "DEQUANTIZE",
    "FULLY_CONNECTED",
    "LOGISTIC",
    "MUL",
    "QUANTIZE",
    "RESHAPE",
    "SPLIT",
    "STRIDED_SLICE",
    "SUB",
    "TANH",
    "TILE",
    "UNPACK",
    "PACK",
    "RELU",
    "SQUARED_DIFFERENCE",
}


@pytest.fixture(scope="session")
def small():
    from cloud_hub.conversion.quickmodel import small_data, train_small_model

    shared.physionet()  # trains on real stays: skipped (not errored) without the archive
    data = small_data(n_stays=300, steps=STEPS)
    model = train_small_model(data, arch="gru", units=16, epochs=2)
    blob = convert_int8(model, data.train)
    return data, model, blob


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    generate_key(d, "signing")
    generate_key(d / "other", "other")
    return d


@pytest.fixture(scope="session")
def bundle(small, keys, tmp_path_factory):
    from cloud_hub.conversion.bundle_build import build_bundle

    data, model, blob = small
    out = tmp_path_factory.mktemp("bundles") / "good"
    built = build_bundle(
        model,
        out,
        keys / "signing.key",
        spec=data.spec,
        representative=data.train,
        validation=data.val,
        architecture="gru",
        version="test-1",
        mlflow_run_id="run-under-test",
        dataset_fingerprint="fp-under-test",
        metrics={"val_auroc": 0.5, "val_nan": float("nan")},
        tflite=blob,
    )
    return built


def test_int8_model_uses_only_builtin_ops_and_int8_tensors(small):
    _, _, blob = small
    # Without the default delegate the op list is the file's own, not one DELEGATE node.
    m = RiskModel(blob, delegates=False)
    ops = m.op_names()
    assert set(ops) <= BUILTIN_OPS, f"non-builtin or unexpected ops: {set(ops) - BUILTIN_OPS}"
    assert {"FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE"} <= set(ops)
    dtypes = m.tensor_dtypes()
    # int8 weights and activations inside; float only at the interface (2 in, 1 out).
    assert dtypes.get("int8", 0) > 50
    assert dtypes.get("float32", 0) == 3
    assert m.inputs["window"].shape == (1, STEPS, 7)
    assert m.inputs["static"].shape == (1, 4)
    assert m.outputs["risk"].dtype == "float32"
    q = m.internal_quantization()
    assert q["risk"]["scale"] > 0 and set(q) == {"window", "static", "risk"}


def test_int8_model_runs_in_litert_with_tensorflow_not_imported(small, tmp_path):
    data, _, blob = small
    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(blob)
    w, s = data.val.window[:20], data.val.static[:20]
    np.savez(tmp_path / "x.npz", window=w, static=s)
    expected = RiskModel(blob).score_many(w, s)
    script = f"""
import json, sys
import numpy as np
from model_runtime.litert import RiskModel
x = np.load({str(tmp_path / "x.npz")!r})
m = RiskModel(open({str(model_path)!r}, "rb").read())
risk = m.score_many(x["window"], x["static"]).tolist()
heavy = [name for name in ("tensorflow", "keras", "pandas") if name in sys.modules]
print(json.dumps({{"risk": risk, "heavy": heavy}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"imported without need: {out['heavy']}"
    np.testing.assert_allclose(out["risk"], expected, atol=1e-6)
    assert min(out["risk"]) >= 0.0 and max(out["risk"]) <= 1.0


def test_inputs_are_mapped_by_name_not_position(small):
    data, _, blob = small
    m = RiskModel(blob)
    # The converter orders signature inputs alphabetically: static first.
    assert m.inputs["static"].index != m.inputs["window"].index
    w, s = data.val.window[5], data.val.static[5]
    direct = m.score(w, s)
    assert direct == pytest.approx(float(RiskModel(blob).score_many(w[None], s[None])[0]))
    with pytest.raises(ValueError):
        m.score(s, w)  # swapped: a shape error, never a silent wrong score


def test_parity_figures_are_reported_within_default_tolerance(small):
    data, model, blob = small
    p = check_parity(model, blob, data.val)
    assert p.n == int(data.val.scorable.sum())
    assert 0.0 < p.max_abs_diff <= Tolerances().max_abs_diff  # int8 differs, but a little
    assert p.mean_abs_diff <= p.p99_abs_diff <= p.max_abs_diff
    assert p.p99_abs_diff <= Tolerances().p99_abs_diff
    assert abs(p.delta_auroc) <= Tolerances().delta_auroc
    assert 0.5 < p.auroc_float < 1.0  # it learnt something from real stays
    assert np.corrcoef(p.float_risk, p.int8_risk)[0, 1] > 0.95
    metrics = p.as_metrics()
    assert metrics["parity_delta_auroc"] == pytest.approx(p.auroc_int8 - p.auroc_float)
    assert "AUROC" in p.summary()


def test_a_conversion_beyond_tolerance_is_refused(small):
    data, model, blob = small
    with pytest.raises(ConversionError) as e:
        check_parity(model, blob, data.val, tolerances=Tolerances(max_abs_diff=1e-6))
    assert e.value.reason == "parity"
    assert "max |float - int8|" in str(e.value) and "refused" in str(e.value)
    with pytest.raises(ConversionError, match="ΔAUROC"):
        check_parity(model, blob, data.val, tolerances=Tolerances(max_abs_diff=1, delta_auroc=-1))


def test_parity_needs_both_classes_and_clean_windows(small):
    data, model, blob = small
    neg = data.val.y == 0
    with pytest.raises(ConversionError, match="one class only"):
        check_parity(model, blob, (data.val.window[neg], data.val.static[neg], data.val.y[neg]))
    bad = data.val.window[:10].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ConversionError, match="NaN"):
        as_pair((bad, data.val.static[:10]))


def test_a_converter_crash_becomes_a_clear_error_naming_the_signal():
    import keras

    # A recurrent layer WITHOUT unroll: the int8 converter segfaults on it (ARCHITECTURE.md).
    w = keras.Input((STEPS, 7), name="window")
    s = keras.Input((4,), name="static")
    x = keras.layers.GRU(8, unroll=False, name="gru_rolled")(w)
    x = keras.layers.Concatenate()([x, s])
    model = keras.Model({"window": w, "static": s}, keras.layers.Dense(1, "sigmoid")(x))
    rng = np.random.default_rng(0)
    rep = (rng.normal(size=(20, STEPS, 7)), rng.normal(size=(20, 4)))
    with pytest.raises(ConversionError) as e:
        convert_int8(model, rep, timeout=120)
    assert e.value.reason == "crash"
    assert "SIGSEGV" in str(e.value) and "gru_rolled" in str(e.value)


def test_bundle_manifest_records_tensors_threshold_parity_and_real_golden_windows(bundle, small):
    data, _, _ = small
    m = bundle.manifest
    assert [t.name for t in m.inputs] == ["window", "static"]
    assert m.inputs[0].shape == [1, STEPS, 7] and m.outputs[0].name == "risk"
    assert m.preprocessing == data.spec
    assert m.mlflow_run_id == "run-under-test" and m.dataset_fingerprint == "fp-under-test"
    assert "int8" in m.threshold.method and 0 < m.threshold.value <= 1
    assert m.metrics["val_auroc"] == 0.5 and "val_nan" not in m.metrics
    assert m.metrics["parity_max_abs_diff"] == pytest.approx(bundle.parity.max_abs_diff)
    assert "int8_val_utility" in m.metrics
    assert len(m.golden) == 8
    val = data.val.window[data.val.scorable]
    risks = [g.expected for g in m.golden]
    assert risks == sorted(risks) and risks[-1] > risks[0]  # spread over the range
    for g in m.golden:  # every golden window is a real validation window
        assert np.isclose(val, np.asarray(g.window, np.float32)).all(axis=(1, 2)).any()
    assert bundle.folder.stat().st_mode & 0o755 == 0o755  # readable by a service user
    raw = json.loads((bundle.folder / MANIFEST).read_text())
    assert raw["conversion"]["ops"] == "TFLITE_BUILTINS_INT8"


def _verify(folder: Path, *trusted: Path):
    from vigil_cli.main import app

    args = ["convert", "verify", str(folder)]
    for t in trusted:
        args += ["--trusted", str(t)]
    return CliRunner().invoke(app, args)


def _copy(bundle, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle.folder, dst)
    return dst


def test_verify_accepts_a_good_bundle(bundle, keys):
    r = _verify(bundle.folder, keys / "signing.pub")
    assert r.exit_code == 0, r.output
    assert "OK vigil-sepsis test-1" in r.output
    assert bundle.verified.key_id in r.output


def test_verify_runs_without_tensorflow(bundle, keys):
    """The gateway's check needs no TensorFlow, pandas or MLflow: prove it in a fresh process."""
    script = f"""
import sys
from typer.testing import CliRunner
from vigil_cli.main import app
r = CliRunner().invoke(
    app, ["convert", "verify", {str(bundle.folder)!r}, "--trusted", {str(keys / "signing.pub")!r}]
)
heavy = [m for m in ("tensorflow", "keras", "pandas", "mlflow") if m in sys.modules]
print(r.exit_code, r.output.strip().splitlines()[-1], heavy)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]"), proc.stdout
    assert proc.stdout.startswith("0 OK vigil-sepsis test-1"), proc.stdout


def test_verify_refuses_a_tampered_manifest(bundle, keys, tmp_path):
    d = _copy(bundle, tmp_path)
    m = json.loads((d / MANIFEST).read_text())
    m["threshold"]["value"] = 0.99  # fewer alarms, quietly
    (d / MANIFEST).write_text(json.dumps(m))
    r = _verify(d, keys / "signing.pub")
    assert r.exit_code == 1 and "bad_signature" in r.output


def test_verify_refuses_a_tampered_model(bundle, keys, tmp_path):
    d = _copy(bundle, tmp_path)
    blob = bytearray((d / MODEL).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (d / MODEL).write_bytes(bytes(blob))
    r = _verify(d, keys / "signing.pub")
    assert r.exit_code == 1 and "wrong_hash" in r.output


def test_verify_refuses_a_bundle_signed_by_an_untrusted_key(bundle, keys):
    r = _verify(bundle.folder, keys / "other" / "other.pub")
    assert r.exit_code == 1 and "unknown_key" in r.output


def test_verify_refuses_golden_windows_the_model_does_not_reproduce(bundle, keys, tmp_path):
    d = _copy(bundle, tmp_path)
    m = json.loads((d / MANIFEST).read_text())
    m["golden"][3]["expected"] = min(1.0, m["golden"][3]["expected"] + 0.3)
    # Signed with the trusted key: only running the model can catch it.
    (d / MANIFEST).write_text(json.dumps(m))
    sig = sign_manifest(m, load_private_key(keys / "signing.key"))
    (d / SIGNATURE).write_text(json.dumps(sig))
    r = _verify(d, keys / "signing.pub")
    assert r.exit_code == 1 and "golden_mismatch" in r.output and "golden window 3" in r.output


@pytest.fixture(scope="session")
def canonical(tmp_path_factory):
    """Real stays through the real importer: the canonical table the CLI reads."""
    from converters.physionet import import_physionet

    d = tmp_path_factory.mktemp("canonical")
    import_physionet(shared.physionet(), d / "a.parquet", limit=150)
    import_physionet(shared.physionet(), d / "b.parquet", limit=120)
    return d / "a.parquet", d / "b.parquet"


def _convert_cli(*args: str):
    from vigil_cli.main import app

    return CliRunner().invoke(app, ["convert", "tflite", *args])


def test_convert_tflite_cli_builds_a_bundle_that_verifies(small, keys, canonical, tmp_path):
    """`vigil convert tflite --keras` on a real canonical table, end to end."""
    _, model, _ = small
    keras_path = tmp_path / "gru.keras"
    model.save(keras_path)
    out = tmp_path / "bundle"
    args = ["--keras", str(keras_path), "--data", str(canonical[0])]
    args += ["--key", str(keys / "signing.key"), "--out", str(out)]
    r = _convert_cli(*args, "--max-p99-diff", "0")
    assert r.exit_code == 1 and "parity" in r.output and "refused" in r.output
    assert not out.exists()  # nothing written for a refused conversion
    r = _convert_cli(
        "--keras",
        str(keras_path),
        "--data",
        str(canonical[0]),
        "--key",
        str(keys / "signing.key"),
        "--out",
        str(out),
        "--version",
        "cli-1",
    )
    assert r.exit_code == 0, r.output
    assert "signed bundle" in r.output and "float vs int8" in r.output
    assert _verify(out, keys / "signing.pub").exit_code == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == "cli-1" and len(manifest["dataset_fingerprint"]) >= 16


@pytest.mark.slow
def test_convert_tflite_cli_converts_the_mlflow_champion_and_refuses_other_data(
    keys, canonical, tmp_path
):
    """Training's real run in a real MLflow store → `--model-uri ...@champion` → bundle."""
    from cloud_hub.training.train import TrainConfig, compare

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrainConfig(
        archs=("gru",), units=8, epochs=1, data=canonical[0], tracking_uri=uri, baselines=False
    )
    comp = compare(cfg, echo=lambda _: None)
    common = ["--tracking-uri", uri, "--key", str(keys / "signing.key")]
    # A table other than the run's: refused before any conversion (train/serve skew).
    r = _convert_cli(*common, "--data", str(canonical[1]), "--out", str(tmp_path / "no"))
    assert r.exit_code == 2 and "fingerprint" in r.output
    assert not (tmp_path / "no").exists()
    out = tmp_path / "champion"
    r = _convert_cli(*common, "--data", str(canonical[0]), "--out", str(out))
    assert r.exit_code == 0, r.output
    m = json.loads((out / MANIFEST).read_text())
    assert m["mlflow_run_id"] == comp.champion.run_id
    assert m["version"] == comp.champion.version and m["architecture"] == "gru"
    assert m["preprocessing"] == comp.prepared.spec.model_dump()
    assert m["metrics"]["val_auroc"] == pytest.approx(comp.champion.val.auroc)
    assert _verify(out, keys / "signing.pub").exit_code == 0
