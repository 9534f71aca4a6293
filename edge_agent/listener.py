"""The MLLP listener: monitors and HL7 gateways connect to the gateway (IHE PCD-01).

Bedside monitors (GE, Mindray, Nihon Kohden, ...) and central stations (Philips via its
HL7 export) are MLLP clients: they connect to a listener, usually on port 2575, send
one ORU^R01 after the other and wait for an HL7 original-mode ACK before the next. One
`MllpListener` serves every bed configured with the same host and port
(`EdgeSettings.listeners()`): one thread, a selector over the listening socket and all
monitor connections, so many monitors share it.

Each connection has its own `MllpFramer` (bounded by `hl7.max_frame_bytes`); each whole
frame is parsed (`edge_agent.pcd01`), routed to the first bed whose `match` rules the
message fits (`decoder.match_fits`) and handed to the gateway (`deliver(bed, msg,
readings)`), then ACKed on the same connection:

- `AA`: the message was used (its set-aside OBX rows are counted, not refused);
- `AE`/`AR` with an ERR segment: the parser's `MessageError` (unparsable, unsupported
  type or version), or `AR` for a message that fits no configured bed: logged with its
  sending application, facility and location only (never patient fields), counted
  `unknown_bed`, never scored against another bed.

ADT from the hospital's ADT feed on the same listener (when the gateway passes
`deliver_adt`): an `ADT^A01/A02/A03/A04/A08/A11/A12/A13` is routed by the beds' PV1-3
rules (`match.location` / `match.bed_label`, `decoder.location_fits`) on its PV1-3
location and, for a transfer (A02, and A12 which undoes one), its PV1-6 prior location,
then handed to `deliver_adt(bed, prior_bed, event)`; ACK `AA`. An ADT for no bed of
this gateway (the feed covers the whole hospital) is ACKed `AA` too, counted
`adt_other_location` and ignored.

Limits, so no peer can take the gateway down: at most `hl7.max_connections` open
connections (more are accepted and closed at once, counted `refused`), a connection
silent for `hl7.idle_timeout_seconds` is closed, a peer that does not read its ACKs
(more than `MAX_PENDING_OUT` bytes waiting) is closed. A connection that closes in the
middle of a frame is counted (`truncated`, `dropped_mid_frame`). Nothing a peer sends
raises out of the listener's loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from contracts.mllp import MllpFramer, frame
from contracts.timeutil import utc_now

from . import pcd01
from .config import BedMatch, Hl7Config
from .decoder import (
    UNKNOWN_KEY,
    Reading,
    location_fits,
    match_fits,
    monitor_of,
    set_aside_key,
)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_PENDING_OUT = 256 * 1024  # ACK bytes a peer has not read: more, and it is closed
LOG_EVERY = 10.0  # seconds between two warnings of the same kind (the counters have all)
TICK = 0.25  # selector timeout: how often idle connections and shutdown are checked

Deliver = Callable[[str, "pcd01.Pcd01Message", list[Reading]], None]
# (bed at PV1-3 or None, bed at PV1-6 for a transfer or None, the event)
DeliverAdt = Callable[[str | None, str | None, "pcd01.AdtEvent"], None]
MOVES = frozenset({"A02", "A12"})  # PV1-6 names the bed the patient leaves


@dataclass
class ListenerStats:
    """What one listener saw, summed over its connections (written by its thread only)."""

    connections: int = 0  # accepted and served
    open: int = 0
    refused: int = 0  # over max_connections
    idle_closed: int = 0
    slow_closed: int = 0  # did not read their ACKs
    dropped_mid_frame: int = 0  # closed by the peer (or idle) inside a frame
    noise_bytes: int = 0
    frames_ok: int = 0  # messages used (ACK AA)
    bad: Counter[str] = field(default_factory=Counter)  # framing and message reasons
    set_aside: Counter[str] = field(default_factory=Counter)  # OBX rows not used, by reason
    unknown_bed: int = 0
    adt: Counter[str] = field(default_factory=Counter)  # ADT event -> messages for our beds
    adt_other_location: int = 0  # ADT for no bed of this gateway: ACKed AA, ignored
    acks: Counter[str] = field(default_factory=Counter)  # AA / AE / AR sent
    last_message: dict[str, float] = field(default_factory=dict)  # bed -> monotonic time

    @property
    def frames_bad(self) -> int:
        """Frames not used: bad by reason, and messages for no configured bed."""
        return sum(self.bad.values()) + self.unknown_bed


class _Conn:
    def __init__(
        self, sock: socket.socket, peer: str, max_frame: int, stats: ListenerStats
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.out = bytearray()
        self.last = time.monotonic()
        self.seq = 0

        def on_bad(reason: str, detail: str) -> None:
            log.info("listener: bad frame from %s: %s %s", peer, reason, detail)

        self.framer = MllpFramer(max_frame, on_bad=on_bad)
        self._stats = stats
        self._counted = Counter[str]()
        self._noise = 0

    def fold_stats(self) -> None:
        """Add what the framer counted since the last call to the listener's stats."""
        s = self.framer.stats
        for reason, n in s.bad.items():
            if n > self._counted[reason]:
                self._stats.bad[reason] += n - self._counted[reason]
                self._counted[reason] = n
        self._stats.noise_bytes += s.noise_bytes - self._noise
        self._noise = s.noise_bytes


