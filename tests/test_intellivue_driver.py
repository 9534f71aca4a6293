"""The IntelliVue driver against the simulated monitor on a real pty (issue 16 layers 2-3):
association, polling at the configured period, validity flags withheld, a cable pull and
a reboot re-associate, release on stop, corrupted frames counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from contracts.vitals import plausible
from edge_agent.decoder import Reading
from edge_agent.intellivue import protocol as p
from edge_agent.intellivue.driver import SerialLink, Session
from firmware_sim.intellivue import IntelliVueSim
from tests.support.waiting import wait_until


class Running:
    def __init__(self, sim: IntelliVueSim, **session_kw) -> None:
        self.sim = sim
        self.readings: list[Reading] = []
        kw = {"poll_seconds": 0.1, "silence_seconds": 1.0, "retry_seconds": 0.2} | session_kw
        self.session = Session(sim.bed_label, **kw)
        self.link = SerialLink(self.session, sim.address, on_reading=self.readings.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.link.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sim.close()


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    kw = getattr(request, "param", {})
    r = Running(IntelliVueSim(bed_label="bed-3", **kw))
    try:
        yield r
    finally:
        r.close()


def test_associates_polls_and_reads_every_vital(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 5, timeout=10)
    s = running.session
    assert s.state == "polling" and s.stats.associations == 1
    assert s.identity is not None and s.identity.model == "866062"
    assert s.identity.bed_label == "bed-3"
    r = running.readings[-1]
    assert r.bed == "bed-3" and r.monitor_id == "866062" and r.quality == {}
    assert set(r.values) == {"HR", "O2Sat", "SBP", "DBP", "MAP", "Resp", "Temp"}
    for name, v in r.values.items():
        assert v is not None and plausible(name, v), (name, v)
    assert r.received is not None and abs((r.received - r.obs_time).total_seconds()) < 5
    # the Patient Demographics object: the admitted patient's id (pseudonymised later by
    # the gateway), sex and age
    assert r.stay == running.sim.patient_id
    assert r.static["Gender"] == 1.0
    assert r.static["Age"] == r.obs_time.year - 1950 - (
        (r.obs_time.month, r.obs_time.day) < (6, 15)
    )
    # the poll period is kept: no flood of requests
    assert running.sim.stats.polls <= s.stats.polls_sent + 1


@pytest.mark.parametrize("running", [{"demo": True}], indirect=True)
def test_demo_data_is_never_a_value(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 3, timeout=10)
    for r in running.readings:
        assert r.values == {}
        assert set(r.quality) == {"HR", "O2Sat", "SBP", "DBP", "MAP", "Resp", "Temp"}
        assert all(q == "demo_data" for q in r.quality.values())
    assert running.session.stats.withheld["demo_data"] >= 3 * 8


@pytest.mark.parametrize("running", [{"invalid": {"SpO2"}, "switched_off": {"NBP"}}], indirect=True)
def test_invalid_withheld_and_switched_off_absent(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 3, timeout=10)
    r = running.readings[-1]
    assert "O2Sat" not in r.values and r.quality == {"O2Sat": "invalid"}
    assert not {"SBP", "DBP", "MAP"} & set(r.values)  # NBP off: no value, no state
    assert r.values["HR"] is not None  # the ECG's HR; the pleth pulse is lower priority


@pytest.mark.parametrize("running", [{"crc_every": 4}], indirect=True)
def test_bad_fcs_frames_counted_and_skipped(running: Running) -> None:
    wait_until(lambda: running.link.frames.stats.bad["bad_fcs"] >= 3, timeout=15)
    assert running.sim.stats.bad_fcs_sent >= 3
    assert len(running.readings) >= 3  # polling goes on


def test_cable_pull_mid_frame_then_reassociates(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 3, timeout=10)
    running.sim.cable_pull(2.0)
    wait_until(lambda: running.session.stats.lost["silence"] >= 1, timeout=10)
    before = len(running.readings)
    wait_until(lambda: running.session.stats.reassociations >= 1, timeout=15)
    wait_until(lambda: len(running.readings) > before + 2, timeout=10)
    assert running.sim.stats.associations >= 2
    assert running.link.frames.stats.bad["truncated"] >= 1  # the half frame


def test_reboot_then_reassociates(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 3, timeout=10)
    running.sim.reboot(1.5)
    wait_until(lambda: running.session.stats.reassociations >= 1, timeout=15)
    wait_until(lambda: running.session.state == "polling", timeout=10)
    n = len(running.readings)
    wait_until(lambda: len(running.readings) > n + 2, timeout=10)


def test_release_on_stop(running: Running) -> None:
    wait_until(lambda: len(running.readings) >= 2, timeout=10)
    running.stop.set()
    running.thread.join(5)
    assert running.sim.stats.released == 1
    assert running.session.state == "stopped"


def test_session_never_sends_set_or_alarm_commands() -> None:
    """Listen-only: everything a session can send is an association, release, MDS create
    result, or a poll (CMD_CONFIRMED_ACTION with a poll action)."""
    t = [0.0]
    s = Session("b", poll_seconds=1, keep_alive_seconds=2, monotonic=lambda: t[0])
    sent = s.outgoing()
    s.receive(p.association_response(p.UserInfo(system_type=p.SYST_SERVER)))
    s.receive(p.mds_create_event(1, 0, []))
    sent += s.replies()
    for step in range(10):
        t[0] = step * 0.7
        sent += s.outgoing()
    sent.append(s.release() or b"")
    for msg in sent:
        if msg[0] == p.DATA_SPDU:
            command = int.from_bytes(msg[10:12], "big")
            assert command in (p.CMD_CONFIRMED_ACTION, p.CMD_CONFIRMED_EVENT_REPORT)
            if command == p.CMD_CONFIRMED_ACTION:
                assert msg[24:26] in (b"\x0c\x16", b"\xf1\x3b")
        else:
            assert msg[0] in (p.CN_SPDU, p.FN_SPDU)
    # t = 0 .. 6.3 s in 0.7 s steps: a numerics poll each whole second (7), a keep-alive
    # (alert monitor) every 2 s after polling began (3), the patient demographics once
    polls = [m for m in sent if m[0] == p.DATA_SPDU and m[10:12] == b"\x00\x07"]
    assert sum(1 for m in polls if m[24:26] == b"\xf1\x3b") == 7
    single = [int.from_bytes(m[32:34], "big") for m in polls if m[24:26] == b"\x0c\x16"]
    assert sorted(single) == [p.NOM_MOC_PT_DEMOG] + [p.NOM_MOC_VMO_AL_MON] * 3


def test_garbage_messages_are_counted_not_raised() -> None:
    s = Session("b")
    for junk in (b"", b"\xe1", b"\xe1\x00\x00\x02\x00\x02\xff\xff", b"\x42abc", b"\x0e\x01"):
        assert s.receive(junk) == []
    assert sum(s.stats.bad.values()) == 5


def test_udp_lan_associates_polls_and_releases() -> None:
    from edge_agent.intellivue.driver import UdpLink

    sim = IntelliVueSim(bed_label="bed-9", udp_port=0, demo=False, invalid={"Temp"})
    host, port = sim.address.split(":")
    got: list[Reading] = []
    session = Session("bed-9", poll_seconds=0.1, silence_seconds=1.0, retry_seconds=0.2)
    link = UdpLink(session, host, int(port), on_reading=got.append)
    stop = threading.Event()
    t = threading.Thread(target=link.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_until(lambda: len(got) >= 3, timeout=10)
        sim.reboot(1.5)
        wait_until(lambda: session.stats.reassociations >= 1, timeout=15)
        n = len(got)
        wait_until(lambda: len(got) > n + 2, timeout=10)
        stop.set()
        t.join(5)
        wait_until(lambda: sim.stats.released == 1, timeout=5)  # the release datagram
    finally:
        stop.set()
        t.join(5)
        sim.close()
    assert got[-1].quality == {"Temp": "invalid"} and "Temp" not in got[-1].values
    assert got[-1].values["HR"] is not None
    assert sim.stats.released == 1 and sim.stats.associations >= 2


def test_linked_poll_results_make_one_reading() -> None:
    """A poll answered in linked parts (RORLS first/last, then the final RORS, Guide
    p. 293) gives one Reading with every part's numerics."""
    s = Session("b")
    s.receive(p.association_response(p.UserInfo(system_type=p.SYST_SERVER)))
    s.receive(p.mds_create_event(1, 0, []))

    def obj(handle: int, pid: int, unit: int, value: float) -> tuple[int, list]:
        return (handle, p.numeric_attributes(p.Numeric(handle, pid, 0, unit, value)))

    first = p.poll_result_message(
        5, 1, 0, None, [obj(1, 0x4182, 0x0AA0, 71.0)], linked=p.RORLS_FIRST
    )
    last = p.poll_result_message(5, 1, 0, None, [obj(2, 0x4BB8, 0x0220, 95.0)], linked=p.RORLS_LAST)
    final = p.poll_result_message(5, 1, 0, None, [])
    assert s.receive(first) == [] and s.receive(last) == []
    (r,) = s.receive(final)
    assert r.values == {"HR": 71.0, "O2Sat": 95.0}
    assert s.stats.poll_results == 1


@pytest.mark.parametrize("running", [{}], indirect=True)
def test_a_new_patient_on_the_monitor_is_a_new_stay(running: Running) -> None:
    running.session.demographics_seconds = 0.3
    wait_until(lambda: running.readings and running.readings[-1].stay == "MRN-000001", timeout=10)
    running.sim.admit("MRN-777", sex=2)
    wait_until(lambda: running.readings[-1].stay == "MRN-777", timeout=10)
    assert running.readings[-1].static["Gender"] == 0.0
    # after a lost association the patient is asked again before numerics are used
    running.sim.reboot(1.5)
    wait_until(lambda: running.session.stats.reassociations >= 1, timeout=15)
    n = len(running.readings)
    wait_until(lambda: len(running.readings) > n + 2, timeout=10)
    assert all(r.stay == "MRN-777" for r in running.readings[n:])
