"""The MLLP listener: real monitor messages from a real MLLP client reach the right bed.

A real `Gateway` with its listener, a real Mosquitto, python-hl7's own MLLP client (the
`mllp_send` command and `hl7.client.MLLPClient`) and the public PCD-01 sample messages
(tests/samples/hl7/, with their provenance): each message is ACKed (`AA` when used,
`AR` for a bed the gateway does not serve, `AE` when unparsable), routed by the beds'
match rules, and its vitals reach the gateway state and MQTT. Hostile input (10^5
garbled or cut frames, a 10 MB frame without an end byte, connections dropped
mid-frame) leaves the gateway up, with bounded memory and every error counted.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from hl7.client import MLLPClient

from contracts.mllp import MllpFramer, frame
from edge_agent.config import BedConfig, TcpSource
from edge_agent.gateway import Gateway
from edge_agent.ui.gateway_port import ward_view
from edge_agent.ui.widgets.status_line import status_text
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings, valid_frame
from tests.support.mllp import counters, listen, msa, running, send
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples" / "hl7"
if not SAMPLES.is_dir():  # before the samples were copied into the tree
    SAMPLES = Path("/work/pcd_samples")
MLLP_SEND = Path(sys.executable).with_name("mllp_send")

GE = "01-ipf-ge-awaregateway-art-hr.hl7"  # GE gateway: device EUI-64 080019FFFF4F6AC0
MX500 = "06-philips-picix-ig-mx500-hr.hl7"  # MSH-3 SendingApplication, PV1-3 bed Bed1
PIIC3 = "07-philips-piic-nbp-spo2-hr.hl7"  # Philips central station, PV1-3 bed iDemo3
PIIC4 = "08-philips-piic-abp-spo2-empty-pid.hl7"  # same station, bed iDemo4
PIIC1 = "09-philips-piic-alarms-inop-st.hl7"  # same station, bed iDemo1 (not configured)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def control_id(message: bytes) -> bytes:
    """MSH-10 of a message."""
    return message.split(b"\r")[0].split(b"|")[9]


def later(message: bytes, old: bytes, new: bytes) -> bytes:
    """The same message sent again later (its times moved): closes the first step."""
    return message.replace(old, new)


# --- a real MLLP client, real messages ------------------------------------------------------
def test_mllp_send_delivers_real_messages_acked_aa_to_state_and_mqtt(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    gw_id = "gw-lst-a"
    sub = Subscriber(broker.port, f"vigil/v1/gw/{gw_id}/#")
    beds = [listen("icu-3", port, bed_label="iDemo3")]
    try:
        with running(tmp_path, broker, beds, gw_id=gw_id) as gw:
            port = gw.listeners[0].port  # the one it bound
            # Two messages in one file, as an integration engineer would replay a capture:
            # the real one, then the same an hour later (which closes the first step).
            f = tmp_path / "capture.hl7"
            first = sample(PIIC3).replace(b"\r\n", b"\r")
            f.write_bytes(first + b"\r" + later(first, b"2016080210", b"2016080212"))
            out = subprocess.run(
                [str(MLLP_SEND), "--port", str(port), "--file", str(f), "--loose", "127.0.0.1"],
                capture_output=True,
                timeout=30,
                check=True,
            ).stdout
            acks = [a for a in out.split(b"\x1c") if b"MSA|" in a]
            assert [msa(a) for a in acks] == ["AA", "AA"]
            assert b"MSA|AA|" + control_id(first) in out  # MSA-2: the message's MSH-10
            snap = gw.state.snapshot().bed("icu-3")
            assert snap.readings == 4  # NIBP at 10:15 and the rest at 10:48, twice
            v = {n: snap.vitals[n].value for n in ("SBP", "DBP", "MAP", "O2Sat", "HR")}
            assert v == {"SBP": 117.0, "DBP": 88.0, "MAP": 98.0, "O2Sat": 98.0, "HR": 80.0}
            got = sub.wait_for(1, 20, "/bed/icu-3/vitals")
            assert got, "no vitals message on MQTT"
            vitals = json.loads(got[0][1])
            assert vitals["values"]["SBP"] == 117.0 and vitals["values"]["O2Sat"] == 98.0
            assert vitals["values"]["HR"] == 80.0 and vitals["values"]["Temp"] is None
            assert vitals["stay"].startswith("st-")  # PID-3 pseudonymised, as on every line
            c = counters(gw)
            assert c["ack_AA"] == 2 and c["frames_ok"] == 2 and c["frames_bad"] == 0
            assert c["set_aside_unknown_code"] >= 12  # ST, QT, ... counted, not refused
            # The 2016 capture is far from the gateway's clock: flagged in the status line.
            assert c["clock_skew"] == 2 and c["clock_skew_beds"] == 1
            assert c["clock_skew_last_seconds"] < -300
            text = status_text(ward_view(gw.state.snapshot()).gateway, None)
            assert "clock" in text
    finally:
        sub.close()


def test_a_message_for_no_configured_bed_is_refused_ar_counted_and_never_scored(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    beds = [listen("icu-3", port, bed_label="iDemo3"), listen("icu-4", port, bed_label="iDemo4")]
    with running(tmp_path, broker, beds) as gw:
        port = gw.listeners[0].port  # the one it bound
        (ack,) = send(port, sample(PIIC1))  # bed iDemo1: not this gateway's
        assert msa(ack) == "AR"
        assert b"\rERR|" in ack and b"unknown_bed" in ack  # ERR names the problem
        assert b"MSA|AR|" + control_id(sample(PIIC1)) in ack  # the refused message's id
        assert counters(gw)["unknown_bed"] == 1
        snap = gw.state.snapshot()
        assert all(b.readings == 0 for b in snap.beds)  # nobody else's bed got it
        (ack,) = send(port, sample(PIIC4))  # the listener goes on
        assert msa(ack) == "AA"
        assert gw.state.snapshot().bed("icu-4").vitals["O2Sat"].value == 99.0
        # not HL7 at all: an AE, counted by reason
        (ack,) = send(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert msa(ack) == "AE" and counters(gw)["bad_not_hl7"] == 1


def test_two_monitors_on_one_listener_are_routed_to_two_beds_by_msh3_and_pv1_3(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    beds = [
        listen("bed-mx", port, sending_app="SendingApplication"),  # MSH-3
        listen("bed-ge", port, device_id="080019ffff4f6ac0"),  # OBX-18 EUI-64, any case
        listen("bed-pi", port, location="ICU/PCU^^iDemo3"),  # PV1-3 components
    ]
    with running(tmp_path, broker, beds) as gw:
        port = gw.listeners[0].port  # the one it bound
        a = MLLPClient("127.0.0.1", port)  # both monitors connected at once
        b = MLLPClient("127.0.0.1", port)
        c = MLLPClient("127.0.0.1", port)
        try:
            assert msa(a.send_message(sample(MX500))) == "AA"
            assert msa(b.send_message(sample(PIIC3))) == "AA"
            assert msa(c.send_message(sample(GE))) == "AA"
            assert msa(a.send_message(sample(MX500))) == "AA"
        finally:
            a.close(), b.close(), c.close()
        snap = gw.state.snapshot()
        assert snap.bed("bed-mx").readings == 2 and snap.bed("bed-mx").vitals["HR"].value == 60
        assert snap.bed("bed-pi").vitals["O2Sat"].value == 98.0
        assert snap.bed("bed-ge").vitals["SBP"].value == 120.0
        assert snap.bed("bed-ge").vitals["O2Sat"].value is None  # not in that message
        assert len(gw.listeners) == 1  # one listener for the three beds
        assert counters(gw)["listener_connections"] == 3
        # listener beds are "up" while their messages arrive; the health loop says ok
        assert wait_until(lambda: gw.state.snapshot().bed("bed-pi").link == "ok", 5)


# --- hostile input ----------------------------------------------------------------------------
def _hostile(rng: random.Random, good: bytes) -> bytes:
    """One damaged frame: cut short, end block lost, junk body, garbled, or (rarely) whole."""
    body = good[1:-2]
    k = rng.randrange(100)
    if k < 40:
        return b"\x0b" + body[: rng.randrange(len(body))]
    if k < 70:
        return b"\x0b" + body[: rng.randrange(len(body))] + b"\x1c"
    if k < 96:
        junk = bytes(rng.choice(b"MSH|^~&abc019 \r\x00\xff") for _ in range(rng.randint(0, 80)))
        return b"\x0b" + junk + b"\x1c\x0d"
    if k < 98:
        flipped = bytearray(body)
        for _ in range(rng.randint(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.choice(b"#@!?Zq9")
        return b"\x0b" + bytes(flipped) + b"\x1c\x0d"
    return good


class AckReader(threading.Thread):
    """Reads (and frames) every ACK the listener sends on `sock`, as a monitor would."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock, self.framer, self.acks = sock, MllpFramer(), []

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.sock.recv(65536):
                self.acks += self.framer.feed(data)


