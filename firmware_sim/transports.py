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
- `MllpClientTransport`: the monitor is an HL7 MLLP *client*, as real monitors and
  their HL7 gateways are (GE B40 manual p=17: the receiving system is the server, the
  monitor connects and keeps retrying): it connects to a listener (`mllp://host:port`),
  sends each frame and waits for the HL7 original-mode ACK naming its control id
  (MSA-2). `AA`/`CA` counts `acked`; `AE`/`AR`/`CE`/`CR` counts `nacked` (not resent:
  the receiver read it and refused it); no ACK within `ack_timeout` resends the same
  frame, up to `retries` times (GE: "will retry the message up to three times"), then
  counts it `lost`. A dropped connection is reopened with exponential backoff
  (`reconnect_min` .. `reconnect_max` seconds) and the frame in flight is resent. While
  there is no connection new frames are dropped (`overruns`): a monitor does not
  back-fill ("the trended data for that time period will be lost", GE p=17). A write
  that holds no whole frame (the `truncate` fault) is sent without waiting for an ACK.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from contracts.mllp import END_BLOCK, SB, MllpFramer

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


ACK_OK = frozenset({"AA", "CA"})
ACK_REFUSED = frozenset({"AE", "AR", "CE", "CR"})


def control_id_of(data: bytes) -> str | None:
    """MSH-10 of the first whole MLLP frame in `data`; None when `data` holds no whole
    frame (nothing the receiver could acknowledge)."""
    start = data.find(bytes([SB]))
    if start < 0:
        return None
    end = data.find(END_BLOCK, start + 1)
    if end < 0:
        return None
    body = data[start + 1 : end]
    if not body.startswith(b"MSH") or len(body) < 4:
        return ""
    msh = body.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = msh.split(body[3:4])
    return fields[9].decode("latin-1").strip() if len(fields) > 9 else ""


def parse_ack(body: bytes) -> tuple[str, str, str]:
    """(MSA-1 code, MSA-2 control id, ERR/MSA-3 text) of an ACK; ValueError if none."""
    text = body.decode("latin-1")
    sep = text[3:4] if text.startswith("MSH") else "|"
    code = control = detail = ""
    for seg in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        f = seg.split(sep)
        if f[0] == "MSA":
            code = f[1].strip() if len(f) > 1 else ""
            control = f[2].strip() if len(f) > 2 else ""
            detail = f[3] if len(f) > 3 else ""
        elif f[0] == "ERR" and not detail:
            detail = sep.join(f[1:])[:200]
    if not code:
        raise ValueError("no MSA segment: not an HL7 ACK")
    return code, control, detail


@dataclass
class AckStats:
    """What an `MllpClientTransport` knows about its frames."""

    sent: int = 0  # frames written to a connection (resends included)
    acked: int = 0  # AA/CA for the frame's control id
    nacked: int = 0  # AE/AR (CE/CR): read and refused by the receiver
    resent: int = 0  # resends after an ACK timeout or a lost connection
    lost: int = 0  # no ACK after every retry
    unframed: int = 0  # writes holding no whole frame (sent without waiting)
    stray_acks: int = 0  # ACKs naming another control id (or unreadable)
    connects: int = 0
    disconnects: int = 0
    last_refusal: str = ""  # MSA-1 and the ERR text of the last AE/AR

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.__dict__)


