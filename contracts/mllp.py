"""MLLP framing of the monitor line (HL7 v2 Minimal Lower Layer Protocol).

Each HL7 message travels as ``0x0B <message> 0x1C 0x0D``, the same over a serial line
(RS-232) and TCP: the simulator frames with `frame`; whoever reads a byte stream (the
gateway's decoder and listener, a simulated monitor reading its ACKs) splits it with an
`MllpFramer`.

The stream is untrusted: noise between frames, frames cut short, a device that
reboots mid-frame. `MllpFramer.feed(bytes)` never raises: it returns the bodies of the
whole frames the bytes completed, resynchronises at the next 0x0B after anything that
is not a whole frame, and drops a frame that grows beyond `max_frame` bytes, so its
buffer is bounded. What it drops is counted by reason in `stats.bad`:

- `truncated`: a new 0x0B (or a `reset()`, the line lost) before the frame ended;
- `oversized`: the frame grew beyond `max_frame` bytes (the rest, up to the next
  0x0B, is counted as noise);
- `bad_end`: 0x1C not followed by 0x0D.

Bytes outside any frame are counted in `stats.noise_bytes`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

SB = 0x0B  # start block (VT)
EB = 0x1C  # end block (FS)
CR = 0x0D  # carriage return after the end block
START_BLOCK = bytes([SB])
END_BLOCK = bytes([EB, CR])
FRAMING_BYTES = (SB, EB, CR)

# A PCD-01 result is 0.5-3 kB; a Mindray waveform ORU some tens of kB. Anything far
# larger is junk (or an attack): dropped, never buffered whole.
DEFAULT_MAX_FRAME = 64 * 1024


def frame(message: str | bytes) -> bytes:
    """MLLP frame: 0x0B + message (ASCII) + 0x1C 0x0D."""
    body = message.encode("ascii") if isinstance(message, str) else message
    return START_BLOCK + body + END_BLOCK


@dataclass
class FramerStats:
    """What an `MllpFramer` saw: whole frames, noise bytes and dropped frames by reason."""

    frames: int = 0
    noise_bytes: int = 0
    bad: Counter[str] = field(default_factory=Counter)  # reason -> frames

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())


class MllpFramer:
    """Byte stream -> MLLP frame bodies; see the module docstring. One per stream
    (not thread-safe). `on_bad(reason, detail)` is called for each dropped frame."""

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        on_bad: Callable[[str, str], None] | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.stats = FramerStats()
        self._on_bad = on_bad
        self._buf = bytearray()
        self._in_frame = False
        self._await_cr = False  # saw 0x1C at the end of the last chunk

    @property
    def in_frame(self) -> bool:
        """A frame has begun and not ended (a lost line now cuts it short)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (never more than `max_frame`)."""
        return len(self._buf)

    def reset(self) -> None:
        """The line was lost (and maybe reopened): a half frame is counted `truncated`."""
        if self._in_frame:
            self._bad("truncated", f"{len(self._buf)} bytes, line reset mid-frame")
        self._buf.clear()
        self._in_frame = self._await_cr = False

    def _bad(self, reason: str, detail: str = "") -> None:
        self.stats.bad[reason] += 1
        if self._on_bad is not None:
            self._on_bad(reason, detail)

    def feed(self, data: bytes) -> list[bytes]:
        """The bodies of the frames completed by `data` (any bytes, any chunking)."""
        out: list[bytes] = []
        n, pos = len(data), 0
        while pos < n:
            if self._await_cr:
                self._await_cr = False
                self._in_frame = False
                if data[pos] == CR:
                    pos += 1
                    out.append(bytes(self._buf))
                    self.stats.frames += 1
                else:  # 0x1C not followed by CR: not a frame end we trust
                    self._bad("bad_end", "0x1C without 0x0D")
                self._buf.clear()
                continue
            if not self._in_frame:
                i = data.find(SB, pos)
                if i < 0:
                    self.stats.noise_bytes += n - pos
                    return out
                self.stats.noise_bytes += i - pos
                self._in_frame, pos = True, i + 1
                self._buf.clear()
                continue
            e = data.find(EB, pos)
            s = data.find(SB, pos, n if e < 0 else e)
            if s >= 0:  # a new frame began before this one ended
                self._bad("truncated", f"{len(self._buf) + s - pos} bytes, no end block")
                self._buf.clear()
                pos = s + 1
                continue
            stop = n if e < 0 else e
            if len(self._buf) + stop - pos > self.max_frame:
                self._bad("oversized", f"> {self.max_frame} bytes")
                self._buf.clear()
                self._in_frame = False
                pos = stop
                continue
            self._buf += data[pos:stop]
            if e < 0:
                return out
            self._await_cr, pos = True, e + 1
        return out
