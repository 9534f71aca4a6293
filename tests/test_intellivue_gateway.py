"""End to end (issue 16 layer 5): a simulated IntelliVue on a real pty -> the gateway with
an `intellivue` bed -> real Mosquitto -> subscriber; a cable pull and a monitor reboot in
the middle; an invalid numeric is never published nor scored; the pulled hours are a gap."""

from __future__ import annotations

import time

import pytest

from contracts import topics
from contracts.messages import Risk, Vitals, parse_message
from edge_agent.config import load_config
from edge_agent.gateway import Gateway
from edge_agent.intellivue.line import IntelliVueLine
from firmware_sim.intellivue import IntelliVueSim
from tests.support.broker import Subscriber
from tests.support.waiting import wait_until

GW = "ward-iv"


def _toml(tmp_path, port: int, device: str) -> str:
    p = tmp_path / "gw.toml"
    p.write_text(
        f'gateway_id = "{GW}"\noperator = "test nurse"\nstore_path = "{tmp_path / "gw.sqlite"}"\n'
        f'[[beds]]\nid = "bed-4"\nsource = {{ type = "intellivue", port = "{device}",'
        " poll_seconds = 0.2, silence_seconds = 1.0 }\n"
        f"[mqtt]\nport = {port}\n"
    )
    return str(p)


@pytest.mark.slow
def test_intellivue_bed_end_to_end_with_cable_pull_and_reboot(broker, tmp_path) -> None:
    # the monitor's clock runs 3600x: every 0.2 s poll is 12 simulated minutes, so the
    # gateway closes an hourly step about every second
    sim = IntelliVueSim(bed_label="bed-4", speed=3600.0, invalid={"SpO2"})
    settings = load_config(_toml(tmp_path, broker.port, sim.address))
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/bed-4/#")
    gw = Gateway(settings)
    gw.start()
    try:
        wait_until(lambda: isinstance(gw.beds["bed-4"].line, IntelliVueLine), timeout=10)
        line = gw.beds["bed-4"].line
        assert isinstance(line, IntelliVueLine)
        session = line.session
        wait_until(lambda: _count(sub, "/vitals") >= 3, timeout=30)
        pulled_at = sim.now()
        sim.cable_pull(3.0)  # 3 h of the monitor's time with nothing on the line
        wait_until(lambda: session.stats.lost["silence"] >= 1, timeout=10)
        wait_until(lambda: session.stats.reassociations >= 1, timeout=15)
        back_at = sim.now()
        n = _count(sub, "/vitals")
        wait_until(lambda: _count(sub, "/vitals") >= n + 2, timeout=30)
        sim.reboot(2.0)
        wait_until(lambda: session.stats.reassociations >= 2, timeout=15)
        n = _count(sub, "/vitals")
        wait_until(lambda: _count(sub, "/vitals") >= n + 2, timeout=30)
        assert gw.publisher.wait_idle(10)
        frames = line.frames.stats
        snap = next(b for b in gw.state.snapshot().beds if b.bed == "bed-4")
        counters = gw.state.snapshot().counters
        hl7 = gw.beds["bed-4"].decoder.stats.frames_ok
    finally:
        gw.stop()
        sub.close()
        sim.close()

    assert sim.stats.associations >= 3  # the first, after the pull, after the reboot
    assert frames.bad["truncated"] >= 1  # the half frame of the pull, counted
    # the line's Readings reach the gateway as they are: no HL7 on the way, every one
    # processed, their quality kept (the bedside shows SpO2 withheld, counted)
    assert hl7 == 0
    assert snap.readings in (session.stats.readings, session.stats.readings - 1)
    assert snap.quality == {"O2Sat": "invalid"} and snap.vitals["O2Sat"].value is None
    assert snap.withheld["invalid"] >= snap.readings - 1
    assert counters["withheld_invalid"] == snap.withheld["invalid"]
    vitals = [
        m
        for t, payload, _ in sub.messages
        if topics.parse(t)["kind"] == "vitals"
        for m in [parse_message(payload)]
    ]
    assert vitals and all(isinstance(v, Vitals) for v in vitals)
    # the monitor's patient id leaves only as the gateway's pseudonym
    assert {v.stay for v in vitals} == {gw.stay_pseudonym(sim.patient_id, None)}
    assert not any(sim.patient_id.encode() in payload for _, payload, _ in sub.messages)
    for v in vitals:  # the invalid SpO2 is never a value, and the step says why
        assert v.values.get("O2Sat") is None, v.values
        assert v.readings == 0 or v.quality == {"O2Sat": "invalid"}, v
        assert v.values.get("HR") is None or 60 <= v.values["HR"] <= 95
    with_data = [v for v in vitals if v.readings > 0]
    assert len(with_data) >= 6
    # the hours of the pull carry no invented values: no step is published for an hour
    # the line was down (a gap in the hourly steps), and none inside it had a reading
    starts = [v.step_start for v in vitals]
    assert starts == sorted(starts)
    inside = [t for t in starts if pulled_at < t and t + _hour() <= back_at]
    assert inside == [], (pulled_at, back_at, starts)
    gaps = [(a, b) for a, b in zip(starts, starts[1:], strict=False) if b - a >= 2 * _hour()]
    assert any(a <= pulled_at <= b for a, b in gaps), (pulled_at, starts)
    risks = [parse_message(p) for t, p, _ in sub.messages if topics.parse(t)["kind"] == "risk"]
    assert all(isinstance(r, Risk) for r in risks)