def test_1e5_garbled_frames_and_a_10mb_frame_leave_the_listener_up_bounded_and_counted(
    broker, tmp_path
):
    port = 0  # the kernel picks a free port: no race with another test
    beds = [listen("bed-1", port, bed_label="bed-1")]
    rng = random.Random(12)
    goods = [valid_frame(i, HR=50.0 + i % 100) for i in range(1, 201)]
    frames = [_hostile(rng, goods[i % 200]) for i in range(100_000)]
    whole = sum(1 for f in frames if f.endswith(b"\x1c\x0d"))
    huge = b"\x0b" + b"A" * (10 * 1024 * 1024)  # 10 MB, no end block
    proc = psutil.Process()
    with running(tmp_path, broker, beds) as gw:
        port = gw.listeners[0].port  # the one it bound
        lst = gw.listeners[0]
        (ack,) = send(port, goods[0])  # warm up: the first message pays for the imports
        assert msa(ack) == "AA"
        rss0 = proc.memory_info().rss
        t0 = time.perf_counter()
        sock = socket.create_connection(("127.0.0.1", port))
        reader = AckReader(sock)
        reader.start()
        for k in range(0, len(frames), 500):
            sock.sendall(b"".join(frames[k : k + 500]))
        sock.sendall(huge)  # a frame that never ends...
        sock.sendall(goods[1])  # ...until the next start block: this one is whole
        assert wait_until(lambda: len(reader.acks) == whole + 1, 120)
        elapsed = time.perf_counter() - t0
        rss1 = proc.memory_info().rss
        sock.close()
        reader.join(5)
        assert b"MSA|AA|" in reader.acks[-1]  # the good frame after the 10 MB one
        codes = [a.split(b"MSA|")[1][:2] for a in reader.acks]
        assert codes.count(b"AA") >= sum(1 for f in frames if f in goods) + 1
        st = lst.stats
        assert st.bad["oversized"] == 1  # the 10 MB frame: dropped at max_frame, not kept
        assert st.bad["truncated"] >= 30_000 and st.bad["bad_end"] >= 20_000
        assert st.bad["not_hl7"] > 0 and st.noise_bytes >= 9 * 2**20  # the rest of the 10 MB
        assert st.frames_ok + st.frames_bad >= 100_000
        growth = (rss1 - rss0) / 2**20
        print(
            f"\n10^5 hostile frames + 10 MB frame: {elapsed:.1f} s, "
            f"{100_000 / elapsed:.0f} frames/s, RSS growth {growth:.1f} MiB"
        )
        assert growth < 40, f"RSS grew by {growth:.1f} MiB"
        # still up: a new monitor connects and is answered
        (ack,) = send(port, goods[2])
        assert msa(ack) == "AA" and lst.running
        c = counters(gw)
        assert c["bad_oversized"] == 1 and c["frames_bad"] >= 50_000


