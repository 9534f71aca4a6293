"""The simulated IntelliVue plays a replayed ICU stay (issue 16: "replayed stays and
generated scenarios"): a real PhysioNet stay, served as Data Export poll results over a
real pty and read by the gateway's IntelliVue line, gives back its charted hours, its
patient and its static data; `vigil sim --protocol intellivue --replay` does the same."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from contracts.preprocessing import aggregate_readings
from edge_agent.config import IntelliVueSource, LinkConfig
from edge_agent.decoder import Reading
from edge_agent.intellivue.line import IntelliVueLine
from firmware_sim.intellivue import SOURCE_VITALS, IntelliVueSim
from firmware_sim.physiology import NOISE_SIGMA, GeneratedSource, load_replay
from tests.support.sim import canonical_from_physionet

START = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
SPEED = 7200.0  # 2 h of the stay per wall second: a poll every 0.05 s is 6 minutes
PLAYED = sorted({v for vs in SOURCE_VITALS.values() for v in vs})


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return canonical_from_physionet(tmp_path_factory.mktemp("canon") / "canon.parquet", 2)


def _read(address: str, until: float, udp: bool = False) -> list[Reading]:
    """What the gateway's bed worker gets from an intellivue line for `until` seconds."""
    cfg = IntelliVueSource(
        type="intellivue", **({"udp": address} if udp else {"port": address}), poll_seconds=0.05
    )
    line = IntelliVueLine("bed-1", cfg, LinkConfig(), threading.Event())
    out: list[Reading] = []
    deadline = time.monotonic() + until
    try:
        while time.monotonic() < deadline:
            out += line.read_readings() or []
    finally:
        line.close()
    return out


def test_a_replayed_stay_gives_back_its_charted_hours_patient_and_static(table) -> None:
    path, ids = table
    stay = ids[0]
    (src,) = load_replay(path, [stay], seed=3)
    charted = {int(r["ICULOS"]): r for r in pq.read_table(path, filters=[("stay_id", "=", stay)]).to_pylist()}  # fmt: skip
    sim = IntelliVueSim(bed_label="bed-1", speed=SPEED, clock_start=START, source=src)
    try:
        readings = _read(sim.address, 6.0)
    finally:
        sim.close()
    assert len(readings) > 60
    # the stay's own patient: its id (the gateway pseudonymises it), sex and age
    first = charted[min(charted)]
    assert {r.stay for r in readings} == {stay}
    assert readings[0].static["Gender"] == first["Gender"]
    assert abs(readings[0].static["Age"] - first["Age"]) <= 1
    hours: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in readings:
        k = min(charted) + math.floor((r.obs_time - START) / timedelta(hours=1))
        for name in PLAYED:
            hours[k][name].append(r.values.get(name))
    compared = 0
    full = [k for k in sorted(hours) if len(hours[k]["HR"]) >= 5][:-1]  # whole hours
    assert len(full) >= 5
    for k in full:
        for name in PLAYED:
            got, want = aggregate_readings(hours[k][name], name), charted[k][name]
            if want is None or math.isnan(want):  # not charted: not in the poll result
                assert math.isnan(got), f"hour {k} {name}: not charted, got {got}"
                continue
            # the source's noise, its hour-edge ramps, the monitor's integer resolution
            tol = 2 * NOISE_SIGMA[name] + (0.05 if name == "Temp" else 0.5)
            assert abs(got - want) <= tol, f"hour {k} {name}: {got} vs {want}"
            compared += 1
    assert compared >= 20


def test_vigil_sim_intellivue_replay_serves_the_stay(table) -> None:
    path, ids = table
    stay = ids[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "sim", "--protocol", "intellivue", "--tcp",
         "0", "--replay", stay, "--data", str(path), "--speed", str(SPEED), "--start",
         START.isoformat(), "--duration", "20s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        bed, address = proc.stdout.readline().split()
        readings = _read(address, 2.0, udp=True)
    finally:
        proc.terminate()
        proc.wait(10)
    assert bed == "bed-1" and len(readings) >= 10
    assert {r.stay for r in readings} == {stay}
    charted = pq.read_table(path, filters=[("stay_id", "=", stay)]).to_pylist()
    hr = [row["HR"] for row in charted if row["HR"] is not None and not math.isnan(row["HR"])]
    got = [r.values["HR"] for r in readings if "HR" in r.values]
    assert got and min(hr) - 10 <= min(got) and max(got) <= max(hr) + 10


def test_a_generated_scenario_plays_too_and_its_missing_vital_is_left_out() -> None:
    src = GeneratedSource("desaturation", seed=1, onset_s=0.0)
    sim = IntelliVueSim(bed_label="bed-1", speed=600.0, clock_start=START, source=src)
    try:
        readings = _read(sim.address, 1.5)
    finally:
        sim.close()
    assert len(readings) >= 10
    want = {n for n, v in src.sample(src.start_s, 1.0).items() if v is not None} & set(PLAYED)
    assert set(readings[-1].values) == want
    assert readings[-1].quality == {}


def test_bad_replay_or_scenario_is_a_one_line_error(table) -> None:
    from typer.testing import CliRunner

    from vigil_cli.main import app

    path, _ = table
    base = ["sim", "--protocol", "intellivue", "--duration", "1s"]
    for args, want in [
        (["--replay", "pn-nobody", "--data", str(path)], "unknown stay 'pn-nobody'"),
        (["--scenario", "flu"], "unknown scenario 'flu'"),
        (["--replay", "x", "--scenario", "stable"], "not both"),
    ]:
        res = CliRunner().invoke(app, base + args)
        assert res.exit_code != 0 and want in res.output, res.output
        assert "Traceback" not in res.output
