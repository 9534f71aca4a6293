"""The IntelliVue Data Export client: association, polling, keep-alive, re-association.

`Session` is the protocol state machine with no I/O of its own (Guide ch. 3 "Protocol
Dialog", pp. 25-27): `outgoing(now)` gives the messages due, `receive(msg, now)` takes
one monitor message and returns the `Reading`s it completes. `SerialLink` runs it over
pyserial (MIB/RS-232, 115200 8N1, `framing`), `UdpLink` over UDP port 24105 (one
message per datagram, Guide ch. 4 p. 29).

The dialog: association request -> association result (AC) -> the monitor's MDS Create
Event -> our MDS Create Event Result -> an extended poll of the numerics
(NOM_MOC_VMO_METRIC_NU, observed-value group) every `poll_seconds` -> poll results.
A keep-alive (a poll of the alert monitor's static group, Guide p. 63) goes every
`keep_alive_seconds`; the Patient Demographics object (Guide pp. 103-105) is polled right
after association and every `demographics_seconds`: the admitted patient's id becomes
`Reading.stay` (the gateway pseudonymises it; never logged here), sex and birth date give
Gender and Age. A lost association forgets the patient, so no reading after a reboot or
a re-cabling is filed under the previous patient. The monitor drops an association it hears nothing from for 3x
the negotiated poll period (at least 10 s, Guide p. 27); the client treats `silence_seconds`
without a message the same way (cable pulled, monitor rebooted) and associates again,
as it does after an abort, a refuse or the monitor's release request. `stop()` sends a
release request. The driver is listen-only: it sends no SET and no alarm command.

Each poll result becomes one `Reading`: per catalogue vital the best-priority valid
numeric (`contracts.mdc`), its value converted from the numeric's unit code to the
catalogue unit (`contracts.units`); a numeric whose state is not valid (invalid,
questionable, unavailable, calibration, test or demo data, or no number) is not a value:
its vital is named in `Reading.quality` with the state, unless a valid source gave it.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from contracts.mdc import BY_CODE, Term
from contracts.timeutil import utc_now
from contracts.units import UnitError, to_catalogue

from ..decoder import Reading
from . import protocol as p
from .framing import FrameDecoder, frame

log = logging.getLogger(__name__)

UDP_PORT = 24105  # Guide ch. 4 "UDP Port Number", p. 29
STATIC = {"Age": None, "Gender": None, "HospAdmTime": None, "ICULOS": None}


@dataclass
class SessionStats:
    associations: int = 0
    reassociations: int = 0
    polls_sent: int = 0
    poll_results: int = 0
    readings: int = 0
    messages: Counter[str] = field(default_factory=Counter)  # kind -> count
    bad: Counter[str] = field(default_factory=Counter)  # reason -> messages not decoded
    lost: Counter[str] = field(default_factory=Counter)  # why an association ended
    withheld: Counter[str] = field(default_factory=Counter)  # state -> numerics not used


class Session:
    """One monitor's association (see the module docstring); not thread-safe."""

    def __init__(
        self,
        bed: str,
        *,
        poll_seconds: float = 1.0,
        keep_alive_seconds: float = 10.0,
        silence_seconds: float = 10.0,
        retry_seconds: float = 2.0,
        demographics_seconds: float = 60.0,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bed = bed
        self.poll_seconds = poll_seconds
        self.keep_alive_seconds = keep_alive_seconds
        self.silence_seconds = silence_seconds
        self.retry_seconds = retry_seconds
        self.demographics_seconds = demographics_seconds
        self.clock = clock
        self.monotonic = monotonic
        self.stats = SessionStats()
        self.state = "idle"  # idle | associating | waiting_mds | polling | releasing | stopped
        self.identity: p.MdsCreate | None = None
        self.patient: p.Demographics | None = None  # identifying: never logged
        self.negotiated: p.UserInfo | None = None
        self._invoke = 0
        self._poll_number = 0
        self._seq = 0
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._next_poll = 0.0
        self._next_keep_alive = 0.0
        self._next_demographics = 0.0
        self._retry_at = 0.0
        self._pending: list[bytes] = []
        # Linked results (RORLS) of one poll, by invoke id, until its final RORS result
        # (Guide p. 44 "Remote Operation Linked Result", example p. 293).
        self._linked: dict[int, list[p.PollResult]] = {}
        self.last_terms: dict[str, Term] = {}  # vital -> the MDC term of its last value

    # --- sending --------------------------------------------------------------------

    def _next_invoke(self) -> int:
        self._invoke = (self._invoke + 1) & 0xFFFF
        return self._invoke

    def _lose(self, why: str, now: float) -> None:
        if self.state in ("polling", "waiting_mds"):
            log.warning("bed %s: IntelliVue association lost: %s", self.bed, why)
        self.stats.lost[why] += 1
        self.patient = None  # a reboot or a new cable may mean a new patient: ask again
        self.state = "idle"
        self._retry_at = now + self.retry_seconds

    def outgoing(self) -> list[bytes]:
        """The messages due now (user data, unframed)."""
        now = self.monotonic()
        out: list[bytes] = []
        live = self.state in ("associating", "waiting_mds", "polling", "releasing")
        if live and now - self._last_rx > self.silence_seconds:
            self._lose("silence", now)
        if self.state == "idle" and now >= self._retry_at:
            out.append(p.association_request(p.UserInfo()))
            self.state = "associating"
            self._last_rx = now  # the silence timer runs from the request
        elif self.state == "polling":
            if self.demographics_seconds and now >= self._next_demographics:
                out.append(
                    p.poll_request(
                        self._next_invoke(),
                        self._poll_number,
                        p.NOM_MOC_PT_DEMOG,
                        p.NOM_ATTR_GRP_PT_DEMOG,
                    )
                )
                self._next_demographics = now + self.demographics_seconds
            if now >= self._next_poll:
                self._poll_number = (self._poll_number + 1) & 0xFFFF
                out.append(p.extended_poll_request(self._next_invoke(), self._poll_number))
                self.stats.polls_sent += 1
                self._next_poll = max(self._next_poll + self.poll_seconds, now)
            if self.keep_alive_seconds and now >= self._next_keep_alive:
                out.append(p.keep_alive(self._next_invoke(), self._poll_number))
                self._next_keep_alive = now + self.keep_alive_seconds
        if out:
            self._last_tx = now
        return out

    def release(self) -> bytes | None:
        """The release request to send on stop (None when not associated)."""
        if self.state in ("waiting_mds", "polling"):
            self.state = "releasing"
            return p.RELEASE_REQUEST
        self.state = "stopped"
        return None

    # --- receiving ------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Reading]:
        """One monitor message (user data); never raises: what does not decode is counted."""
        now = self.monotonic()
        try:
            msg = p.decode_message(data)
        except p.ProtocolError as e:
            self.stats.bad[e.reason] += 1
            return []
        except Exception as e:  # a decoder bug must not take the bed down: count it
            self.stats.bad[f"decoder_error:{type(e).__name__}"] += 1
            return []
        self._last_rx = now
        self.stats.messages[msg.kind] += 1
        kind = msg.kind
        if kind == "association_result":
            self.negotiated = msg.body if isinstance(msg.body, p.UserInfo) else None
            if self.stats.associations:
                self.stats.reassociations += 1
            self.stats.associations += 1
            self.state = "waiting_mds"
        elif kind == "mds_create" and isinstance(msg.body, p.MdsCreate):
            self.identity = msg.body
            self._pending = [p.mds_create_result(msg.body.invoke_id, msg.body.rel_time)]
            self.state = "polling"
            self._next_poll = now
            self._next_demographics = now  # who the patient is, before the first numerics
            self._next_keep_alive = now + self.keep_alive_seconds
        elif kind in ("refuse", "abort", "release_request"):
            self._lose(kind, now)
            if kind == "release_request":
                self._pending = [p.RELEASE_RESPONSE]
        elif kind == "release_result":
            self.state = "stopped"
        elif kind == "poll_result" and isinstance(msg.body, p.PollResult):
            if msg.body.demographics is not None:
                self.patient = msg.body.demographics
                self.stats.messages["demographics"] += 1
            if msg.body.obj_class != p.NOM_MOC_VMO_METRIC_NU:
                return []
            result = msg.body
            if result.linked is not None:  # one part of a poll too big for one message
                parts = self._linked.setdefault(result.invoke_id, [])
                parts.append(result)
                while len(self._linked) > 4:  # a final result never came: drop the oldest
                    self._linked.pop(next(iter(self._linked)))
                    self.stats.bad["linked_incomplete"] += 1
                return []
            parts = self._linked.pop(result.invoke_id, [])
            if parts:
                numerics = tuple(n for r in parts for n in r.numerics) + result.numerics
                result = dataclasses.replace(parts[0], linked=None, numerics=numerics)
            self.stats.poll_results += 1
            return [self.reading(result)]
        return []

    def replies(self) -> list[bytes]:
        """Answers owed to the monitor (MDS create result, release response), once."""
        out, self._pending = self._pending, []
        return out

    # --- readings -------------------------------------------------------------------

    @property
    def stay(self) -> str:
        """The admitted patient's id (the gateway replaces it by its pseudonym), else ""."""
        pt = self.patient
        return pt.patient_id if pt is not None and pt.admitted else ""

    def static(self, when: datetime) -> dict[str, float | None]:
        """Age (years at `when`) and Gender (1 male, 0 female) of the admitted patient."""
        out: dict[str, float | None] = dict(STATIC)
        pt = self.patient
        if pt is None or not pt.admitted:
            return out
        out["Gender"] = {p.SEX_MALE: 1.0, p.SEX_FEMALE: 0.0}.get(pt.sex or 0)
        if pt.dob is not None and pt.dob <= when:
            d, b = when.date(), pt.dob.date()
            out["Age"] = float(d.year - b.year - ((d.month, d.day) < (b.month, b.day)))
        return out

    def device_time(self, result: p.PollResult, numeric: p.Numeric | None = None) -> datetime:
        """The monitor's time of a result: the numeric's own time stamp, else the result's
        absolute time, else the MDS create's absolute time plus the relative-time delta
        (1/8 ms ticks, Guide p. 36), else the receipt time."""
        if numeric is not None and numeric.time is not None:
            return numeric.time
        if result.abs_time is not None:
            return result.abs_time
        ident = self.identity
        if ident is not None and ident.abs_time is not None:
            ticks = (result.rel_time - ident.rel_time) & 0xFFFFFFFF
            return ident.abs_time + timedelta(seconds=ticks / p.TICKS_PER_SECOND)
        return self.clock()

    def reading(self, result: p.PollResult) -> Reading:
        """One poll result -> one Reading (values in catalogue units, withheld states)."""
        best: dict[str, tuple[int, float, p.Numeric]] = {}
        withheld: dict[str, str] = {}
        for n in result.numerics:
            term = BY_CODE.get(n.mdc_code)
            if term is None:
                continue
            if not n.valid:
                why = ",".join(n.flags) or "invalid"
                for f in n.flags:
                    self.stats.withheld[f] += 1
                withheld.setdefault(term.vital, why)
                continue
            assert n.value is not None
            try:
                value = to_catalogue(term.vital, n.value, str(n.unit_mdc))
            except UnitError as e:
                self.stats.withheld[e.kind] += 1
                withheld.setdefault(term.vital, e.kind)
                continue
            cur = best.get(term.vital)
            if cur is None or term.priority < cur[0]:
                best[term.vital] = (term.priority, value, n)
        values: dict[str, float | None] = {v: b[1] for v, b in best.items()}
        self.last_terms = {v: BY_CODE[b[2].mdc_code] for v, b in best.items()}
        quality = {v: why for v, why in withheld.items() if v not in values}
        first = next(iter(best.values()), None)
        self._seq += 1
        self.stats.readings += 1
        ident = self.identity
        obs_time = self.device_time(result, first[2] if first else None)
        return Reading(
            bed=self.bed,
            stay=self.stay,
            monitor_id=(ident.model or ident.system_id) if ident else "intellivue",
            seq=self._seq,
            obs_time=obs_time,
            values=values,
            static=self.static(obs_time),
            quality=quality,
            received=self.clock(),
        )


class SerialLink:
    """A Session over a serial port (MIB/RS-232): frames out, frames in, in one thread.

    `on_reading` gets every Reading; `run(stop)` loops until `stop` is set, then
    releases the association. A port that cannot be opened or is lost is retried."""

    def __init__(
        self,
        session: Session,
        port: str,
        baud: int = 115200,
        on_reading: Callable[[Reading], None] | None = None,
    ) -> None:
        self.session = session
        self.port = port
        self.baud = baud
        self.on_reading = on_reading or (lambda r: None)
        self.frames = FrameDecoder()
        self.reopens = 0

    def _open(self) -> object:
        import serial

        return serial.Serial(self.port, self.baud, bytesize=8, parity="N", stopbits=1, timeout=0.05)

    def run(self, stop: threading.Event) -> None:
        import serial

        port = None
        while not stop.is_set():
            if port is None:
                try:
                    port = self._open()
                except (serial.SerialException, OSError) as e:
                    log.warning("bed %s: cannot open %s: %s", self.session.bed, self.port, e)
                    stop.wait(1.0)
                    continue
            try:
                self.pump(port)
            except (serial.SerialException, OSError) as e:
                log.warning("bed %s: line %s lost: %s", self.session.bed, self.port, e)
                self.frames.reset()
                self.reopens += 1
                port = None
                stop.wait(0.5)
        if port is not None:
            self.close(port)

    def pump(self, port: object) -> None:
        """One turn: send what is due, read what arrived, hand out readings."""
        for msg in self.session.outgoing():
            port.write(frame(msg))  # type: ignore[attr-defined]
        data = port.read(1)  # type: ignore[attr-defined]
        waiting = port.in_waiting if data else 0  # type: ignore[attr-defined]
        if waiting:
            data += port.read(waiting)  # type: ignore[attr-defined]
        for body in self.frames.feed(data):
            for r in self.session.receive(body):
                self.on_reading(r)
            for reply in self.session.replies():
                port.write(frame(reply))  # type: ignore[attr-defined]

    def close(self, port: object, wait: float = 1.0) -> None:
        """Release the association (best effort), then close the port."""
        try:
            msg = self.session.release()
            if msg is not None:
                port.write(frame(msg))  # type: ignore[attr-defined]
                deadline = time.monotonic() + wait
                while self.session.state == "releasing" and time.monotonic() < deadline:
                    for body in self.frames.feed(port.read(256)):  # type: ignore[attr-defined]
                        self.session.receive(body)
        except OSError:
            pass
        finally:
            port.close()  # type: ignore[attr-defined]


class UdpLink:
    """A Session over UDP to a monitor's Data Export port (one message per datagram)."""

    def __init__(
        self,
        session: Session,
        host: str,
        port: int = UDP_PORT,
        on_reading: Callable[[Reading], None] | None = None,
    ) -> None:
        self.session = session
        self.addr = (host, port)
        self.on_reading = on_reading or (lambda r: None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.05)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                for msg in self.session.outgoing():
                    self._send(msg)
                try:
                    data, addr = self.sock.recvfrom(65535)
                except TimeoutError:
                    continue
                except OSError as e:  # e.g. ICMP port unreachable: the silence timer re-associates
                    self.session.stats.bad[f"udp:{type(e).__name__}"] += 1
                    continue
                if addr[0] != self.addr[0]:
                    self.session.stats.bad["foreign_sender"] += 1
                    continue
                for r in self.session.receive(data):
                    self.on_reading(r)
                for reply in self.session.replies():
                    self._send(reply)
            msg = self.session.release()
            if msg is not None:
                self._send(msg)
        finally:
            self.sock.close()

    def _send(self, msg: bytes) -> None:
        try:
            self.sock.sendto(msg, self.addr)
        except OSError as e:
            self.session.stats.bad[f"udp_send:{type(e).__name__}"] += 1
