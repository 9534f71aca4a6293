"""Helpers for the simulator tests: a small real canonical table and a line reader.

The reader side is written independently of `firmware_sim.hl7` (its own MLLP split,
the third-party `hl7` parser), so the tests do not check the simulator with itself.
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import hl7
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.canonical import COLUMNS
from contracts.mdc import BY_CODE, parse_code
from contracts.units import to_catalogue
from contracts.vitals import BY_LOINC, VITAL_NAMES
from tests.support import data as shared


def canonical_from_physionet(path: Path, n_stays: int = 3) -> tuple[Path, list[str]]:
    """Write the first `n_stays` real stays of PhysioNet 2019 set A as a canonical table."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    ids = []
    with tarfile.open(shared.physionet(), "r|gz") as tf:
        for m in tf:
            if not m.name.endswith(".psv"):
                continue
            text = tf.extractfile(m).read().decode()
            stay = "pn-" + Path(m.name).stem
            arr = np.genfromtxt(io.StringIO(text), delimiter="|", names=True)
            for row in arr:
                cols["stay_id"].append(stay)
                cols["hour"].append(int(row["ICULOS"]))
                for n in VITAL_NAMES:
                    cols[n].append(float(row[n]))
                for n in ("Age", "Gender", "HospAdmTime", "ICULOS"):
                    cols[n].append(float(row[n]))
                cols["label"].append(int(row["SepsisLabel"]))
                cols["source"].append("physionet2019")
            ids.append(stay)
            if len(ids) >= n_stays:
                break
    schema = {"stay_id": pa.string(), "hour": pa.int64(), "label": pa.int8(), "source": pa.string()}
    table = pa.table({c: pa.array(v, type=schema.get(c, pa.float64())) for c, v in cols.items()})
    pq.write_table(table, path)
    return path, ids


class LineReader(threading.Thread):
    """Collects every byte a `read()` callable returns until stopped."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        super().__init__(daemon=True)
        self._read = read
        self._halt = threading.Event()
        self.data = bytearray()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                chunk = self._read()
            except OSError:  # the monitor went away (pty hung up): end of the line
                return
            if chunk:
                with self._lock:
                    self.data.extend(chunk)

    def stop(self) -> bytes:
        self._halt.set()
        self.join(5)
        with self._lock:
            return bytes(self.data)


@dataclass
class Wire:
    """What a gateway would see on the line, tallied from the raw bytes."""

    frames: list[bytes] = field(default_factory=list)
    noise_bytes: int = 0
    truncated: int = 0
    tail: bytes = b""  # an unfinished frame at the end of the capture


def split_mllp(buf: bytes) -> Wire:
    w = Wire()
    i = 0
    while i < len(buf):
        if buf[i] != 0x0B:
            w.noise_bytes += 1
            i += 1
            continue
        end = buf.find(b"\x1c\x0d", i + 1)
        nxt = buf.find(b"\x0b", i + 1)
        if end == -1 and nxt == -1:
            w.tail = buf[i:]
            break
        if nxt != -1 and (end == -1 or nxt < end):
            w.truncated += 1
            i = nxt
            continue
        w.frames.append(buf[i + 1 : end])
        i = end + 2
    return w


@dataclass
class Reading:
    control_id: str
    seq: int
    bed: str
    stay_id: str
    obs_time: datetime
    icu_admit: datetime | None
    hospital_admit: datetime | None
    birth: str
    sex: str
    values: dict[str, float | None]  # catalogue units (converted from OBX-6)
    status: dict[str, str]
    codes: dict[str, str] = field(default_factory=dict)  # OBX-3 per vital
    units: dict[str, str] = field(default_factory=dict)  # OBX-6 per vital
    name: str = ""  # PID-5


def hl7_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S.%f%z")


def _vital(code: str, system: str) -> str | None:
    if system == "LN":
        return BY_LOINC[code].name
    mdc = parse_code(code, system)
    return BY_CODE[mdc].vital if mdc in BY_CODE else None


def parse_with_hl7(frame: bytes | str) -> Reading:
    """Decode one frame (standard PCD-01 layout, or the legacy LOINC one) with the
    third-party parser (raises on anything malformed). Rows that are not a catalogue
    vital (the device row of the PCD-01 tree) are skipped."""
    msg = hl7.parse(frame.decode("ascii") if isinstance(frame, bytes) else frame)
    msh, pid, pv1 = msg.segment("MSH"), msg.segment("PID"), msg.segment("PV1")
    zads = [s for s in msg if str(s[0]) == "ZAD"]
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[12]) == "2.6"
    control = str(msh[10])
    values: dict[str, float | None] = {}
    status: dict[str, str] = {}
    codes: dict[str, str] = {}
    units: dict[str, str] = {}
    for obx in msg.segments("OBX"):
        name = _vital(str(obx[3][0][0]), str(obx[3][0][2]) if len(obx[3][0]) > 2 else "")
        if name is None:
            continue
        raw = str(obx[5])
        status[name] = str(obx[11])
        codes[name] = str(obx[3])
        units[name] = str(obx[6])
        values[name] = to_catalogue(name, float(raw), str(obx[6])) if raw else None
    admit = str(pv1[44]) if len(pv1) > 44 else ""
    return Reading(
        control_id=control,
        seq=int(control.rsplit("-", 1)[1]),
        bed=str(pv1[3][0][2]),
        stay_id=str(pid[3][0][0]),
        obs_time=hl7_time(str(msg.segment("OBR")[7])),  # MSH-7 is the send time
        icu_admit=hl7_time(admit) if admit else None,
        hospital_admit=hl7_time(str(zads[0][1])) if zads and str(zads[0][1]) else None,
        birth=str(pid[7]),
        sex=str(pid[8]),
        values=values,
        status=status,
        codes=codes,
        units=units,
        name=str(pid[5]),
    )


def iculos_hours(r: Reading) -> float:
    assert r.icu_admit is not None
    return (r.obs_time - r.icu_admit) / timedelta(hours=1)
