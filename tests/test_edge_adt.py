"""Admission from the hospital's ADT messages on the monitors' listener.

Parser: real ADT messages nobody on this project wrote (tests/samples/hl7/adt, provenance
in tests/samples/hl7/SOURCES.md) and built ones. Then a real `Gateway` with its MLLP
listener, a real Mosquitto and python-hl7's MLLP client: an A01 for bed-1's location
gives a later ORU without PV1-44/PID-7 its ICU admission (ICULOS) and age; an A02 moves
the patient to bed-2; an A03 discharges; an ADT for another ward is ACKed AA and
counted; a patient other than the admitted one is used and counted; the admission
survives a restart of the gateway on the same store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.admission import Admission
from edge_agent.pcd01 import AdtEvent, MessageError, parse_adt, parse_any, parse_message
from edge_agent.ui.gateway_port import ward_view
from edge_agent.ui.screens.bedside import bedside_title
from tests.samples import HL7_DIR
from tests.support.broker import Subscriber
from tests.support.mllp import counters, listen, msa, running, send
from tests.support.waiting import wait_until

ADT_DIR = HL7_DIR / "adt"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ADMIT = T0 - timedelta(hours=5)  # PV1-44 of the A01: the reading at T0 is in ICU hour 5
PATIENT = "MRN0042"


def adt_sample(prefix: str) -> bytes:
    (path,) = ADT_DIR.glob(f"{prefix}-*.hl7")
    return path.read_bytes()


def ts(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S+0000")


_ctl = iter(range(1, 10_000))


def adt(
    event: str,
    location: str,
    *,
    patient: str = PATIENT,
    at: datetime = T0 - timedelta(hours=5),
    prior: str = "",
    admit: datetime | None = ADMIT,
    discharge: datetime | None = None,
    birth: str = "19560310",
    sex: str = "F",
    structure: bool = True,
) -> bytes:
    """An ADT message as a hospital's ADT system sends it (v2.5)."""
    pv1 = [""] * 46
    pv1[1], pv1[2], pv1[3], pv1[6] = "1", "I", location, prior
    pv1[44] = ts(admit) if admit else ""
    pv1[45] = ts(discharge) if discharge else ""
    mtype = f"ADT^{event}^ADT_A01" if structure else f"ADT^{event}"
    segs = [
        f"MSH|^~\\&|HIS|GOOD HOSP|VIGIL|ICU|{ts(at)}||{mtype}|ADT{next(_ctl)}|P|2.5",
        f"EVN|{event}|{ts(at)}",
        f"PID|1||{patient}^^^GOOD HOSP^MR||Everywoman^Eve||{birth}|{sex}",
        "PV1|" + "|".join(pv1[1:]).rstrip("|"),
    ]
    return ("\r".join(segs) + "\r").encode()


def oru(
    location: str, at: datetime, *, patient: str = PATIENT, hr: float = 72.0, admit: str = ""
) -> bytes:
    """A monitor's ORU^R01 that says nothing of the patient but PID-3 (no PV1-44, no
    PID-7/PID-8): what many monitors send."""
    segs = [
        f"MSH|^~\\&|MON-7|ICU|VIGIL|HOSP|{ts(at)}||ORU^R01^ORU_R01|M{next(_ctl)}|P|2.6",
        f"PID|1||{patient}^^^GOOD HOSP^MR",
        f"PV1|1|I|{location}" + ("|" * 41 + admit if admit else ""),
        f"OBR|1|||182777000^monitoring of patient^SCT|||{ts(at)}",
        f"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{hr:g}|/min^/min^UCUM|||||R",
        "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|97|%^%^UCUM|||||R",
    ]
    return ("\r".join(segs) + "\r").encode()


# -- the parser ----------------------------------------------------------------------------


def test_real_a01_newborn_age_from_a_date_time_birth_bed_component_and_admit_time() -> None:
    ev = parse_any(adt_sample("a1"))
    assert isinstance(ev, AdtEvent)
    assert (ev.event, ev.meaning, ev.message_type, ev.version) == ("A01", "admit", "ADT^A01", "2.4")
    assert ev.control_id == "Q1663235323T1667361990X221284A1117"
    assert ev.patient_id == "10769848"  # PID-3.1, in memory only
    assert ev.age == 0.0  # born 2024-11-04 14:40 (PID-7 a date-time), admitted that day
    assert ev.sex is None  # PID-8 "2" is not an HL7 table 0001 code: unknown, not guessed
    assert ev.location.startswith("RNJ RLH 6Z^a Side 28^28cb^") and ev.bed_label == "28cb"
    assert ev.prior_location == ""  # `""^""^""^""^^^""`: HL7 nulls are no location
    # no offset: read in the site's zone (UTC by default)
    assert ev.event_time == datetime(2024, 11, 4, 14, 40, tzinfo=UTC)  # EVN-2
    assert ev.admit_time == datetime(2024, 11, 4, 14, 40, tzinfo=UTC)  # PV1-44
    assert ev.discharge_time is None and ev.set_aside == ()


