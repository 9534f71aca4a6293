"""The monitor-line decoder survives anything on the line and loses no valid frame.

Framing (contracts.mllp.MllpFramer) and parsing (edge_agent.pcd01, python-hl7) under
one `MllpDecoder`: resync after noise and cut frames, a bounded buffer, every dropped
frame counted by reason; each message parsed with its ACK.
"""

from __future__ import annotations

import os
import random
import threading
import time

import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.mllp import MllpFramer, frame
from edge_agent.decoder import MllpDecoder
from firmware_sim.hl7 import build_oru
from tests.support.edge import T0, observation, valid_frame


def seq_of(r) -> int:
    """The frame a reading came from: `observation(seq)` is observed at T0 + seq seconds."""
    return round((r.obs_time - T0).total_seconds())


# Garbage never holds a whole valid reading by chance; framing bytes are frequent in it.
garbage = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"\x0b", b"\x1c", b"\x0d", b"\x1c\x0d", b"MSH|^~\\&|", b"xyz"]), max_size=20
).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def test_a_valid_frame_decodes_to_the_reading_that_was_sent():
    obs = observation(5, HR=88.5, O2Sat=None)
    d = MllpDecoder(source="bed-1")
    (got,) = d.feed_frames(valid_frame(5, HR=88.5, O2Sat=None))
    (r,) = got.readings
    assert (r.bed, r.stay, r.seq) == ("bed-1", "pn-p000001", 1)  # the line's bed, its count
    assert r.monitor_id  # MSH-3 (or the device id) of the sender
    assert r.obs_time == obs.obs_time
    assert r.values["HR"] == 88.5 and r.values["O2Sat"] is None and len(r.values) == 7
    assert r.static["Gender"] == 0.0 and r.static["Age"] == 76.0
    assert r.static["HospAdmTime"] is None  # a monitor does not know the hospital admission
    assert abs(r.static["ICULOS"] - (2 + 5 / 3600)) < 1e-9
    assert got.ack.startswith(b"MSH|") and b"\rMSA|AA|" in got.ack and got.reason == ""
    assert d.stats.frames_ok == 1 and d.stats.frames_bad == 0


def test_the_framer_alone_resyncs_counts_and_stays_bounded():
    f = MllpFramer(max_frame=64)
    stream = (
        b"noise"
        + frame(b"MSH|a")
        + b"\x0bcut short"
        + frame(b"MSH|b")
        + b"\x0b"
        + b"A" * 10_000
        + b"\x1c\x0d"
        + b"\x0bno cr\x1cx"
        + frame(b"MSH|c")
    )
    out = [body for k in range(0, len(stream), 7) for body in f.feed(stream[k : k + 7])]
    assert out == [b"MSH|a", b"MSH|b", b"MSH|c"]
    assert dict(f.stats.bad) == {"truncated": 1, "oversized": 1, "bad_end": 1}
    assert f.stats.frames == 3 and f.stats.noise_bytes > 5 and f.buffered == 0
    f.feed(b"\x0bhalf")
    assert f.in_frame
    f.reset()  # the line was lost
    assert f.stats.bad["truncated"] == 2 and not f.in_frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 5000), max_size=10))
def test_random_bytes_never_raise_and_every_byte_is_accounted(data, cuts):
    d = MllpDecoder(max_frame=512)
    for chunk in chunked(data, cuts):
        assert d.feed(chunk) == []
    d.reset()
    assert d.stats.frames_ok == 0
    assert d.stats.noise_bytes <= len(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(garbage, st.booleans()), min_size=1, max_size=12),
    st.lists(st.integers(0, 20000), max_size=15),
)
def test_every_valid_frame_between_garbage_is_recovered_in_order(parts, cuts):
    stream, sent = b"", []
    for i, (junk, send_valid) in enumerate(parts, 1):
        stream += junk
        if send_valid:
            stream += valid_frame(i, HR=60.0 + i)
            sent.append(i)
    d = MllpDecoder()
    got = [r for chunk in chunked(stream, cuts) for r in d.feed(chunk)]
    assert [seq_of(r) for r in got] == sent
    assert [r.values["HR"] for r in got] == [60.0 + i for i in sent]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**6),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_garbled_frames_are_rejected_or_decoded_never_raise(seq, flips):
    body = bytearray(build_oru(observation(seq)).encode())
    for pos, val in flips:
        body[pos % len(body)] = val
    d = MllpDecoder()
    out = d.feed_frames(b"\x0b" + bytes(body) + b"\x1c\x0d" + valid_frame(seq + 1))
    # the next whole frame is always recovered, whatever the garbled one became
    assert out[-1].readings and seq_of(out[-1].readings[-1]) == seq + 1
    assert d.stats.frames_ok + d.stats.frames_bad >= 2
    assert all(o.ack.startswith(b"MSH|") for o in out)  # every message gets its ACK


def _garble(rng: random.Random, good: bytes) -> tuple[bytes, bool]:
    """(bytes on the line, intact?) for one frame; never adds framing bytes."""
    kind = rng.randrange(5)
    body = bytearray(good[1:-2])
    if kind == 0:
        return good, True
    if kind == 1:  # cut short: the monitor rebooted mid-frame
        return b"\x0b" + bytes(body[: rng.randrange(len(body))]), False
    if kind == 2:  # flipped characters (printable, not framing)
        for _ in range(rng.randint(1, 6)):
            body[rng.randrange(len(body))] = rng.choice(b"#@!?Zq9")
        return b"\x0b" + bytes(body) + b"\x1c\x0d", False
    if kind == 3:  # end block lost
        return b"\x0b" + bytes(body) + b"\x1c", False
    noise = bytes(rng.choice(b"abc\x00\xff\x0d") for _ in range(rng.randint(1, 40)))
    return noise + good, True  # noise before an intact frame


