"""MLLP framing of the monitor line (HL7 v2 Minimal Lower Layer Protocol).

Each HL7 message travels as ``0x0B <message> 0x1C 0x0D``: the simulator frames with
`frame`, the gateway's decoder splits a byte stream at these bytes.
"""

from __future__ import annotations

SB = 0x0B  # start block (VT)
EB = 0x1C  # end block (FS)
CR = 0x0D  # carriage return after the end block
START_BLOCK = bytes([SB])
END_BLOCK = bytes([EB, CR])
FRAMING_BYTES = (SB, EB, CR)


def frame(message: str | bytes) -> bytes:
    """MLLP frame: 0x0B + message (ASCII) + 0x1C 0x0D."""
    body = message.encode("ascii") if isinstance(message, str) else message
    return START_BLOCK + body + END_BLOCK
