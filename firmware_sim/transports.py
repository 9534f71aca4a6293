"""The line between the simulated monitor and the gateway: pty, serial device or TCP.

Every transport takes whole frames and never cuts one on the wire (only the
`truncate` fault does): a frame that cannot be written whole right now (nobody
reading, buffer full) is dropped and counted in `overruns`, like a UART whose
receiver is not listening. A frame partly accepted by the kernel is finished before
the next frame is written.

- `PtyTransport`: a pseudo-terminal pair (os.openpty), slave in raw mode so CR is
  not translated; the gateway opens `device` (e.g. /dev/pts/5) with pyserial. The
  simulator keeps the slave open so the gateway may close and reopen it; pyserial
  flushes the input on open, so a gateway starts with fresh frames (and may see the
  tail of a frame first: skip to the next 0x0B). `flow_control=s` makes a full
  buffer wait up to s seconds for the reader instead of dropping (RTS/CTS-like).
- `SerialTransport`: a real serial device path (e.g. /dev/ttyUSB0) opened with
  pyserial at `baud`, 8N1, non-blocking writes.
- `TcpServerTransport`: the monitor listens on host:port and the gateway connects as
  a client. Several clients may be connected at once (up to `max_clients`, default
  4); every frame goes to each of them (a monitor export port with several
  listeners). A client joins at the next frame, a client that disconnects or falls
  more than `max_pending` bytes behind is dropped; extra clients beyond
  `max_clients` are refused (closed at once). With no client, frames are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import termios
import tty
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Transport(Protocol):
    @property
    def address(self) -> str:
        """What a gateway opens: a device path or tcp://host:port."""
        ...

    overruns: int
    bytes_sent: int

    def write(self, data: bytes) -> bool:
        """Send `data` whole or not at all (True when it was sent)."""
        ...

    def close(self) -> None: ...


class _FdWriter:
    """Whole-frame, non-blocking writes to a file descriptor.

    With `flow_control` > 0 a full buffer makes the writer wait up to that many
    seconds for the reader (as RTS/CTS hardware flow control would) before dropping.
    """

    def __init__(self, fd: int, flow_control: float = 0.0) -> None:
        self._fd = fd
        self._pending = b""
        self.flow_control = flow_control
        self.overruns = 0
        self.bytes_sent = 0
        os.set_blocking(fd, False)

    def _wait_writable(self) -> bool:
        if self.flow_control <= 0:
            return False
        return bool(select.select([], [self._fd], [], self.flow_control)[1])

    def _flush(self) -> bool:
        while self._pending:
            try:
                n = os.write(self._fd, self._pending)
            except BlockingIOError:
                if self._wait_writable():
                    continue
                return False
            except OSError as e:
                if e.errno in (errno.EIO, errno.EAGAIN):
                    return False
                raise
            self.bytes_sent += n
            self._pending = self._pending[n:]
        return True

    def write(self, data: bytes) -> bool:
        if not self._flush():  # the previous frame is still going out: drop this one whole
            self.overruns += 1
            return False
        try:
            n = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            if not self._wait_writable():
                self.overruns += 1
                return False
            n = 0
        except OSError as e:
            if e.errno == errno.EIO:  # no slave open on some systems
                self.overruns += 1
                return False
            raise
        self.bytes_sent += n
        self._pending = data[n:]  # finished before the next frame is written
        if self._pending and self.flow_control > 0:
            self._flush()
        return True


class PtyTransport(_FdWriter):
    """A pseudo-terminal pair; the gateway opens `address` (the slave device)."""

    def __init__(self, flow_control: float = 0.0) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave, termios.TCSANOW)  # no CR->NL, no echo: bytes as sent
        self.device = os.ttyname(self._slave)
        super().__init__(self._master, flow_control)

    @property
    def address(self) -> str:
        return self.device

    def close(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class SerialTransport:
    """A real serial device (pyserial), e.g. a USB-serial adapter cabled to the gateway."""

    def __init__(self, device: str, baud: int = 115200) -> None:
        import serial  # pyserial: only needed for this transport

        try:
            self._port = serial.Serial(device, baudrate=baud, write_timeout=0, timeout=0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise OSError(f"cannot open serial device {device} at {baud} baud: {e}") from e
        self.device = device
        self._pending = b""
        self.overruns = 0
        self.bytes_sent = 0

    @property
    def address(self) -> str:
        return self.device

    def _flush(self) -> bool:
        import serial

        while self._pending:
            try:
                n = self._port.write(self._pending) or 0
            except serial.SerialTimeoutException:
                n = 0
            if n == 0:
                return False
            self.bytes_sent += n
            self._pending = self._pending[n:]
        return True

    def write(self, data: bytes) -> bool:
        if not self._flush():
            self.overruns += 1
            return False
        self._pending = data
        self._flush()
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._port.close()


class TcpServerTransport:
    """Listens on host:port; every frame goes to each connected gateway."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        max_clients: int = 4,
        max_pending: int = 1 << 20,
    ) -> None:
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._srv.bind((host, port))
        except OSError as e:
            self._srv.close()
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self._srv.listen(8)
        self._srv.setblocking(False)
        self.host, self.port = self._srv.getsockname()[:2]
        self.max_clients = max_clients
        self.max_pending = max_pending
        self._clients: dict[socket.socket, bytearray] = {}
        self.overruns = 0
        self.bytes_sent = 0
        self.clients_accepted = 0
        self.clients_refused = 0

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._srv.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._clients) >= self.max_clients:
                self.clients_refused += 1
                log.warning("%s: refused %s (max %d clients)", self.address, peer, self.max_clients)
                conn.close()
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._clients[conn] = bytearray()
            self.clients_accepted += 1
            log.info("%s: gateway connected from %s", self.address, peer)

    def _drop(self, conn: socket.socket, why: str) -> None:
        log.info("%s: client dropped (%s)", self.address, why)
        self._clients.pop(conn, None)
        with contextlib.suppress(OSError):
            conn.close()

    def _send(self, conn: socket.socket, buf: bytearray) -> None:
        while buf:
            try:
                n = conn.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop(conn, str(e))
                return
            self.bytes_sent += n
            del buf[:n]

    def write(self, data: bytes) -> bool:
        self._accept()
        if not self._clients:
            self.overruns += 1
            return False
        for conn, buf in list(self._clients.items()):
            buf.extend(data)
            if len(buf) > self.max_pending:
                self._drop(conn, f"more than {self.max_pending} bytes behind")
                continue
            self._send(conn, buf)
        return True

    def poll(self) -> None:
        """Accept new clients and push pending bytes (called between frames)."""
        self._accept()
        for conn, buf in list(self._clients.items()):
            if buf:
                self._send(conn, buf)

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn, "simulator stopped")
        with contextlib.suppress(OSError):
            self._srv.close()


class CallbackTransport:
    """Hands every frame's bytes to `on_bytes` in-process (no line at all).

    For a gateway that runs a simulated monitor inside its own process (a `sim`
    source): the bytes are exactly what a pty would carry, faults included.
    """

    def __init__(self, on_bytes: Callable[[bytes], None], address: str = "inproc") -> None:
        self._on_bytes = on_bytes
        self._address = address
        self.overruns = 0
        self.bytes_sent = 0

    @property
    def address(self) -> str:
        return self._address

    def write(self, data: bytes) -> bool:
        self._on_bytes(data)
        self.bytes_sent += len(data)
        return True

    def close(self) -> None:
        pass
