"""UTC time and its text forms, one definition for every part.

Every time Vigil keeps is UTC. A naive `datetime` (as SQLite reads one back) was
written in UTC, so these helpers read it as UTC, never as the machine's local time.

Text forms, each used where it is named:
- `iso_ms`: `2026-03-01T08:00:00.250Z`, the form every MQTT message and bundle
  manifest carries (the wire format).
- `iso_s`: `2026-03-01T08:00:00Z`, whole seconds (certificate records, release list).
- `iso_ms_offset`: `2026-03-01T08:00:00.250+00:00`, the gateway's SQLite outbox columns
  (compared as text, so the form must not change) and the JSON log lines.
- `hl7_ts`: `20260301080000.250+0000`, the HL7 time of the monitor line.
`parse_iso` reads any ISO-8601 text, `Z` included (Python 3.11's `fromisoformat`).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "as_utc",
    "hl7_ts",
    "iso_ms",
    "iso_ms_offset",
    "iso_s",
    "naive_as_utc",
    "parse_iso",
    "parse_iso_utc",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """`ts` in UTC; a naive time is taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def naive_as_utc(ts: datetime | None) -> datetime | None:
    """A naive time (read back from SQLite, which was given UTC) tagged as UTC; an aware
    time is returned as it is (its zone is kept) and None stays None."""
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def iso_ms(ts: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, as every message carries."""
    return as_utc(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_s(ts: datetime) -> str:
    """UTC ISO-8601 in whole seconds with a Z."""
    return as_utc(ts).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_ms_offset(ts: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `+00:00` (SQLite outbox columns, log lines)."""
    return as_utc(ts).isoformat(timespec="milliseconds")


def parse_iso(text: str) -> datetime:
    """ISO-8601 text (a trailing `Z` included) -> datetime; ValueError if it is not."""
    return datetime.fromisoformat(text)


def parse_iso_utc(text: str) -> datetime:
    """ISO-8601 text -> UTC datetime; a time without an offset is taken as UTC."""
    return as_utc(datetime.fromisoformat(text))


def hl7_ts(ts: datetime) -> str:
    """`ts` as an HL7 time in UTC: `YYYYMMDDHHMMSS.fff+0000`."""
    u = ts.astimezone(UTC)
    return u.strftime("%Y%m%d%H%M%S") + f".{u.microsecond // 1000:03d}+0000"