class MllpClientTransport:
    """The monitor connects to an MLLP listener and waits for an ACK per frame.

    `write` queues the frame (up to `max_queue`) for a sender thread and returns at
    once, so one `MonitorRunner` thread can drive many monitors; see the module
    docstring for ACKs, resends and reconnects. `wait_ack=False` only sends.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ack_timeout: float = 2.0,
        retries: int = 3,
        wait_ack: bool = True,
        reconnect_min: float = 0.2,
        reconnect_max: float = 5.0,
        connect_timeout: float = 2.0,
        max_queue: int = 64,
    ) -> None:
        if ack_timeout <= 0 or retries < 0 or reconnect_min <= 0 or max_queue < 1:
            raise ValueError("ack_timeout and reconnect_min must be > 0, retries >= 0")
        self.host, self.port = host, port
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.wait_ack = wait_ack
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.connect_timeout = connect_timeout
        self.max_queue = max_queue
        self.overruns = 0
        self.bytes_sent = 0
        self.stats = AckStats()
        self._queue: deque[bytes] = deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._framer = MllpFramer()
        self._busy = False  # a frame is being sent or awaits its ACK
        self._thread = threading.Thread(
            target=self._run, name=f"mllp-client-{host}:{port}", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"mllp://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def write(self, data: bytes) -> bool:
        with self._cv:
            if self._sock is None or len(self._queue) >= self.max_queue:
                self.overruns += 1
                return False
            self._queue.append(data)
            self._cv.notify()
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued frame was acknowledged or given up (True) or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if not self._queue and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    def wait_connected(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._sock is None and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.01)
        return self._sock is not None

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(5)
        self._disconnect("simulator stopped")

    # --- the sender thread ---------------------------------------------------------
    def _connect(self) -> bool:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError:
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._framer = MllpFramer()
        with self._cv:
            self._sock = sock
        self.stats.connects += 1
        log.info("%s: connected", self.address)
        return True

    def _disconnect(self, why: str) -> None:
        with self._cv:
            sock, self._sock = self._sock, None
        if sock is not None:
            self.stats.disconnects += 1
            log.info("%s: connection closed (%s)", self.address, why)
            with contextlib.suppress(OSError):
                sock.close()

    def _ensure_connected(self, backoff: list[float]) -> bool:
        """Connect, waiting with exponential backoff between tries; False when stopped."""
        while self._sock is None:
            if self._stop.is_set():
                return False
            if self._connect():
                backoff[0] = self.reconnect_min
                return True
            self._stop.wait(backoff[0])
            backoff[0] = min(backoff[0] * 2, self.reconnect_max)
        return True

    def _run(self) -> None:
        backoff = [self.reconnect_min]
        while not self._stop.is_set():
            if not self._ensure_connected(backoff):
                return
            with self._cv:
                if not self._queue:
                    self._cv.wait(0.1)
                if not self._queue:
                    idle = True
                else:
                    idle = False
                    data = self._queue.popleft()
                    self._busy = True
            if idle:
                self._check_idle()
                continue
            try:
                self._deliver(data, backoff)
            finally:
                with self._cv:
                    self._busy = False

    def _check_idle(self) -> None:
        """Between frames: notice a listener that closed the connection."""
        sock = self._sock
        if sock is None:
            return
        try:
            ready = select.select([sock], [], [], 0)[0]
            if ready:
                chunk = sock.recv(65536)
                if not chunk:
                    self._disconnect("closed by the listener")
                    return
                for body in self._framer.feed(chunk):  # an ACK nobody waits for
                    self.stats.stray_acks += 1
                    log.debug("%s: stray ACK %r", self.address, body[:80])
        except OSError as e:
            self._disconnect(str(e))

    def _deliver(self, data: bytes, backoff: list[float]) -> None:
        control = control_id_of(data)
        tries = 0
        while not self._stop.is_set():
            if tries:
                self.stats.resent += 1
            tries += 1
            if not self._ensure_connected(backoff):
                return
            sock = self._sock
            assert sock is not None
            try:
                sock.settimeout(self.ack_timeout)
                sock.sendall(data)
            except OSError as e:
                self._disconnect(f"send failed: {e}")
                if tries > self.retries:
                    self.stats.lost += 1
                    return
                continue
            self.bytes_sent += len(data)
            self.stats.sent += 1
            if control is None:
                self.stats.unframed += 1
                return
            if not self.wait_ack:
                return
            result = self._await_ack(sock, control)
            if result == "ack":
                self.stats.acked += 1
                return
            if result == "nack":
                self.stats.nacked += 1
                return
            if result == "closed":
                self._disconnect("closed while awaiting an ACK")
            if tries > self.retries:
                self.stats.lost += 1
                log.warning("%s: no ACK for %s after %d tries", self.address, control, tries)
                return
            log.info("%s: no ACK for %s (%s), resending", self.address, control, result)

    def _await_ack(self, sock: socket.socket, control: str) -> str:
        """ "ack", "nack", "timeout" or "closed"."""
        deadline = time.monotonic() + self.ack_timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                ready = select.select([sock], [], [], min(left, 0.1))[0]
                if not ready:
                    continue
                chunk = sock.recv(65536)
            except OSError:
                return "closed"
            if not chunk:
                return "closed"
            for body in self._framer.feed(chunk):
                try:
                    code, acked_id, detail = parse_ack(body)
                except ValueError:
                    self.stats.stray_acks += 1
                    continue
                if acked_id != control:
                    self.stats.stray_acks += 1
                    continue
                if code in ACK_OK:
                    return "ack"
                self.stats.last_refusal = f"{code} {detail}".strip()
                log.warning("%s: %s refused %s: %s", self.address, code, control, detail)
                return "nack"
        return "timeout"
