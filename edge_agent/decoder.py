"""One monitor line: MLLP frames -> IHE PCD-01 messages -> typed `Reading`s, with an ACK each.

The line is untrusted: noise between frames, frames cut short, garbled bytes, a
monitor that reboots mid-frame. `MllpDecoder.feed(bytes)` never raises: the framing
(`contracts.mllp.MllpFramer`) splits frames at 0x0B ... 0x1C 0x0D, resynchronises at
the next 0x0B, drops a frame that grows beyond `max_frame` bytes (the buffer is
bounded); each whole frame is parsed with `edge_agent.pcd01` (python-hl7) into a
`Pcd01Message` and its `Reading`s. Counted in `stats`: whole messages used
(`frames_ok`), frames not used by reason (`bad`: the framing's truncated / oversized /
bad_end, the parser's `MessageError.reason`, `wrong_bed`), OBX rows set aside by reason
(`set_aside`: one unusable OBX never costs the rest of the message) and noise bytes.

`feed_frames(bytes)` gives, per frame, the `Decoded` result with its HL7 ACK (`AA`;
`AE`/`AR` with an ERR naming the problem), for lines that write ACKs back
(`ack = true`); `feed` keeps the readings only.

A line is its bed: readings carry the line's bed id. Only when the bed's config sets
`match` rules (e.g. `bed_label = "bed-1"`) is a message that does not fit them dropped
as `wrong_bed` (ACK `AR`): a monitor cabled to the wrong port.

Log lines and error details never echo patient identification (PID-3 identifier,
PID-5 name, PID-7 birth date) nor the admission times: they name the field only.
`Reading.stay` is the raw PID-3 value, kept in memory only; the gateway replaces it
by its pseudonym before anything is stored or published (edge_agent/privacy.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from contracts.mllp import DEFAULT_MAX_FRAME, MllpFramer
from contracts.timeutil import utc_now

if TYPE_CHECKING:
    from collections.abc import Callable

    from contracts.mdc import SiteVocabulary

    from .config import BedMatch
    from .pcd01 import MessageError, Pcd01Message

log = logging.getLogger(__name__)


def quiet_hl7_library() -> None:
    """python-hl7 logs an escape sequence it cannot read with the field's text (which may
    be a patient's name or record number) and a traceback, on loggers named by its file
    paths: silence them (the gateway counts and logs such a message by reason only)."""
    import hl7.containers
    import hl7.util

    for module in (hl7.containers, hl7.util):
        logging.getLogger(module.__file__).disabled = True


quiet_hl7_library()

# HL7 table 0357: the ERR code of a message for a bed this line/listener does not serve.
UNKNOWN_KEY = ("204", "Unknown key identifier")


@dataclass(frozen=True)
class Reading:
    """One decoded reading cycle of one bedside monitor."""

    bed: str
    stay: str
    monitor_id: str
    seq: int
    obs_time: datetime  # the monitor's (possibly simulated, accelerated) clock, UTC
    values: dict[str, float | None]  # the vitals in the message; None: device says n/a
    static: dict[str, float | None]  # Age, Gender, HospAdmTime, ICULOS (hours)
    icu_admit: datetime | None = None
    # Drivers that report a validity state per value (IntelliVue, issue 16): vital ->
    # why its value was withheld (e.g. "demo_data", "invalid"); such a vital is never in
    # `values`, so nothing scores it. `received`: the gateway's clock at receipt.
    quality: dict[str, str] = field(default_factory=dict)
    received: datetime | None = None


@dataclass
class DecoderStats:
    frames_ok: int = 0  # messages used
    noise_bytes: int = 0
    bad: Counter[str] = field(default_factory=Counter)  # reason -> frames not used
    set_aside: Counter[str] = field(default_factory=Counter)  # reason -> OBX rows not used

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())


@dataclass(frozen=True)
class Decoded:
    """One frame of the line: its message (None: not usable), readings and ACK (unframed)."""

    message: Pcd01Message | None
    readings: list[Reading]
    ack: bytes
    reason: str = ""  # why it was not used ("" when it was)


def set_aside_key(reason: str) -> str:
    """The counter name of a set-aside reason (`"not_a_model_vital: MDC_..."` -> its key)."""
    return reason.split(":", 1)[0].strip() or "other"


def _components(text: str) -> list[str]:
    return text.split("^")


def match_fits(match: BedMatch | None, msg: Pcd01Message) -> bool:
    """True when `msg` fits every rule of `match` (no rules: any message)."""
    if match is None:
        return True
    if match.sending_app is not None and msg.sending_app != match.sending_app:
        return False
    if match.sending_facility is not None and msg.sending_facility != match.sending_facility:
        return False
    if match.device_id is not None:
        want = match.device_id.strip().lower()
        if not any(d.strip().lower() == want for d in msg.device_ids):
            return False
    return _place_fits(match, msg.location, msg.bed_label)


def _place_fits(match: BedMatch, location: str, bed_label: str) -> bool:
    """The PV1-3 rules (location, bed_label) of `match` against a location."""
    if match.bed_label is not None and bed_label != match.bed_label:
        return False
    if match.location is not None:
        have = _components(location)
        for i, part in enumerate(_components(match.location)):
            if not part:
                continue
            got = have[i] if i < len(have) else ""
            if got != part and ("&" in part or got.split("&")[0] != part):
                return False
    return True


def location_fits(match: BedMatch | None, location: str, bed_label: str) -> bool:
    """True when a PV1-3 location (of an ADT message) is this bed's: `match` must set a
    `location` or `bed_label` rule, and every such rule must fit. The monitor rules
    (sending application/facility, device id) do not apply: ADT comes from the
    hospital's ADT system, not from the monitor."""
    if match is None or (match.location is None and match.bed_label is None):
        return False
    if not location and not bed_label:
        return False
    return _place_fits(match, location, bed_label)


