"""`vigil sim`: device paths on stdout, frames on the ptys, clear errors for bad arguments."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
from typer.testing import CliRunner

from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.transports import TcpServerTransport
from tests.support.sim import LineReader, canonical_from_physionet, parse_with_hl7, split_mllp
from vigil_cli.main import app

VIGIL = str(Path(sys.executable).with_name("vigil"))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return canonical_from_physionet(tmp_path_factory.mktemp("canon") / "canon.parquet", 2)


def _sim(*args: str):
    return CliRunner().invoke(app, ["sim", *args])


def test_bad_arguments_exit_non_zero_naming_the_problem(table, tmp_path) -> None:
    path, ids = table
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("this is not parquet")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cases = [
        (["--speed", "0"], "--speed must be > 0"),
        (["--speed", "-3600"], "--speed must be > 0"),
        (["--replay", "pn-nobody", "--data", str(path)], "unknown stay 'pn-nobody'"),
        (["--replay", ids[0], "--data", str(tmp_path / "none.parquet")], "not found"),
        (["--replay", ids[0], "--data", str(garbage)], "cannot read canonical table"),
        (["--fault", "meltdown@1s"], "unknown fault 'meltdown'"),
        (["--fault", "sensor_off:BP"], "unknown vital 'BP'"),
        (["--fault", "garble#3"], "names bed 3, only 1 bed"),
        (["--scenario", "flu"], "unknown scenario 'flu'"),
        (["--pty", "--tcp", "7000"], "choose one transport"),
        (["--beds", "0"], "--beds must be >= 1"),
        (["--duration", "soon"], "--duration 'soon' is not a time"),
        (["--replay", ids[0], "--scenario", "sepsis"], "not both"),
        (["--replay", ids[0], "--data", str(path), "--beds", "2"], "one bed per stay"),
        (["--tcp", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1"),
        (["--device", "/dev/no-such-tty"], "cannot open serial device /dev/no-such-tty"),
        (["--device", "/dev/null,/dev/null"], "1 bed(s) need 1 device path(s), got 2"),
        (["--mllp-connect", "nowhere"], "expected HOST:PORT"),
        (["--mllp-connect", "127.0.0.1:1", "--pty"], "choose one transport"),
        (["--profile", "acme"], "unknown --profile 'acme'"),
        (["--mllp-connect", "127.0.0.1:1", "--ack-timeout", "0"], "--ack-timeout must be > 0"),
    ]
    try:
        for args, message in cases:
            r = _sim(*args)
            assert r.exit_code == 2, (args, r.output)
            assert message in r.output, (args, r.output)
            assert "Traceback" not in r.output
    finally:
        busy.close()


def test_stays_lists_what_replay_accepts(table) -> None:
    path, ids = table
    r = CliRunner().invoke(app, ["sim", "stays", "--data", str(path)])
    assert r.exit_code == 0 and r.output.split() == ids


def test_cli_prints_one_device_per_bed_and_the_ptys_carry_frames(tmp_path) -> None:
    flog = tmp_path / "faults.jsonl"
    proc = subprocess.Popen(
        [VIGIL, "sim", "--pty", "--beds", "2", "--scenario", "sepsis", "--seed", "1"]
        + ["--speed", "60", "--duration", "4s", "--fault", "garble@15msg#2"]
        + ["--fault-log", str(flog), "--control"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [proc.stdout.readline().split() for _ in range(2)]
    assert [ln[0] for ln in lines] == ["bed-1", "bed-2"]
    assert all(os.path.exists(ln[1]) and ln[1].startswith("/dev/pts/") for ln in lines)
    ports = [serial.Serial(ln[1], 115200, timeout=0.05) for ln in lines]
    readers = [LineReader(lambda p=p: p.read(max(1, p.in_waiting))) for p in ports]
    for r in readers:
        r.start()
    time.sleep(0.5)
    proc.stdin.write("noise:7\n")  # typed by a tester: injected at once on every bed
    proc.stdin.flush()
    out, err = proc.communicate(timeout=30)
    wires = [split_mllp(r.stop()) for r in readers]
    for p in ports:
        p.close()
    assert proc.returncode == 0, err
    bed1 = [parse_with_hl7(f) for f in wires[0].frames]
    assert len(bed1) >= 15 and {r.bed for r in bed1} == {"bed-1"}
    assert {r.stay_id for r in bed1} == {"sim-sepsis-s1"}
    garbled = 0
    for f in wires[1].frames:
        try:
            assert parse_with_hl7(f).stay_id == "sim-sepsis-s2"
        except UnicodeDecodeError:
            garbled += 1
    assert garbled == 1
    events = [json.loads(x) for x in flog.read_text().splitlines()]
    assert [(e["bed"], e["kind"]) for e in events if e["kind"] == "garble"] == [("bed-2", "garble")]
    assert [e["seq"] for e in events if e["kind"] == "garble"] == [15]
    assert sorted(e["bed"] for e in events if e["kind"] == "noise") == ["bed-1", "bed-2"]
    assert [w.noise_bytes for w in wires] == [7, 7]
    assert "bed-1:" in err and "faults injected: 3" in err


def test_watch_decodes_a_tcp_monitor() -> None:
    mon = Monitor.generated("bed-4", TcpServerTransport(0), "desaturation", seed=4, speed=50)
    runner = MonitorRunner([mon])
    runner.start(duration=10)
    try:
        r = CliRunner().invoke(app, ["sim", "watch", mon.address, "--count", "5"])
    finally:
        runner.close()
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.output.splitlines() if " bed-4 " in ln]
    assert len(rows) == 5 and all("sim-desaturation-s4" in ln and "HR=" in ln for ln in rows)
    assert "messages=5" in r.output


def test_watch_of_a_missing_device_fails_cleanly() -> None:
    r = CliRunner().invoke(app, ["sim", "watch", "/dev/does-not-exist", "--count", "1"])
    assert r.exit_code == 2 and "cannot watch /dev/does-not-exist" in r.output
