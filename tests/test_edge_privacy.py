"""Stay pseudonyms at the gateway boundary (edge_agent/privacy.py; docs/ARCHITECTURE.md,
"Pseudonymous stays": no names or record numbers leave the gateway).

A hospital monitor sends the medical record number in PID-3 and the name in PID-5. Real
parts: simulator-built HL7 frames with those fields set, the real gateway and decoder, a
real Mosquitto with a subscriber capturing every payload, the real SQLite store file.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.messages import parse_message
from contracts.mllp import frame
from contracts.timeutil import hl7_ts
from contracts.vitals import VITAL_NAMES
from edge_agent.config import ConfigError, load_config
from edge_agent.decoder import MllpDecoder
from edge_agent.gateway import Gateway
from edge_agent.logs import JsonLines
from edge_agent.privacy import SECRET_FILE_NAME, stay_pseudonym
from firmware_sim.hl7 import Observation, build_oru
from tests.support.broker import Subscriber

GW = "ward-priv"
MRN = "MRN12345678"
NAME = "SMITHSON^ALICIA^Q"
NAME_PARTS = ("SMITHSON", "ALICIA")
ADMIT = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
PSEUDONYM = re.compile(r"^st-[0-9a-f]{16}$")


def hospital_frame(
    seq: int, minutes: int, *, mrn: str = MRN, admit: datetime = ADMIT, birth: str | None = None
) -> bytes:
    """What a hospital monitor sends: the simulator's ORU^R01 with an MRN in PID-3 and
    the patient's name in PID-5 (`birth`: a PID-7 to put instead of the real one)."""
    obs = Observation(
        monitor_id="MON-9",
        seq=seq,
        bed="bed-1",
        stay_id="placeholder",
        obs_time=admit + timedelta(hours=2, minutes=minutes),
        values={n: 70.0 + i for i, n in enumerate(VITAL_NAMES)},
        birth_date=datetime(1950, 2, 27).date(),
        sex="F",
        icu_admit=admit,
        hospital_admit=admit - timedelta(hours=20),
    )
    msg = build_oru(obs)
    pid = next(s for s in msg.split("\r") if s.startswith("PID|"))
    fields = pid.split("|")
    fields[3] = f"{mrn}^^^HOSP^MR"
    fields[5] = NAME
    if birth is not None:
        fields[7] = birth
    return frame(msg.replace(pid, "|".join(fields)))


def frames(first_seq: int, hours: int, start: int = 0) -> bytes:
    """Readings every 20 minutes for `hours` hours from minute `start` (admission + 2 h),
    plus one in the next hour: `hours` steps close."""
    return b"".join(hospital_frame(first_seq + k, start + 20 * k) for k in range(hours * 3 + 1))


def toml(folder: Path, port: int, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "gw.toml"
    p.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{folder / "store" / "gw.sqlite"}"\n'
        f'[[beds]]\nid = "bed-1"\nsource = {{ type = "serial", port = "/dev/null-not-a-port" }}\n'
        f"[mqtt]\nport = {port}\n{extra}"
    )
    return p


# --- the pseudonym itself (pure logic) --------------------------------------------------
def test_pseudonym_is_keyed_stable_and_changes_with_the_admission():
    a = stay_pseudonym(b"k" * 32, MRN, ADMIT)
    assert PSEUDONYM.match(a) and MRN not in a
    assert a == stay_pseudonym(b"k" * 32, MRN, ADMIT)
    assert a == stay_pseudonym(b"k" * 32, MRN, hl7_ts(ADMIT))  # PV1-44 as sent
    assert a != stay_pseudonym(b"j" * 32, MRN, ADMIT)  # another site
    assert a != stay_pseudonym(b"k" * 32, MRN, ADMIT + timedelta(days=3))  # readmission
    assert a != stay_pseudonym(b"k" * 32, MRN, None)
    assert stay_pseudonym(b"k" * 32, MRN, None) == stay_pseudonym(b"k" * 32, MRN, "")


def test_secret_from_env_override_and_a_bad_secret_is_named_but_not_echoed(tmp_path, monkeypatch):
    conf = toml(tmp_path, 1883)
    monkeypatch.setenv("VIGIL_EDGE__PRIVACY__STAY_SECRET", "env-secret-0123456789")
    s = load_config(conf)
    assert s.privacy.stay_secret.get_secret_value() == "env-secret-0123456789"
    assert "env-secret" not in repr(s)
    monkeypatch.setenv("VIGIL_EDGE__PRIVACY__STAY_SECRET", "short-pw")
    with pytest.raises(ConfigError, match="at least 16") as e:
        load_config(conf)
    assert "short-pw" not in str(e.value)
    monkeypatch.delenv("VIGIL_EDGE__PRIVACY__STAY_SECRET")
    missing = tmp_path / "nope"
    bad = toml(tmp_path, 1883, f'[privacy]\nstay_secret_file = "{missing}"\n')
    with pytest.raises(ConfigError, match="stay_secret_file .*nope does not exist"):
        load_config(bad)


