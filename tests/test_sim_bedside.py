"""Bedside-faithful replay (issue 13): real set A stays played as a monitor measures them.

Real parts: stays of PhysioNet 2019 set A from the shared archive (skipped without it,
tests/support/data.py), the real `Monitor` writing to a real pty, the installed `vigil`.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from contracts.vitals import VITAL_NAMES
from firmware_sim.bedside import (
    CONTINUOUS_SIGMA,
    CUFF_SIGMA,
    NOISE_CLIP,
    BedsideConfig,
    BedsideSource,
)
from firmware_sim.hl7 import DECIMALS
from firmware_sim.monitor import Monitor
from firmware_sim.physiology import Patient
from firmware_sim.transports import PtyTransport
from tests.support import data as shared
from tests.support.edge import write_canonical

pytestmark = shared.needs_physionet
V = {n: i for i, n in enumerate(VITAL_NAMES)}
VIGIL = str(Path(sys.executable).with_name("vigil"))
# The first stays of the archive (a short scan), each chosen for what it shows:
ARTERIAL = "p007126"  # BP and Temp charted nearly every hour: arterial line, probe
SPARSE = "p012238"  # DBP never charted; Temp in 10 of 50 hours: spot checks
GAP = "p020532"  # HR not charted for 6 h in a row


@pytest.fixture(scope="module")
def stays() -> dict[str, np.ndarray]:
    want, out = {ARTERIAL, SPARSE, GAP}, {}
    with tarfile.open(shared.physionet(), "r|gz") as tf:
        for m in tf:
            stem = Path(m.name).stem
            if stem in want:
                text = tf.extractfile(m).read().decode()
                out[stem] = np.genfromtxt(io.StringIO(text), delimiter="|", names=True)
                if len(out) == len(want):
                    break
    return out


def source(arr: np.ndarray, seed: int = 1, **config) -> BedsideSource:
    dyn = np.column_stack([arr[n] for n in VITAL_NAMES])
    patient = Patient("pn-x", float(arr["Age"][0]), "F", None)
    return BedsideSource("pn-x", arr["ICULOS"], dyn, patient, seed, BedsideConfig(**config))


def charted(arr: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    ok = ~np.isnan(arr[name])
    return arr["ICULOS"][ok], arr[name][ok]


def test_continuous_vitals_are_interpolated_between_the_charted_values(stays):
    arr = stays[ARTERIAL]
    src = source(arr, noise_scale=0.0)
    t = src.times()
    got = src.values(t)
    assert src.arterial and src.temp_probe
    for name in VITAL_NAMES:
        hours, vals = charted(arr, name)
        # at the centre of a charted hour: the charted value (display resolution)
        centre = np.searchsorted(t, (hours + 0.5) * 3600)
        np.testing.assert_allclose(got[centre, V[name]], np.round(vals, DECIMALS[name]))
        # between two neighbouring charted hours: the straight line
        (k,) = np.flatnonzero(np.diff(hours) == 1)[:1]
        mid = np.searchsorted(t, (hours[k] + 1.0) * 3600)  # half-way between the centres
        assert got[mid, V[name]] == pytest.approx((vals[k] + vals[k + 1]) / 2, abs=0.051)
        # nothing before the first charted hour
        assert np.isnan(got[t < hours[0] * 3600, V[name]]).all()
    assert len(t) == (arr["ICULOS"][-1] - arr["ICULOS"][0] + 1) * 60  # one a minute


def test_noise_is_bounded_sized_as_documented_and_seeded(stays):
    arr = stays[ARTERIAL]
    clean = source(arr, noise_scale=0.0).values(source(arr).times())
    a, b, c = source(arr, seed=1), source(arr, seed=1), source(arr, seed=2)
    t = a.times()
    x = a.values(t)
    np.testing.assert_array_equal(x, b.values(t))  # same seed, same stream
    assert not np.array_equal(x, c.values(t))
    for name in ("HR", "O2Sat", "Resp", "SBP", "MAP", "DBP", "Temp"):
        noise = x[:, V[name]] - clean[:, V[name]]
        noise = noise[~np.isnan(noise) & (clean[:, V[name]] < 99.0)]  # SpO2 clipped at 100
        sigma = CONTINUOUS_SIGMA[name]
        step = 10.0 ** -DECIMALS[name]
        assert np.abs(noise).max() <= NOISE_CLIP * sigma + step + 1e-9, name
        assert 0.8 * sigma < noise.std() < 1.2 * sigma, (name, noise.std())


def test_sample_by_sample_through_a_monitor_equals_the_vectorised_stream(stays):
    src = source(stays[SPARSE], seed=5)
    offline = source(stays[SPARSE], seed=5)
    sent: list[dict] = []
    line = PtyTransport()
    mon = Monitor(
        "bed-1", src, line, speed=60.0, interval=60.0, clock_start=datetime(2026, 3, 1, tzinfo=UTC)
    )
    mon.on_observation = lambda o: sent.append(o.values)
    try:
        n = 0
        while not mon.finished:
            mon.cycle(n)
            n += 1
    finally:
        mon.close()
    t = offline.times()
    want = offline.values(t)
    got = np.array([[np.nan if v[k] is None else v[k] for k in VITAL_NAMES] for v in sent])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_nibp_only_once_per_cuff_cycle_with_the_cuffs_error(stays):
    arr = stays[ARTERIAL]
    src = source(arr, bp="cuff", cuff_interval_s=900.0)
    clean = source(arr, bp="cuff", cuff_interval_s=900.0, noise_scale=0.0)
    t = src.times()
    x = src.values(t)
    assert not src.arterial
    has = ~np.isnan(x[:, V["SBP"]])
    assert has.sum() >= 0.9 * (t[-1] - t[0]) / 900  # nearly every cycle measured
    assert np.all((t[has] - t[0]) % 900 == 0)  # only at the cuff's cycle
    for name in ("SBP", "MAP", "DBP"):
        err = x[has, V[name]] - clean.values(t)[has, V[name]]
        assert np.abs(err).max() <= NOISE_CLIP * CUFF_SIGMA[name] + 0.1
        assert err.std() > 0.5 * CUFF_SIGMA[name]
    assert not np.isnan(x[:, V["HR"]]).any()  # HR stays continuous
    # auto: this stay's BP is charted almost every hour (arterial); forced cuff above
    assert source(arr).arterial
    cuff = source(stays[SPARSE])
    share = (~np.isnan(stays[SPARSE]["SBP"])).mean()
    assert cuff.arterial == (share >= 0.8)


def test_temperature_per_probe_or_per_spot_check(stays):
    probe = source(stays[ARTERIAL], max_gap_h=8.0)  # its longest Temp gap is 6 h
    t = probe.times()
    assert probe.temp_probe
    first = charted(stays[ARTERIAL], "Temp")[0][0]
    assert not np.isnan(probe.values(t)[t >= first * 3600, V["Temp"]]).any()  # continuous
    arr = stays[SPARSE]
    spot = source(arr)
    t = spot.times()
    temp = spot.values(t)[:, V["Temp"]]
    hours, vals = charted(arr, "Temp")
    assert not spot.temp_probe and len(hours) == 10
    sent = ~np.isnan(temp)
    assert sent.sum() == len(hours)  # once per charted temperature
    np.testing.assert_array_equal(t[sent], (hours + 0.5) * 3600)
    np.testing.assert_allclose(temp[sent], vals)


def test_a_vital_never_charted_is_never_sent(stays):
    arr = stays[SPARSE]
    assert np.isnan(arr["DBP"]).all()
    x = source(arr).values(source(arr).times())
    assert np.isnan(x[:, V["DBP"]]).all()
    assert not np.isnan(x[:, V["HR"]]).all()


def test_a_long_gap_turns_the_sensor_off_beyond_the_bound(stays):
    arr = stays[GAP]
    hours, vals = charted(arr, "HR")
    (k,) = np.flatnonzero(np.diff(hours) == 6)[:1]
    a, b = hours[k], hours[k + 1]  # charted at hours a and a+6, nothing between
    inside = lambda t: (t >= (a + 1) * 3600) & (t < b * 3600)  # noqa: E731
    off = source(arr, max_gap_h=4.0)
    t = off.times()
    hr = off.values(t)[:, V["HR"]]
    assert np.isnan(hr[inside(t)]).all()  # uncharted hours: sensor off
    assert not np.isnan(hr[(t >= a * 3600) & (t < (a + 1) * 3600)]).any()  # its own hour
    joined = source(arr, max_gap_h=8.0, noise_scale=0.0)
    hr = joined.values(t)[:, V["HR"]]
    assert not np.isnan(hr[inside(t)]).any()
    lo, hi = sorted((vals[k], vals[k + 1]))
    assert np.all((hr[inside(t)] >= lo - 0.05) & (hr[inside(t)] <= hi + 0.05))


def test_bad_bedside_settings_are_refused_in_one_line(stays, tmp_path):
    table = write_canonical(tmp_path / "t.parquet", {"pn-" + SPARSE: stays[SPARSE]})
    cases = [
        (["--bedside"], "--bedside replays a stay: give --replay STAY_ID"),
        (
            ["--replay", "pn-" + SPARSE, "--bedside", "--speed", "3600", "--cuff", "5m"],
            "cuff interval (300.0 s) must be >= the cadence (360.0 s)",
        ),
        (["--replay", "pn-" + SPARSE, "--bedside", "--max-gap", "soon"], "--max-gap 'soon'"),
    ]
    for args, message in cases:
        p = subprocess.run(
            [VIGIL, "sim", "--data", str(table), *args], capture_output=True, text=True, timeout=60
        )
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], p.stderr
    with pytest.raises(ValueError, match="bp must be one of"):
        BedsideConfig(bp="wireless")


def test_vigil_sim_plays_a_stay_at_the_bedside(stays, tmp_path):
    """`vigil sim --replay ID --bedside` runs a monitor on a pty until the stay ends."""
    table = write_canonical(tmp_path / "t.parquet", {"pn-" + SPARSE: stays[SPARSE]})
    p = subprocess.run(
        [VIGIL, "sim", "--data", str(table), "--replay", "pn-" + SPARSE, "--bedside"]
        + ["--speed", "36000", "--max-rate", "100", "--cuff", "15m", "--duration", "20s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("bed-1 /dev/pts/")
    assert f"1 monitor(s), bedside replay pn-{SPARSE}, " in p.stderr, p.stderr
    # one reading per 360 simulated seconds over the stay's 50 hours, then it ends
    assert f"bed-1: {50 * 10} cycles" in p.stderr, p.stderr
