"""No patient names or medical record numbers leave the gateway (docs/ARCHITECTURE.md,
"Pseudonymous stays").

What leaves a gateway is exactly the contract messages (`contracts/messages.py`):
- no message model, nested ones included, has a field for a name, a record number,
  a birth date or contact details, and none accepts such a field smuggled in
  (`extra="forbid"`), whether built in code or parsed from a received payload;
- payloads built from a real PhysioNet 2019 stay carry only the pseudonymous stay id,
  bed id and gateway id as identifiers, and no string from the monitor's patient
  identification (a name and an MRN as an HL7 PID segment would carry them).

- the patient's name and birth date that a monitor sends in HL7 PID stop at the
  gateway's decoder (real simulator frames, real `edge_agent.decoder`); PID-3 (a record
  number on a hospital monitor) leaves only as its keyed pseudonym
  (`edge_agent.privacy`; end to end with an MRN: tests/test_edge_privacy.py).

- a short run of the real gateway over TLS with its enrolled certificate: every
  payload the hub receives is captured and checked (no name, no birth date,
  the stay id is the gateway's pseudonym, never PID-3, valid contract message).

Known gap, not closable by a schema: `Alarm.note` and `Alarm.reason` are free text a
nurse may type, and `Alarm.by` names the member of staff (not the patient). A note
can still carry a patient's name if someone types one; the UI should say so.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from contracts import messages
from contracts.news2 import news2_from_row
from contracts.vitals import VITAL_NAMES
from tests.support import data as shared

FORBIDDEN = re.compile(
    r"(^|_)(name|first|last|given|family|surname|mrn|medical|record|patient|pid|"
    r"dob|birth|address|street|zip|postcode|phone|email|ssn|nhs|insurance)(_|$)",
    re.I,
)
# Fields whose name matches but whose content is not about a patient, and why.
NOT_PATIENT = {
    ("ModelRef", "name"): "the model's name from its signed manifest",
    ("ModelState", "name"): "the model's name from its signed manifest",
}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # contracts.topics.check_id


def _models() -> dict[str, type[BaseModel]]:
    """Every model reachable from the message union, by class name."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type] = [
        messages.Status,
        messages.Vitals,
        messages.Risk,
        messages.Alarm,
        messages.ModelState,
        messages.Command,
        messages.ModelRelease,
    ]
    while todo:
        model = todo.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for f in model.model_fields.values():
            for t in _types(f.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    return found


def _types(annotation) -> list:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out = []
    for a in args:
        out.extend(_types(a))
    return out


def test_no_message_has_a_field_for_patient_identity():
    models = _models()
    assert {"Vitals", "Risk", "Alarm", "BedSummary", "ModelRef", "News2Out"} <= set(models)
    offenders = []
    for cls_name, model in models.items():
        for field, info in model.model_fields.items():
            for label in {field, info.alias or field}:
                if FORBIDDEN.search(label) and (cls_name, field) not in NOT_PATIENT:
                    offenders.append(f"{cls_name}.{label}")
    assert offenders == []


@pytest.mark.parametrize("extra", ["patient_name", "mrn", "name", "dob", "patient_id"])
def test_messages_refuse_identity_fields_added_in_code_or_on_the_wire(extra):
    base = _risk("icu-1", "bed-1", "p000001", hour=3, row={"HR": 88.0})
    with pytest.raises(ValidationError, match=extra):
        messages.Risk(**base.model_dump(by_alias=False), **{extra: "DOE^JOHN"})
    payload = json.loads(base.to_json())
    payload[extra] = "DOE^JOHN"
    with pytest.raises(messages.MessageError, match=extra):
        messages.parse_message(json.dumps(payload).encode())


def _physionet_stay(index: int = 0) -> tuple[str, list[dict[str, str]]]:
    archive = shared.physionet()
    with tarfile.open(archive) as tf:
        seen = 0
        for member in tf:
            if member.isfile() and member.name.endswith(".psv"):
                if seen == index:
                    text = tf.extractfile(member).read().decode()
                    stay = member.name.rsplit("/", 1)[-1].removesuffix(".psv")
                    return stay, list(csv.DictReader(io.StringIO(text), delimiter="|"))
                seen += 1
    raise AssertionError("no stay in the archive")


def _num(v: str) -> float | None:
    return None if v in ("", "NaN") else float(v)


def _risk(gw: str, bed: str, stay: str, *, hour: int, row: dict) -> messages.Risk:
    n = news2_from_row({k: v for k, v in row.items() if v is not None})
    return messages.Risk(
        gw=gw,
        bed=bed,
        stay=stay,
        risk=0.12,
        threshold=0.5,
        alarm_level="none",
        model=messages.ModelRef(name="vigil-gru", version="1.0.0"),
        news2=messages.News2Out(
            total=n.total, risk=n.risk, subscores=n.subscores, missing=list(n.missing)
        ),
        observed=1,
        window_end=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hour),
    )


