"""Where a bed's bytes come from: a serial line, a TCP export port, or a registered line kind.

(Monitors that connect to the gateway instead are served by edge_agent/listener.py.)

Every source has `read() -> bytes | None`: bytes (possibly empty after a short timeout,
so the bed's worker can check for shutdown), or None when the line was lost and
reopened (the decoder then drops its half frame); `write(bytes)` sends an ACK back
(serial and TCP lines; OSError when the line is down). A lost line (device unplugged,
connection refused or closed) is reopened with exponential backoff; `state` says
`up` or `down` and `reconnects` counts reopenings. The gateway carries no simulator: a
`sim` source is served by the factory that `vigil_cli.sim_line` registers with
`register_source` (the `vigil` command and the tests do that). An `intellivue` source
(Philips Data Export, edge_agent/intellivue/) is registered here, per bed in config.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from .config import IntelliVueSource, LinkConfig, SerialSource, SimSource, TcpSource

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.2
CHUNK = 4096


class Backoff:
    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.next = low, high, low

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.next)
        self.next = min(self.high, self.next * 2)

    def reset(self) -> None:
        self.next = self.low


class LineSource:
    """Base: open/read/close with reconnect and backoff; subclasses do the I/O."""

    kind = "line"

    def __init__(self, bed: str, link: LinkConfig, stop: threading.Event) -> None:
        self.bed = bed
        self._stop = stop
        self._backoff = Backoff(link.reconnect_min_seconds, link.reconnect_max_seconds)
        self.state = "down"
        self.reconnects = 0
        self.bytes_read = 0
        self._opened_once = False

    def describe(self) -> str:
        return self.kind

    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> bytes:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise OSError(f"a {self.kind} line takes no writes")

    def write(self, data: bytes) -> None:
        """Send `data` to the monitor (an HL7 ACK); OSError when the line is not up."""
        if self.state != "up":
            raise OSError(f"line {self.describe()} is down")
        self._write(data)

    def read(self) -> bytes | None:
        if self.state == "down":
            try:
                self._open()
            except OSError as e:
                log.warning(
                    "bed %s: cannot open %s: %s (retry in %.1fs)",
                    self.bed,
                    self.describe(),
                    e,
                    self._backoff.next,
                )
                self._backoff.wait(self._stop)
                return b""
            self.state = "up"
            self._backoff.reset()
            log.info("bed %s: line %s open", self.bed, self.describe())
            if self._opened_once:
                self.reconnects += 1
                return None
            self._opened_once = True
        try:
            data = self._read()
        except OSError as e:
            log.warning("bed %s: line %s lost: %s", self.bed, self.describe(), e)
            self.close()
            return None
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        if self.state == "up":
            with contextlib.suppress(OSError):
                self._close()
        self.state = "down"


class SerialLine(LineSource):
    kind = "serial"

    def __init__(
        self, bed: str, cfg: SerialSource, link: LinkConfig, stop: threading.Event
    ) -> None:
        super().__init__(bed, link, stop)
        self.cfg = cfg
        self._port: Any = None

    def describe(self) -> str:
        c = self.cfg
        return f"{c.port} {c.baud} {c.bytesize}{c.parity}{c.stopbits}"

    def _open(self) -> None:
        import serial

        c = self.cfg
        try:
            self._port = serial.Serial(
                c.port,
                c.baud,
                bytesize=c.bytesize,
                parity=c.parity,
                stopbits=c.stopbits,
                timeout=READ_TIMEOUT,
            )
        except serial.SerialException as e:
            raise OSError(str(e)) from None

    def _read(self) -> bytes:
        import serial

        try:
            # read(CHUNK) would wait for CHUNK bytes or the timeout: take one byte (waits
            # at most the timeout), then whatever else has arrived, so latency stays low.
            data = self._port.read(1)
            waiting = self._port.in_waiting if data else 0
            return data + self._port.read(min(waiting, CHUNK)) if waiting else data
        except serial.SerialException as e:
            raise OSError(str(e)) from None

    def _write(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
        except serial.SerialException as e:
            raise OSError(str(e)) from None

    def _close(self) -> None:
        self._port.close()


class TcpLine(LineSource):
    kind = "tcp"

    def __init__(self, bed: str, cfg: TcpSource, link: LinkConfig, stop: threading.Event) -> None:
        super().__init__(bed, link, stop)
        self.cfg = cfg
        self._sock: socket.socket | None = None

    def describe(self) -> str:
        return f"tcp://{self.cfg.host}:{self.cfg.port}"

    def _open(self) -> None:
        self._sock = socket.create_connection((self.cfg.host, self.cfg.port), timeout=5)
        self._sock.settimeout(READ_TIMEOUT)

    def _read(self) -> bytes:
        assert self._sock is not None
        try:
            data = self._sock.recv(CHUNK)
        except TimeoutError:
            return b""
        if not data:
            raise ConnectionResetError("monitor closed the connection")
        return data

    def _write(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()


LineFactory = Callable[[str, Any, LinkConfig, threading.Event], LineSource]

# Source config type -> factory, for line kinds the gateway does not carry itself (the
# `vigil` CLI registers the simulated monitor here: `vigil_cli.sim_line.install`).
_FACTORIES: dict[type, LineFactory] = {}


def register_source(config_type: type, factory: LineFactory) -> None:
    """Let `open_line` build lines for `config_type` with `factory(bed, cfg, link, stop)`."""
    _FACTORIES[config_type] = factory


def open_line(bed: str, source: Any, link: LinkConfig, stop: threading.Event) -> LineSource:
    if isinstance(source, SerialSource):
        return SerialLine(bed, source, link, stop)
    if isinstance(source, TcpSource):
        return TcpLine(bed, source, link, stop)
    factory = _FACTORIES.get(type(source))
    if factory is not None:
        return factory(bed, source, link, stop)
    if isinstance(source, SimSource):
        raise TypeError(
            "a 'sim' source runs the monitor simulator, which this gateway does not carry: "
            "start it with the `vigil` command (firmware_sim installed), or use serial/tcp"
        )
    raise TypeError(f"unknown source {source!r}")


def _intellivue_line(
    bed: str, cfg: IntelliVueSource, link: LinkConfig, stop: threading.Event
) -> LineSource:
    """A bed whose monitor speaks Philips IntelliVue Data Export (edge_agent/intellivue/)."""
    from .intellivue.line import IntelliVueLine

    return IntelliVueLine(bed, cfg, link, stop)


register_source(IntelliVueSource, _intellivue_line)
