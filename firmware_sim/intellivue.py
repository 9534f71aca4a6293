"""A simulated Philips IntelliVue speaking Data Export on a pty (MIB/RS-232) (issue 16).

The simulator plays a device made by someone else, so it writes its own bytes from the
guide ("Data Export Interface Programming Guide", 4535 642 59271) and shares no code
with the gateway's driver (`edge_agent/intellivue/`): two implementations of one
protocol checking each other. It answers an association request with an association
result (Guide p. 299), announces itself with an MDS Create Event (p. 54, model
"866062", bed label, absolute time), answers every poll request for numerics with an
extended poll result (p. 61) holding HR (ECG), SpO2, pleth pulse, NBP sys/dia/mean (one
compound object), Resp and Temp, answers a poll of the Patient Demographics object (pp.
103-105: admitted, patient id, sex, birth date; `admit()` changes the patient), a
keep-alive poll, and a release request.

What it measures: by default a steady generated patient (each numeric a slow sine about
a normal value); with `source`, a `firmware_sim.physiology` source, the same ones `vigil
sim` plays over HL7: a replayed stay of the canonical table (`load_replay`, `--replay`)
or a generated scenario (`GeneratedSource`, `--scenario`). The source is sampled at the
monitor's clock (`speed`), HR also gives the pleth pulse, SBP/DBP/MAP the NBP compound;
a vital the source has no value for is not in the poll result (the parameter is not
measured), and the replayed stay's id, sex and age are the admitted patient.

On the LAN (`udp_port`), it answers Data Export messages on UDP 127.0.0.1 (one message
per datagram, Guide ch. 4 p. 29) to whoever sent the last one.

Faults (`faults` set, or the methods): `cable_pull(seconds)` writes half a frame and
then nothing, ignoring the host, for `seconds`; `crc_every=N` sends every Nth frame with
a wrong FCS; `reboot(seconds)` forgets the association and is silent for `seconds`;
`demo=True` sets DEMO_DATA on every numeric; `switched_off` names parameters (e.g.
{"NBP"}) left out of the poll results; `invalid` names parameters sent with INVALID.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .physiology import PhysiologySource

# Guide ch. 4 p. 30-31: framing; ch. 5/7/9: codes.
_BOF, _EOF, _ESC = 0xC0, 0xC1, 0x7D
_DEMO, _INVALID = 0x0400, 0x8000

# parameter -> (handle, [(physio_id, unit_code, base, amplitude, decimals)])
PARAMETERS: dict[str, tuple[int, list[tuple[int, int, float, float, int]]]] = {
    "HR": (0x0101, [(0x4182, 0x0AA0, 78.0, 6.0, 0)]),  # NOM_ECG_CARD_BEAT_RATE, bpm
    "SpO2": (0x0102, [(0x4BB8, 0x0220, 96.0, 1.5, 0)]),  # NOM_PULS_OXIM_SAT_O2, %
    "Pulse": (0x0103, [(0x4822, 0x0AA0, 79.0, 6.0, 0)]),  # NOM_PLETH_PULS_RATE
    "NBP": (  # compound: NOM_PRESS_BLD_NONINV_SYS/DIA/MEAN, mmHg
        0x0104,
        [
            (0x4A05, 0x0F20, 118.0, 8.0, 0),
            (0x4A06, 0x0F20, 72.0, 5.0, 0),
            (0x4A07, 0x0F20, 87.0, 6.0, 0),
        ],
    ),
    "Resp": (0x0105, [(0x500A, 0x0AE0, 16.0, 2.0, 0)]),  # NOM_RESP_RATE, rpm
    "Temp": (0x0106, [(0x4B48, 0x17A0, 37.0, 0.3, 1)]),  # NOM_TEMP, degC
}
# parameter -> the catalogue vital of each of its rows, when a physiology source plays
SOURCE_VITALS: dict[str, tuple[str, ...]] = {
    "HR": ("HR",),
    "SpO2": ("O2Sat",),
    "Pulse": ("HR",),
    "NBP": ("SBP", "DBP", "MAP"),
    "Resp": ("Resp",),
    "Temp": ("Temp",),
}
_SEX = {"M": 1, "F": 2}  # PatientSex (Guide p. 105); 0: unknown


def _fcs(data: bytes) -> bytes:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return struct.pack("<H", crc ^ 0xFFFF)


def _wrap(user: bytes, bad_fcs: bool = False) -> bytes:
    body = struct.pack(">BBH", 0x11, 0x01, len(user)) + user
    check = _fcs(body)
    if bad_fcs:
        check = bytes([check[0] ^ 0x5A, check[1]])
    out = bytearray([_BOF])
    for b in body + check:
        if b in (_BOF, _EOF, _ESC):
            out += bytes([_ESC, b ^ 0x20])
        else:
            out.append(b)
    out.append(_EOF)
    return bytes(out)


def _unwrap_all(buf: bytearray) -> list[bytes]:
    """Whole frames' user data from `buf` (consumed); the simulator trusts only good FCS."""
    out = []
    while True:
        start = buf.find(bytes([_BOF]))
        if start < 0:
            buf.clear()
            return out
        end = buf.find(bytes([_EOF]), start)
        if end < 0:
            del buf[:start]
            return out
        raw, body, esc = buf[start + 1 : end], bytearray(), False
        del buf[: end + 1]
        for b in raw:
            if esc:
                body.append(b ^ 0x20)
                esc = False
            elif b == _ESC:
                esc = True
            else:
                body.append(b)
        if len(body) >= 6 and _fcs(bytes(body[:-2])) == bytes(body[-2:]):
            out.append(bytes(body[4:-2]))


