"""An IntelliVue bed as a gateway line: the Data Export driver behind `LineSource`.

A bed with `source = { type = "intellivue", port = "/dev/ttyUSB0" }` (or `udp = "host"`)
gets an `IntelliVueLine` (`edge_agent.sources` registers it). The gateway's bed worker
takes its `Reading`s as the driver made them (`read_readings`): the same shape an HL7
monitor's readings have after `MllpDecoder` (vital -> value in catalogue units, device
time, receipt time), plus `Reading.quality` (vital -> why the monitor's numeric was
withheld: invalid, questionable, unavailable, calibration, test or demo data), so the
windows, scoring and NEWS2 do not know which driver delivered them. Withheld numerics
are not in `Reading.values`, so nothing downstream scores them.

`read()` (the plain `LineSource` interface) still hands each Reading over as one IHE
PCD-01 ORU^R01 (`to_pcd01`: an OBX per vital with the MDC code of the numeric that gave
it, the catalogue unit, the monitor's time in OBX-14 and MSH-7), for anything that reads
a line's bytes; that bridge costs one HL7 parse per poll (about 1 ms, BENCHMARKS.md
"IntelliVue driver") and loses `quality` and `received`, so the gateway does not use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from contracts.mdc import Term
from contracts.mllp import frame as mllp_frame
from contracts.vitals import BY_NAME

from ..config import IntelliVueSource, LinkConfig
from ..decoder import Reading
from ..sources import READ_TIMEOUT, LineSource
from .driver import UDP_PORT, Session
from .framing import FrameDecoder, frame


def _ts(t: Any) -> str:
    return t.strftime("%Y%m%d%H%M%S.") + f"{t.microsecond // 1000:03d}+0000"


def _esc(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "-_.: ")


def to_pcd01(r: Reading, terms: dict[str, Term], sending_app: str) -> bytes:
    """One Reading as an IHE PCD-01 ORU^R01 (values already in catalogue units)."""
    # MSH-7 is the monitor's clock (its poll result's time), so the gateway's clock-skew
    # check flags a monitor whose clock is off, as for an HL7 monitor.
    segs = [
        f"MSH|^~\\&|{_esc(sending_app)}|VIGIL-INTELLIVUE|||{_ts(r.obs_time)}||ORU^R01^ORU_R01|"
        f"{_esc(r.bed)}-{r.seq}|P|2.6",
        f"PID|||{_esc(r.stay)}",
        f"PV1||I|^^{_esc(r.bed)}",
        f"OBR|1|||182777000^MDC_OBS_ORDER^MDC|||{_ts(r.obs_time)}",
    ]
    n = 0
    for vital, value in r.values.items():
        term = terms.get(vital)
        if value is None or term is None:
            continue
        n += 1
        unit = BY_NAME[vital].unit
        segs.append(
            f"OBX|{n}|NM|{term.code}^{term.ref}^MDC||{value:.6g}|{unit}^{unit}^UCUM|||||R|||"
            f"{_ts(r.obs_time)}"
        )
    return "\r".join(segs).encode("ascii") + b"\r"


class IntelliVueLine(LineSource):
    """The driver (`Session`) over pyserial or UDP, read by the gateway like a line."""

    kind = "intellivue"

    def __init__(
        self, bed: str, cfg: IntelliVueSource, link: LinkConfig, stop: threading.Event
    ) -> None:
        super().__init__(bed, link, stop)
        self.cfg = cfg
        self.session = Session(
            bed,
            poll_seconds=cfg.poll_seconds,
            keep_alive_seconds=cfg.keep_alive_seconds,
            silence_seconds=cfg.silence_seconds,
        )
        self.frames = FrameDecoder()
        self._port: Any = None
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] | None = None
        self._direct = False  # read_readings() called: Readings kept, no PCD-01 bridge
        self._ready: list[Reading] = []

    def describe(self) -> str:
        c = self.cfg
        return f"intellivue {c.port} {c.baud} 8N1" if c.port else f"intellivue udp://{c.udp}"

    def _open(self) -> None:
        self.frames.reset()
        if self.cfg.port is not None:
            import serial

            try:
                self._port = serial.Serial(self.cfg.port, self.cfg.baud, timeout=READ_TIMEOUT / 4)
            except serial.SerialException as e:
                raise OSError(str(e)) from None
        else:
            assert self.cfg.udp is not None
            host, _, port = self.cfg.udp.partition(":")
            self._addr = (host, int(port or UDP_PORT))
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.settimeout(READ_TIMEOUT / 4)

    def _send(self, msg: bytes) -> None:
        if self._port is not None:
            import serial

            try:
                self._port.write(frame(msg))
            except serial.SerialException as e:
                raise OSError(str(e)) from None
        elif self._sock is not None and self._addr is not None:
            self._sock.sendto(msg, self._addr)

    def _messages(self) -> list[bytes]:
        if self._port is not None:
            import serial

            try:
                data = self._port.read(1)
                waiting = self._port.in_waiting if data else 0
                if waiting:
                    data += self._port.read(waiting)
            except serial.SerialException as e:
                raise OSError(str(e)) from None
            return self.frames.feed(data)
        assert self._sock is not None
        try:
            data, addr = self._sock.recvfrom(65535)
        except TimeoutError:
            return []
        except ConnectionRefusedError:  # ICMP unreachable: the silence timer re-associates
            return []
        if self._addr and addr[0] != self._addr[0]:
            self.session.stats.bad["foreign_sender"] += 1
            return []
        return [data]

    def read_readings(self) -> list[Reading] | None:
        """One turn of the driver: the Readings it completed, as they are (quality and
        receipt time kept); what the gateway's bed worker takes from this line. None when
        the line was lost and reopened, [] after a quiet turn, as `read()` says."""
        self._direct = True
        if self.read() is None:
            self._ready.clear()
            return None
        out, self._ready = self._ready, []
        return out

    def _read(self) -> bytes:
        """One turn of the driver: its Readings, kept for `read_readings`, or (plain
        `read()`) as MLLP-framed PCD-01."""
        for msg in self.session.outgoing():
            self._send(msg)
        out = bytearray()
        ident = self.session.identity
        for body in self._messages():
            for r in self.session.receive(body):
                if self._direct:
                    self._ready.append(r)
                    continue
                app = (ident.model or "IntelliVue") if ident else "IntelliVue"
                out += mllp_frame(to_pcd01(r, self.session.last_terms, f"IntelliVue-{app}"))
            for reply in self.session.replies():
                self._send(reply)
            ident = self.session.identity
        return bytes(out)

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            msg = self.session.release()
            if msg is not None:
                self._send(msg)
        if self._port is not None:
            self._port.close()
            self._port = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.session.state = "idle"

    @property
    def associated(self) -> bool:
        return self.session.state == "polling"
