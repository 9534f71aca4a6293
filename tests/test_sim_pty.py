"""Simulated monitors on real pseudo-terminals and TCP, read the way a gateway reads them."""

from __future__ import annotations

import os
import socket
import time
import tty
from datetime import UTC, datetime

import pytest
import serial

from contracts.vitals import VITAL_NAMES
from firmware_sim.hl7 import DECIMALS
from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.physiology import GeneratedSource
from firmware_sim.transports import PtyTransport, SerialTransport, TcpServerTransport
from tests.support.sim import LineReader, parse_with_hl7, split_mllp

START = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def _collect(monitors: list[Monitor]) -> dict[str, list]:
    sent: dict[str, list] = {m.bed: [] for m in monitors}
    for m in monitors:
        m.on_observation = sent[m.bed].append
    return sent


def test_frames_read_with_pyserial_parse_and_carry_the_values_sent() -> None:
    mon = Monitor.generated(
        "bed-1", PtyTransport(), "sepsis", seed=3, speed=600, max_rate=50, clock_start=START
    )
    sent = _collect([mon])
    port = serial.Serial(mon.address, 115200, timeout=0.1)
    reader = LineReader(lambda: port.read(65536))
    reader.start()
    runner = MonitorRunner([mon])
    try:
        runner.run(duration=1.0)
        time.sleep(0.2)
        data = reader.stop()
    finally:
        port.close()
        runner.close()
    wire = split_mllp(data)
    assert wire.noise_bytes == 0 and wire.truncated == 0 and not wire.tail
    readings = [parse_with_hl7(f) for f in wire.frames]  # every frame parses
    assert len(readings) == len(sent["bed-1"]) == mon.stats.sent >= 45
    for r, obs in zip(readings, sent["bed-1"], strict=True):
        assert r.seq == obs.seq and r.obs_time == obs.obs_time and r.bed == "bed-1"
        for name in VITAL_NAMES:
            assert r.values[name] == pytest.approx(round(obs.values[name], DECIMALS[name]))
    # cadence: at speed 600 with a cap of 50 msg/s, each message is 12 simulated seconds
    steps = {
        (b.obs_time - a.obs_time).total_seconds()
        for a, b in zip(readings, readings[1:], strict=False)
    }
    assert steps == {12.0}
    assert readings[0].obs_time == START and [r.seq for r in readings] == list(
        range(1, len(readings) + 1)
    )


def test_one_process_drives_several_beds_each_on_its_own_pty() -> None:
    monitors = [
        Monitor.generated(
            f"bed-{i}", PtyTransport(), sc, seed=i, bed_number=i, speed=60, max_rate=20
        )
        for i, sc in enumerate(["stable", "hypotension", "desaturation"], 1)
    ]
    assert len({m.address for m in monitors}) == 3
    ports = [serial.Serial(m.address, 115200, timeout=0.1) for m in monitors]
    readers = [LineReader(lambda p=p: p.read(65536)) for p in ports]
    for r in readers:
        r.start()
    runner = MonitorRunner(monitors)
    runner.start(duration=1.0)
    runner.join(10)
    time.sleep(0.2)
    for i, (m, rd, p) in enumerate(zip(monitors, readers, ports, strict=True), 1):
        frames = split_mllp(rd.stop()).frames
        p.close()
        got = [parse_with_hl7(f) for f in frames]
        assert {r.bed for r in got} == {f"bed-{i}"} and {r.control_id[:5] for r in got} == {
            f"MON0{i}"
        }
        assert len(got) == m.stats.sent >= 15
    runner.close()


def test_a_real_serial_device_path_carries_the_same_frames() -> None:
    # A pty slave stands in for /dev/ttyUSB0: the simulator opens it by path with
    # pyserial, and we read the other end, as a null-modem cable would deliver it.
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    transport = SerialTransport(path, 9600)
    mon = Monitor.generated("bed-9", transport, "stable", seed=9, speed=10, max_rate=20)
    runner = MonitorRunner([mon])
    runner.run(duration=0.5)
    time.sleep(0.1)
    data = b""
    while True:
        try:
            data += os.read(master, 65536)
        except BlockingIOError:
            break
    runner.close()
    os.close(master)
    os.close(slave)
    got = [parse_with_hl7(f) for f in split_mllp(data).frames]
    assert len(got) == mon.stats.sent >= 5 and got[0].bed == "bed-9"