def _count(sub: Subscriber, part: str) -> int:
    with sub.lock:
        return sum(1 for m in sub.messages if part in m[0])


def _hour():
    from datetime import timedelta

    return timedelta(hours=1)


def test_config_needs_exactly_one_of_port_and_udp(tmp_path) -> None:
    from edge_agent.config import ConfigError

    p = tmp_path / "gw.toml"
    p.write_text('gateway_id = "g"\n[[beds]]\nid = "b"\nsource = { type = "intellivue" }\n')
    with pytest.raises(ConfigError, match="port \\(serial\\) or udp"):
        load_config(str(p))
    time.sleep(0)


def test_udp_line_hands_pcd01_the_bed_worker_decodes() -> None:
    """An `intellivue` bed on the LAN: IntelliVueLine over UDP, its bytes read by the
    gateway's own MllpDecoder, as the bed worker does."""
    import threading
    from datetime import UTC, datetime

    from edge_agent.config import IntelliVueSource, LinkConfig
    from edge_agent.decoder import MllpDecoder

    start = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    sim = IntelliVueSim(bed_label="bed-5", udp_port=0, clock_start=start, switched_off={"Temp"})
    stop = threading.Event()
    cfg = IntelliVueSource(type="intellivue", udp=sim.address, poll_seconds=0.1)
    line = IntelliVueLine("bed-5", cfg, LinkConfig(), stop)
    dec = MllpDecoder(source="bed-5", bed="bed-5")
    readings = []
    try:
        deadline = time.monotonic() + 10
        while len(readings) < 3 and time.monotonic() < deadline:
            data = line.read()
            if data:
                readings += dec.feed(data)
        line.close()  # releases the association
        wait_until(lambda: sim.stats.released == 1, timeout=5)
    finally:
        line.close()
        sim.close()
    assert len(readings) >= 3 and dec.stats.frames_bad == 0
    r = readings[-1]
    assert r.bed == "bed-5" and set(r.values) == {"HR", "O2Sat", "SBP", "DBP", "MAP", "Resp"}
    assert abs((r.obs_time - start).total_seconds()) < 30  # the monitor's clock, not ours


