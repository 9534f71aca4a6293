"""What `vigil edge decode --driver intellivue` and `vigil edge probe --driver intellivue` do.

`decode_stream(data)` reads a recorded monitor -> host MIB/RS-232 byte stream (as
VSCapture-style tools record the port) and yields one `Decoded` per frame that decoded
(a frame with a bad check sequence is counted, never decoded). A poll result's row holds
`vitals` (valid values in catalogue units, the vital the gateway would use) and `states`
(every numeric that is not a valid model vital: its state flags, raw value and codes).

`probe(port, seconds)` associates with a monitor on a serial port (or UDP), prints its
identity and numerics for `seconds`, releases and returns what it saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from contracts.mdc import BY_CODE, NOT_MODEL_VITALS, mdil
from contracts.timeutil import iso_ms
from contracts.units import MDC_DIM

from ..decoder import Reading
from . import protocol as p
from .driver import SerialLink, Session, UdpLink
from .framing import FrameDecoder


@dataclass
class Decoded:
    """One decoded frame of a recording: its message kind and, for a poll result, a row."""

    n: int
    kind: str
    text: str
    row: dict[str, Any] | None = None


@dataclass
class StreamSummary:
    frames_ok: int = 0
    frames_bad: dict[str, int] = field(default_factory=dict)
    noise_bytes: int = 0
    messages_bad: dict[str, int] = field(default_factory=dict)
    poll_results: int = 0


def numeric_row(n: p.Numeric) -> dict[str, Any]:
    """A numeric as decode shows it: codes, MDC reference, value, unit, state flags."""
    term = BY_CODE.get(n.mdc_code)
    unit = MDC_DIM.get(n.unit_mdc)
    return {
        "mdc": n.mdc_code,
        "mdil": mdil(n.mdc_code),
        "ref": term.ref if term else NOT_MODEL_VITALS.get(n.mdc_code, "").split(" ")[0],
        "vital": term.vital if term else None,
        "value": n.value,
        "unit": unit.name if unit else f"0x{n.unit_code:04x}",
        "state": list(n.flags) or ["valid"],
    }


def poll_row(session: Session, result: p.PollResult, reading: Reading) -> dict[str, Any]:
    """The JSON object of one poll result (`--json`)."""
    used = set(reading.values)
    states: dict[str, Any] = {}
    for n in result.numerics:
        row = numeric_row(n)
        if n.valid and row["vital"] in used:
            continue  # a valid model vital: in "vitals" (or a lower-priority source of it)
        key = row["vital"] if row["vital"] and not n.valid else (row["ref"] or row["mdil"])
        states.setdefault(key, row)
    return {
        "poll_number": result.poll_number,
        "sequence_no": result.sequence_no,
        "device_time": iso_ms(reading.obs_time),
        "monitor": reading.monitor_id,
        "vitals": {k: round(v, 3) for k, v in reading.values.items() if v is not None},
        "withheld": reading.quality,
        "states": states,
        "numerics": [numeric_row(n) for n in result.numerics],
    }


def decode_stream(
    data: bytes, summary: StreamSummary | None = None, bed: str = "recording"
) -> Iterator[Decoded]:
    """Every decodable frame of a monitor -> host recording, in order (never raises)."""
    frames = FrameDecoder()
    session = Session(bed)
    out = summary if summary is not None else StreamSummary()
    n = 0
    for body in frames.feed(data):
        n += 1
        try:
            msg = p.decode_message(body)
        except p.ProtocolError as e:
            out.messages_bad[e.reason] = out.messages_bad.get(e.reason, 0) + 1
            yield Decoded(n, "undecodable", f"frame {n}: not decoded ({e})")
            continue
        readings = session.receive(body)
        if msg.kind == "poll_result" and isinstance(msg.body, p.PollResult) and readings:
            out.poll_results += 1
            row = poll_row(session, msg.body, readings[0])
            yield Decoded(n, msg.kind, _poll_text(n, row), row)
        elif isinstance(msg.body, p.PollResult) and msg.body.demographics is not None:
            state = "admitted" if msg.body.demographics.admitted else "no patient admitted"
            text = f"frame {n}: patient demographics: {state} (identifiers not shown)"
            yield Decoded(n, "demographics", text)
        elif msg.kind == "mds_create" and isinstance(msg.body, p.MdsCreate):
            yield Decoded(n, msg.kind, f"frame {n}: MDS create event: {identity_text(msg.body)}")
        else:
            detail = f" ({msg.detail})" if msg.detail else ""
            yield Decoded(n, msg.kind, f"frame {n}: {msg.kind.replace('_', ' ')}{detail}")
    out.frames_ok = frames.stats.frames_ok
    out.frames_bad = dict(frames.stats.bad)
    out.noise_bytes = frames.stats.noise_bytes


def identity_text(m: p.MdsCreate) -> str:
    parts = [
        f"{m.manufacturer or '?'} {m.model or '?'}",
        f"bed label {m.bed_label or '-'}",
        f"system id {m.system_id or '-'}",
        f"clock {iso_ms(m.abs_time) if m.abs_time else 'not set'}",
    ]
    return ", ".join(parts)


def _poll_text(n: int, row: dict[str, Any]) -> str:
    lines = [
        f"frame {n}: poll result {row['poll_number']} at {row['device_time']}:"
        f" {len(row['vitals'])} vital(s), {len(row['numerics'])} numeric(s)"
    ]
    for num in row["numerics"]:
        value = "n/a" if num["value"] is None else f"{num['value']:.4g}"
        lines.append(
            f"  {num['mdil']} {num['ref'] or '-':<28} {value:>8} {num['unit']:<6}"
            f" {','.join(num['state'])}"
        )
    if row["vitals"]:
        lines.append("  vitals: " + ", ".join(f"{k} {v:g}" for k, v in row["vitals"].items()))
    if row["withheld"]:
        lines.append("  withheld: " + ", ".join(f"{k} ({v})" for k, v in row["withheld"].items()))
    return "\n".join(lines)


@dataclass
class ProbeResult:
    session: Session
    readings: list[Reading]
    frames: FrameDecoder | None


def probe(
    *,
    port: str | None = None,
    udp: str | None = None,
    seconds: float = 5.0,
    baud: int = 115200,
    on_reading: Callable[[Reading], None] | None = None,
    on_identity: Callable[[p.MdsCreate], None] | None = None,
) -> ProbeResult:
    """Associate, listen `seconds` after the monitor answered (or `seconds` for an
    answer), release; every reading and the identity go to the callbacks."""
    session = Session("probe")
    seen: list[Reading] = []
    told = [False]

    def got(r: Reading) -> None:
        seen.append(r)
        if not told[0] and session.identity is not None and on_identity:
            on_identity(session.identity)
            told[0] = True
        if on_reading:
            on_reading(r)

    stop = threading.Event()
    link: SerialLink | UdpLink
    if udp is not None:
        host, _, port_s = udp.partition(":")
        link = UdpLink(session, host, int(port_s or 24105), on_reading=got)
    else:
        assert port is not None
        link = SerialLink(session, port, baud, on_reading=got)
    thread = threading.Thread(target=link.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and session.state != "polling":
        time.sleep(0.05)
    if session.state == "polling":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
    stop.set()
    thread.join(5)
    return ProbeResult(session, seen, link.frames if isinstance(link, SerialLink) else None)


def run_decode(files: list[Any], as_json: bool, echo: Callable[..., None]) -> int:
    """`vigil edge decode --driver intellivue`: print every decoded message of each file
    (`--json`: one object per poll result) and what was not decoded; returns the number of
    files that could not be read."""
    import json

    unreadable = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            echo(f"error: cannot read {path}: {e.strerror or e}", err=True)
            unreadable += 1
            continue
        summary = StreamSummary()
        for d in decode_stream(data, summary):
            if as_json:
                if d.row is not None:
                    echo(json.dumps({"file": str(path), "frame": d.n, **d.row}, ensure_ascii=False))
            else:
                echo(d.text)
        bad = ", ".join(f"{k} {v}" for k, v in sorted(summary.frames_bad.items())) or "none"
        undecoded = sum(summary.messages_bad.values())
        line = (
            f"{path}: {summary.frames_ok} frame(s) decoded, {summary.poll_results} poll"
            f" result(s); frames not used: {bad}; messages not decoded: {undecoded};"
            f" noise bytes: {summary.noise_bytes}"
        )
        echo(line, err=as_json)
        if summary.frames_ok == 0:
            echo(f"{path}: no IntelliVue frame (0xC0 ... 0xC1 with a good FCS) found", err=True)
    return unreadable