def _attrs(avas: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">HH", a, len(v)) + v for a, v in avas)
    return struct.pack(">HH", len(avas), len(body)) + body


def _float(value: float, decimals: int) -> bytes:
    mant = round(value * 10**decimals)
    return struct.pack(">I", ((-decimals) & 0xFF) << 24 | (mant & 0xFFFFFF))


def _bcd_time(t: datetime) -> bytes:
    def b(v: int) -> int:
        return (v // 10) << 4 | v % 10

    return bytes(
        b(v) for v in (t.year // 100, t.year % 100, t.month, t.day, t.hour, t.minute, t.second, 0)
    )


def _label(text: str) -> bytes:
    raw = text.encode() + b"\x00" * (1 + len(text) % 2)
    return struct.pack(">H", len(raw)) + raw


_MDS = struct.pack(">HHH", 33, 0, 0)


def _data(ro_type: int, invoke: int, command: int, body: bytes) -> bytes:
    inner = struct.pack(">HHH", invoke, command, len(body)) + body
    return struct.pack(">HHHH", 0xE100, 2, ro_type, len(inner)) + inner


def association_result() -> bytes:
    """AC_SPDU with the response blocks of Guide p. 299 and a server's user info."""
    pres_head = bytes.fromhex(  # AssocRespPresentationHeader after 0xC1 LI (Guide p. 299)
        "3180a0808001010000a280a003000001"
        "a5803080800100810251010000308080"
        "0100810c2a8648ce1402010000000201"
        "0000000061803080020101a0806180a1"
        "80060c2a8648ce140201000000030100"
        "00a203020100a305a103020100be8028"
        "8002010281"
    )
    support = struct.pack(">IIIIII", 0x80000000, 8000, 1400, 1400, 0xFFFFFFFF, 0x60000000)
    support += _attrs([(0xF001, struct.pack(">I", 0x80000000) + _attrs([]))])
    user = struct.pack(">IIIII", 0x80000000, 0x40000000, 0, 0x00800000, 0x20000000)
    user += _attrs([]) + _attrs([(1, support)])
    user = bytes([len(user)]) + user
    pres = pres_head + user + bytes(16)
    pres = b"\xc1" + bytes([len(pres)]) + pres
    body = bytes.fromhex("0508130100160102800014020002") + pres
    return (
        b"\x0e"
        + (bytes([len(body)]) if len(body) < 255 else b"\xff" + struct.pack(">H", len(body)))
        + body
    )


@dataclass
class SimStats:
    associations: int = 0
    polls: int = 0
    results: int = 0
    bad_fcs_sent: int = 0
    released: int = 0
    ignored: int = 0


@dataclass
class IntelliVueSim:
    """The simulated monitor on a pseudo-terminal (`address` is the host's device)."""

    bed_label: str = "bed-1"
    seed: int = 0
    demo: bool = False
    switched_off: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    crc_every: int = 0
    stats: SimStats = field(default_factory=SimStats)
    pty: bool = True  # False: no line, what it sends is kept in `wire` (recordings)
    udp_port: int | None = None  # set: Data Export over UDP on 127.0.0.1:port (0: any)
    speed: float = 1.0  # the monitor's clock runs this many times real time (tests, demo)
    patient_id: str = "MRN-000001"  # the admitted patient (Patient Demographics object)
    patient_sex: int = 1  # PatientSex: 1 male, 2 female (Guide p. 105)
    patient_dob: datetime | None = datetime(1950, 6, 15, tzinfo=UTC)  # None: not sent
    clock_start: datetime | None = None  # its clock at start (default: now)
    source: PhysiologySource | None = None  # what it measures (default: a steady patient)

    def __post_init__(self) -> None:
        self.wire = bytearray()
        self._epoch = time.monotonic()
        self._start = self.clock_start or datetime.now(UTC).replace(microsecond=0)
        self._sampled_at: float | None = None
        if self.source is not None:
            pt = self.source.patient
            self.patient_id, self.patient_sex = pt.stay_id, _SEX.get(pt.sex, 0)
            self.patient_dob = (
                None
                if pt.age_years is None
                else self._start - timedelta(days=365.25 * pt.age_years + 1)
            )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._associated = False
        self._mute_until = 0.0
        self._frames = 0
        self._t0 = time.monotonic()
        self._sock: socket.socket | None = None
        self._peer: tuple[str, int] | None = None
        if self.udp_port is not None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind(("127.0.0.1", self.udp_port))
            host, port = self._sock.getsockname()
            self.address = f"{host}:{port}"
        elif not self.pty:
            self.address = "recording"
            return
        else:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            tty.setraw(self._master)
            self.address = os.ttyname(self._slave)
        self._thread = threading.Thread(
            target=self._run, name=f"ivue-sim-{self.bed_label}", daemon=True
        )
        self._thread.start()

    # --- faults ----------------------------------------------------------------------

    def cable_pull(self, seconds: float) -> None:
        """Half a frame on the wire, then nothing in or out for `seconds`."""
        with self._lock:
            self._write(_wrap(self._result_frame(0, 0))[:20])
            self._associated = False
            self._mute_until = time.monotonic() + seconds

    def reboot(self, seconds: float) -> None:
        """The monitor restarts: association forgotten, silent while it boots."""
        with self._lock:
            self._associated = False
            self._t0 = time.monotonic()
            self._mute_until = time.monotonic() + seconds

    def admit(self, patient_id: str, sex: int = 2, dob: datetime | None = None) -> None:
        """A new patient is admitted at this monitor (the nurse's Admit dialog)."""
        with self._lock:
            self.patient_id, self.patient_sex = patient_id, sex
            self.patient_dob = dob or self.patient_dob

    # --- protocol --------------------------------------------------------------------

    def now(self) -> datetime:
        """The monitor's clock (keeps running through a reboot, `speed` times real time)."""
        return self._start + timedelta(seconds=(time.monotonic() - self._epoch) * self.speed)

    def _rel(self) -> int:
        return int((time.monotonic() - self._t0) * 8000) & 0xFFFFFFFF

    def _write(self, data: bytes) -> None:
        if not self.pty:
            self.wire += data
            return
        with contextlib.suppress(OSError):
            os.write(self._master, data)

    def _send(self, user: bytes) -> None:
        if self._sock is not None:  # LAN: one message per datagram, no framing
            if self._peer is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(user, self._peer)
            return
        self._frames += 1
        bad = bool(self.crc_every) and self._frames % self.crc_every == 0
        self.stats.bad_fcs_sent += bad
        self._write(_wrap(user, bad_fcs=bad))

    def sample(self) -> dict[str, float | None] | None:
        """The source's vitals at the monitor's clock (None: no source). The stay's time
        is the source's start plus the monitor's elapsed time (it runs through reboots)."""
        if self.source is None:
            return None
        t = self.source.start_s + (time.monotonic() - self._epoch) * self.speed
        dt = 0.0 if self._sampled_at is None else max(0.0, t - self._sampled_at)
        self._sampled_at = t
        end = self.source.end_s
        return {} if end is not None and t >= end else self.source.sample(t, dt)

    def values(self, t: float) -> list[tuple[int, list[bytes]]]:
        """Numeric objects at `t` seconds: (handle, [NuObsValue bytes])."""
        out = []
        played = self.sample()
        for i, (name, (handle, rows)) in enumerate(PARAMETERS.items()):
            if name in self.switched_off:
                continue
            state = (_DEMO if self.demo else 0) | (_INVALID if name in self.invalid else 0)
            vals = []
            for k, (physio, unit, base, amp, dec) in enumerate(rows):
                if played is None:
                    v: float | None = base + amp * math.sin(t / 60.0 + i + self.seed)
                else:
                    v = played.get(SOURCE_VITALS[name][k])
                if v is not None:  # not measured: not in the result
                    vals.append(struct.pack(">HHH", physio, state, unit) + _float(v, dec))
            if vals:
                out.append((handle, vals))
        return out

    def _result_frame(self, invoke: int, poll_number: int) -> bytes:
        now = self.now()
        objs = b""
        objects = self.values(time.monotonic() - self._t0)
        for handle, vals in objects:
            if len(vals) == 1:
                avas = [(0x0921, struct.pack(">H", handle)), (0x0950, vals[0])]
            else:
                cmp = b"".join(vals)
                avas = [
                    (0x0921, struct.pack(">H", handle)),
                    (0x094B, struct.pack(">HH", len(vals), len(cmp)) + cmp),
                ]
            objs += struct.pack(">H", handle) + _attrs(avas)
        ctx = struct.pack(">HHH", 0, len(objects), len(objs)) + objs
        reply = struct.pack(">HHI", poll_number, 0, self._rel()) + _bcd_time(now)
        reply += struct.pack(">HHH", 1, 6, 0x0803) + struct.pack(">HH", 1, len(ctx)) + ctx
        res = _MDS + struct.pack(">HH", 0xF13B, len(reply)) + reply
        return _data(2, invoke, 7, res)

    def _demographics_frame(self, invoke: int, poll_number: int) -> bytes:
        def string(text: str) -> bytes:  # String: u16 octets, UTF-16 (p. 39), 0-padded
            raw = text.encode("utf-16-be")
            raw = raw.ljust(max(34, len(raw) + 2), b"\x00")
            return struct.pack(">H", len(raw)) + raw

        avas = [
            (0x0921, struct.pack(">H", 0x0200)),  # handle
            (0x0957, struct.pack(">H", 2)),  # NOM_ATTR_PT_DEMOG_ST: ADMITTED
            (0x095A, string(self.patient_id)),  # NOM_ATTR_PT_ID
            (0x0961, struct.pack(">H", self.patient_sex)),  # NOM_ATTR_PT_SEX
        ]
        if self.patient_dob is not None:
            avas.append((0x0958, _bcd_time(self.patient_dob)))  # NOM_ATTR_PT_DOB
        obj = struct.pack(">H", 0x0200) + _attrs(avas)
        ctx = struct.pack(">HHH", 0, 1, len(obj)) + obj
        reply = struct.pack(">HI", poll_number, self._rel()) + _bcd_time(self.now())
        reply += struct.pack(">HHH", 1, 42, 0x0807) + struct.pack(">HH", 1, len(ctx)) + ctx
        res = _MDS + struct.pack(">HH", 0x0C16, len(reply)) + reply
        return _data(2, invoke, 7, res)

    def _on_message(self, msg: bytes) -> None:
        first = msg[0]
        if first == 0x0D:  # association request
            self.stats.associations += 1
            self._associated = True
            self._send(association_result())
            attrs = _attrs(
                [
                    (0x0928, _label("Philips") + _label("866062")),
                    (0x091E, _label(self.bed_label)),
                    (0x0987, _bcd_time(self.now())),
                ]
            )
            info = _MDS + attrs
            arg = _MDS + struct.pack(">IHH", self._rel(), 0x0D06, len(info)) + info
            self._send(_data(1, 1, 1, arg))
        elif first == 0x09:  # release request
            self.stats.released += 1
            self._associated = False
            self._send(bytes.fromhex("0a18c11661803080020101a08063808001000000000000000000"))
        elif first == 0xE1 and self._associated and len(msg) >= 34:
            invoke, command = struct.unpack_from(">HH", msg, 8)
            action = struct.unpack_from(">H", msg, 24)[0]
            if command != 7 or action not in (0x0C16, 0xF13B):
                return  # MDS create result, or anything else: no answer
            poll_number, _part, obj_class = struct.unpack_from(">HHH", msg, 28)
            self.stats.polls += 1
            if obj_class == 6:
                self.stats.results += 1
                self._send(self._result_frame(invoke, poll_number))
            elif obj_class == 42:  # NOM_MOC_PT_DEMOG (Guide pp. 103-105)
                self._send(self._demographics_frame(invoke, poll_number))
            else:  # keep-alive (alert monitor): an empty result
                reply = struct.pack(">HI", poll_number, self._rel()) + b"\xff" * 8
                reply += struct.pack(">HHH", 1, obj_class, 0x0811) + struct.pack(">HH", 0, 0)
                self._send(
                    _data(2, invoke, 7, _MDS + struct.pack(">HH", 0x0C16, len(reply)) + reply)
                )
        else:
            self.stats.ignored += 1

    def _run_udp(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                if time.monotonic() < self._mute_until or not data:
                    continue
                self._peer = peer
                self._on_message(data)

    def _run(self) -> None:
        if self._sock is not None:
            self._run_udp()
            return
        buf = bytearray()
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                time.sleep(0.05)
                continue
            buf += data
            with self._lock:
                if time.monotonic() < self._mute_until:
                    buf.clear()
                    continue
                for msg in _unwrap_all(buf):
                    if msg:
                        self._on_message(msg)

    def close(self) -> None:
        if not self.pty:
            return
        self._stop.set()
        self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            return
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def record_stream(polls: int, **faults: object) -> bytes:
    """A monitor -> host recording as a capture tool would keep it: association result,
    MDS create event, then `polls` poll results (faults as for `IntelliVueSim`)."""
    sim = IntelliVueSim(pty=False, **faults)  # type: ignore[arg-type]
    sim._on_message(b"\x0d")  # an association request (only its session byte is read)
    for n in range(1, polls + 1):
        sim._send(sim._result_frame(n, n))
    return bytes(sim.wire)


class FaultError(ValueError):
    """An IntelliVue fault spec that does not parse."""


def parse_faults(specs: list[str]) -> dict[str, object]:
    """`--fault` specs of `vigil sim --protocol intellivue` -> IntelliVueSim keywords:
    `demo`, `invalid:SpO2,HR`, `off:NBP`, `crc:N` (every Nth frame a bad FCS)."""
    out: dict[str, object] = {"switched_off": set(), "invalid": set()}
    for spec in specs:
        name, _, arg = spec.partition(":")
        names = {a.strip() for a in arg.split(",") if a.strip()}
        if name == "demo" and not arg:
            out["demo"] = True
        elif name in ("invalid", "off") and names:
            unknown = names - set(PARAMETERS)
            if unknown:
                raise FaultError(
                    f"fault {spec!r}: unknown parameter {sorted(unknown)[0]!r}"
                    f" (choose from {', '.join(PARAMETERS)})"
                )
            key = "invalid" if name == "invalid" else "switched_off"
            out[key] = out[key] | names  # type: ignore[operator]
        elif name == "crc" and arg.isdigit() and int(arg) > 0:
            out["crc_every"] = int(arg)
        else:
            raise FaultError(
                f"fault {spec!r}: IntelliVue faults are demo, invalid:PARAM, off:PARAM, crc:N"
            )
    return out


def serve(
    beds: int,
    *,
    speed: float = 1.0,
    seed: int = 0,
    clock_start: datetime | None = None,
    faults: list[str] | None = None,
    udp_port: int | None = None,
    duration: float | None = None,
    echo: Callable[[str], None] = print,
    control: bool = False,
    sources: list[PhysiologySource] | None = None,
) -> list[IntelliVueSim]:
    """Run `beds` simulated IntelliVues (pty, or UDP ports udp_port, +1, ...) until
    `duration` or Ctrl-C; with `control`, stdin lines `cable_pull BED SECONDS` and
    `reboot BED SECONDS` inject those faults. `sources` (replayed stays, scenarios): bed
    i measures sources[i], one bed each. Returns the monitors (closed)."""
    kw = parse_faults(faults or [])
    if sources:
        beds = len(sources)
    sims: list[IntelliVueSim] = []
    try:
        for i in range(beds):
            sims.append(
                IntelliVueSim(
                    bed_label=f"bed-{i + 1}",
                    seed=seed + i,
                    speed=speed,
                    clock_start=clock_start,
                    udp_port=None if udp_port is None else (udp_port + i if udp_port else 0),
                    source=sources[i] if sources else None,
                    **kw,  # type: ignore[arg-type]
                )
            )
    except (ValueError, OSError):
        for s in sims:
            s.close()
        raise
    for s in sims:
        echo(f"{s.bed_label} {s.address}")
    sys.stdout.flush()  # a parent process reads the addresses before the run ends
    if control:
        threading.Thread(target=_control, args=(sims, echo), daemon=True).start()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        for s in sims:
            s.close()
    return sims


def _control(sims: list[IntelliVueSim], echo: Callable[[str], None]) -> None:
    for line in sys.stdin:
        parts = line.split()
        try:
            what, bed, seconds = parts[0], int(parts[1]), float(parts[2])
            sim = sims[bed - 1]
        except (IndexError, ValueError):
            echo(f"control: expected 'cable_pull|reboot BED SECONDS', got {line.strip()!r}")
            continue
        if what == "cable_pull":
            sim.cable_pull(seconds)
        elif what == "reboot":
            sim.reboot(seconds)
        else:
            echo(f"control: unknown fault {what!r} (cable_pull, reboot)")