def test_real_a02_names_the_prior_location_in_pv1_6() -> None:
    ev = parse_adt(adt_sample("a2"))
    assert (ev.event, ev.meaning) == ("A02", "transfer")
    assert (ev.bed_label, ev.prior_bed_label) == ("28", "28")
    assert ev.location.split("^")[0] == "RNJ RLH 6Z" and ev.prior_location.split("^")[0] == (
        "RNJ RLH 6F"
    )
    assert ev.age == 33.0 and ev.admit_time == datetime(2024, 11, 4, 13, 48, tzinfo=UTC)
    assert ev.event_time == datetime(2024, 11, 4, 15, 50, tzinfo=UTC)


def test_real_a03_discharge_time_in_pv1_45() -> None:
    ev = parse_adt(adt_sample("a3"))
    assert (ev.event, ev.bed_label, ev.patient_id) == ("A03", "26", "10769845")
    assert ev.discharge_time == datetime(2024, 11, 5, 10, 29, tzinfo=UTC)
    assert ev.admit_time == datetime(2024, 11, 4, 13, 48, tzinfo=UTC)


def test_real_v231_a01_patient_id_from_the_first_repetition_that_has_one() -> None:
    ev = parse_adt(adt_sample("a4"))
    assert (ev.version, ev.message_type) == ("2.3.1", "ADT^A01")
    assert ev.patient_id == "306563"  # the first repetition of PID-3 is the HL7 null ""
    assert ev.age == 81.0 and ev.sex == 1.0  # born 1929-04-05, event 2010-07-16; M
    assert ev.location == "" and ev.bed_label == ""  # an outpatient visit: no bed


def test_built_adt_every_event_with_or_without_structure_id_and_evn_6_first() -> None:
    for event in ("A01", "A02", "A03", "A04", "A08", "A11", "A12", "A13"):
        for structure in (True, False):
            ev = parse_adt(adt(event, "ICU^^bed-1", structure=structure))
            assert ev.event == event and ev.message_type == f"ADT^{event}"
            assert (ev.location, ev.bed_label) == ("ICU^^bed-1", "bed-1")
            assert ev.age == 69.0 and ev.sex == 0.0  # born 1956-03-10, event 2026-03-01
    # EVN-6 (when it happened) before EVN-2 (when it was recorded)
    body = adt("A02", "ICU^^bed-2", at=T0).replace(
        f"EVN|A02|{ts(T0)}".encode(),
        f"EVN|A02|{ts(T0)}||||{ts(T0 - timedelta(minutes=20))}".encode(),
    )
    assert parse_adt(body).event_time == T0 - timedelta(minutes=20)
    # an unreadable PV1-44 is set aside, the rest used
    ev = parse_adt(adt("A01", "ICU^^bed-1", at=T0).replace(ts(ADMIT).encode(), b"2026-02-30"))
    assert ev.admit_time is None and [a.segment for a in ev.set_aside] == ["PV1-44"]


@pytest.mark.parametrize(
    ("body", "reason", "ack", "err"),
    [
        (adt("A05", "ICU^^bed-1"), "unsupported_type", "AR", "201"),  # pre-admit: not read
        (
            adt("A01", "ICU^^bed-1").replace(b"|2.5\r", b"|2.8\r"),
            "unsupported_version",
            "AR",
            "203",
        ),
        (adt("A01", "ICU^^bed-1").split(b"PV1|")[0], "missing_segment", "AE", "100"),
        (adt("A01", "ICU^^bed-1", patient=""), "missing_field", "AE", "101"),
        (
            adt("A01", "ICU^^bed-1").replace(ts(T0 - timedelta(hours=5)).encode(), b"x", 1),
            "bad_time",
            "AE",
            "102",
        ),
    ],
    ids=["a05", "v2.8", "no-pv1", "no-pid3", "bad-msh7"],
)
def test_unusable_adt_same_error_rules_as_oru(body: bytes, reason: str, ack: str, err: str) -> None:
    with pytest.raises(MessageError) as e:
        parse_any(body)
    assert (e.value.reason, e.value.ack_code, e.value.hl7_error[0]) == (reason, ack, err)
    assert PATIENT not in str(e.value) and "Everywoman" not in str(e.value)