def test_withheld_vital_is_no_value_in_its_step_and_is_shown_as_withheld() -> None:
    """A vital the monitor flagged is not a reading of it: the step has no value (not
    the previous hour's), says why, and the bedside shows no number for it."""
    from datetime import UTC, datetime, timedelta

    from edge_agent.decoder import Reading
    from edge_agent.gateway import fallback_spec
    from edge_agent.state import GatewayState
    from edge_agent.windows import BedWindows

    t0 = datetime(2026, 3, 4, tzinfo=UTC)

    def reading(minutes: int, values: dict, quality: dict) -> Reading:
        return Reading("b", "s", "mp70", minutes, t0 + timedelta(minutes=minutes), values,
                       {}, icu_admit=t0, quality=quality)  # fmt: skip

    w = BedWindows("b", fallback_spec())
    state = GatewayState("g", ["b"])
    rs = [
        reading(10, {"HR": 80.0, "O2Sat": 97.0}, {}),  # hour 0: SpO2 measured
        reading(70, {"HR": 82.0}, {"O2Sat": "invalid"}),  # hour 1: SpO2 flagged
        reading(80, {"HR": 84.0}, {"O2Sat": "demo_data"}),
        reading(90, {"HR": 86.0}, {"O2Sat": "invalid"}),
        reading(130, {"HR": 88.0, "O2Sat": 95.0}, {"Temp": "calibration"}),  # hour 2
    ]
    steps = []
    for r in rs:
        steps += w.add(r)
        state.record_reading("b", r.stay, r.obs_time, r.values, quality=r.quality)
        if r.seq == 90:
            snap = state.snapshot()
            bed = snap.beds[0]
            assert bed.quality == {"O2Sat": "invalid"}
            assert bed.vitals["O2Sat"].value is None  # not the 97 of hour 0
            assert bed.vitals["HR"].value == 86.0
    assert [s.values["O2Sat"] for s in steps] == [97.0, None]
    assert steps[0].quality == {} and steps[1].quality == {"O2Sat": "invalid"}
    assert steps[1].values["HR"] == 84.0
    bed = state.snapshot().beds[0]
    assert bed.quality == {"Temp": "calibration"} and bed.vitals["O2Sat"].value == 95.0
    assert bed.withheld == {"invalid": 2, "demo_data": 1, "calibration": 1}
    assert state.snapshot().counters["withheld_invalid"] == 2


def test_vitals_quality_is_optional_and_checked() -> None:
    """`quality` in vigil.vitals/1: absent when empty (an older hub takes the message),
    kept when present, and a bad one refused with what was wrong."""
    import json
    from datetime import UTC, datetime

    from contracts.messages import Vitals, parse_message

    base = dict(gw="g", bed="b", stay="s", step_start=datetime(2026, 1, 1, tzinfo=UTC),
                step_seconds=3600, iculos_hours=1.0, values={"O2Sat": None})  # fmt: skip
    plain = Vitals(**base).to_json()
    assert "quality" not in json.loads(plain)
    assert parse_message(plain).quality is None
    flagged = Vitals(**base, quality={"O2Sat": "demo_data"}).to_json()
    assert parse_message(flagged).quality == {"O2Sat": "demo_data"}
    bad = json.loads(flagged)
    bad["quality"] = {"O2 Sat": "invalid"}
    with pytest.raises(ValueError, match="quality"):
        parse_message(json.dumps(bad).encode())


def test_the_example_configs_intellivue_bed_is_valid() -> None:
    """deploy/edge/gateway.example.toml's commented IntelliVue bed, switched on, loads."""
    import re
    import tomllib
    from pathlib import Path

    from edge_agent.config import EdgeSettings, IntelliVueSource

    text = (Path(__file__).parents[1] / "deploy/edge/gateway.example.toml").read_text()
    text = re.sub(
        r"^#(\[\[beds\]\]|id = |source = \{ type = \"intellivue\")", r"\1", text, flags=re.M
    )
    s = EdgeSettings(**tomllib.loads(text))
    (bed,) = [b for b in s.beds if isinstance(b.source, IntelliVueSource)]
    assert bed.source.port == "/dev/ttyUSB0" and bed.source.poll_seconds == 1.0
