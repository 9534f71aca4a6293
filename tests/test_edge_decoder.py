"""The monitor-line decoder survives anything on the line and loses no valid frame."""

from __future__ import annotations

import os
import random
import threading
import time

import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.decoder import MllpDecoder, parse_reading
from firmware_sim.hl7 import build_oru
from tests.support.edge import T0, observation, valid_frame

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
    (r,) = MllpDecoder().feed(valid_frame(5, HR=88.5, O2Sat=None))
    assert (r.bed, r.stay, r.monitor_id, r.seq) == ("bed-1", "pn-p000001", "MON01", 5)
    assert r.obs_time == obs.obs_time == T0 + (obs.obs_time - T0)
    assert r.values["HR"] == 88.5 and r.values["O2Sat"] is None and len(r.values) == 7
    assert r.static["Gender"] == 0.0 and r.static["Age"] == 76.0
    assert r.static["HospAdmTime"] == -28.0
    assert abs(r.static["ICULOS"] - (2 + 5 / 3600)) < 1e-9


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
    assert [r.seq for r in got] == sent
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
    out = d.feed(b"\x0b" + bytes(body) + b"\x1c\x0d" + valid_frame(seq + 1))
    assert out and out[-1].seq == seq + 1  # the next whole frame is always recovered
    assert d.stats.frames_ok + d.stats.frames_bad >= 2


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


def test_100k_garbled_frames_no_crash_all_counted():
    rng = random.Random(1)
    goods = [valid_frame(i, HR=50.0 + i % 100) for i in range(1, 201)]
    parts, intact = [], []
    for i in range(100_000):
        data, ok = _garble(rng, goods[i % 200])
        parts.append(data)
        if ok:
            intact.append(i)
    stream = b"".join(parts) + b"\x0b"  # a last start block closes a trailing cut frame
    d = MllpDecoder()
    t0 = time.perf_counter()
    got = []
    for k in range(0, len(stream), 4096):
        got += d.feed(stream[k : k + 4096])
    elapsed = time.perf_counter() - t0
    s = d.stats
    assert s.frames_ok + s.frames_bad == 100_000  # every frame counted exactly once
    assert s.frames_ok >= len(intact)  # every intact frame decoded (flips may hit free text)
    it = iter(r.seq for r in got)  # the intact frames, in order, among what was decoded
    assert all(any(seq == g for g in it) for seq in ((i % 200) + 1 for i in intact))
    assert s.bad["truncated"] > 0 and s.bad["bad_end"] > 0 and s.noise_bytes > 0
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
    intact = [r.seq for r in got if r.seq in set(sent)]
    assert intact == sent


def test_oversized_frame_is_dropped_and_the_buffer_stays_bounded():
    d = MllpDecoder(max_frame=2048)
    out = d.feed(b"\x0b" + b"A" * 100_000 + b"\x1c\x0d" + valid_frame(9))
    assert [r.seq for r in out] == [9]
    assert d.stats.bad["oversized"] == 1 and len(d._buf) == 0


def test_parse_reading_names_the_reason():
    import pytest

    from edge_agent.decoder import FrameError

    good = build_oru(observation(3))
    with pytest.raises(FrameError) as e:
        parse_reading(good.replace("|R|||", "|Q|||", 1).encode())
    assert e.value.reason == "bad_value"
    with pytest.raises(FrameError) as e:
        parse_reading(good.replace("2026", "2O26", 1).encode())
    assert e.value.reason == "bad_time"
