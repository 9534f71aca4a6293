"""Helpers for the gateway tests: valid monitor frames, real PhysioNet stays, a gateway
config (`edge_settings`) and its started publisher (`make_publisher`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from contracts.mllp import frame
from contracts.vitals import VITAL_NAMES
from edge_agent.config import BedConfig, EdgeSettings, MqttConfig, TcpSource
from edge_agent.publisher import Publisher, status_payload
from edge_agent.state import GatewayState
from edge_agent.store import Store
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


def edge_settings(
    tmp_path: Path,
    *,
    port: int | None = None,
    gateway_id: str = "gw-test",
    beds: Sequence[str | BedConfig] = ("b1",),
    store: str = "gw.sqlite",
    mqtt: dict[str, Any] | None = None,
    **kw: Any,
) -> EdgeSettings:
    """A gateway config for a test: its store in `tmp_path`, the broker on `port`.

    `beds` are ids (their source a TCP monitor on 127.0.0.1:1, where nothing listens:
    the test feeds readings itself) or `BedConfig`s; `mqtt` adds `MqttConfig` fields
    (reconnect delays, TLS); other keywords are `EdgeSettings` fields (operator, link).
    Without `port` the broker settings are the defaults.
    """
    mqtt_kw = dict(mqtt or {})
    if port is not None:
        mqtt_kw["port"] = port
    return EdgeSettings(
        gateway_id=gateway_id,
        beds=[
            b
            if isinstance(b, BedConfig)
            else BedConfig(id=b, source=TcpSource(type="tcp", host="127.0.0.1", port=1))
            for b in beds
        ],
        mqtt=MqttConfig(**mqtt_kw),
        store_path=tmp_path / store,
        **kw,
    )


def make_publisher(s: EdgeSettings, store: Store, **kw: Any) -> tuple[Publisher, GatewayState]:
    """The gateway's publisher for `s`, started, with the gateway state it reports."""
    state = GatewayState(s.gateway_id, [b.id for b in s.beds])
    pub = Publisher(s, store, state, status_payload(s, state), **kw)
    pub.start()
    return pub, state


def event(i: int) -> bytes:
    """A small distinct payload for the outbox tests."""
    return json.dumps({"n": i}).encode()


def physionet_stay(stem: str):
    """One real stay of PhysioNet 2019 set A as a NumPy structured array (rows = hours)."""
    import io
    import tarfile

    import numpy as np

    from tests.support import data as shared

    with tarfile.open(shared.physionet(), "r|gz") as tf:
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
