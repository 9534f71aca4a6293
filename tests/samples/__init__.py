"""HL7 sample messages for the tests, by name (python-hl7 keeps its own in `tests/samples.py`).

`hl7/01-*.hl7` ... `hl7/14-*.hl7` are real messages from public sources and
`hl7/b01-*.hl7` ... `hl7/b05-*.hl7` vendor-style messages built by this project; each
file's provenance is in `hl7/SOURCES.md`. Files hold the bytes as received (CR, LF or
CRLF segment ends; MSH-18 character set), one message per file, without MLLP framing.
"""

from __future__ import annotations

from pathlib import Path

HL7_DIR = Path(__file__).parent / "hl7"
NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in HL7_DIR.glob("*.hl7")))
REAL: tuple[str, ...] = tuple(n for n in NAMES if n[:1].isdigit())
BUILT: tuple[str, ...] = tuple(n for n in NAMES if n.startswith("b"))


def path(name: str) -> Path:
    """The file of sample `name` (its stem, or just its number: "07", "b02")."""
    for n in NAMES:
        if n == name or n.split("-", 1)[0] == name:
            return HL7_DIR / f"{n}.hl7"
    raise KeyError(name)


def load(name: str) -> bytes:
    """The bytes of sample `name` (its stem, or just its number: "07", "b02")."""
    return path(name).read_bytes()