# --- the decoder's log lines ------------------------------------------------------------
def test_bad_frames_are_logged_without_pid_contents(caplog):
    caplog.set_level(logging.DEBUG)
    dec = MllpDecoder(source="bed-1")
    data = (
        hospital_frame(1, 0, mrn=MRN + "X" * 70)  # a long PID-3: used (pseudonymised)
        + hospital_frame(2, 1, birth="19A00227")  # a garbled birth date: set aside
        + hospital_frame(3, 2).replace(b"MR|", b"MR\xff|")  # not UTF-8: refused (AE)
        + hospital_frame(4, 3).replace(hl7_ts(ADMIT).encode(), b"20260399060000.000+0000")
    )
    got = dec.feed_frames(data)
    assert [d.reason for d in got] == ["", "", "bad_encoding", ""]
    assert b"MSA|AE|" in got[2].ack and all(b"MSA|AA|" in d.ack for d in got[:2] + got[3:])
    assert got[1].readings[0].static["Age"] is None  # unknown, not guessed
    assert got[3].readings[0].icu_admit is None
    assert dict(dec.stats.bad) == {"bad_encoding": 1}
    # (besides the device row, a PCD-01 `container` OBX, of each message read)
    assert dict(dec.stats.set_aside) == {"bad_birth_date": 1, "bad_time": 1, "container": 3}
    text = "\n".join(r.getMessage() for r in caplog.records)
    text += "\n".join(d.ack.decode() for d in got)  # the ACKs' ERR texts too
    assert "PID-7" in text and "PV1-44" in text  # says which field
    for secret in (MRN, "19A00227", "1950", "20260399", *NAME_PARTS):
        assert secret not in text


# --- the running gateway ----------------------------------------------------------------
def captured_stays(sub: Subscriber) -> set[str]:
    out = set()
    for _, payload, _ in sub.messages:
        m = parse_message(payload)
        if hasattr(m, "stay"):
            out.add(m.stay)
        for b in getattr(m, "beds", None) or []:
            if b.stay != "-":
                out.add(b.stay)
    return out


def run_gateway(conf: Path, data: bytes, sub: Subscriber, n_vitals: int) -> str:
    """Feed `data` to a real gateway until `n_vitals` vitals messages in all reached the
    subscriber; returns the pseudonym the gateway gives the MRN at ADMIT."""
    gw = Gateway(load_config(conf))
    gw.start(sources=False)
    try:
        gw.process_bytes("bed-1", data)
        got = sub.wait_for(n_vitals, 20, "/vitals")
        assert len(got) >= n_vitals, f"{len(got)} vitals of {n_vitals}"
        assert gw.publisher.wait_idle(10)
        return gw.stay_pseudonym(MRN, ADMIT)
    finally:
        gw.stop()


def test_mrn_and_name_never_leave_the_gateway_and_the_pseudonym_survives_restart(
    broker, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    json_lines = JsonLines()
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    conf = toml(tmp_path / "gw", broker.port)
    try:
        # a bad frame among the good ones (a byte that is not UTF-8, a birth date that is
        # no date): its log lines must not echo PID either
        bad = hospital_frame(99, 5, birth="19500231").replace(b"MR|", b"MR\xff|")
        first = run_gateway(conf, bad + frames(1, 3), sub, 3)
        secret_file = tmp_path / "gw" / "store" / SECRET_FILE_NAME
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text().strip().encode()
        assert first == stay_pseudonym(secret, MRN, ADMIT) and PSEUDONYM.match(first)
        n_before = len(sub.messages)
        # restart: the same patient and admission, later hours
        second = run_gateway(conf, frames(100, 2, start=240), sub, 3 + 2)
        assert second == first
        assert secret_file.read_text().strip().encode() == secret  # not regenerated
        assert len(sub.messages) > n_before
    finally:
        sub.close()

    assert captured_stays(sub) == {first}  # before and after the restart
    payloads = b"\n".join(p for _, p, _ in sub.messages)
    for secret in (MRN, "12345678", *NAME_PARTS):
        assert secret.encode() not in payloads
    # the store: every row of every table, and the raw bytes of its files
    store = tmp_path / "gw" / "store"
    con = sqlite3.connect(store / "gw.sqlite")
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: con.execute(f"SELECT * FROM [{t}]").fetchall() for t in tables}  # noqa: S608
        steps = con.execute("SELECT DISTINCT stay FROM steps").fetchall()
    finally:
        con.close()
    assert steps == [(first,)]
    dumped = json.dumps(rows, default=str)
    raw = b"".join(p.read_bytes() for p in store.iterdir() if p.name != SECRET_FILE_NAME)
    for secret in (MRN, "12345678", *NAME_PARTS):
        assert secret not in dumped and secret.encode() not in raw
    # the logs, as the gateway writes them (JSON lines) and as text
    assert any("bad frame" in r.getMessage() for r in caplog.records)
    lines = "\n".join(json_lines.format(r) for r in caplog.records) + caplog.text
    for secret in (MRN, "12345678", "19500231", *NAME_PARTS):
        assert secret not in lines