def test_parse_message_still_reads_results_only() -> None:
    with pytest.raises(MessageError) as e:
        parse_message(adt("A01", "ICU^^bed-1"))
    assert (e.value.reason, e.value.ack_code) == ("unsupported_type", "AR")
    assert parse_any(oru("ICU^^bed-1", T0)).observations  # an ORU through parse_any


# -- through a real listener, gateway and broker ------------------------------------------

BED1, BED2 = "ICU^^bed-1", "ICU^^bed-2"


def icu_beds(port: int) -> list:
    return [listen("bed-1", port, location=BED1), listen("bed-2", port, location=BED2)]


def test_a01_then_oru_without_admission_or_age_takes_them_from_the_a01(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    gw_id = "gw-adt-a"
    sub = Subscriber(broker.port, f"vigil/v1/gw/{gw_id}/#")
    try:
        with running(tmp_path, broker, icu_beds(port), gw_id=gw_id) as gw:
            port = gw.listeners[0].port  # the one it bound
            (ack,) = send(port, adt("A01", BED1, structure=False))
            assert msa(ack) == "AA" and b"ACK^A01^ACK" in ack
            adm = gw.admission("bed-1")
            assert adm is not None and adm.icu_admit == ADMIT and adm.age == 69.0
            assert adm.sex == 0.0 and adm.since == T0 - timedelta(hours=5)
            assert adm.stay == gw.stay_pseudonym(PATIENT, ADMIT) and PATIENT not in adm.stay
            assert gw.admission("bed-2") is None
            # Two ORUs an hour apart: the second closes the step of the first.
            acks = send(port, oru(BED1, T0), oru(BED1, T0 + timedelta(hours=1), hr=80))
            assert [msa(a) for a in acks] == ["AA", "AA"]
            step = gw.beds["bed-1"].windows.last_step
            assert step is not None and step.stay == adm.stay
            assert step.static["Age"] == 69.0 and step.static["Gender"] == 0.0
            assert step.iculos_hours == 5.0  # hour 5 since the A01's ICU admission
            assert step.static["HospAdmTime"] == 0.0  # admitted to the ICU from outside
            got = sub.wait_for(1, 20, "/bed/bed-1/vitals")
            vitals = json.loads(got[0][1])
            assert vitals["iculos_hours"] == 5.0 and vitals["static"]["Age"] == 69.0
            assert vitals["stay"] == adm.stay
            snap = gw.state.snapshot().bed("bed-1")
            assert snap.age == 69.0 and not snap.age_unknown
            events = [e.text for e in gw.state.snapshot().events if e.kind == "admission"]
            assert any("A01 (admit)" in t and adm.stay in t for t in events)
            assert all(PATIENT not in e.text for e in gw.state.snapshot().events)
            c = counters(gw)
            assert c["adt_A01"] == 1 and c["ack_AA"] == 3 and c.get("patient_mismatch", 0) == 0
    finally:
        sub.close()


def test_a02_moves_the_patient_to_bed_2_and_a03_discharges(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port)) as gw:
        port = gw.listeners[0].port  # the one it bound
        send(port, adt("A01", BED1))
        stay = gw.admission("bed-1").stay
        (ack,) = send(port, adt("A02", BED2, prior=BED1, at=T0 + timedelta(minutes=30)))
        assert msa(ack) == "AA"
        assert gw.admission("bed-1") is None  # PV1-6's bed: discharged
        moved = gw.admission("bed-2")
        assert moved is not None and moved.stay == stay  # the ICU stay goes on
        assert moved.icu_admit == ADMIT and moved.event == "A02"
        assert moved.since == T0 + timedelta(minutes=30)
        # the monitor of bed-2 now scores the same stay, ICU hour 6
        send(port, oru(BED2, T0 + timedelta(hours=1)), oru(BED2, T0 + timedelta(hours=2)))
        step = gw.beds["bed-2"].windows.last_step
        assert step.stay == stay and step.iculos_hours == 6.0 and step.static["Age"] == 69.0
        # discharge from bed-2 (PV1-3 is where the patient was)
        (ack,) = send(port, adt("A03", BED2, at=T0 + timedelta(hours=3)))
        assert msa(ack) == "AA" and gw.admission("bed-2") is None
        assert gw.store.rows("admissions") == []
        # the next reading starts a new history, as without ADT: age unknown again
        send(port, oru(BED2, T0 + timedelta(hours=4)))
        snap = gw.state.snapshot().bed("bed-2")
        assert snap.stay == gw.stay_pseudonym(PATIENT, None) and snap.age_unknown
        assert "age unknown" in bedside_title(ward_view(gw.state.snapshot()).bed("bed-2"))
        c = counters(gw)
        assert (c["adt_A01"], c["adt_A02"], c["adt_A03"]) == (1, 1, 1)