def test_payloads_from_a_real_stay_carry_only_pseudonymous_ids(tmp_path: Path, broker) -> None:
    """A real gateway (edge_agent.gateway, started, on a real Mosquitto) reads 12 hours of
    a real PhysioNet stay as the simulated monitor frames it, with what a hospital monitor
    also sends about the patient (PID-3 record number, PID-5 name, PID-7 birth date).
    Every payload it publishes (vitals, risk, alarm, status) is captured: none carries
    the identity, ids are pseudonymous, and the free text is enums, times and units."""
    from edge_agent.gateway import Gateway
    from firmware_sim import hl7
    from tests.support.broker import Subscriber
    from tests.support.edge import edge_settings
    from tests.support.waiting import wait_until

    stay, rows = _physionet_stay()
    assert re.fullmatch(r"p\d{6}", stay)  # PhysioNet's own pseudonymous stay id
    admit = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    birth = hl7.birth_date_for(_num(rows[0]["Age"]), admit)
    pid = {"mrn": "MRN-4471923", "name": "DOE^JANE^Q", "family": "DOE", "given": "JANE"}
    if birth:
        pid["dob"] = birth.strftime("%Y%m%d")
    frames = []
    seq = 0
    for h, row in enumerate([*rows[:12], rows[11]]):  # a reading in hour 12 closes hour 11
        for minute in (0, 30):
            seq += 1
            obs = hl7.Observation(
                monitor_id="MON-7",
                seq=seq,
                bed="bed-07",
                stay_id=pid["mrn"],  # a hospital monitor's PID-3: the record number
                obs_time=admit + timedelta(hours=h, minutes=minute),
                values={v: _num(row[v]) for v in VITAL_NAMES},
                birth_date=birth,
                sex="F" if row["Gender"] == "0" else "M",
                icu_admit=admit,
            )
            message = hl7.build_oru(obs)
            line = next(x for x in message.split("\r") if x.startswith("PID|"))
            fields = line.split("|")
            fields[5] = pid["name"]
            message = message.replace(line, "|".join(fields))
            assert pid["mrn"] in message and pid["name"] in message
            frames.append(hl7.frame(message))

    gw_id, bed = "icu-north-3", "bed-07"
    sub = Subscriber(broker.port, "vigil/v1/gw/#")
    gw = Gateway(edge_settings(tmp_path, port=broker.port, gateway_id=gw_id, beds=[bed]))
    gw.start(sources=False)
    try:
        assert gw.process_bytes(bed, b"".join(frames)) == len(frames)
        wait_until(lambda: len(sub.wait_for(12, 0.1, "/vitals")) >= 12, 20, "12 vitals steps")
        wait_until(lambda: len(sub.wait_for(12, 0.1, "/risk")) >= 12, 20, "12 risk messages")
    finally:
        gw.stop()
        sub.client.loop_stop()
    with sub.lock:
        payloads = [(t, p) for t, p, _ in sub.messages]
    kinds = {t.rsplit("/", 1)[1] for t, _ in payloads}
    assert {"vitals", "risk", "status"} <= kinds, kinds
    pseudonym = gw.stay_pseudonym(pid["mrn"], admit)
    for topic, raw in payloads:
        text = raw.decode()
        assert topic.startswith(f"vigil/v1/gw/{gw_id}/")
        for secret in pid.values():
            assert secret not in text and secret not in topic, (secret, topic)
        msg = json.loads(text)
        messages.parse_message(raw)  # the hub would store it: every key a known field
        if "stay" in msg:
            assert msg["stay"] == pseudonym
        for ident in ("gw", "bed", "stay"):
            if ident in msg:
                assert ID_PATTERN.match(msg[ident]), (ident, msg[ident])
        uuid.UUID(msg["event_id"])
        identifiers = {gw_id, bed, pseudonym, msg["event_id"]}
        for s in (x for x in _strings(msg) if x not in identifiers):
            # what is left: enums, timestamps, units, versions, the model's name
            assert re.fullmatch(r"[a-z0-9 ._:/+()-]*|\d{4}-\d\d-\d\dT[\d:.]+Z", s, re.I), s


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_monitor_patient_name_and_birth_date_stop_at_the_gateway_decoder():
    """Real parts: a PhysioNet stay as the simulated monitor frames it (firmware_sim),
    with the patient identification a hospital monitor also sends (PID-5 name, PID-7
    birth date), decoded by the gateway's own decoder (edge_agent.decoder): neither the
    name nor the birth date reaches the reading the gateway publishes from.

    PID-3 (the simulator's id here, a record number on a hospital monitor) stays in the
    decoded reading in memory only; what is published is its keyed pseudonym.
    """
    from edge_agent import decoder
    from firmware_sim import hl7

    stay, rows = _physionet_stay(1)
    admit = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    age = _num(rows[0]["Age"])
    birth = hl7.birth_date_for(age, admit)
    name, dob = "DOE^JANE^Q", birth.strftime("%Y%m%d") if birth else ""
    from edge_agent import privacy

    site_secret = b"phi-test-site-secret-0123456789"
    dec = decoder.MllpDecoder(source="phi-test")
    readings = []
    for i, row in enumerate(rows[:6]):
        obs = hl7.Observation(
            monitor_id="MON-7",
            seq=i + 1,
            bed="bed-07",
            stay_id=f"pn-{stay}",
            obs_time=admit + timedelta(hours=i),
            values={v: _num(row[v]) for v in VITAL_NAMES},
            birth_date=birth,
            sex="F" if row["Gender"] == "0" else "M",
            icu_admit=admit,
        )
        message = hl7.build_oru(obs)
        # what a hospital monitor adds: the patient's name in PID-5
        pid = next(s for s in message.split("\r") if s.startswith("PID|"))
        fields = pid.split("|")
        fields[5] = name
        message = message.replace(pid, "|".join(fields))
        assert name in message and (not dob or dob in message)
        readings += dec.feed(hl7.frame(message))
    assert len(readings) == 6, dec.stats
    for r in readings:
        published = messages.Vitals(
            gw="icu-north-3",
            bed=r.bed,
            stay=privacy.stay_pseudonym(site_secret, r.stay, r.icu_admit),
            step_start=r.obs_time,
            step_seconds=3600,
            iculos_hours=r.static["ICULOS"] or 0.0,
            values=r.values,
            static={k: r.static[k] for k in ("Age", "Gender", "HospAdmTime")},
        ).to_json()
        text = json.dumps(vars(r), default=str) + published.decode()
        for part in ("DOE", "JANE", *([dob] if dob else [])):
            assert part not in text
        assert r.stay == f"pn-{stay}"  # in memory only
        assert stay not in published.decode()
        assert json.loads(published)["stay"] == privacy.stay_pseudonym(
            site_secret, f"pn-{stay}", admit
        )
        if age is not None:
            assert r.static["Age"] == pytest.approx(min(age, 100), abs=1)


