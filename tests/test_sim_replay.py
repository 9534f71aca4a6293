"""Replaying real ICU stays: an hour of monitor readings gives back the charted hour."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest
import serial

from contracts.preprocessing import aggregate_readings
from contracts.vitals import VITAL_NAMES
from firmware_sim.hl7 import DECIMALS
from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.physiology import NOISE_SIGMA, DataError, load_replay
from firmware_sim.transports import PtyTransport
from tests.support import data as shared
from tests.support.sim import (
    LineReader,
    canonical_from_physionet,
    iculos_hours,
    parse_with_hl7,
    split_mllp,
)

START = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
MDC_ROWS = {
    "HR": "147842^MDC_ECG_HEART_RATE^MDC",
    "O2Sat": "150456^MDC_PULS_OXIM_SAT_O2^MDC",
    "Temp": "150344^MDC_TEMP^MDC",
    "SBP": "150021^MDC_PRESS_BLD_NONINV_SYS^MDC",
    "MAP": "150023^MDC_PRESS_BLD_NONINV_MEAN^MDC",
    "DBP": "150022^MDC_PRESS_BLD_NONINV_DIA^MDC",
    "Resp": "151562^MDC_RESP_RATE^MDC",
}
UCUM = {
    "HR": "/min^/min^UCUM",
    "O2Sat": "%^%^UCUM",
    "Temp": "Cel^Cel^UCUM",
    "SBP": "mm[Hg]^mm[Hg]^UCUM",
    "MAP": "mm[Hg]^mm[Hg]^UCUM",
    "DBP": "mm[Hg]^mm[Hg]^UCUM",
    "Resp": "/min^/min^UCUM",
}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return canonical_from_physionet(tmp_path_factory.mktemp("canon") / "canon.parquet", 3)


def _charted(path, stay: str) -> dict[int, dict[str, float]]:
    t = pq.read_table(path, filters=[("stay_id", "=", stay)]).to_pylist()
    return {int(r["ICULOS"]): r for r in t}


def _tolerance(name: str) -> float:
    # the stated noise (one sigma) plus half the display resolution
    return NOISE_SIGMA[name] + 0.5 * 10 ** -DECIMALS[name]


def _compare(hours: dict[int, dict[str, list]], charted: dict[int, dict]) -> int:
    compared = 0
    for k, row in charted.items():
        for name in VITAL_NAMES:
            got = aggregate_readings(hours[k][name], name)
            want = row[name]
            if want is None or math.isnan(want):
                assert math.isnan(got), f"hour {k} {name}: sensor should be off, got {got}"
                continue
            assert abs(got - want) <= _tolerance(name), f"hour {k} {name}: {got} vs {want}"
            compared += 1
    return compared


def test_every_replayed_hour_aggregates_back_to_the_charted_value(table) -> None:
    path, ids = table
    compared = 0
    for src in load_replay(path, ids, seed=5):
        hours: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        t = src.start_s
        while t < src.end_s:  # a reading a minute: 60 per hour
            for name, v in src.sample(t, 60.0).items():
                hours[int(t // 3600)][name].append(None if v is None else round(v, DECIMALS[name]))
            t += 60.0
        compared += _compare(hours, _charted(path, src.stay_id))
    assert compared > 300  # three real stays, most vitals charted most hours


def test_a_replayed_stay_over_a_pty_reproduces_its_hours_and_static_data(table) -> None:
    path, ids = table
    stay = ids[0]
    (src,) = load_replay(path, [stay], seed=1)
    # 60 readings per simulated hour, 1000 messages per wall second; flow control so
    # the reader thread (sharing our GIL) loses nothing
    mon = Monitor(
        "bed-1",
        src,
        PtyTransport(flow_control=1.0),
        speed=60_000,
        max_rate=1000,
        clock_start=START,
        profile="standard",
    )
    port = serial.Serial(mon.address, 115200, timeout=0.05)
    reader = LineReader(lambda: port.read(max(1, port.in_waiting)))
    reader.start()
    runner = MonitorRunner([mon])
    runner.run()  # until the stay ends
    time.sleep(0.3)
    data = reader.stop()
    port.close()
    runner.close()
    assert mon.finished and mon.stats.overruns == 0
    readings = [parse_with_hl7(f) for f in split_mllp(data).frames]
    charted = _charted(path, stay)
    assert len(readings) == 60 * len(charted)
    # The real stay's values travel in MDC-coded OBX rows with UCUM units (PCD-01).
    assert {k: v for r in readings for k, v in r.codes.items()} == MDC_ROWS
    assert {k: v for r in readings for k, v in r.units.items()} == UCUM

    hours: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in readings:
        for name, v in r.values.items():
            hours[math.floor(iculos_hours(r))][name].append(v)
    assert _compare(hours, charted) > 100

    first = charted[min(charted)]
    r0 = readings[0]
    assert r0.obs_time == START and iculos_hours(r0) == min(charted)
    born = datetime.strptime(r0.birth, "%Y%m%d").date()
    age = (
        r0.obs_time.year
        - born.year
        - ((r0.obs_time.month, r0.obs_time.day) < (born.month, born.day))
    )
    assert age == math.floor(first["Age"])
    assert r0.sex == {1.0: "M", 0.0: "F"}[first["Gender"]]
    # Hospital admission is not on the wire (PCD-01 has no field for it); the monitor's
    # patient still carries it.
    assert r0.hospital_admit is None
    hosp = (mon.hospital_admit - mon.icu_admit) / timedelta(hours=1)
    assert hosp == pytest.approx(first["HospAdmTime"], abs=1e-6)
    assert {r.stay_id for r in readings} == {stay}


def test_same_seed_same_readings_other_seed_other_noise(table) -> None:
    path, ids = table

    def run(seed: int) -> np.ndarray:
        (src,) = load_replay(path, ids[:1], seed=seed)
        ts = src.start_s + np.arange(200) * 30.0
        return np.array(
            [[np.nan if v is None else v for v in src.sample(t, 30.0).values()] for t in ts]
        )

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a, b, equal_nan=True)
    assert not np.array_equal(a, c, equal_nan=True)


def test_unknown_stays_and_unreadable_tables_are_named(table, tmp_path) -> None:
    path, ids = table
    with pytest.raises(DataError, match="unknown stay 'pn-nobody'.*include"):
        load_replay(path, ["pn-nobody"])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read canonical table"):
        load_replay(bad, ids[:1])
    partial = tmp_path / "partial.parquet"
    pq.write_table(pq.read_table(path, columns=["stay_id", "hour", "HR"]), partial)
    with pytest.raises(DataError, match="not a canonical table: columns"):
        load_replay(partial, ids[:1])


def test_replays_the_table_written_by_the_physionet_importer(tmp_path) -> None:
    from converters.physionet import import_physionet

    out = tmp_path / "physionet2019.parquet"
    import_physionet(shared.physionet(), out, limit=2)
    ids = sorted(set(pq.read_table(out, columns=["stay_id"])["stay_id"].to_pylist()))
    assert ids == ["pn-p000001", "pn-p000002"]
    compared = 0
    for src in load_replay(out, ids, seed=3):
        hours: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for t in np.arange(src.start_s, src.end_s, 60.0):
            for name, v in src.sample(float(t), 60.0).items():
                hours[int(t // 3600)][name].append(v)
        compared += _compare(hours, _charted(out, src.stay_id))
    assert compared > 100