def test_adt_for_another_ward_is_acked_aa_counted_and_ignored(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port)) as gw:
        port = gw.listeners[0].port  # the one it bound
        acks = send(
            port,
            adt("A01", "CARDIO^12^B"),  # another ward
            adt_sample("a1"),  # real messages of another hospital's wards
            adt_sample("a2"),
            adt_sample("a4"),  # no location at all
        )
        assert [msa(a) for a in acks] == ["AA"] * 4
        assert all(b"ERR|" not in a for a in acks)
        c = counters(gw)
        assert c["adt_other_location"] == 4 and c["unknown_bed"] == 0
        assert gw.admission("bed-1") is None and gw.admission("bed-2") is None
        assert gw.store.rows("admissions") == []
        # an unsupported ADT event is refused like any other unsupported message
        (ack,) = send(port, adt("A05", BED1))
        assert msa(ack) == "AR" and b"201^Unsupported event code" in ack


def test_another_patient_on_the_monitor_is_used_but_counted(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port)) as gw:
        port = gw.listeners[0].port  # the one it bound
        send(port, adt("A01", BED1))
        acks = send(
            port,
            oru(BED1, T0, patient="OTHER7"),
            oru(BED1, T0 + timedelta(seconds=5), patient="OTHER7"),
        )
        assert [msa(a) for a in acks] == ["AA", "AA"]
        snap = gw.state.snapshot()
        bed = snap.bed("bed-1")
        assert bed.stay == gw.stay_pseudonym("OTHER7", None)  # the monitor's patient
        assert bed.vitals["HR"].value == 72.0 and bed.age_unknown  # not the admitted age
        assert counters(gw)["patient_mismatch"] == 2
        mism = [e for e in snap.events if "differs from the admitted" in e.text]
        assert len(mism) == 1 and mism[0].bed == "bed-1"  # one event, every reading counted
        assert all("OTHER7" not in e.text and PATIENT not in e.text for e in snap.events)
        # a discharge for a patient not admitted here does not end the admission
        send(port, adt("A03", BED1, patient="OTHER7"))
        assert gw.admission("bed-1") is not None


def test_the_admission_survives_a_gateway_restart_on_the_same_store(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port)) as gw:
        port = gw.listeners[0].port  # the one it bound
        send(port, adt("A01", BED1))
        before = gw.admission("bed-1")
        (row,) = gw.store.rows("admissions")
        assert PATIENT not in json.dumps(row)  # pseudonyms and times only
    port2 = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port2)) as gw:  # same store in tmp_path
        port2 = gw.listeners[0].port  # the one it bound
        assert gw.admission("bed-1") == before
        send(port2, oru(BED1, T0), oru(BED1, T0 + timedelta(hours=1)))
        step = gw.beds["bed-1"].windows.last_step
        assert step.stay == before.stay and step.iculos_hours == 5.0
        assert step.static["Age"] == 69.0
        assert wait_until(lambda: gw.state.snapshot().bed("bed-1").age == 69.0, 5)


def test_admission_row_round_trip() -> None:
    adm = Admission("b", "st-1", "st-2", ADMIT, None, 69.0, None, T0, "A01")
    assert Admission.from_row(adm.row()) == adm
    assert "age 69" in adm.describe() and "sex unknown" in adm.describe()


def test_without_adt_or_pv1_44_the_first_reading_is_the_icu_admission(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    with running(tmp_path, broker, icu_beds(port)) as gw:
        port = gw.listeners[0].port  # the one it bound
        hours = [T0 + timedelta(minutes=10), T0 + timedelta(hours=1, minutes=10)]
        send(port, *(oru(BED1, t) for t in [*hours, T0 + timedelta(hours=2, minutes=10)]))
        step = gw.beds["bed-1"].windows.last_step
        assert step.stay == gw.stay_pseudonym(PATIENT, None)  # the stay id as before
        assert step.start == hours[1] and step.iculos_hours == 1.0  # not hours since 1970
        assert step.static["Age"] is None  # unknown: the bundle's fill value is used
        assert gw.state.snapshot().bed("bed-1").age_unknown
