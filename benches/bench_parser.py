"""Parser benchmark: HL7 messages decoded per second per core, library parser vs the old one.

`edge_agent.pcd01.parse_message` (python-hl7 `hl7.parse`, MDC/MDIL/LOINC/site codes,
units, statuses, times with offsets) against the hand-written `parse_reading` that the
gateway used before issue 12 (copied below verbatim from `edge_agent/decoder.py` at
commit b116043 as the baseline; it reads only the old simulator layout). One thread,
so the figures are per core; each figure is the median of several repeats.

1. Simulator-layout messages (the only dialect the old parser reads: LOINC codes, all
   seven vitals, ZAD): old `parse_reading`, new `parse_message`, and new
   `parse_message` + `to_readings` (what the gateway does per message), side by side.
2. The real PCD-01 samples of tests/samples/hl7 (new parser only; the old one rejects
   every one of them), round-robin over all 19 files, rejected ones included.

    .venv/bin/python -m benches.bench_parser --messages 4000 --repeats 7
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import hl7

from contracts.vitals import BY_LOINC, VITAL_NAMES
from edge_agent.pcd01 import MessageError, parse_message, to_readings
from tests import samples

# ---- baseline: the old hand-written parser (edge_agent/decoder.py @ b116043) ----------


@dataclass(frozen=True)
class Reading:
    bed: str
    stay: str
    monitor_id: str
    seq: int
    obs_time: datetime
    values: dict[str, float | None]
    static: dict[str, float | None]
    icu_admit: datetime | None = None


class FrameError(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DecoderStats:
    frames_ok: int = 0
    noise_bytes: int = 0
    bad: Counter = field(default_factory=Counter)


_TS = re.compile(r"^(\d{14})(?:\.(\d{1,3}))?\+0000$")
_NUM = re.compile(r"^-?\d{1,7}(?:\.\d{1,4})?$")
_ID = re.compile(r"^[\x20-\x7e]{1,64}$")


def parse_ts(text: str, what: str = "") -> datetime:
    """HL7 time -> datetime; `what` (e.g. "PV1-44") names the field and hides the value
    (a patient's admission time is identifying); without it the value is shown."""
    shown = what or repr(text[:30])
    m = _TS.match(text)
    if not m:
        raise FrameError("bad_time", f"{shown} is not YYYYMMDDHHMMSS.fff+0000")
    try:
        base = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise FrameError("bad_time", f"{shown} is not a calendar time") from None
    return base + timedelta(milliseconds=int((m.group(2) or "0").ljust(3, "0")))


def _f(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _age(birth: date, when: datetime) -> int:
    d = when.date()
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


def parse_reading(body: bytes) -> Reading:
    """One MLLP frame body -> Reading, or FrameError naming what is wrong."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("not_ascii") from None
    segs: dict[str, list[list[str]]] = {}
    for line in text.split("\r"):
        if line:
            parts = line.split("|")
            segs.setdefault(parts[0], []).append(parts)
    if not text.startswith("MSH|^~\\&|"):
        raise FrameError("not_hl7", "frame does not start with MSH|^~\\&|")
    msh = segs["MSH"][0]
    if len(segs["MSH"]) != 1 or _f(msh, 8) != "ORU^R01^ORU_R01":
        raise FrameError("bad_msh", f"message type {_f(msh, 8)[:20]!r}")
    control = _f(msh, 9)
    monitor_id, _, seq_text = control.rpartition("-")
    if not monitor_id or not seq_text.isdigit() or len(seq_text) > 12:
        raise FrameError("bad_msh", f"control id {control[:40]!r}")
    obs_time = parse_ts(_f(msh, 6))
    for name in ("PID", "PV1", "OBR", "ZAD"):
        if len(segs.get(name, ())) != 1:
            raise FrameError("bad_segments", f"{len(segs.get(name, ()))} {name} segments")
    pid, pv1, zad = segs["PID"][0], segs["PV1"][0], segs["ZAD"][0]
    stay = _f(pid, 3).split("^")[0]
    loc = _f(pv1, 3).split("^")
    bed = loc[2] if len(loc) > 2 else ""
    if not _ID.match(stay):  # PID-3 may be a record number: never echoed
        raise FrameError("bad_ids", f"PID-3 stay id ({len(stay)} chars) is not 1-64 printable")
    if not _ID.match(bed):
        raise FrameError("bad_ids", f"bed {bed[:20]!r}")
    values: dict[str, float | None] = {}
    for obx in segs.get("OBX", ()):
        vital = BY_LOINC.get(_f(obx, 3).split("^")[0])
        if vital is None or vital.name in values:
            raise FrameError("bad_obx", f"code {_f(obx, 3)[:20]!r} unknown or repeated")
        raw, status = _f(obx, 5), _f(obx, 11)
        if status == "X" and raw == "":
            values[vital.name] = None
        elif status == "R" and _NUM.match(raw):
            values[vital.name] = float(raw)
        else:
            raise FrameError("bad_value", f"{vital.name} value {raw[:12]!r} status {status[:4]!r}")
    if len(values) != len(VITAL_NAMES):
        missing = sorted(set(VITAL_NAMES) - set(values))
        raise FrameError("bad_obx", f"missing vitals {missing}")
    static: dict[str, float | None] = {"Age": None, "Gender": None, "HospAdmTime": None}
    birth = _f(pid, 7)
    if birth:
        try:
            static["Age"] = float(_age(datetime.strptime(birth, "%Y%m%d").date(), obs_time))
        except ValueError:
            raise FrameError("bad_pid", "PID-7 birth date is not YYYYMMDD") from None
    sex = _f(pid, 8)
    if sex not in ("M", "F", "U", ""):
        raise FrameError("bad_pid", "PID-8 sex is not M, F, U or empty")
    static["Gender"] = {"M": 1.0, "F": 0.0}.get(sex)
    admit = parse_ts(_f(pv1, 44), "PV1-44 ICU admission time") if _f(pv1, 44) else None
    hosp = parse_ts(_f(zad, 1), "ZAD-1 hospital admission time") if _f(zad, 1) else None
    if admit is not None and hosp is not None:
        static["HospAdmTime"] = (hosp - admit) / timedelta(hours=1)
    static["ICULOS"] = (obs_time - admit) / timedelta(hours=1) if admit else None
    for k, v in static.items():
        if v is not None and not math.isfinite(v):
            raise FrameError("bad_pid", f"{k} is not finite")
    return Reading(
        bed=bed,
        stay=stay,
        monitor_id=monitor_id,
        seq=int(seq_text),
        obs_time=obs_time,
        values=values,
        static=static,
        icu_admit=admit,
    )


# ---- messages ----------------------------------------------------------------------

LOINC_UNITS = {"HR": "/min", "O2Sat": "%", "Temp": "Cel", "Resp": "/min"}


def sim_message(i: int) -> bytes:
    """The old simulator layout (firmware_sim/hl7.py @ b116043): what parse_reading reads."""
    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    ts = t.strftime("%Y%m%d%H%M%S") + f".{t.microsecond // 1000:03d}+0000"
    admit = "20251231080000.000+0000"
    values = {
        "HR": 80 + i % 7,
        "O2Sat": 96 + i % 3,
        "Temp": 36.85,
        "SBP": 120 + i % 5,
        "MAP": 85,
        "DBP": 70,
        "Resp": 18,
    }
    segs = [
        f"MSH|^~\\&|VIGILSIM|mon-01|VIGIL|GATEWAY|{ts}||ORU^R01^ORU_R01|mon-01-{i + 1}|P|2.6",
        "PID|1||pn-p000123^^^VIGIL^PI||||19600101|M",
        "PV1|1|I|ICU^^bed-1" + "|" * 41 + admit,
        f"OBR|1|||VITALS^Vital signs^L|||{ts}",
    ]
    for n, name in enumerate(VITAL_NAMES, 1):
        v = BY_LOINC_BY_NAME[name]
        unit = LOINC_UNITS.get(name, "mm[Hg]")
        segs.append(
            f"OBX|{n}|NM|{v.loinc}^{v.label}^LN||{values[name]}|{unit}^{unit}^UCUM|||||R|||{ts}"
        )
    segs.append("ZAD|20251230120000.000+0000")
    return "\r".join(segs).encode("ascii")


BY_LOINC_BY_NAME = {v.name: v for v in BY_LOINC.values()}


# ---- timing ------------------------------------------------------------------------


def rate(fn: Callable[[bytes], object], bodies: list[bytes], repeats: int) -> tuple[float, float]:
    """(median, spread) messages per second of `fn` over `bodies`, `repeats` times."""
    for b in bodies[:200]:  # warm-up
        fn(b)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in bodies:
            fn(b)
        rates.append(len(bodies) / (time.perf_counter() - t0))
    return statistics.median(rates), (max(rates) - min(rates)) / 2


def new_parse(body: bytes) -> object:
    try:
        return parse_message(body)
    except MessageError as e:
        return e


def new_parse_readings(body: bytes) -> object:
    try:
        return to_readings(parse_message(body), "bed-1", "mon-01", 1)
    except MessageError as e:
        return e


def hl7_parse_only(body: bytes) -> object:
    return hl7.parse(body.decode("ascii"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4000, help="messages per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)

    sim = [sim_message(i) for i in range(a.messages)]
    old = parse_reading(sim[0])
    new = to_readings(parse_message(sim[0]), "bed-1", "mon-01", 1)[0]
    assert old.values == new.values, (old.values, new.values)  # same numbers either way
    assert math.isclose(old.static["ICULOS"], new.static["ICULOS"])
    real = [samples.load(n) for n in samples.NAMES]
    real_bodies = [real[i % len(real)] for i in range(a.messages)]
    used = [b for b in real if not isinstance(new_parse(b), MessageError)]
    used_bodies = [used[i % len(used)] for i in range(a.messages)]
    sizes = statistics.mean(len(b) for b in real)

    print(
        f"python {platform.python_version()}, python-hl7 {hl7.__version__ if hasattr(hl7, '__version__') else '0.4.5'}"
    )
    print(f"{a.messages} messages x {a.repeats} repeats, one thread; median (± half range)")
    rows = [
        ("sim layout", "old parse_reading (hand split)", parse_reading, sim),
        ("sim layout", "python-hl7 hl7.parse alone", hl7_parse_only, sim),
        ("sim layout", "new parse_message", new_parse, sim),
        ("sim layout", "new parse_message + to_readings", new_parse_readings, sim),
        (
            f"real samples ({len(real)}, {sizes:.0f} B avg)",
            "new parse_message",
            new_parse,
            real_bodies,
        ),
        (
            f"real samples used ({len(used)})",
            "new parse_message + to_readings",
            new_parse_readings,
            used_bodies,
        ),
    ]
    results = []
    for what, parser, fn, bodies in rows:
        med, spread = rate(fn, bodies, a.repeats)
        results.append(med)
        print(
            f"  {what:<28} {parser:<34} {med:>9,.0f} msg/s (± {spread:,.0f})  {1e6 / med:7.1f} µs/msg"
        )
    print(f"new / old on the sim layout: {results[2] / results[0]:.2f}x the rate")


if __name__ == "__main__":
    main()