def test_two_sites_with_different_secrets_give_different_pseudonyms(broker, tmp_path):
    secret_file = tmp_path / "site-b.secret"
    secret_file.write_text("site-b-secret-from-a-file-0123\n")
    conf_a = toml(
        tmp_path / "a", broker.port, '[privacy]\nstay_secret = "site-a-secret-0123456789"\n'
    )
    conf_b = toml(tmp_path / "b", broker.port, f'[privacy]\nstay_secret_file = "{secret_file}"\n')
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    try:
        a = run_gateway(conf_a, frames(1, 2), sub, 2)
        stays_a = captured_stays(sub)
        b = run_gateway(conf_b, frames(1, 2), sub, 4)
        stays_b = captured_stays(sub) - stays_a
    finally:
        sub.close()
    assert a == stay_pseudonym(b"site-a-secret-0123456789", MRN, ADMIT)
    assert b == stay_pseudonym(b"site-b-secret-from-a-file-0123", MRN, ADMIT)
    assert a != b and stays_a == {a} and stays_b == {b}
    # a configured secret is used as is: nothing generated beside the store
    assert not (tmp_path / "a" / "store" / SECRET_FILE_NAME).exists()
    assert not (tmp_path / "b" / "store" / SECRET_FILE_NAME).exists()


def test_hospital_outcomes_map_to_the_published_stay_and_import_at_the_hub(broker, tmp_path):
    """MRN + ICU admission in the hospital's records -> the stay id the gateway published
    -> `vigil hub labels import` stores the outcome on that stay. No MRN in the output."""
    from sqlalchemy import select
    from typer.testing import CliRunner

    from cloud_hub.labels import import_outcomes
    from cloud_hub.store.models import OutcomeLabel
    from tests.support.hub import fresh_engine
    from vigil_cli.main import app

    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    conf = toml(tmp_path / "gw", broker.port)
    try:
        run_gateway(conf, frames(1, 3), sub, 3)
    finally:
        sub.close()
    (published,) = captured_stays(sub)

    records = tmp_path / "outcomes.csv"
    records.write_text(
        "patient_id,icu_admit,onset_time,name\n"
        f"{MRN},{ADMIT.isoformat()},2026-03-02T10:00:00Z,SMITHSON\n"  # as the monitor sent
        f"MRN000000002,{hl7_ts(ADMIT)},,OTHER\n"  # HL7 time form; no sepsis
        f"{MRN},{ADMIT.isoformat()},2026-03-02T11:00:00Z,SMITHSON\n"  # same stay again
        f"{MRN},yesterday,2026-03-02T11:00:00Z,SMITHSON\n"
        ",2026-03-01T06:00:00Z,,\n"
        f"{MRN}9,2026-03-01T06:00:00Z,soon,\n"
    )
    out = tmp_path / "mapped.csv"
    runner = CliRunner()
    res = runner.invoke(
        app, ["edge", "pseudonymise-outcomes", str(records), "-c", str(conf), "-o", str(out)]
    )
    assert res.exit_code == 1, res.output  # bad rows listed, good rows written
    assert "wrote 2 outcome(s)" in res.output and "4 bad row(s)" in res.output
    for want in (
        "row 4: same patient_id and icu_admit as row 2",
        "row 5: icu_admit is neither ISO-8601",
        "row 6: patient_id is empty",
        "row 7: onset_time is not ISO-8601",
    ):
        assert want in res.output, res.output
    text = out.read_text()
    assert text.splitlines()[0] == "stay_id,onset_time"
    for secret in (MRN, "12345678", "MRN000000002", "SMITHSON"):
        assert secret not in text and secret not in res.output
    assert f"{published},2026-03-02T10:00:00Z" in text

    engine = fresh_engine(f"sqlite:///{tmp_path}/hub.db")
    try:
        report = import_outcomes(engine, out)
        assert (report.imported, report.errors) == (2, [])
        with engine.connect() as c:
            labels = dict(c.execute(select(OutcomeLabel.stay, OutcomeLabel.kind)).all())
    finally:
        engine.dispose()
    assert labels[published] == "onset" and sorted(labels.values()) == ["no_sepsis", "onset"]


def test_pseudonymise_outcomes_refuses_without_the_site_secret(tmp_path):
    from typer.testing import CliRunner

    from vigil_cli.main import app

    conf = toml(tmp_path / "fresh", 1883)  # a gateway that never ran: no secret yet
    records = tmp_path / "o.csv"
    records.write_text("patient_id,onset_time\nMRN1,\n")
    res = CliRunner().invoke(
        app,
        ["edge", "pseudonymise-outcomes", str(records), "-c", str(conf), "-o", str(tmp_path / "x")],
    )
    assert res.exit_code == 2 and "no stay secret at" in res.output
    assert not (tmp_path / "fresh" / "store" / SECRET_FILE_NAME).exists()  # none made up
    records.write_text("mrn,onset\nMRN1,\n")
    conf2 = toml(tmp_path / "s", 1883, '[privacy]\nstay_secret = "0123456789abcdef0123"\n')
    res = CliRunner().invoke(
        app,
        [
            "edge",
            "pseudonymise-outcomes",
            str(records),
            "-c",
            str(conf2),
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2 and "missing column(s) patient_id, onset_time" in res.output
