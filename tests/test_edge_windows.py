"""The gateway's windows are the trainer's windows for the same stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from contracts.bundle import Manifest
from contracts.mllp import frame
from contracts.paths import default_bundle_dir
from contracts.preprocessing import stay_windows
from contracts.vitals import VITAL_NAMES
from edge_agent.decoder import MllpDecoder
from edge_agent.windows import BedWindows
from firmware_sim.hl7 import DECIMALS, Observation, birth_date_for, build_oru
from tests.support.edge import physionet_stay, stay_arrays

ADMIT = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec():
    return Manifest.model_validate_json(
        (default_bundle_dir() / "manifest.json").read_text()
    ).preprocessing


def frames_for(stay: str, arr, minutes=(5, 20, 35, 50)) -> bytes:
    """Readings as a monitor would export the charted hours (values at display resolution)."""
    out = b""
    seq = 0
    for row in arr:
        k = int(row["ICULOS"])
        for m in minutes:
            seq += 1
            vals = {n: (None if np.isnan(row[n]) else float(row[n])) for n in VITAL_NAMES}
            out += frame(
                build_oru(
                    Observation(
                        monitor_id="MON01",
                        seq=seq,
                        bed="bed-1",
                        stay_id=stay,
                        obs_time=ADMIT + timedelta(hours=k, minutes=m),
                        values=vals,
                        birth_date=birth_date_for(float(row["Age"]), ADMIT),
                        sex="M" if row["Gender"] == 1 else "F",
                        icu_admit=ADMIT,
                        hospital_admit=ADMIT + timedelta(hours=float(row["HospAdmTime"])),
                    )
                )
            )
    return out


@pytest.mark.parametrize("stem", ["p015180", "p000001"])
def test_gateway_windows_equal_the_trainers_for_the_same_stay(spec, stem):
    arr = physionet_stay(stem)
    dyn, static = stay_arrays(arr)
    # What the monitor can show: values at display resolution (as the trainer would see them
    # if it were fed this export).
    for i, n in enumerate(VITAL_NAMES):
        dyn[:, i] = np.round(dyn[:, i], DECIMALS[n])
    want_w, want_s, want_obs = stay_windows(dyn, static, spec)

    d, bw = MllpDecoder(), BedWindows("bed-1", spec)
    got_w, got_s, got_obs = [], [], []
    steps = []
    readings = d.feed(frames_for("pn-" + stem, arr))
    for r in readings:
        for step in bw.add(r):
            steps.append(step)
            inp = bw.model_input()
            got_w.append(inp.window)
            got_s.append(inp.static)
            got_obs.append(inp.observed)
    steps.append(bw.flush())
    inp = bw.model_input()
    got_w.append(inp.window), got_s.append(inp.static), got_obs.append(inp.observed)

    assert len(readings) == 4 * len(arr) and d.stats.frames_bad == 0
    assert [s.static["ICULOS"] for s in steps] == list(arr["ICULOS"])
    np.testing.assert_array_equal(np.array(got_obs), want_obs)
    np.testing.assert_allclose(np.array(got_w), want_w, rtol=0, atol=1e-5)
    got_s = np.array(got_s)
    s_cols = [spec.static_names.index(n) for n in ("Gender", "ICULOS")]
    np.testing.assert_allclose(got_s[:, s_cols], want_s[:, s_cols], rtol=0, atol=1e-5)
    # A monitor does not know the hospital admission (PCD-01 carries none): the model
    # gets the bundle's fill value for HospAdmTime, as for any missing static feature.
    h = spec.static_names.index("HospAdmTime")
    f = spec.static_features[h]
    np.testing.assert_allclose(got_s[:, h], (f.fill - f.mean) / f.std, rtol=0, atol=1e-6)
    # Age: HL7 PID-7 is a birth date, so the monitor conveys whole years; the training
    # table has fractional years. The skew is below one year (documented, measured here).
    a = spec.static_names.index("Age")
    age_std = spec.static_features[a].std
    assert np.all(np.abs(got_s[:, a] - want_s[:, a]) <= 1.0 / age_std + 1e-6)


def test_too_little_data_is_reported_as_insufficient_not_scored(spec):
    bw = BedWindows("bed-1", spec)
    d = MllpDecoder()
    arr = physionet_stay("p000001")[:3].copy()
    for n in VITAL_NAMES:
        arr[n] = np.nan
    arr["HR"][0] = 80.0  # one value in the whole window: fewer than min_observed
    for r in d.feed(frames_for("pn-x", arr)):
        bw.add(r)
    bw.flush()
    inp = bw.model_input()
    assert inp.observed == 1 and inp.insufficient


def test_late_readings_are_counted_and_dropped(spec):
    arr = physionet_stay("p000001")[:3]
    d, bw = MllpDecoder(), BedWindows("bed-1", spec)
    rs = d.feed(frames_for("pn-y", arr))
    for r in rs[:9]:
        bw.add(r)
    bw.add(rs[0])  # an hour-old reading arrives after its step closed
    assert bw.late == 1


def test_a_clock_gone_back_by_more_than_a_week_starts_a_new_history_not_late_forever(spec):
    """One reading from a wrong time (a week ahead) must not leave the bed's later,
    correct readings dropped as 'late' for good: the jump back starts a new history."""
    import dataclasses

    arr = physionet_stay("p000001")[:6]
    d, bw = MllpDecoder(), BedWindows("bed-1", spec)
    rs = d.feed(frames_for("pn-z", arr))
    for r in rs[:6]:
        bw.add(r)
    ahead = dataclasses.replace(rs[6], obs_time=rs[6].obs_time + timedelta(days=30))
    bw.add(ahead)
    late_before = bw.late
    closed = []
    for r in rs[6:]:
        closed += bw.add(r)
    assert bw.late == late_before  # not one of them taken as late
    wrong = [c for c in closed if c.start > ahead.obs_time - timedelta(hours=1)]
    right = [c for c in closed if c.start < ahead.obs_time - timedelta(days=7)]
    assert len(wrong) == 1 and len(wrong) + len(right) == len(closed)  # the wrong one closed
    assert len(right) >= 3  # and the bed's hours after it scored as before


def test_a_new_stay_on_the_bed_closes_the_old_stays_last_step_with_its_own_window(spec):
    a, b = physionet_stay("p000001")[:10], physionet_stay("p015180")[:5]
    dyn, static = stay_arrays(a)
    for i, n in enumerate(VITAL_NAMES):
        dyn[:, i] = np.round(dyn[:, i], DECIMALS[n])
    want_w, _, want_obs = stay_windows(dyn, static, spec)
    d, bw = MllpDecoder(), BedWindows("bed-1", spec)
    closed = []
    for r in d.feed(frames_for("pn-a", a) + frames_for("pn-b", b)):
        closed += bw.add(r)
    last_a = [c for c in closed if c.stay == "pn-a"][-1]
    assert last_a.static["ICULOS"] == a["ICULOS"][-1]
    np.testing.assert_allclose(last_a.model_input.window, want_w[-1], atol=1e-5)
    assert last_a.model_input.observed == want_obs[-1]
    assert bw.stay == "pn-b" and closed[-1].stay == "pn-b"
