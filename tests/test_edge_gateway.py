"""The gateway end to end: real simulator on a pty -> gateway -> real Mosquitto -> subscriber."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from contracts import topics
from contracts.messages import Alarm, Risk, Status, Vitals, parse_message
from contracts.paths import PROJECT_ROOT
from contracts.preprocessing import stay_windows
from edge_agent.config import ConfigError, load_config
from edge_agent.gateway import Gateway
from tests.support.broker import Subscriber
from tests.support.edge import physionet_stay, stay_arrays, write_canonical

GW = "ward-e2e"
# A real septic stay of PhysioNet 2019 set A (SepsisLabel from ICULOS 40, so sepsis onset
# at ICULOS 46 h), 42 charted hours from ICULOS 8.
SEPTIC = "p015180"


def gateway_toml(tmp_path, port: int, device: str, bed: str = "bed-1") -> str:
    p = tmp_path / "gw.toml"
    p.write_text(
        f'gateway_id = "{GW}"\noperator = "test nurse"\nstore_path = "{tmp_path / "gw.sqlite"}"\n'
        f'[[beds]]\nid = "{bed}"\nsource = {{ type = "serial", port = "{device}", baud = 115200 }}\n'
        f"[mqtt]\nport = {port}\n"
    )
    return str(p)


@pytest.mark.slow
def test_replayed_septic_stay_raises_a_risk_alarm_before_onset_end_to_end(broker, tmp_path):
    from firmware_sim.monitor import Monitor, MonitorRunner
    from firmware_sim.physiology import load_replay
    from firmware_sim.transports import PtyTransport

    arr = physionet_stay(SEPTIC)
    table = write_canonical(tmp_path / "stay.parquet", {"pn-" + SEPTIC: arr})
    (source,) = load_replay(table, ["pn-" + SEPTIC], seed=3)
    transport = PtyTransport(flow_control=2.0)
    # 30 readings per simulated hour, 150 messages per wall second: 42 h in ~9 s.
    monitor = Monitor("bed-1", source, transport, speed=120 * 150, max_rate=150, seed=3)
    settings = load_config(gateway_toml(tmp_path, broker.port, transport.address))
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    gw = Gateway(settings)
    gw.start()
    runner = MonitorRunner([monitor])
    try:
        deadline = time.monotonic() + 10
        while gw.beds["bed-1"].line is None or gw.beds["bed-1"].line.state != "up":
            assert time.monotonic() < deadline, "gateway did not open the pty"
            time.sleep(0.05)
        runner.start()
        runner.join(60)
        n_steps = len(arr) - 1  # the last hour closes only when a later reading comes
        got = sub.wait_for(n_steps, 30, "/risk")
        assert len(got) == n_steps
        assert gw.publisher.wait_idle(10)
        bed = gw.beds["bed-1"]
        deadline = time.monotonic() + 10  # the last hour's frames may still be on the line
        while bed.decoder.stats.frames_ok < monitor.stats.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        gw._mirror_counters()
        snap = gw.state.snapshot()
        dyn_gw, static_gw = bed.windows.history()
    finally:
        runner.close()
        gw.stop()
        sub.close()

    msgs = {"risk": [], "vitals": [], "alarm": [], "status": []}
    for topic, payload, _ in sub.messages:
        m = parse_message(payload)  # every message validates against the contracts
        kind = topics.parse(topic)["kind"]
        msgs[kind].append(m)
    assert all(isinstance(m, Risk) for m in msgs["risk"])
    assert all(isinstance(m, Vitals) for m in msgs["vitals"]) and len(msgs["vitals"]) == n_steps
    assert any(isinstance(m, Status) and m.state == "online" for m in msgs["status"])
    man = gw.model.manifest
    assert {(m.model.name, m.model.version) for m in msgs["risk"]} == {(man.name, man.version)}
    # the stay leaves as the gateway's pseudonym of PID-3 + PV1-44 (edge_agent/privacy.py)
    stay = gw.stay_pseudonym("pn-" + SEPTIC, monitor.icu_admit)
    assert all(m.gw == GW and m.bed == "bed-1" and m.stay == stay for m in msgs["risk"])
    assert not any(SEPTIC.encode() in payload for _, payload, _ in sub.messages)

    # Risk alarm before sepsis onset (label starts 6 h before onset).
    first_label = int(np.argmax(arr["SepsisLabel"] > 0))
    onset = monitor.icu_admit + timedelta(hours=float(arr["ICULOS"][first_label]) + 6)
    alarmed = [m for m in msgs["risk"] if m.alarm_level in ("alarm", "escalated")]
    assert alarmed, f"no alarm; risks {[m.risk for m in msgs['risk']]}"
    assert alarmed[0].window_end < onset
    raised = [m for m in msgs["alarm"] if isinstance(m, Alarm) and m.action == "raised"]
    raised = [m for m in raised if m.source == "model"]  # the NEWS2 alarm has no model
    assert raised and raised[0].by == "system" and raised[0].model.version == man.version
    assert snap.bed("bed-1").alarm_level in ("alarm", "escalated")
    assert snap.counters["frames_ok"] == monitor.stats.sent and snap.counters["frames_bad"] == 0

    # The gateway's windows equal the trainer's for this stay (within the monitor's noise:
    # 30 noisy readings per hour, median per hour, vs the charted hourly value).
    dyn_t, static_t = stay_arrays(arr)
    spec = man.preprocessing
    assert dyn_gw.shape == (n_steps, 7)
    np.testing.assert_array_equal(np.isnan(dyn_gw), np.isnan(dyn_t[:n_steps]))
    w_gw, _, obs_gw = stay_windows(dyn_gw, static_gw, spec)
    w_t, _, obs_t = stay_windows(dyn_t[:n_steps], static_t[:n_steps], spec)
    np.testing.assert_array_equal(obs_gw, obs_t)
    diff = np.abs(w_gw - w_t)
    assert diff.mean() < 0.03 and diff.max() < 0.35, (diff.mean(), diff.max())
    np.testing.assert_allclose(static_gw[:, 3], static_t[:n_steps, 3])  # ICULOS


def test_nurse_actions_are_stored_and_published_with_who_and_when(broker, tmp_path):
    from edge_agent.alarms import ActionRefused

    settings = load_config(gateway_toml(tmp_path, broker.port, "/dev/null-not-a-port"))
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/+/alarm")
    gw = Gateway(settings)
    gw.start(sources=False)
    try:
        with pytest.raises(ActionRefused):
            gw.acknowledge("bed-1", "nurse jo")
        bed = gw.beds["bed-1"]
        with bed.lock:
            events = bed.alarm.on_step(0.99, gw.clock()) + bed.alarm.on_step(0.99, gw.clock())
            gw._alarm_events(bed, "pn-x", events)
        gw.silence("bed-1", "nurse jo", 300)
        gw.acknowledge("bed-1", "nurse kim")
        gw.feedback("bed-1", "nurse kim", "deteriorating", "looks unwell")
        got = sub.wait_for(5, 10, "/alarm")
        actions = [(m.action, m.by) for m in (parse_message(p) for _, p, _ in got)]
        assert actions == [
            ("raised", "system"),
            ("escalated", "system"),
            ("silenced", "nurse jo"),
            ("acknowledged", "nurse kim"),
            ("feedback", "nurse kim"),
        ]
        rows = gw.store.rows("alarms")
        assert [r["by"] for r in rows][-3:] == ["nurse jo", "nurse kim", "nurse kim"]
        assert all(r["ts"] for r in rows)
        snap = gw.state.snapshot()
        assert snap.bed("bed-1").alarm_state == "acknowledged"
        assert snap.bed("bed-1").acknowledged_by == "nurse kim"
        assert [e.kind for e in snap.events][-1] == "feedback"
    finally:
        gw.stop()
        sub.close()


def test_edge_import_pulls_no_tensorflow_and_no_pandas():
    # The edge install has neither; sqlite-utils probes for pandas optionally, so they are
    # made unimportable here as on a gateway: any hard import of them would fail the test.
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'pandas', 'keras', 'cloud_hub'):
            raise ImportError(f'{name} is not installed on the gateway')
sys.meta_path.insert(0, Block())
import edge_agent.gateway, edge_agent.scoring, edge_agent.decoder, edge_agent.windows
import edge_agent.alarms, edge_agent.publisher, edge_agent.store, edge_agent.sources
import edge_agent.state, edge_agent.config, edge_agent.cli
from edge_agent.scoring import load_model
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
m, refused = load_model([default_bundle_dir()], [default_trusted_keys_dir()])
assert m is not None, refused
bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'pandas', 'keras', 'cloud_hub', 'firmware_sim')]
print(bad)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_config_errors_name_the_key_the_value_and_what_was_expected(tmp_path, monkeypatch):
    p = tmp_path / "bad.toml"
    p.write_text(
        'gateway_id = "ward/3"\n[[beds]]\nid = "b1"\n'
        'source = { type = "serial", port = "/dev/ttyS0", parity = "X" }\n'
        "[mqtt]\nport = 70000\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    text = str(e.value)
    assert "gateway_id = 'ward/3'" in text and "[A-Za-z0-9_.-]" in text
    assert "beds.0.source.serial.parity = 'X'" in text
    assert "mqtt.port = 70000" in text and "less than or equal to 65535" in text
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_example_config_validates_and_env_overrides_win(monkeypatch):
    example = PROJECT_ROOT / "deploy" / "edge" / "gateway.example.toml"
    monkeypatch.setenv("VIGIL_EDGE__MQTT__HOST", "broker.example")
    monkeypatch.setenv("VIGIL_EDGE__GATEWAY_ID", "ward-9")
    s = load_config(example)
    assert s.mqtt.host == "broker.example" and s.gateway_id == "ward-9"
    assert {b.source.type for b in s.beds} == {"serial", "tcp", "sim"}
    res = CliRunner().invoke(
        __import__("edge_agent.cli", fromlist=["app"]).app, ["check-config", str(example)]
    )
    assert res.exit_code == 0 and "ward-9" in res.output
    monkeypatch.setenv("VIGIL_EDGE__MQTT__KEEPALIVE", "1")
    res = CliRunner().invoke(
        __import__("edge_agent.cli", fromlist=["app"]).app, ["check-config", str(example)]
    )
    assert res.exit_code == 2 and "mqtt.keepalive = '1'" in res.output


def test_vigil_edge_run_headless_with_an_in_process_simulator(broker, tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{tmp_path / "s.sqlite"}"\nlog_json = true\n'
        '[[beds]]\nid = "bed-7"\n'
        'source = { type = "sim", scenario = "sepsis", seed = 1, speed = 3600, max_rate = 50 }\n'
        f"[mqtt]\nport = {broker.port}\n"
    )
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/bed-7/#")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "edge", "run", "--config", str(cfg), "--headless"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got = sub.wait_for(3, 60, "/risk")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        sub.close()
    assert len(got) >= 3, err[-2000:]
    assert all(parse_message(p).bed == "bed-7" for _, p, _ in got)
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert lines and {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert proc.returncode == 0


def test_a_bed_at_watch_level_shows_watch_in_the_terminal_state(tmp_path):
    """none <-> watch raises no alarm event, but the nurse's screen must still show it."""
    settings = load_config(gateway_toml(tmp_path, 1, "/dev/null-not-a-port"))
    gw = Gateway(settings)
    bed = gw.beds["bed-1"]
    threshold = bed.alarm.params.threshold
    with bed.lock:
        events = bed.alarm.on_step(threshold * 0.9, gw.clock())
        assert events == [] and bed.alarm.s.level == "watch"
        gw._alarm_events(bed, "st-x", events)
    assert gw.state.snapshot().bed("bed-1").alarm_level == "watch"
    with bed.lock:
        gw._alarm_events(bed, "st-x", bed.alarm.on_step(0.0, gw.clock()))
    assert gw.state.snapshot().bed("bed-1").alarm_level == "none"
    gw.store.close()