def test_a_connection_dropped_mid_frame_is_counted_and_survived(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    beds = [listen("bed-1", port, bed_label="bed-1")]
    with running(tmp_path, broker, beds) as gw:
        port = gw.listeners[0].port  # the one it bound
        lst = gw.listeners[0]
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(valid_frame(1)[:300])  # the monitor reboots mid-frame
        assert wait_until(lambda: lst.stats.dropped_mid_frame == 1, 5)
        assert lst.stats.bad["truncated"] == 1
        (ack,) = send(port, valid_frame(2))
        assert msa(ack) == "AA" and gw.state.snapshot().bed("bed-1").readings == 1
        assert counters(gw)["listener_dropped_mid_frame"] == 1


def test_connection_limit_and_idle_timeout(broker, tmp_path):
    port = 0  # the kernel picks a free port: no race with another test
    beds = [listen("bed-1", port)]
    with running(tmp_path, broker, beds, max_connections=2, idle_timeout_seconds=0.5) as gw:
        port = gw.listeners[0].port  # the one it bound
        lst = gw.listeners[0]
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        assert wait_until(lambda: lst.stats.open == 2, 5)
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(5)
        assert c.recv(10) == b""  # refused: closed at once
        assert lst.stats.refused == 1
        a.settimeout(5)
        assert a.recv(10) == b""  # silent for longer than the idle timeout: closed
        assert wait_until(lambda: lst.stats.open == 0, 5) and lst.stats.idle_closed == 2
        for s in (a, b, c):
            s.close()
        (ack,) = send(port, valid_frame(1))  # and the listener still serves
        assert msa(ack) == "AA"


# --- lines that dial out: ACKs written back when the config says so --------------------------
def test_a_tcp_line_with_ack_true_writes_the_ack_back(broker, tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    bed = BedConfig(id="bed-1", source=TcpSource(type="tcp", host="127.0.0.1", port=port, ack=True))
    s = edge_settings(tmp_path, port=broker.port, gateway_id="gw-ack", beds=[bed])
    gw = Gateway(s)
    gw.start()
    try:
        srv.settimeout(10)
        conn, _ = srv.accept()  # the gateway dials the monitor
        conn.settimeout(10)
        conn.sendall(valid_frame(1) + frame(b"junk"))
        framer, acks = MllpFramer(), []
        deadline = time.monotonic() + 10
        while len(acks) < 2 and time.monotonic() < deadline:
            acks += framer.feed(conn.recv(4096))
        assert [msa(a) for a in acks] == ["AA", "AE"]
        conn.close()
    finally:
        gw.stop(flush_timeout=0.5)
        srv.close()


def test_a_listener_whose_port_is_taken_says_so_and_the_gateway_stays_up(broker, tmp_path):
    blocker = socket.create_server(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    s = edge_settings(
        tmp_path, port=broker.port, gateway_id="gw-busy", beds=[listen("bed-1", port)]
    )
    gw = Gateway(s)
    gw.start()
    try:
        assert gw.listeners[0].bind_failed
        events = [e.text for e in gw.state.snapshot().events]
        assert any("cannot start" in t and "taken" in t for t in events)
        blocker.close()  # freed: the health loop binds it within seconds
        assert wait_until(lambda: gw.listeners[0].running, 15)
        (ack,) = send(port, valid_frame(1))
        assert msa(ack) == "AA"
    finally:
        gw.stop(flush_timeout=0.5)
        blocker.close()


# --- configuration ------------------------------------------------------------------------------
def test_listener_config_errors_name_the_key_the_value_and_what_was_expected(tmp_path):
    import pytest

    from edge_agent.config import ConfigError, load_config

    def conf(text: str) -> Path:
        p = tmp_path / "gw.toml"
        p.write_text('gateway_id = "gw"\n' + text)
        return p

    two = (
        '[[beds]]\nid = "a"\nsource = { type = "mllp-listen", match = { bed_label = "1" } }\n'
        '[[beds]]\nid = "b"\nsource = { type = "mllp-listen" }\n'
    )
    with pytest.raises(ConfigError, match=r"share the listener 127.0.0.1:2575.*none on \['b'\]"):
        load_config(conf(two))
    same = two.replace(
        'type = "mllp-listen" }', 'type = "mllp-listen", match = { bed_label = "1" } }'
    )
    with pytest.raises(ConfigError, match="same match rules"):
        load_config(conf(same))
    bad = (
        '[[beds]]\nid = "a"\nsource = { type = "mllp-listen", port = 70000 }\n'
        '[hl7]\ntimezone = "Mars/Olympus"\nclock_skew_seconds = -1\n'
        '[[hl7.private_codes]]\ncode = "364"\nvital = "Temperature"\n'
    )
    with pytest.raises(ConfigError) as e:
        load_config(conf(bad))
    text = str(e.value)
    assert (
        "beds.0.source.mllp-listen.port = 70000: Input should be less than or equal to 65535"
        in text
    )
    assert "hl7.timezone = 'Mars/Olympus': Value error, expected an IANA time zone name" in text
    assert "hl7.clock_skew_seconds = -1" in text
    assert (
        "hl7.private_codes.0.vital = 'Temperature': Value error, expected a catalogue vital" in text
    )
    ok = load_config(conf(same.replace('bed_label = "1" } }\n', 'bed_label = "2" } }\n', 1)))
    assert list(ok.listeners()) == [("127.0.0.1", 2575)]  # loopback unless the site says


def test_the_example_configs_listener_beds_are_valid():
    import re
    import tomllib

    from edge_agent.config import EdgeSettings

    text = (ROOT / "deploy" / "edge" / "gateway.example.toml").read_text()
    # the commented-out listener beds, switched on
    text = re.sub(
        r'^# (\[\[beds\]\]|id = "bed-\d"|source = \{ type = "mllp-listen")', r"\1", text, flags=re.M
    )
    s = EdgeSettings(**tomllib.loads(text))
    ((addr, beds),) = s.listeners().items()
    assert addr == ("10.20.0.5", 2575) and [b.id for b in beds] == ["bed-4", "bed-5", "bed-6"]
