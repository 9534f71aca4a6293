"""`vigil edge decode`, run as hospital IT runs it: the installed `vigil` on sample files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hl7

from contracts.mllp import frame
from tests import samples

VIGIL = str(Path(sys.executable).with_name("vigil"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, "edge", "decode", *args], capture_output=True, text=True, timeout=120
    )


def _rows(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_json_on_every_sample() -> None:
    files = [str(samples.path(n)) for n in samples.NAMES]
    proc = _run("--json", *files)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc)
    assert len(rows) == len(files)  # one message per file
    by = {Path(r["file"]).name[:3].rstrip("-"): r for r in rows}
    assert {k for k, r in by.items() if not r["accepted"]} == {"10", "12", "13"}
    assert by["10"]["error"]["reason"] == "unsupported_type"
    assert by["07"]["vitals"] == {"O2Sat": 98.0, "SBP": 117.0, "DBP": 88.0, "MAP": 98.0, "HR": 80.0}
    assert by["07"]["times"]["SBP"] == "2016-08-02T10:15:00.000Z"
    assert by["05"]["vitals"] == {"Temp": 37.0}  # 98.6 °F
    assert by["b01"]["vitals"]["SBP"] == 120.01  # 16.0 kPa, rounded to 3 places
    assert {
        "segment": "OBX 4",
        "code": "0002-4822^Pulse (SpO2)^MDIL",
        "reason": "duplicate_lower_priority",
    } in by["07"]["ignored"]
    for r in rows:
        assert set(r) >= {"file", "control_id", "accepted", "vitals", "ignored", "ack"}
        ack = hl7.parse(r["ack"])
        msa = ack.segment("MSA")
        assert str(msa(1)) == ("AA" if r["accepted"] else "AR")
        assert str(msa(2)) == r["control_id"]
        assert (len(ack.segments("ERR")) if not r["accepted"] else 0) == (0 if r["accepted"] else 1)


def test_several_messages_per_file_framed_or_raw(tmp_path: Path) -> None:
    a, b, c = samples.load("02"), samples.load("b03"), samples.load("10")
    framed = tmp_path / "capture.mllp"
    framed.write_bytes(b"noise" + frame(a) + b"\r\n" + frame(b) + frame(c))
    raw = tmp_path / "capture.hl7"
    raw.write_bytes(a.replace(b"\r", b"\r\n") + b"\r\n" + b.replace(b"\r\n", b"\n") + c)
    for f in (framed, raw):
        rows = _rows(_run("--json", str(f)))
        assert [(r["control_id"], r["accepted"]) for r in rows] == [
            ("MSGID1234", True),
            ("C-777", True),
            ("HP0802104856591B02WIN879", False),
        ]
        assert rows[0]["vitals"] == {"SBP": 120.0, "DBP": 80.0, "MAP": 100.0}
        assert len(rows[1]["ignored"]) == 15


def test_table_is_readable_and_shows_no_patient_fields() -> None:
    proc = _run(str(samples.path("07")), str(samples.path("10")), str(samples.path("b03")))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ORU^R01 v2.3 control id HP0802104821735B02WIN835" in out
    assert "bed iDemo3: 5 vital(s), 14 set aside" in out
    assert "NOT USED (AR) unsupported_type" in out
    assert "set aside OBX 8   150021^MDC_PRESS_BLD_NONINV_SYS^MDC: missing_unit" in out
    assert "MSA|AA|HP0802104821735B02WIN835" in out
    for secret in ("2132436", "Johnson", "Catherine", "19421002", "S-123", "Doe"):
        assert secret not in out


def test_time_zone_option_and_bad_zone() -> None:
    rows = _rows(_run("--json", "--tz", "America/New_York", str(samples.path("01"))))
    assert rows[0]["times"]["HR"] == "2008-12-11T19:45:00.000Z"  # 14:45 EST
    bad = _run("--tz", "Mars/Olympus", str(samples.path("01")))
    assert bad.returncode == 2 and "not a time zone" in bad.stderr


def test_unreadable_file_exits_1_after_the_others(tmp_path: Path) -> None:
    proc = _run("--json", str(tmp_path / "missing.hl7"), str(samples.path("05")))
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr and "missing.hl7" in proc.stderr
    assert [r["vitals"] for r in _rows(proc)] == [{"Temp": 37.0}]


def test_adt_messages_show_the_admission_without_the_patient_id() -> None:
    folder = Path(samples.__file__).parent / "hl7" / "adt"
    files = sorted(str(p) for p in folder.glob("*.hl7"))
    proc = _run("--json", *files)
    assert proc.returncode == 0, proc.stderr
    rows = {Path(r["file"]).name[:2]: r for r in _rows(proc)}
    assert all(r["accepted"] and r["vitals"] == {} for r in rows.values())
    assert rows["a1"]["adt"]["event"] == "A01" and rows["a1"]["adt"]["bed_label"] == "28cb"
    assert rows["a2"]["adt"]["event"] == "A02"
    assert rows["a2"]["adt"]["prior_location"].startswith("RNJ RLH 6F")
    assert rows["a3"]["adt"]["event"] == "A03"
    table = _run(*files)
    assert table.returncode == 0 and "A02 at 2024-11-04T15:50:00.000Z" in table.stdout
    for path in files:  # no PID-3 identifier (record numbers) is printed, in JSON or a table
        text = Path(path).read_bytes().decode("latin-1").replace("\n", "\r")
        pid = next(s for s in text.split("\r") if s.startswith("PID|"))
        ids = [rep.split("^")[0] for rep in pid.split("|")[3].split("~")]
        ids = [i for i in ids if i not in ("", '""')]
        assert ids
        for i in ids:
            assert i not in proc.stdout and i not in table.stdout
