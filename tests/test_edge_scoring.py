"""Only a verified bundle runs: signature, hash, inputs by name, golden windows; NEWS2 beside."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contracts.bundle import generate_key, load_private_key, read_bundle, write_bundle
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from edge_agent.scoring import load_model, news2_of


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    generate_key(d, "test")
    return d


def resigned(
    tmp: Path, keys: Path, name: str, change: Callable[[dict[str, Any], bytes], bytes | None]
) -> Path:
    manifest, _, model = read_bundle(default_bundle_dir())
    manifest = json.loads(json.dumps(manifest))
    model = change(manifest, model) or model
    return write_bundle(tmp / name, manifest, model, load_private_key(keys / "test.key"))


def test_the_default_bundle_activates_and_scores_its_golden_windows():
    model, refused = load_model([default_bundle_dir()], [default_trusted_keys_dir()])
    assert model is not None and refused == []
    g = model.manifest.golden[0]
    assert abs(model.score(np.array(g.window), np.array(g.static)) - g.expected) <= g.tolerance


def test_bad_bundles_are_refused_with_the_reason_and_the_next_one_runs(tmp_path, keys):
    tampered = tmp_path / "tampered"
    shutil.copytree(default_bundle_dir(), tampered)
    blob = bytearray((tampered / "model.tflite").read_bytes())
    blob[-100] ^= 0xFF
    (tampered / "model.tflite").write_bytes(bytes(blob))

    def bad_golden(m: dict[str, Any], _: bytes) -> None:
        m["golden"][0]["expected"] = 1.0 - m["golden"][0]["expected"]
        m["golden"][0]["tolerance"] = 0.001

    def renamed_input(m: dict[str, Any], _: bytes) -> None:
        m["inputs"][0]["name"] = "vitals"

    golden = resigned(tmp_path, keys, "golden", bad_golden)
    inputs = resigned(tmp_path, keys, "inputs", renamed_input)
    untrusted = resigned(tmp_path, keys, "untrusted", lambda m, b: None)
    trusted = [default_trusted_keys_dir(), keys / "test.pub"]
    dirs = [tampered, golden, inputs, tmp_path / "missing", default_bundle_dir()]
    model, refused = load_model(dirs, trusted)
    assert model is not None and model.folder == default_bundle_dir()
    reasons = [r.split(": ", 1)[1].split(":")[0] for r in refused]
    assert reasons == ["wrong_hash", "golden_mismatch", "io_mismatch", "incomplete"]
    model, refused = load_model([untrusted], [default_trusted_keys_dir()])
    assert model is None and "unknown_key" in refused[0]


def test_news2_is_computed_from_the_step_vitals_with_missing_ones_listed():
    n = news2_of({"HR": 125.0, "O2Sat": 93.0, "Temp": 38.5, "SBP": 95.0, "Resp": None})
    assert n.subscores["hr"] == 2 and n.subscores["spo2"] == 2 and n.subscores["temp"] == 1
    assert n.subscores["sbp"] == 2 and n.total == 7 and n.risk == "high"
    assert n.missing == ("resp",)


def test_activate_model_swaps_model_threshold_and_windows_between_steps(tmp_path, keys):
    from contracts.bundle import load_trusted_keys
    from edge_agent.gateway import Gateway
    from edge_agent.scoring import activate
    from tests.support.edge import edge_settings, valid_frame

    def v3(m: dict[str, Any], _: bytes) -> None:  # the same model re-released as version 3
        m["version"] = "3"
        m["threshold"]["value"] = 0.3

    folder = resigned(tmp_path, keys, "v3", v3)
    new = activate(folder, load_trusted_keys([keys / "test.pub"]))
    s = edge_settings(tmp_path, gateway_id="gw-swap", beds=["bed-1"], store="swap.sqlite")
    gw = Gateway(s)
    try:
        gw.process_bytes("bed-1", valid_frame(1))
        gw.process_bytes("bed-1", valid_frame(3600))  # closes the first step: old model
        gw.activate_model(new)
        gw.process_bytes("bed-1", valid_frame(7200))  # closes the second: new model
        rows = gw.store.rows("risk")
        assert [(r["version"], r["threshold"]) for r in rows] == [("2", 0.57421875), ("3", 0.3)]
        assert gw.beds["bed-1"].windows.history()[0].shape[0] == 2  # history kept
        assert gw.state.snapshot().model_version == "3"
    finally:
        gw.stop(flush_timeout=0.1)
