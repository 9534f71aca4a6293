"""An IntelliVue bed as a gateway line: the Data Export driver behind `LineSource`.

A bed with `source = { type = "intellivue", port = "/dev/ttyUSB0" }` (or `udp = "host"`)
gets an `IntelliVueLine` (`edge_agent.sources` registers it). The gateway's bed worker
reads a line's bytes and decodes them as MLLP-framed IHE PCD-01 messages, so this line
hands each `Reading` the driver makes over as one PCD-01 ORU^R01 message: an OBX per
vital with the MDC code of the numeric that gave it, the value in the catalogue unit
(UCUM), the monitor's time (OBX-14, and MSH-7 for the gateway's clock-skew check). The
receipt time (`Reading.received`) does not cross this bridge. Numerics the monitor
flagged (invalid, questionable, unavailable, calibration, test or demo data) are not in
`Reading.values`, so no OBX carries them and nothing downstream scores them.

This bridge costs one HL7 parse per poll (about 1 ms, BENCHMARKS.md); a gateway that
takes `Reading`s from a line directly would skip it and could also keep `Reading.quality`
(see docs/ARCHITECTURE.md, "IntelliVue Data Export driver").
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

    def _read(self) -> bytes:
        """One turn of the driver; the readings it completed, as MLLP-framed PCD-01."""
        for msg in self.session.outgoing():
            self._send(msg)
        out = bytearray()
        ident = self.session.identity
        for body in self._messages():
            for r in self.session.receive(body):
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
