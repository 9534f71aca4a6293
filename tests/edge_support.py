"""Helpers for the gateway tests: valid monitor frames, a Mosquitto on a free port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from contracts.mllp import frame
from contracts.vitals import VITAL_NAMES
from firmware_sim.hl7 import Observation, build_oru

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def observation(seq: int, bed: str = "bed-1", stay: str = "pn-p000001", **values) -> Observation:
    vals = {n: values.get(n, 70.0 + i) for i, n in enumerate(VITAL_NAMES)}
    return Observation(
        monitor_id="MON01",
        seq=seq,
        bed=bed,
        stay_id=stay,
        obs_time=T0 + timedelta(seconds=seq),
        values=vals,
        birth_date=date(1950, 2, 27),
        sex="F",
        icu_admit=T0 - timedelta(hours=2),
        hospital_admit=T0 - timedelta(hours=30),
    )


def valid_frame(seq: int, **kw) -> bytes:
    return frame(build_oru(observation(seq, **kw)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A private Mosquitto on a free loopback port that a test can stop and restart."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nset_tcp_nodelay true\n"
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def physionet_stay(stem: str):
    """One real stay of PhysioNet 2019 set A as a NumPy structured array (rows = hours)."""
    import io
    import tarfile

    import numpy as np

    from contracts.paths import physionet_archive

    with tarfile.open(physionet_archive(), "r|gz") as tf:
        for m in tf:
            if m.name.endswith(f"/{stem}.psv"):
                text = tf.extractfile(m).read().decode()
                return np.genfromtxt(io.StringIO(text), delimiter="|", names=True)
    raise LookupError(f"stay {stem} not in the archive")


def stay_arrays(arr):
    import numpy as np

    from contracts.vitals import STATIC_FEATURES

    dyn = np.column_stack([arr[n] for n in VITAL_NAMES]).astype(np.float64)
    static = np.column_stack([arr[n] for n in STATIC_FEATURES]).astype(np.float64)
    return dyn, static


def write_canonical(path: Path, stays: dict[str, object]) -> Path:
    """A canonical Parquet table (contracts/canonical.py) of the given real stays."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from contracts.canonical import COLUMNS

    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for stay_id, arr in stays.items():
        for row in arr:
            cols["stay_id"].append(stay_id)
            cols["hour"].append(int(row["ICULOS"]))
            for n in (*VITAL_NAMES, "Age", "Gender", "HospAdmTime", "ICULOS"):
                cols[n].append(float(row[n]))
            cols["label"].append(int(row["SepsisLabel"]))
            cols["source"].append("physionet2019")
    types = {"stay_id": pa.string(), "hour": pa.int64(), "label": pa.int8(), "source": pa.string()}
    pq.write_table(
        pa.table({c: pa.array(v, type=types.get(c, pa.float64())) for c, v in cols.items()}), path
    )
    return path
