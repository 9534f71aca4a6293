"""`vigil edge decode --driver intellivue` on a recorded MIB byte stream and `vigil edge
probe --driver intellivue` against the simulated monitor on a real pty (issue 16 layer 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tty
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firmware_sim.intellivue import IntelliVueSim, record_stream
from tests.support.waiting import wait_until
from vigil_cli.main import app

VIGIL = [sys.executable, "-m", "vigil_cli.main"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(VIGIL + args, capture_output=True, text=True, timeout=60)


def test_decode_json_one_object_per_poll_result_and_bad_fcs_counted(tmp_path: Path) -> None:
    rec = tmp_path / "mib.bin"
    rec.write_bytes(b"\x00noise" + record_stream(6, crc_every=4, invalid={"SpO2"}))
    res = CliRunner().invoke(app, ["edge", "decode", "--driver", "intellivue", "--json", str(rec)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    # 8 frames sent, every 4th with a bad FCS (frames 4 and 8): 6 decoded, 4 of them polls
    assert len(rows) == 4
    for row in rows:
        assert set(row["vitals"]) == {"HR", "SBP", "DBP", "MAP", "Resp", "Temp"}
        assert row["states"]["O2Sat"]["state"] == ["invalid"]
        assert row["monitor"] == "866062"
        assert 60 <= row["vitals"]["HR"] <= 90 and 36 <= row["vitals"]["Temp"] <= 38
    assert "frames not used: bad_fcs 2" in res.stderr
    assert "noise bytes: 6" in res.stderr


def test_decode_text_lists_every_message(tmp_path: Path) -> None:
    rec = tmp_path / "mib.bin"
    rec.write_bytes(record_stream(2, demo=True))
    res = CliRunner().invoke(app, ["edge", "decode", "--driver", "intellivue", str(rec)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "frame 1: association result" in out
    assert "frame 2: MDS create event: Philips 866062, bed label bed-1" in out
    assert sum(1 for x in out.splitlines() if x.startswith("frame ") and ": poll result" in x) == 2
    assert "2 poll result(s); frames not used: none" in out
    assert "MDC_ECG_HEART_RATE" in out and "demo_data" in out
    assert "vitals:" not in out  # demo data: nothing valid


def test_decode_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["edge", "decode", "--driver", "intellivue", str(tmp_path / "none.bin")]
    )
    assert res.exit_code == 1 and "cannot read" in res.stderr
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"MSH|^~\\&|not an intellivue")
    res = CliRunner().invoke(app, ["edge", "decode", "--driver", "intellivue", str(junk)])
    assert res.exit_code == 0 and "no IntelliVue frame" in res.stderr
    res = CliRunner().invoke(app, ["edge", "decode", "--driver", "philips", str(junk)])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: --driver 'philips': not a driver (hl7, intellivue)"


def test_probe_prints_identity_and_numerics_then_releases() -> None:
    sim = IntelliVueSim(bed_label="ICU-12")
    try:
        res = _run(
            ["edge", "probe", "--driver", "intellivue", "--port", sim.address, "--seconds", "1.5"]
        )
    finally:
        sim.close()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"monitor on {sim.address}: Philips 866062, bed label ICU-12")
    assert sum(1 for x in lines if " HR " in x and "O2Sat" in x) >= 1
    assert "released: True" in lines[-1]
    assert sim.stats.released == 1 and sim.stats.associations == 1


def test_probe_with_no_monitor_answering_fails_clearly() -> None:
    master, slave = os.openpty()  # a line with nobody on the other end
    tty.setraw(slave)
    try:
        res = _run(
            [
                "edge",
                "probe",
                "--driver",
                "intellivue",
                "--port",
                os.ttyname(slave),
                "--seconds",
                "1",
            ]
        )
    finally:
        os.close(master)
        os.close(slave)
    assert res.returncode == 1
    assert "no IntelliVue answered on" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--driver", "ge", "--port", "/dev/null"], "--driver 'ge': not a driver that probes"),
        (["--driver", "intellivue"], "give the monitor's --port DEVICE or --udp HOST"),
        (
            ["--driver", "intellivue", "--port", "/dev/ttyNOPE9"],
            "--port /dev/ttyNOPE9: no such device",
        ),
    ],
)
def test_probe_bad_arguments(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["edge", "probe", *args])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {message}")
    assert len(res.stderr.strip().splitlines()) == 1


def test_vigil_sim_protocol_intellivue_serves_a_probe_on_its_pty() -> None:
    sim = subprocess.Popen(
        VIGIL
        + ["sim", "--protocol", "intellivue", "--pty", "--duration", "20s", "--fault", "off:NBP"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        bed, address = sim.stdout.readline().split()
        assert bed == "bed-1" and address.startswith("/dev/")
        res = _run(["edge", "probe", "--driver", "intellivue", "--port", address, "--seconds", "1"])
    finally:
        sim.terminate()
        sim.wait(10)
    assert res.returncode == 0, res.stderr
    readings = [x for x in res.stdout.splitlines() if " HR " in x]
    assert readings and all("SBP" not in x for x in readings)  # NBP switched off


def test_vigil_sim_protocol_bad_fault_and_protocol() -> None:
    res = CliRunner().invoke(app, ["sim", "--protocol", "intellivue", "--fault", "off:Nope"])
    assert res.exit_code == 2 and "unknown parameter 'Nope'" in res.stderr
    res = CliRunner().invoke(app, ["sim", "--protocol", "dicom"])
    assert res.exit_code == 2 and "--protocol 'dicom': choose hl7 or intellivue" in res.stderr


def test_probe_over_udp_on_the_lan() -> None:
    sim = IntelliVueSim(bed_label="ICU-3", udp_port=0, demo=True)
    try:
        res = _run(
            ["edge", "probe", "--driver", "intellivue", "--udp", sim.address, "--seconds", "1"]
        )
        wait_until(lambda: sim.stats.released == 1, timeout=5)  # the release datagram
    finally:
        sim.close()
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"monitor on udp {sim.address}: Philips 866062, bed label ICU-3")
    assert "no valid numeric  withheld: HR (demo_data)" in res.stdout  # demo mode
    assert sim.stats.released == 1


def test_decode_counts_a_frame_cut_by_a_cable_pull(tmp_path: Path) -> None:
    stream = record_stream(3)
    cut = stream.index(b"\xc0", stream.index(b"\xc0", 1) + 1)  # the second frame's start
    rec = tmp_path / "pulled.bin"
    rec.write_bytes(stream[: cut + 25] + stream[cut:])  # 25 bytes of it, then it again
    res = CliRunner().invoke(app, ["edge", "decode", "--driver", "intellivue", str(rec)])
    assert res.exit_code == 0
    assert "frames not used: truncated 1" in res.stdout
    assert "3 poll result(s)" in res.stdout
