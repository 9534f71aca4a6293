"""Fault injection: the line shows exactly the faults requested, and the log says so."""

from __future__ import annotations

import json
import time

import pytest
import serial

from contracts.vitals import VITAL_NAMES, plausible
from firmware_sim.faults import FaultLog, FaultSpecError, parse_fault, resolve
from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.transports import PtyTransport
from tests.support.sim import LineReader, parse_with_hl7, split_mllp

SCHEDULE = [
    "sensor_off:O2Sat@5msg+4msg",
    "sensor_off:all@12msg",
    "artefact:HR@15msg+3msg",
    "artefact:Temp@20msg",
    "dropout@25msg+2msg",
    "garble@30msg",
    "garble:20@32msg",
    "truncate@35msg",
    "truncate@40msg",
    "noise@45msg",
    "noise:100@50msg",
    "pause@60msg+5msg",
    "reboot@80msg+4msg",
    "artefact:SBP@3msg#2",  # another bed only
]


def _tally(data: bytes) -> dict[str, int]:
    """Count faults the way a gateway would, from the raw bytes of the line."""
    wire = split_mllp(data)
    t = {"garbled": 0, "truncated": wire.truncated, "noise_bytes": wire.noise_bytes}
    t.update({"o2_off": 0, "all_off": 0, "implausible": 0, "lost": 0, "restarts": 0})
    prev = 0
    for f in wire.frames:
        try:
            r = parse_with_hl7(f)
        except Exception:  # what a gateway counts as a garbled frame
            t["garbled"] += 1
            continue
        if r.seq < prev:
            t["restarts"] += 1
        elif r.seq > prev + 1:
            t["lost"] += r.seq - prev - 1
        prev = r.seq
        t["o2_off"] += r.status["O2Sat"] == "X"
        t["all_off"] += all(r.status[n] == "X" for n in VITAL_NAMES)
        t["implausible"] += sum(v is not None and not plausible(n, v) for n, v in r.values.items())
    return t


def test_scheduled_faults_appear_exactly_as_requested(tmp_path) -> None:
    log_path = tmp_path / "faults.jsonl"
    flog = FaultLog(log_path)
    mon = Monitor.generated(
        "bed-1",
        PtyTransport(flow_control=1.0),
        "stable",
        seed=4,
        faults=[parse_fault(s) for s in SCHEDULE],
        fault_log=flog,
    )
    port = serial.Serial(mon.address, 115200, timeout=0.05)
    reader = LineReader(lambda: port.read(max(1, port.in_waiting)))
    reader.start()
    for n in range(100):
        mon.cycle(n)
    time.sleep(0.3)
    data = reader.stop()
    port.close()
    mon.close()
    flog.close()

    got = _tally(data)
    assert got == {
        "garbled": 2,
        "truncated": 2,
        "noise_bytes": 16 + 100,
        "o2_off": 4 + 1,
        "all_off": 1,
        "implausible": 3 + 1,
        # seq gaps: 2 dropped + 5 paused, and the garbled/truncated frames' seqs
        "lost": 2 + 5 + 2 + 2,
        "restarts": 1,
    }
    # the log tells the same story, one entry per affected message
    assert flog.count("sensor_off") == 5 and flog.count("artefact") == 4
    assert flog.count("dropout") == 2 and flog.count("garble") == 2
    assert flog.count("truncate") == 2 and flog.count("noise") == 2
    assert flog.count("pause") == 1 and flog.count("reboot") == 1
    assert flog.count("artefact", bed="bed-2") == 0
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(rows) == len(flog.events) and all(r["visible"] for r in rows)
    assert [r["seq"] for r in rows if r["kind"] == "garble"] == [30, 32]
    # after the reboot (silent cycles 79..82) the monitor numbers from 1 again
    assert mon.seq == 100 - 83


def test_time_based_windows_hit_the_same_cycles_every_run() -> None:
    for _ in range(2):
        mon = Monitor.generated(
            "bed-1",
            PtyTransport(),
            "stable",
            speed=10,
            faults=[parse_fault("sensor_off:HR@2s+1s"), parse_fault("dropout@0.25s")],
        )
        assert mon.wall_interval == pytest.approx(0.1)
        hits = []
        mon.on_observation = lambda o, hits=hits: hits.append(o.values["HR"] is None)
        for n in range(40):
            mon.cycle(n)
        mon.close()
        # 2 s .. 3 s at 0.1 s per message: cycles 20..29; the dropout at 0.25 s is cycle 3
        assert [i for i, off in enumerate(hits) if off] == list(range(19, 29))
        assert mon.fault_log.count("dropout") == 1 and mon.stats.silent == 1


def test_faults_injected_on_demand_hit_the_next_cycle() -> None:
    mon = Monitor.generated("bed-1", PtyTransport(flow_control=1.0), "stable", speed=20)
    port = serial.Serial(mon.address, 115200, timeout=0.05)
    reader = LineReader(lambda: port.read(max(1, port.in_waiting)))
    reader.start()
    runner = MonitorRunner([mon])
    runner.start(duration=1.0)
    time.sleep(0.4)
    mon.inject(parse_fault("artefact:Resp"))
    mon.inject(parse_fault("garble"))
    runner.join(5)
    time.sleep(0.2)
    data = reader.stop()
    port.close()
    runner.close()
    got = _tally(data)
    assert got["garbled"] == 1 and got["lost"] == 1
    # both hit the same cycle, so the artefact is inside the garbled frame: hidden
    assert got["implausible"] == 0
    assert [e.kind for e in mon.fault_log.events] == ["artefact", "garble"]
    assert [e.visible for e in mon.fault_log.events] == [False, True]
    # after the monitor started (how many cycles ran in 0.4 s depends on the machine's load)
    assert mon.fault_log.events[0].cycle == mon.fault_log.events[1].cycle >= 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("meltdown", "unknown fault 'meltdown'"),
        ("sensor_off:BP", "unknown vital 'BP'"),
        ("garble:0", "byte count must be 1..4096"),
        ("dropout:HR", "dropout takes no argument"),
        ("pause@soon", "bad start 'soon'"),
        ("pause@1s+0s", "length must be > 0"),
        ("garble@0msg", "whole number >= 1"),
        ("noise#x", "beds must be numbers"),
        ("garble@", "bad start ''"),
    ],
)
def test_bad_fault_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_fault(spec)


def test_spec_language_resolves_to_cycles() -> None:
    win = resolve(parse_fault("pause@1m"), 1.0)
    assert (win.first, win.end) == (60, 65)  # pause defaults to 5 s
    win = resolve(parse_fault("reboot@2msg+10msg#1,3"), 0.5)
    assert (win.first, win.end, win.spec.beds) == (1, 11, (1, 3))
    win = resolve(parse_fault("sensor_off:O2Sat@30s+60s"), 0.1)
    assert (win.first, win.end) == (300, 900)