def test_a_running_gateway_over_tls_publishes_no_patient_identity(tmp_path):
    """A short run of the real gateway (edge_agent.gateway) reading a real PhysioNet stay
    framed as HL7 by the simulator, with the patient's name and birth date in PID, over a
    TCP monitor line; connected with its enrolled certificate to the shipped broker.
    Every payload the hub receives is captured and checked."""
    import shutil
    import socket
    import threading
    import time

    from cloud_hub.ca import CertificateAuthority
    from contracts import topics
    from edge_agent import config as config_mod
    from edge_agent import gateway as gateway_mod
    from firmware_sim import hl7
    from tests.support.broker import MOSQUITTO
    from tests.support.tls import Broker, Client, broker_folder

    if not shutil.which(MOSQUITTO) and not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    stay, rows = _physionet_stay(2)
    rows = rows[:8]
    name, admit = "DOE^JANE^Q", datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    birth = hl7.birth_date_for(_num(rows[0]["Age"]), admit)
    dob = birth.strftime("%Y%m%d") if birth else None
    frames = []
    seq = 0
    for h, row in enumerate([*rows, rows[-1]]):  # a reading in the next hour closes the last
        for minute in (0, 20, 40):
            seq += 1
            obs = hl7.Observation(
                monitor_id="MON-7",
                seq=seq,
                bed="bed-07",
                stay_id=f"pn-{stay}",
                obs_time=admit + timedelta(hours=h, minutes=minute),
                values={v: _num(row[v]) for v in VITAL_NAMES},
                birth_date=birth,
                sex="F" if row["Gender"] == "0" else "M",
                icu_admit=admit,
            )
            msg = hl7.build_oru(obs)
            pid = next(s for s in msg.split("\r") if s.startswith("PID|"))
            fields = pid.split("|")
            fields[5] = name  # what a hospital monitor adds
            frames.append(hl7.frame(msg.replace(pid, "|".join(fields))))

    monitor = socket.socket()
    monitor.bind(("127.0.0.1", 0))
    monitor.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = monitor.accept()
        with conn:
            for f in frames:
                conn.sendall(f)
                time.sleep(0.005)
            done.wait(60)

    threading.Thread(target=serve, daemon=True).start()

    ca = CertificateAuthority(tmp_path / "pki")
    ca.init()
    ca.issue_server()
    ca.issue_hub()
    ca.enroll_gateway("gw-a")
    broker = Broker(broker_folder(), ca)
    broker.start()
    tls = ca.gateway_dir("gw-a")
    conf = tmp_path / "gateway.toml"
    conf.write_text(
        f'gateway_id = "gw-a"\nstore_path = "{tmp_path / "gw.sqlite"}"\n'
        f'[[beds]]\nid = "bed-07"\n'
        f'source = {{ type = "tcp", host = "127.0.0.1", port = {monitor.getsockname()[1]} }}\n'
        f'[mqtt]\nhost = "localhost"\nport = {broker.port}\n'
        f'[mqtt.tls]\nca = "{tls / "ca.crt"}"\ncert = "{tls / "client.crt"}"\n'
        f'key = "{tls / "client.key"}"\n'
    )
    hub = Client(broker, ca.hub_dir, client_id="phi-hub")
    gw = None
    try:
        assert hub.connect()
        hub.subscribe(f"{topics.PREFIX}/gw/gw-a/#")
        gw = gateway_mod.Gateway(config_mod.load_config(conf))
        gw.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            kinds = [topics.parse(t)["kind"] for t, _ in hub.received]
            if kinds.count("risk") >= len(rows) and kinds.count("vitals") >= len(rows):
                break
            time.sleep(0.1)
    finally:
        done.set()
        if gw is not None:
            gw.stop()
        hub.close()
        broker.stop()
        monitor.close()
        shutil.rmtree(broker.folder, ignore_errors=True)

    kinds = [topics.parse(t)["kind"] for t, _ in hub.received]
    assert kinds.count("risk") >= len(rows) and kinds.count("vitals") >= len(rows), kinds
    assert "status" in kinds  # connected over TLS with its certificate
    pseudonym = gw.stay_pseudonym(f"pn-{stay}", admit)
    for topic, payload in hub.received:
        text = payload.decode()
        for secret in ("DOE", "JANE", stay, *([dob] if dob else [])):
            assert secret not in text, (topic, secret)
        msg = messages.parse_message(payload)
        assert msg.gw == "gw-a"
        if hasattr(msg, "stay"):
            assert msg.stay == pseudonym
