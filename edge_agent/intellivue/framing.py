"""IntelliVue MIB/RS-232 framing: BOF, header, user data, FCS, EOF (Guide ch. 4, pp. 30-31).

A frame on the wire is `0xC0 | FrameHdr | user data | FCS | 0xC1`:

- `FrameHdr` (Guide p. 30): `protocol_id` u8 (Data Export: 0x11), `msg_type` u8 (0x01:
  an Association Control or Data Export Command message), `length` u16 big-endian:
  the user data's length without transparency bytes. A frame of another protocol id
  or message type is ignored (counted `unknown_type`).
- FCS (Guide p. 31): CRC-CCITT as in RFC 1662 (PPP, the "FCS-16", not XMODEM) over
  header and user data; its one's complement is sent, least significant byte first.
- Transparency (Guide p. 31): every 0xC0, 0xC1 or 0x7D between BOF and EOF is sent as
  0x7D followed by the byte XOR 0x20. `0x7D 0xC1` aborts the frame (Frame Abort).

`FrameDecoder.feed(bytes)` never raises: noise outside frames, a frame cut by a new
BOF (cable pulled mid-frame), an aborted frame, a bad FCS, a header whose length
disagrees with the data, or a frame longer than `max_frame` are counted by reason in
`stats.bad` and skipped; whole frames' user data are returned.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

BOF = 0xC0
EOF = 0xC1
ESC = 0x7D
ESC_XOR = 0x20
PROTOCOL_ID = 0x11  # Data Export (Guide p. 30)
MSG_TYPE_DATA = 0x01  # Association Control or Data Export Command message
HEADER = struct.Struct(">BBH")
DEFAULT_MAX_FRAME = 16384  # unescaped bytes; the monitor's MTU is far below (Guide p. 69)


def _fcs_table() -> tuple[int, ...]:
    """The RFC 1662 FCS-16 lookup table (reflected polynomial 0x8408)."""
    table = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        table.append(v)
    return tuple(table)


_FCS_TABLE = _fcs_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT of `data` as RFC 1662 computes it (init 0xFFFF, reflected); not complemented."""
    for b in data:
        crc = (crc >> 8) ^ _FCS_TABLE[(crc ^ b) & 0xFF]
    return crc


def fcs(data: bytes) -> bytes:
    """The two FCS bytes as sent: one's complement of the CRC, LSB first (Guide p. 31)."""
    return struct.pack("<H", crc16(data) ^ 0xFFFF)


_SPECIAL = frozenset((BOF, EOF, ESC))


def escape(data: bytes) -> bytes:
    """Apply transparency: 0xC0/0xC1/0x7D -> 0x7D, byte ^ 0x20 (Guide p. 31)."""
    if not _SPECIAL.intersection(data):
        return bytes(data)
    out = bytearray()
    for b in data:
        if b in _SPECIAL:
            out.append(ESC)
            out.append(b ^ ESC_XOR)
        else:
            out.append(b)
    return bytes(out)


def frame(
    user_data: bytes, *, protocol_id: int = PROTOCOL_ID, msg_type: int = MSG_TYPE_DATA
) -> bytes:
    """One whole frame for `user_data` (header and FCS added, everything escaped)."""
    body = HEADER.pack(protocol_id, msg_type, len(user_data)) + bytes(user_data)
    return bytes([BOF]) + escape(body + fcs(body)) + bytes([EOF])


def raw_frame(body: bytes) -> bytes:
    """A frame around `body` (header + data, no FCS added), as the guide's examples show them
    without a header (Guide p. 31, "Examples"): BOF, escaped body and FCS, EOF."""
    return bytes([BOF]) + escape(bytes(body) + fcs(body)) + bytes([EOF])


@dataclass
class FrameStats:
    frames_ok: int = 0
    noise_bytes: int = 0  # bytes outside any frame
    bad: Counter[str] = field(default_factory=Counter)  # reason -> frames skipped

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())


class FrameDecoder:
    """Byte stream -> user data of whole, checked frames (see the module docstring).

    Bad-frame reasons: `bad_fcs`, `truncated` (a new BOF before EOF: the line was cut
    mid-frame), `aborted` (0x7D 0xC1), `short` (no room for header and FCS),
    `bad_length` (the header's length is not the data's), `unknown_type` (another
    protocol id / message type), `oversized`, `bad_escape` (0x7D before BOF).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.stats = FrameStats()
        self._buf = bytearray()
        self._in_frame = False
        self._escaped = False
        self._oversized = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """The line was lost: a frame in progress is cut short (counted `truncated`)."""
        if self._in_frame:
            self.stats.bad["truncated"] += 1
        self._buf.clear()
        self._in_frame = self._escaped = self._oversized = False

    def _bad(self, reason: str) -> None:
        self.stats.bad[reason] += 1

    def _close(self) -> bytes | None:
        body = bytes(self._buf)
        self._buf.clear()
        self._in_frame = False
        if self._oversized:
            self._oversized = False
            self._bad("oversized")
            return None
        if len(body) < HEADER.size + 2:
            self._bad("short")
            return None
        content, check = body[:-2], body[-2:]
        if fcs(content) != check:
            self._bad("bad_fcs")
            return None
        protocol_id, msg_type, length = HEADER.unpack_from(content)
        if protocol_id != PROTOCOL_ID or msg_type != MSG_TYPE_DATA:
            self._bad("unknown_type")
            return None
        data = content[HEADER.size :]
        if length != len(data):
            self._bad("bad_length")
            return None
        self.stats.frames_ok += 1
        return data

    def feed(self, data: bytes) -> list[bytes]:
        """User data of the frames completed by `data` (any bytes, any chunking)."""
        out: list[bytes] = []
        for b in data:
            if b == BOF:
                if self._in_frame:
                    self._bad("truncated")
                self._buf.clear()
                self._in_frame, self._escaped, self._oversized = True, False, False
                continue
            if not self._in_frame:
                self.stats.noise_bytes += 1
                continue
            if b == EOF:
                if self._escaped:  # 0x7D 0xC1: the sender aborted this frame
                    self._buf.clear()
                    self._in_frame = self._escaped = self._oversized = False
                    self._bad("aborted")
                    continue
                body = self._close()
                if body is not None:
                    out.append(body)
                continue
            if self._escaped:
                b ^= ESC_XOR
                self._escaped = False
            elif b == ESC:
                self._escaped = True
                continue
            if len(self._buf) >= self.max_frame + HEADER.size + 2:
                self._oversized = True  # keep reading to its EOF, store nothing more
                continue
            self._buf.append(b)
        return out