def test_nobody_reading_is_counted_and_never_cuts_a_frame() -> None:
    mon = Monitor.generated("bed-1", PtyTransport(), "stable", speed=1000, max_rate=1000)
    for n in range(200):  # ~200 KB into a ~18 KB pty buffer with no reader
        mon.cycle(n)
    assert mon.stats.overruns > 0 and mon.stats.sent + mon.stats.overruns == 200
    port = serial.Serial(mon.address, 115200, timeout=0.2)  # opening flushes stale input
    for n in range(200, 205):
        mon.cycle(n)
    wire = split_mllp(port.read(65536))
    port.close()
    mon.close()
    assert [parse_with_hl7(f).seq for f in wire.frames] == [201, 202, 203, 204, 205]


def _tcp_client(address: str) -> socket.socket:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=2)
    s.settimeout(0.1)
    return s


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except TimeoutError:
        return b""


def test_tcp_server_sends_every_frame_to_each_connected_gateway() -> None:
    transport = TcpServerTransport(0, max_clients=2)
    mon = Monitor.generated("bed-1", transport, "stable", seed=1, speed=100, max_rate=50)
    assert mon.address.startswith("tcp://127.0.0.1:")
    a, b = _tcp_client(mon.address), _tcp_client(mon.address)
    c = _tcp_client(mon.address)  # one too many: refused (closed by the monitor)
    ra, rb = LineReader(lambda: _recv(a)), LineReader(lambda: _recv(b))
    ra.start()
    rb.start()
    for n in range(10):
        mon.cycle(n)
    assert transport.client_count == 2 and transport.clients_refused == 1
    assert c.recv(10) == b""  # EOF
    time.sleep(0.1)
    fb = split_mllp(rb.stop()).frames
    b.close()  # a gateway goes away: the monitor carries on with the other
    for n in range(10, 30):
        mon.cycle(n)
        time.sleep(0.002)
    time.sleep(0.2)
    fa = split_mllp(ra.stop()).frames
    assert transport.client_count == 1  # the closed one was dropped
    a.close()
    mon.close()
    assert [parse_with_hl7(f).seq for f in fa] == list(range(1, 31))
    assert [parse_with_hl7(f).seq for f in fb] == list(range(1, 11))


def test_a_gateway_connecting_later_gets_the_following_frames() -> None:
    transport = TcpServerTransport(0)
    mon = Monitor(
        "bed-2", GeneratedSource("stable", 2), transport, speed=1, clock_start=START, seed=2
    )
    for n in range(3):
        mon.cycle(n)  # nobody connected: dropped and counted
    assert transport.overruns == 3
    s = _tcp_client(mon.address)
    time.sleep(0.05)
    for n in range(3, 6):
        mon.cycle(n)
    time.sleep(0.1)
    got = [parse_with_hl7(f) for f in split_mllp(_recv(s)).frames]
    s.close()
    mon.close()
    assert [r.seq for r in got] == [4, 5, 6]


def test_a_ward_of_tcp_monitors_runs_in_process_for_gateway_tests() -> None:
    from firmware_sim.monitor import generated_ward

    runner = generated_ward(2, ["sepsis", "desaturation"], transport="tcp", seed=7, speed=20)
    clients = [_tcp_client(m.address) for m in runner.monitors]
    readers = [LineReader(lambda c=c: _recv(c)) for c in clients]
    for r in readers:
        r.start()
    runner.start(duration=0.8)
    runner.join(5)
    time.sleep(0.1)
    got = [[parse_with_hl7(f) for f in split_mllp(r.stop()).frames] for r in readers]
    for c in clients:
        c.close()
    runner.close()
    assert [{r.stay_id for r in g} for g in got] == [
        {"sim-sepsis-s7"},
        {"sim-desaturation-s8"},
    ]
    assert all(len(g) >= 5 for g in got)


def test_an_in_process_monitor_from_plain_settings_feeds_bytes_to_a_callback() -> None:
    from firmware_sim.monitor import make_monitor
    from firmware_sim.transports import CallbackTransport

    got = bytearray()
    mon = make_monitor(
        "bed-5",
        CallbackTransport(got.extend),
        scenario="hypotension",
        seed=5,
        faults=["noise:9@2msg", "sensor_off:SBP@3msg"],
    )
    for n in range(4):
        mon.cycle(n)
    wire = split_mllp(bytes(got))
    readings = [parse_with_hl7(f) for f in wire.frames]
    assert [r.seq for r in readings] == [1, 2, 3, 4] and wire.noise_bytes == 9
    assert [r.status["SBP"] for r in readings] == ["R", "R", "X", "R"]
    with pytest.raises(ValueError, match="replay and stay go together"):
        make_monitor("bed-5", CallbackTransport(got.extend), stay="pn-p000001")