class ListenerBed:
    """A listener bed's line, as the gateway's health loop sees it: `up` while messages
    for the bed arrived within `down_after` seconds (no connection belongs to a bed)."""

    kind = "mllp-listen"

    def __init__(
        self, listener: MllpListener, bed: str, match: BedMatch, down_after: float
    ) -> None:
        self.listener = listener
        self.bed = bed
        self.match = match
        self.down_after = down_after
        self.reconnects = 0

    @property
    def state(self) -> str:
        t = self.listener.stats.last_message.get(self.bed)
        return "up" if t is not None and time.monotonic() - t <= self.down_after else "down"

    def describe(self) -> str:
        return f"mllp://{self.listener.host}:{self.listener.port} ({self.match.describe()})"

    def close(self) -> None:
        pass


class MllpListener:
    """One TCP server for the beds sharing `host:port`; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        beds: Sequence[tuple[str, BedMatch]],
        deliver: Deliver,
        *,
        hl7: Hl7Config | None = None,
        clock: Callable[[], datetime] = utc_now,
        deliver_adt: DeliverAdt | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.beds = list(beds)
        self.deliver = deliver
        self.deliver_adt = deliver_adt  # None: ADT messages are refused (AR), as before
        self.hl7 = hl7 or Hl7Config()
        self.clock = clock
        self.vocabulary = self.hl7.vocabulary()
        self.tz = self.hl7.tzinfo()
        self.stats = ListenerStats()
        self._stop = threading.Event()
        self._sel: selectors.BaseSelector | None = None
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_unknown_log = 0.0
        self.bind_failed = False  # the last start() could not bind (the gateway retries)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Bind and listen (OSError if the address is taken), then serve on a thread."""
        try:
            srv = socket.create_server((self.host, self.port), backlog=64)
        except OSError:
            self.bind_failed = True
            raise
        self.bind_failed = False
        srv.setblocking(False)
        self.port = srv.getsockname()[1]  # port 0 in tests: the one the kernel chose
        self._server = srv
        self._sel = selectors.DefaultSelector()
        self._sel.register(srv, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._run, name=f"mllp-{self.host}:{self.port}", daemon=True
        )
        self._thread.start()
        log.info(
            "MLLP listener on %s:%d for beds %s",
            self.host,
            self.port,
            ", ".join(b for b, _ in self.beds),
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the loop --------------------------------------------------------------------
    def _run(self) -> None:
        assert self._sel is not None
        try:
            while not self._stop.is_set():
                try:
                    events = self._sel.select(TICK)
                except OSError:  # e.g. EINTR
                    continue
                for key, mask in events:
                    try:
                        if key.data is None:
                            self._accept()
                        else:
                            self._serve(key.data, mask)
                    except Exception:  # one connection's trouble never stops the others
                        log.exception("listener %s:%d: connection failed", self.host, self.port)
                        if key.data is not None:
                            self._close(key.data, "error")
                self._reap_idle()
        finally:
            for c in list(self._conns.values()):
                self._close(c, "shutdown")
            if self._server is not None:
                self._sel.unregister(self._server)
                self._server.close()
            self._sel.close()

    def _accept(self) -> None:
        assert self._server is not None and self._sel is not None
        for _ in range(64):  # drain the backlog a little at a time
            try:
                sock, addr = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: keep serving the others
                log.warning("listener %s:%d: accept failed: %s", self.host, self.port, e)
                return
            peer = f"{addr[0]}:{addr[1]}"
            if len(self._conns) >= self.hl7.max_connections:
                self.stats.refused += 1
                log.warning(
                    "listener %s:%d: %d connections open: refused %s",
                    self.host,
                    self.port,
                    len(self._conns),
                    peer,
                )
                sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(sock, peer, self.hl7.max_frame_bytes, self.stats)
            self._conns[sock.fileno()] = c
            self._sel.register(sock, selectors.EVENT_READ, c)
            self.stats.connections += 1
            self.stats.open = len(self._conns)
            log.info("listener %s:%d: monitor connected from %s", self.host, self.port, peer)

    def _serve(self, c: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(c)
        if not mask & selectors.EVENT_READ or c.sock.fileno() < 0:
            return
        try:
            data = c.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(c, f"lost: {e}")
            return
        if not data:
            self._close(c, "closed by the monitor")
            return
        c.last = time.monotonic()
        bodies = c.framer.feed(data)
        c.fold_stats()
        for body in bodies:
            ack = self.handle(body, c)
            c.out += frame(ack)
        if c.out:
            self._flush(c)

    def _flush(self, c: _Conn) -> None:
        assert self._sel is not None
        try:
            n = c.sock.send(c.out)
            del c.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._close(c, f"lost while sending the ACK: {e}")
            return
        if len(c.out) > MAX_PENDING_OUT:
            self.stats.slow_closed += 1
            self._close(c, "does not read its ACKs")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(c.sock, want, c)

    def _reap_idle(self) -> None:
        limit = self.hl7.idle_timeout_seconds
        now = time.monotonic()
        for c in [c for c in self._conns.values() if now - c.last > limit]:
            self.stats.idle_closed += 1
            self._close(c, f"idle for more than {limit:g} s")

    def _close(self, c: _Conn, why: str) -> None:
        assert self._sel is not None
        fd = c.sock.fileno()
        if c.framer.in_frame:
            self.stats.dropped_mid_frame += 1
        c.framer.reset()  # a half frame is counted `truncated`
        c.fold_stats()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(c.sock)
            with contextlib.suppress(OSError):
                c.sock.close()
        self._conns = {k: v for k, v in self._conns.items() if v is not c}
        self.stats.open = len(self._conns)
        level = logging.DEBUG if why == "shutdown" else logging.INFO
        log.log(level, "listener %s:%d: %s %s", self.host, self.port, c.peer, why)

    # --- one message -------------------------------------------------------------------
    def route(self, msg: pcd01.Pcd01Message) -> str | None:
        """The first configured bed whose match rules `msg` fits, or None."""
        for bed, match in self.beds:
            if match_fits(match, msg):
                return bed
        return None

    def handle(self, body: bytes, c: _Conn | None = None) -> bytes:
        """Parse, route and deliver one frame body; returns the ACK (unframed)."""
        now = self.clock()
        peer = c.peer if c is not None else "-"
        parse = pcd01.parse_message if self.deliver_adt is None else pcd01.parse_any
        try:
            msg = parse(body, vocabulary=self.vocabulary, tz=self.tz, now=now)
        except pcd01.MessageError as e:
            self.stats.bad[e.reason] += 1
            log.info("listener: message from %s refused (%s): %s", peer, e.ack_code, e.reason)
            return self._ack(body, e.ack_code, now, error=e)
        except Exception as e:  # a parser bug must not take the listener down: count it
            self.stats.bad["parser_error"] += 1
            log.warning("listener: parser error on a message from %s: %s", peer, type(e).__name__)
            return self._ack(body, "AE", now, text="the gateway could not parse the message")
        if isinstance(msg, pcd01.AdtEvent):
            return self._handle_adt(body, msg, now, peer)
        bed = self.route(msg)
        if bed is None:
            self.stats.unknown_bed += 1
            # Routing fields only (never PID): what an integration engineer needs to map it.
            # At most one warning per LOG_EVERY seconds (a misrouted monitor sends every
            # few seconds); the counter has them all.
            mono = time.monotonic()
            level = logging.WARNING if mono >= self._next_unknown_log else logging.DEBUG
            if level == logging.WARNING:
                self._next_unknown_log = mono + LOG_EVERY
            log.log(
                level,
                "listener: message %s from %s (app %r, facility %r, location %r, devices %s) "
                "fits no configured bed: refused (%d so far)",
                msg.control_id[:40],
                peer,
                msg.sending_app[:40],
                msg.sending_facility[:40],
                msg.location[:60],
                list(msg.device_ids)[:4],
                self.stats.unknown_bed,
            )
            err = pcd01.MessageError(
                "unknown_bed",
                "no bed of this gateway is configured for this message",
                ack_code="AR",
                hl7_error=UNKNOWN_KEY,
            )
            return self._ack(body, "AR", now, error=err)
        for s in msg.set_aside:
            self.stats.set_aside[set_aside_key(s.reason)] += 1
        if c is not None:
            c.seq += 1
        readings = pcd01.to_readings(msg, bed, monitor_of(msg, peer), c.seq if c else 0)
        try:
            self.deliver(bed, msg, readings)
        except Exception:
            self.stats.bad["gateway_error"] += 1
            log.exception("listener: bed %s: a message could not be processed", bed)
            return self._ack(body, "AE", now, text="the gateway could not process the message")
        self.stats.frames_ok += 1
        self.stats.last_message[bed] = time.monotonic()
        return self._ack(body, "AA", now)

    def route_location(self, location: str, bed_label: str) -> str | None:
        """The first configured bed whose PV1-3 rules fit this location, or None."""
        for bed, match in self.beds:
            if location_fits(match, location, bed_label):
                return bed
        return None

    def _handle_adt(self, body: bytes, ev: pcd01.AdtEvent, now: datetime, peer: str) -> bytes:
        """Route an ADT message to its bed(s) and hand it to the gateway; ACK AA."""
        assert self.deliver_adt is not None
        bed = self.route_location(ev.location, ev.bed_label)
        prior = None
        if ev.event in MOVES:
            prior = self.route_location(ev.prior_location, ev.prior_bed_label)
        if bed is None and prior is None:
            # The hospital's feed covers every ward: not an error, nothing to do here.
            self.stats.adt_other_location += 1
            log.debug(
                "listener: ADT %s %s from %s for location %r: no bed here",
                ev.event,
                ev.control_id[:40],
                peer,
                ev.location[:60],
            )
            return self._ack(body, "AA", now)
        self.stats.adt[ev.event] += 1
        try:
            self.deliver_adt(bed, prior, ev)
        except Exception:
            self.stats.bad["gateway_error"] += 1
            log.exception("listener: ADT %s for bed %s could not be processed", ev.event, bed)
            return self._ack(body, "AE", now, text="the gateway could not process the message")
        return self._ack(body, "AA", now)

    def _ack(
        self,
        body: bytes,
        code: str,
        now: datetime,
        *,
        error: pcd01.MessageError | None = None,
        text: str = "",
    ) -> bytes:
        self.stats.acks[code] += 1
        try:
            return pcd01.build_ack(body, code, error=error, text=text, now=now)
        except Exception as e:  # never leave a monitor without an answer
            log.warning("listener: cannot build the ACK: %s", type(e).__name__)
            return b"MSH|^~\\&|VIGIL||||||ACK|||2.5\rMSA|" + code.encode() + b"|\r"


def bind_error(e: OSError) -> str:
    """A bind failure in words a hospital's IT understands."""
    if e.errno == errno.EADDRINUSE:
        return "the port is taken (another listener or gateway on this host?)"
    if e.errno == errno.EACCES:
        return "no permission (ports below 1024 need privileges)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "this host has no such address"
    return str(e)