def _hostile(rng: random.Random, good: bytes) -> tuple[bytes, bool]:
    """Mostly damage the framing sees (cut, end lost, junk bodies), sometimes a garbled
    or an intact message: the parser costs ~1 ms a message, the framing ~1 us."""
    kind = rng.randrange(100)
    if kind < 4:
        return _garble(rng, good)
    body = good[1:-2]
    if kind < 40:  # cut short
        return b"\x0b" + body[: rng.randrange(len(body))], False
    if kind < 70:  # end block lost
        return b"\x0b" + body[: rng.randrange(len(body))] + b"\x1c", False
    junk = bytes(rng.choice(b"MSH|^~&abc019 \r\x00\xff") for _ in range(rng.randint(0, 80)))
    return b"\x0b" + junk + b"\x1c\x0d", False  # whole frame, not HL7


def test_100k_garbled_frames_no_crash_all_counted():
    rng = random.Random(1)
    goods = [valid_frame(i, HR=50.0 + i % 100) for i in range(1, 201)]
    parts, intact = [], []
    for i in range(100_000):
        data, ok = _hostile(rng, goods[i % 200])
        parts.append(data)
        if ok:
            intact.append(i)
    stream = b"".join(parts) + b"\x0b"  # a last start block closes a trailing cut frame
    d = MllpDecoder()
    t0 = time.perf_counter()
    got = []
    for k in range(0, len(stream), 4096):
        got += d.feed(stream[k : k + 4096])
        assert d.buffered <= d.max_frame
    elapsed = time.perf_counter() - t0
    s = d.stats
    assert s.frames_ok + s.frames_bad == 100_000  # every frame counted exactly once
    assert s.frames_ok >= len(intact)  # every intact frame decoded (flips may hit free text)
    it = iter(seq_of(r) for r in got)  # the intact frames, in order, among what was decoded
    assert all(any(seq == g for g in it) for seq in ((i % 200) + 1 for i in intact))
    assert s.bad["truncated"] > 0 and s.bad["bad_end"] > 0 and s.noise_bytes > 0
    assert s.bad["not_hl7"] > 0
    assert elapsed < 60, f"decoder too slow: {elapsed:.1f}s"


def test_intact_frames_in_order_through_a_real_pty():
    master, slave = os.openpty()
    import termios
    import tty

    tty.setraw(slave, termios.TCSANOW)
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.05)
    rng = random.Random(2)
    sent, stream = [], b""
    for i in range(1, 1001):
        data, ok = _garble(rng, valid_frame(i))
        stream += data
        if ok:
            sent.append(i)
    stream += b"\x0b"

    def writer() -> None:
        for k in range(0, len(stream), 1024):
            os.write(master, stream[k : k + 1024])

    t = threading.Thread(target=writer)
    t.start()
    d, got, deadline = MllpDecoder(), [], time.monotonic() + 30
    while time.monotonic() < deadline and d.stats.frames_ok + d.stats.frames_bad < 1000:
        got += d.feed(port.read(4096))
    t.join()
    port.close()
    os.close(master)
    os.close(slave)
    assert d.stats.frames_ok + d.stats.frames_bad == 1000
    it = iter(seq_of(r) for r in got)  # every intact frame, in order, among what was decoded
    assert all(any(seq == g for g in it) for seq in sent)


def test_oversized_frame_is_dropped_and_the_buffer_stays_bounded():
    d = MllpDecoder(max_frame=2048)
    out = d.feed(b"\x0b" + b"A" * 100_000 + b"\x1c\x0d" + valid_frame(9))
    assert [seq_of(r) for r in out] == [9]
    assert d.stats.bad["oversized"] == 1 and d.buffered == 0


def test_a_message_the_parser_refuses_is_counted_by_reason_and_acked_with_an_error():
    good = build_oru(observation(3))
    d = MllpDecoder(source="bed-1")
    refused = good.replace("ORU^R01", "QRY^A19", 1)
    out = d.feed_frames(frame(refused) + frame(b"not hl7 at all") + frame(good))
    assert [o.reason for o in out] == ["unsupported_type", "not_hl7", ""]
    assert b"MSA|AR|" in out[0].ack and b"\rERR|" in out[0].ack
    assert b"MSA|AE" in out[1].ack and b"\rERR|" in out[1].ack  # MSA-2 empty: no MSH
    assert b"MSA|AA|" in out[2].ack and out[2].readings
    assert dict(d.stats.bad) == {"unsupported_type": 1, "not_hl7": 1}


def test_one_bad_obx_is_set_aside_and_the_rest_of_the_message_used():
    good = build_oru(observation(3, HR=91.0))
    d = MllpDecoder()
    # the SpO2 row garbled: not a number; the other vitals still count
    rows = good.split("\r")
    i = next(k for k, row in enumerate(rows) if row.startswith("OBX|") and "|150456^" in row)
    cells = rows[i].split("|")
    cells[5] = "9?.1"
    rows[i] = "|".join(cells)
    (r,) = d.feed(frame("\r".join(rows)))
    assert r.values["HR"] == 91.0 and "O2Sat" not in r.values
    assert d.stats.frames_ok == 1 and sum(d.stats.set_aside.values()) >= 1
