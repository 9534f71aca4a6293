"""Lines that come and go: TCP monitor restarts, mid-frame resets, several beds at once."""

from __future__ import annotations

import time

from edge_agent.config import BedConfig, BedMatch, LinkConfig, TcpSource
from edge_agent.gateway import Gateway
from tests.support.edge import edge_settings, valid_frame
from tests.support.net import free_port
from tests.support.waiting import wait_until


def test_tcp_monitor_restart_mid_frame_is_survived_and_reconnected(broker, tmp_path):
    from firmware_sim.transports import TcpServerTransport

    ports = [free_port(), free_port()]
    s = edge_settings(
        tmp_path,
        port=broker.port,
        gateway_id="gw-tcp",
        beds=[
            BedConfig(id=f"bed-{i}", source=TcpSource(type="tcp", host="127.0.0.1", port=p))
            for i, p in enumerate(ports, 1)
        ],
        store="t.sqlite",
        link=LinkConfig(reconnect_min_seconds=0.05, reconnect_max_seconds=0.2),
    )
    gw = Gateway(s)
    servers = [TcpServerTransport(p) for p in ports]
    gw.start()
    try:
        for srv in servers:
            assert wait_until(lambda srv=srv: (srv.poll(), srv.client_count)[1] == 1)
        for i in range(1, 6):
            for b, srv in enumerate(servers, 1):
                assert srv.write(valid_frame(i, bed=f"bed-{b}"))
        bed1 = gw.beds["bed-1"]
        assert wait_until(lambda: bed1.decoder.stats.frames_ok == 5)
        # Monitor of bed 1 dies in the middle of a frame, then comes back on the same port.
        servers[0].write(valid_frame(6, bed="bed-1")[:200])
        time.sleep(0.2)
        servers[0].close()
        assert wait_until(lambda: bed1.line.state == "down" or bed1.line.reconnects > 0)
        servers[0] = TcpServerTransport(ports[0])
        assert wait_until(lambda: (servers[0].poll(), servers[0].client_count)[1] == 1)
        for i in range(1, 4):  # the rebooted monitor restarts its sequence
            servers[0].write(valid_frame(i, bed="bed-1", HR=100.0 + i))
        assert wait_until(lambda: bed1.decoder.stats.frames_ok == 8)
        assert bed1.line.reconnects >= 1  # (a reconnect may race the closing listener)
        assert bed1.decoder.stats.bad["truncated"] == 1  # the half frame, counted
        assert wait_until(lambda: gw.beds["bed-2"].decoder.stats.frames_ok == 5)
        snap = gw.state.snapshot()
        assert snap.bed("bed-1").vitals["HR"].value == 103.0
        assert any(e.kind == "link" and e.bed == "bed-1" for e in snap.events)
    finally:
        gw.stop()
        for srv in servers:
            srv.close()


def test_readings_labelled_with_another_bed_are_dropped_and_counted(broker, tmp_path):
    # A line is its bed; the PV1-3 bed label is checked only where the config says so.
    checked = BedConfig(
        id="bed-1",
        source=TcpSource(type="tcp", host="127.0.0.1", port=1, match=BedMatch(bed_label="bed-1")),
    )
    s = edge_settings(
        tmp_path,
        port=broker.port,
        gateway_id="gw-x",
        beds=[checked, "bed-2"],
        store="x.sqlite",
    )
    gw = Gateway(s)
    try:
        assert gw.process_bytes("bed-1", valid_frame(1, bed="bed-9")) == 0
        assert gw.beds["bed-1"].wrong_bed == 1
        assert gw.beds["bed-1"].decoder.stats.bad["wrong_bed"] == 1
        assert gw.state.snapshot().bed("bed-1").readings == 0
        assert gw.process_bytes("bed-1", valid_frame(2, bed="bed-1")) == 1
        assert gw.state.snapshot().bed("bed-1").readings == 1
        # bed-2 sets no match rule: whatever its line carries is bed-2's
        assert gw.process_bytes("bed-2", valid_frame(1, bed="bed-9")) == 1
        assert gw.beds["bed-2"].wrong_bed == 0
        assert gw.state.snapshot().bed("bed-2").readings == 1
    finally:
        gw.stop(flush_timeout=0.1)


def test_serial_line_that_disappears_mid_frame_is_reopened_and_decoding_resumes(broker, tmp_path):
    import os

    from edge_agent.config import SerialSource
    from firmware_sim.transports import PtyTransport

    link = tmp_path / "ttyMONITOR"  # a stable name, as udev gives a USB-serial adapter
    pty = PtyTransport(flow_control=1.0)
    os.symlink(pty.address, link)
    s = edge_settings(
        tmp_path,
        port=broker.port,
        gateway_id="gw-serial",
        beds=[BedConfig(id="bed-1", source=SerialSource(type="serial", port=str(link)))],
        store="s.sqlite",
        link=LinkConfig(reconnect_min_seconds=0.05, reconnect_max_seconds=0.2),
    )
    gw = Gateway(s)
    gw.start()
    bed = gw.beds["bed-1"]
    try:
        assert wait_until(lambda: bed.line is not None and bed.line.state == "up")
        time.sleep(0.2)
        for i in range(1, 4):
            assert pty.write(valid_frame(i))
        assert wait_until(lambda: bed.decoder.stats.frames_ok == 3)
        pty.write(valid_frame(4)[:300])  # the cable is pulled in the middle of a frame
        time.sleep(0.2)
        pty.close()
        assert wait_until(lambda: bed.line.state == "down")
        pty = PtyTransport(flow_control=1.0)  # plugged in again (a new device behind the name)
        os.unlink(link)
        os.symlink(pty.address, link)
        assert wait_until(lambda: bed.line.state == "up" and bed.line.reconnects == 1)
        time.sleep(0.2)
        for i in range(5, 8):
            assert pty.write(valid_frame(i, HR=90.0 + i))
        assert wait_until(lambda: bed.decoder.stats.frames_ok == 6)
        assert bed.decoder.stats.bad["truncated"] == 1
        assert gw.state.snapshot().bed("bed-1").vitals["HR"].value == 97.0
    finally:
        gw.stop()
        pty.close()