def monitor_of(msg: Pcd01Message, fallback: str = "") -> str:
    """A name for the sending monitor (logs, `Reading.monitor_id`): MSH-3, else its device id."""
    return msg.sending_app or (msg.device_ids[0] if msg.device_ids else "") or fallback


class MllpDecoder:
    """Byte stream of one line -> Readings (and ACKs); see the module docstring. Not
    thread-safe (one per line)."""

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        source: str = "",
        *,
        bed: str | None = None,
        match: BedMatch | None = None,
        vocabulary: SiteVocabulary | None = None,
        tz: tzinfo = UTC,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.source = source  # for log lines: which bed/line
        self.bed = bed or source  # the bed id its readings carry
        self.match = match
        self.vocabulary = vocabulary
        self.tz = tz
        self.clock = clock
        self.stats = DecoderStats()
        self._framer = MllpFramer(max_frame, on_bad=self._log_bad)
        self._seq = 0

    @property
    def max_frame(self) -> int:
        return self._framer.max_frame

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (bounded by `max_frame`)."""
        return self._framer.buffered

    def reset(self) -> None:
        """The line was lost and reopened: a half frame in the buffer is cut short."""
        self._framer.reset()
        self._sync_framing()

    def _log_bad(self, reason: str, detail: str) -> None:
        log.info("bad frame on %s: %s %s", self.source or "line", reason, detail)

    def _sync_framing(self) -> None:
        f = self._framer.stats
        self.stats.noise_bytes = f.noise_bytes
        for reason in ("truncated", "oversized", "bad_end"):
            if f.bad[reason]:
                self.stats.bad[reason] = f.bad[reason]

    def _refuse(self, body: bytes, e: MessageError, now: datetime) -> Decoded:
        from .pcd01 import build_ack

        self.stats.bad[e.reason] += 1
        log.info(
            "bad frame on %s: %s (%s) %s", self.source or "line", e.reason, e.ack_code, e.detail
        )
        try:
            ack = build_ack(body, e.ack_code, error=e, now=now)
        except Exception:
            ack = b""
        return Decoded(None, [], ack, e.reason)

    def decode(self, body: bytes) -> Decoded:
        """One frame body -> its message, readings and ACK; never raises."""
        from .pcd01 import MessageError, build_ack, parse_message, to_readings

        now = self.clock()
        try:
            msg = parse_message(body, vocabulary=self.vocabulary, tz=self.tz, now=now)
        except MessageError as e:
            return self._refuse(body, e, now)
        except Exception as e:  # a parser bug must not take the line down: count it
            # the type only: an exception's text may quote frame content (PID fields)
            err = MessageError("parser_error", type(e).__name__)
            return self._refuse(body, err, now)
        if not match_fits(self.match, msg):
            assert self.match is not None
            err = MessageError(
                "wrong_bed",
                f"message for another bed on the line of {self.bed} ({self.match.describe()})",
                ack_code="AR",
                hl7_error=UNKNOWN_KEY,
            )
            log.warning(
                "bed %s: message labelled location %r dropped (check the cabling/config)",
                self.bed,
                msg.location[:60],
            )
            return self._refuse(body, err, now)
        for s in msg.set_aside:
            self.stats.set_aside[set_aside_key(s.reason)] += 1
            # the segment, code and reason only (a set-aside PID field is named, not shown)
            log.debug("%s: %s %s set aside: %s", self.source or "line", s.segment, s.code, s.reason)
        self._seq += 1
        try:
            readings = to_readings(msg, self.bed, monitor_of(msg, self.source), self._seq)
        except Exception as e:
            return self._refuse(body, MessageError("parser_error", type(e).__name__), now)
        self.stats.frames_ok += 1
        try:
            ack = build_ack(body, "AA", now=now)
        except Exception:
            ack = b""
        return Decoded(msg, readings, ack)

    def feed_frames(self, data: bytes) -> list[Decoded]:
        """The frames completed by `data` (any bytes, any chunking), decoded."""
        bodies = self._framer.feed(data)
        self._sync_framing()
        return [self.decode(b) for b in bodies]

    def feed(self, data: bytes) -> list[Reading]:
        """Readings completed by `data` (any bytes, any chunking)."""
        return [r for d in self.feed_frames(data) for r in d.readings]
