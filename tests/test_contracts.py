"""Contracts: preprocessing, NEWS2, messages, bundle signatures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import bundle, messages, topics
from contracts.news2 import news2
from contracts.preprocessing import aggregate_readings, fit_spec, forward_fill, stay_windows
from contracts.timeutil import utc_now


def _spec(steps: int = 4):
    rng = np.random.default_rng(0)
    dyn = rng.normal([80, 97, 37, 120, 80, 60, 18], [10, 2, 0.5, 15, 10, 8, 3], (200, 7))
    static = rng.normal([60, 0.5, -10, 20], [15, 0.5, 20, 10], (200, 4))
    return fit_spec(dyn, static, steps=steps)


def test_forward_fill_carries_last_value_and_fills_leading_gaps():
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [5.0, 3.0]])
    out = forward_fill(x, np.array([9.0, 8.0]))
    assert out.tolist() == [[9.0, 1.0], [2.0, 1.0], [2.0, 1.0], [5.0, 3.0]]


def test_window_for_hour_t_ends_at_t_and_pads_before_the_stay():
    spec = _spec(steps=3)
    dyn = np.full((5, 7), np.nan)
    dyn[:, 0] = [70, 80, 90, 100, 110]
    static = np.zeros((5, 4))
    w, s, observed = stay_windows(dyn, static, spec)
    hr = spec.features[0]
    assert w.shape == (5, 3, 7) and s.shape == (5, 4)
    assert w[0, :2].tolist() == [[0.0] * 7] * 2  # padding before the first row
    assert w[4, :, 0] == pytest.approx([(v - hr.mean) / hr.std for v in (90, 100, 110)], rel=1e-5)
    assert observed.tolist() == [1, 2, 3, 3, 3]


def test_implausible_values_are_treated_as_missing():
    spec = _spec(steps=2)
    dyn = np.full((2, 7), np.nan)
    dyn[:, 0] = [80, 900]  # 900 bpm is an artefact
    w, _, observed = stay_windows(dyn, np.zeros((2, 4)), spec)
    assert observed.tolist() == [1, 1]
    assert w[1, 1, 0] == w[1, 0, 0]  # carried forward, not the artefact


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_windows_of_a_prefix_equal_the_windows_of_the_whole_stay(t, steps, seed):
    """What the edge computes online (a growing prefix) equals what training computed."""
    spec = _spec(steps=steps)
    rng = np.random.default_rng(seed)
    dyn = rng.normal(80, 20, (t, 7))
    dyn[rng.random((t, 7)) < 0.4] = np.nan
    static = rng.normal(0, 1, (t, 4))
    whole, s_whole, o_whole = stay_windows(dyn, static, spec)
    for k in range(1, t + 1):
        w, s, o = stay_windows(dyn[:k], static[:k], spec)
        np.testing.assert_array_equal(w[-1], whole[k - 1])
        np.testing.assert_array_equal(s[-1], s_whole[k - 1])
        assert o[-1] == o_whole[k - 1]


def test_stay_windows_rejects_wrong_shapes_with_the_expected_columns():
    spec = _spec()
    with pytest.raises(ValueError, match="HR"):
        stay_windows(np.zeros((3, 5)), np.zeros((3, 4)), spec)


def test_aggregate_readings_is_the_median_of_plausible_values():
    assert aggregate_readings([80, 82, 81, 999, None, float("nan")], "HR") == 81
    assert math.isnan(aggregate_readings([None, 0.0], "HR"))


@pytest.mark.parametrize(
    ("vitals", "total"),
    [
        ({"resp": 16, "spo2": 98, "sbp": 120, "hr": 70, "temp": 37.0}, 0),
        ({"resp": 26, "spo2": 90, "sbp": 88, "hr": 135, "temp": 39.5}, 3 + 3 + 3 + 3 + 2),
        ({"resp": 22, "spo2": 95, "sbp": 105, "hr": 105, "temp": 35.5}, 2 + 1 + 1 + 1 + 1),
    ],
)
def test_news2_matches_the_rcp_chart(vitals, total):
    assert news2(**vitals).total == total


def test_news2_lists_missing_parameters():
    n = news2(hr=120)
    assert n.total == 2 and set(n.missing) == {"resp", "spo2", "sbp", "temp"}


def test_messages_roundtrip_and_bad_payloads_name_the_problem():
    r = messages.Risk(
        gw="gw1",
        bed="b1",
        stay="s1",
        risk=0.4,
        threshold=0.3,
        alarm_level="alarm",
        model=messages.ModelRef(name="m", version="1"),
        news2=messages.News2Out(total=3, risk="low", subscores={"hr": 3}),
        observed=12,
        window_end=utc_now(),
    )
    raw = r.to_json()
    data = json.loads(raw)
    assert data["schema"] == "vigil.risk/1" and data["ts"].endswith("Z")
    back = messages.parse_message(raw)
    assert isinstance(back, messages.Risk) and back.event_id == r.event_id
    with pytest.raises(messages.MessageError, match="not JSON"):
        messages.parse_message(b"\xff{")
    with pytest.raises(messages.MessageError, match="risk"):
        messages.parse_message(json.dumps({**data, "risk": "high"}).encode())
    with pytest.raises(messages.MessageError, match="oversized"):
        messages.parse_message(b" " * (messages.MAX_PAYLOAD_BYTES + 1))


def test_topics_are_built_and_parsed_consistently():
    assert topics.parse(topics.risk("gw-1", "bed3")) == {
        "gw": "gw-1",
        "bed": "bed3",
        "kind": "risk",
    }
    assert topics.parse(topics.status("gw-1"))["kind"] == "status"
    with pytest.raises(ValueError):
        topics.risk("gw/1", "b")


def _manifest():
    spec = _spec()
    return {
        "schema": bundle.BUNDLE_SCHEMA,
        "name": "vigil-test",
        "version": "1",
        "created_at": "2026-11-25T00:00:00.000Z",
        "architecture": "gru",
        "preprocessing": spec.model_dump(),
        "inputs": [{"name": "window", "shape": [1, 4, 7], "dtype": "float32"}],
        "outputs": [{"name": "risk", "shape": [1, 1], "dtype": "float32"}],
        "threshold": {"value": 0.5, "method": "test"},
    }


def test_signed_bundle_verifies_and_tampering_is_refused(tmp_path):
    key, pub, kid = bundle.generate_key(tmp_path / "keys")
    folder = bundle.write_bundle(
        tmp_path / "b", _manifest(), b"model-bytes", bundle.load_private_key(key)
    )
    trusted = bundle.load_trusted_keys([tmp_path / "keys"])
    assert kid in trusted
    assert bundle.verify_bundle(folder, trusted).version == "1"

    (folder / bundle.MODEL).write_bytes(b"model-bytez")
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify_bundle(folder, trusted)
    assert e.value.reason == "wrong_hash"

    (folder / bundle.MODEL).write_bytes(b"model-bytes")
    m = json.loads((folder / bundle.MANIFEST).read_text())
    m["threshold"]["value"] = 0.01
    (folder / bundle.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify_bundle(folder, trusted)
    assert e.value.reason == "bad_signature"

    _, _, other = bundle.generate_key(tmp_path / "other")
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify_bundle(folder, bundle.load_trusted_keys([tmp_path / "other"]))
    assert e.value.reason == "unknown_key"
