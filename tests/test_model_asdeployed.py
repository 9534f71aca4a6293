"""The as-deployed evaluation's offline transform is the real path (issue 13).

`benches/bench_model.py` scores each test stay as the gateway would see it: the
bedside stream of `firmware_sim/bedside.py` handed, reading by reading, to the
gateway's own `BedWindows` (`deployed_steps`). Here the same stream is sent by the
simulated monitor over a real pty as PCD-01/MLLP to a real gateway (decoder, windows,
LiteRT, SQLite store, a real Mosquitto): every hourly step it stores must carry the
values, static data and reading count of the offline steps, and every risk it stores
the offline model input's risk through the same bundle. Real set A stays (skipped
without the shared archive, tests/support/data.py).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from benches.bench_model import deployed_steps
from contracts.bundle import Manifest
from contracts.paths import default_bundle_dir
from contracts.timeutil import iso_ms
from contracts.vitals import VITAL_NAMES
from firmware_sim.bedside import BedsideConfig, BedsideSource
from firmware_sim.physiology import Patient
from model_runtime.litert import RiskModel
from tests.support import data as shared

pytestmark = [pytest.mark.slow, shared.needs_physionet]
# An arterial line with a temperature probe; a cuff-free stay without DBP, Temp by spot
# checks (the first stays of the archive: a short scan).
STEMS = ("p007126", "p012238")
SPEED, RATE = 120 * 150, 150  # a reading every 120 simulated seconds, 150 per wall second


def load(stems: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    with tarfile.open(shared.physionet(), "r|gz") as tf:
        for m in tf:
            if Path(m.name).stem in stems:
                text = tf.extractfile(m).read().decode()
                out[Path(m.name).stem] = np.genfromtxt(io.StringIO(text), delimiter="|", names=True)
                if len(out) == len(stems):
                    return out
    raise LookupError(f"stays {stems} not all in the archive")


def source(stem: str, arr: np.ndarray, seed: int) -> BedsideSource:
    dyn = np.column_stack([arr[n] for n in VITAL_NAMES])
    sex = {1.0: "M", 0.0: "F"}.get(float(arr["Gender"][0]), "U")
    patient = Patient("pn-" + stem, float(arr["Age"][0]), sex, float(arr["HospAdmTime"][0]))
    cfg = BedsideConfig(cadence_s=SPEED / RATE)  # = the monitor's simulated step
    return BedsideSource("pn-" + stem, arr["ICULOS"], dyn, patient, seed=seed, config=cfg)


def test_the_bedside_stream_through_a_real_gateway_gives_the_offline_steps(broker, tmp_path):
    from edge_agent.config import load_config
    from edge_agent.gateway import Gateway
    from firmware_sim.monitor import Monitor, MonitorRunner
    from firmware_sim.transports import PtyTransport

    stays = load(STEMS)
    monitors = []
    for i, stem in enumerate(STEMS):
        line = PtyTransport(flow_control=2.0)
        src = source(stem, stays[stem], seed=11 + i)
        monitors.append(
            Monitor(f"bed-{i + 1}", src, line, bed_number=i + 1, speed=SPEED, max_rate=RATE)
        )
    assert monitors[0].sim_step == pytest.approx(120.0)
    cfg = tmp_path / "gw.toml"
    beds = "".join(
        f'[[beds]]\nid = "{m.bed}"\nsource = {{ type = "serial", port = "{m.address}" }}\n'
        for m in monitors
    )
    cfg.write_text(
        f'gateway_id = "ward-bedside"\nstore_path = "{tmp_path / "gw.sqlite"}"\n{beds}'
        f"[mqtt]\nport = {broker.port}\n"
    )
    bundle = default_bundle_dir()
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    spec = manifest.preprocessing
    # offline: a fresh source of the same stay and seed, at the monitor's ICU admission
    offline = {
        m.bed: deployed_steps(
            source(stem, stays[stem], seed=11 + i), spec, admit=m.icu_admit, flush=False
        )
        for i, (stem, m) in enumerate(zip(STEMS, monitors, strict=True))
    }
    want_steps = sum(len(v) for v in offline.values())
    gw = Gateway(load_config(cfg))
    gw.start()
    runner = MonitorRunner(monitors)
    try:
        deadline = time.monotonic() + 10
        while any(b.line is None or b.line.state != "up" for b in gw.beds.values()):
            assert time.monotonic() < deadline, "gateway did not open the ptys"
            time.sleep(0.05)
        runner.start()
        runner.join(120)
        deadline = time.monotonic() + 60
        while len(gw.store.rows("steps")) < want_steps:
            assert time.monotonic() < deadline, (len(gw.store.rows("steps")), want_steps)
            time.sleep(0.1)
        steps = gw.store.rows("steps")
        risks = gw.store.rows("risk")
    finally:
        runner.close()
        gw.stop()

    model = RiskModel((bundle / "model.tflite").read_bytes(), manifest=manifest, folder=bundle)
    compared = scored = 0
    for bed, mine in offline.items():
        theirs = {r["step_start"]: r for r in steps if r["bed"] == bed}
        risk_at = {r["window_end"]: r for r in risks if r["bed"] == bed}
        assert len(theirs) == len(mine), bed
        for s in mine:
            row = theirs[iso_ms(s.start)]
            assert row["readings"] == s.readings, (bed, s.index)
            got = json.loads(row["values"])
            for n in VITAL_NAMES:
                if s.values[n] is None:
                    assert got[n] is None, (bed, s.index, n)
                else:
                    assert got[n] == pytest.approx(s.values[n], abs=1e-9), (bed, s.index, n)
                    compared += 1
            static = json.loads(row["static"])
            assert static["Age"] == s.static["Age"] and static["Gender"] == s.static["Gender"]
            r = risk_at[iso_ms(s.end)]
            inp = s.model_input
            assert bool(r["insufficient"]) == inp.insufficient and r["observed"] == inp.observed
            if not inp.insufficient:
                risk = min(1.0, max(0.0, model.score(inp.window, inp.static)))
                assert r["risk"] == pytest.approx(risk, abs=1e-6), (bed, s.index)
                scored += 1
    assert compared > 300 and scored > 60, (compared, scored)


def test_offline_steps_are_hourly_medians_of_the_stream():
    """A check that cannot pass by accident: the offline step of an hour is the median of
    that hour's readings, and an hour of the spot-checked temperature is its chart."""
    arr = load(STEMS[1:])[STEMS[1]]
    src = source(STEMS[1], arr, seed=3)
    bundle = default_bundle_dir()
    spec = Manifest.model_validate_json((bundle / "manifest.json").read_text()).preprocessing
    steps = {s.index: s for s in deployed_steps(src, spec, admit=datetime(2026, 1, 1, tzinfo=UTC))}
    t = src.times()
    x = src.values(t)
    for k, s in steps.items():
        hour = (t >= k * 3600) & (t < (k + 1) * 3600)
        hr = x[hour, 0]
        assert s.values["HR"] == (None if np.isnan(hr).all() else pytest.approx(np.nanmedian(hr)))
    temp = {int(h): v for h, v in zip(arr["ICULOS"], arr["Temp"], strict=True) if v == v}
    for k, v in temp.items():
        assert steps[k].values["Temp"] == pytest.approx(v)
