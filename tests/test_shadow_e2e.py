"""Shadow evaluation end to end (issue 13): two bundles on one real gateway, a real
Mosquitto, a real hub worker on SQLite, and `vigil hub rollout --gate shadow`.

The hub publishes a candidate as a shadow release (signed, stamp `mode: shadow`); the
gateway proves it like an active bundle and scores every step of simulated septic and
stable beds (firmware_sim `Monitor.generated`, MLLP frames fed to the gateway) with it
too, silently. Its summaries reach the hub store; the gate refuses a candidate whose
shadow alarm burden breaks the budget (a very low threshold) and promotes one within it
through the usual release path. The nurse's alarms with a shadow model are those
without one; a corrupt shadow release is refused with the reason and the gateway goes
on with its active model (and its running shadow)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cloud_hub.cli import app as hub_app
from cloud_hub.ingest import HubWorker
from cloud_hub.keys import open_provider
from cloud_hub.rollout.release import (
    connect,
    make_release,
    publish_and_wait,
    publish_shadow,
    read_bundle_folder,
)
from cloud_hub.settings import HubSettings
from cloud_hub.store import migrate, open_engine
from cloud_hub.store.models import DeadLetter, ShadowSummaryEvent
from contracts import topics
from contracts.broker import BrokerSettings
from contracts.bundle import MANIFEST, MODEL, generate_key
from contracts.messages import Command, cohen_kappa
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from edge_agent.config import load_config
from edge_agent.gateway import Gateway
from edge_agent.model_hook import attach_updater
from edge_agent.shadow import attach_shadow
from firmware_sim.monitor import Monitor
from tests.support.broker import needs_mosquitto
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto
GW = "gw-shadow"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
BEDS = {"bed-1": ("sepsis", 1), "bed-2": ("sepsis", 2), "bed-3": ("stable", 3)}
CYCLES = 1600  # a reading every 2 simulated minutes: ~53 h per bed


class _Null:
    """A monitor transport that only hands the frames back (the test feeds them)."""

    address = "memory"

    def write(self, data: bytes) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def frames() -> dict[str, list[bytes]]:
    out = {}
    for bed, (scenario, seed) in BEDS.items():
        m = Monitor.generated(
            bed, _Null(), scenario, seed=seed, speed=3600, interval=120, max_rate=1e9,
            clock_start=T0,
        )  # fmt: skip
        out[bed] = [f for f in (m.cycle(i) for i in range(CYCLES)) if f]
    return out


def feed(gw: Gateway, frames: dict[str, list[bytes]], start: int, end: int) -> None:
    for i in range(start, end):
        for bed, fs in frames.items():
            if i < len(fs):
                gw.process_bytes(bed, fs[i])


def write_config(path: Path, store: Path, pub: Path, port: int) -> Path:
    beds = "".join(
        f'[[beds]]\nid = "{b}"\nsource = {{ type = "tcp", host = "127.0.0.1", port = 1 }}\n'
        for b in BEDS
    )
    path.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{store}"\n'
        f'bundle_dirs = ["{default_bundle_dir()}"]\n'
        f'trusted_keys = ["{default_trusted_keys_dir()}", "{pub}"]\n'
        f"{beds}[mqtt]\nport = {port}\n[shadow]\nreport_minutes = 600\n"
    )
    return path


def candidate(folder: Path, version: str, threshold: float) -> Path:
    """A candidate bundle folder: the shipped model with another version and threshold
    (unsigned: the hub signs what it publishes)."""
    manifest, blob = read_bundle_folder(default_bundle_dir())
    m = copy.deepcopy(manifest)
    m["version"] = version
    m["threshold"] = {"value": threshold, "method": "test candidate: threshold set by hand"}
    m.pop("release", None)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps(m, indent=2))
    (folder / MODEL).write_bytes(blob)
    return folder


def summaries(engine, version: str | None = None, state: str | None = None) -> list:
    t = ShadowSummaryEvent.__table__
    q = select(t).order_by(t.c.id)
    if version is not None:
        q = q.where(t.c.shadow_version == version)
    if state is not None:
        q = q.where(t.c.state == state)
    with engine.connect() as c:
        return c.execute(q).all()


def model_alarms(gw: Gateway) -> list[tuple]:
    """What the nurse's alarm trail holds, without the wall-clock time and event id."""
    return [
        (r["bed"], r["action"], r["level"], r["by"], r["reason"], r["risk"], r.get("source"))
        for r in gw.store.rows("alarms")
    ]


@pytest.fixture
def rig(broker, tmp_path):
    key, pub, _ = generate_key(tmp_path / "keys")
    engine = open_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    hub = HubWorker(
        HubSettings(
            mqtt_port=broker.port,
            worker_id=f"t-{uuid.uuid4().hex[:8]}",
            batch_ms=20,
            share_group=f"g{uuid.uuid4().hex[:6]}",
        ),
        engine,
    ).start(migrate_store=False)
    assert hub.wait_ready(), "hub worker did not subscribe"
    toml = write_config(tmp_path / "gw.toml", tmp_path / "gw" / "gw.sqlite", pub, broker.port)
    gw = Gateway(load_config(toml))
    runner = attach_shadow(gw, attach_updater(gw))
    gw.start(sources=False)
    client = connect(BrokerSettings("127.0.0.1", broker.port, client_id="hub-shadow-test"))
    assert wait_until(lambda: gw.publisher.connected and gw.publisher.subscribed.is_set())
    yield {
        "gw": gw,
        "runner": runner,
        "engine": engine,
        "client": client,
        "provider": open_provider(key),
        "key": key,
        "tmp": tmp_path,
        "port": broker.port,
    }
    client.disconnect()
    client.loop_stop()
    gw.stop(2.0)
    hub.stop()
    engine.dispose()


def shadow_release(rig, folder: Path) -> None:
    """`vigil hub rollout --shadow`: signed, stamped mode shadow, retained on the channel's
    shadow topic."""
    result = CliRunner().invoke(
        hub_app,
        [
            "rollout", "--bundle", str(folder), "--channel", "stable", "--shadow",
            "--db", f"sqlite:///{rig['tmp'] / 'hub.db'}",
            "--key", str(rig["key"]), "--port", str(rig["port"]),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "as a shadow candidate on stable" in result.output


def ask_report(rig) -> None:
    cmd = Command(gw="hub", command="report_shadow")
    publish_and_wait(rig["client"], topics.cmd(GW), cmd.to_json(), retain=False)


def gate(rig, folder: Path, budget: float, min_days: float = 1.0):
    return CliRunner().invoke(
        hub_app,
        [
            "rollout",
            "--bundle", str(folder), "--channel", "stable",
            "--gate", "shadow", "--alarm-budget", str(budget),
            "--min-patient-days", str(min_days),
            "--db", f"sqlite:///{rig['tmp'] / 'hub.db'}",
            "--key", str(rig["key"]),
            "--port", str(rig["port"]),
        ],
    )  # fmt: skip


def test_shadow_candidates_are_scored_silently_reported_and_gated(rig, frames, tmp_path):
    gw, runner, engine = rig["gw"], rig["runner"], rig["engine"]
    active = (gw.model.name, gw.model.version)
    # A noisy candidate: the shipped model with a very low threshold.
    noisy = candidate(tmp_path / "noisy", "9", 0.05)
    shadow_release(rig, noisy)
    assert wait_until(lambda: runner.loaded is not None, what="shadow model loaded")
    assert runner.loaded.manifest.version == "9" and gw.model.version == active[1]
    assert gw.beds["bed-1"].alarm.params.threshold == gw.model.threshold  # untouched

    half = CYCLES // 2
    feed(gw, frames, 0, half)
    ask_report(rig)  # on demand: vigil.shadow/1 through the outbox
    assert wait_until(lambda: summaries(engine, "9"), timeout=30, what="noisy summary stored")
    (row,) = summaries(engine, "9")
    assert (row.gw, row.channel, row.state, row.trigger) == (GW, "stable", "running", "on_demand")
    assert (row.active["name"], row.active["version"]) == active
    steps = row.shadow["steps"]
    # Every closed step of every bed was seen by both models.
    assert steps == row.active["steps"] == len(gw.store.rows("steps")) > 3 * 20
    assert sum(row.shadow["histogram"]) == row.shadow["scored"]
    assert row.shadow["histogram"] == row.active["histogram"]  # same model, same inputs
    assert row.shadow["alarm_steps"] > row.active["alarm_steps"]
    assert row.both + row.only_active + row.only_shadow + row.neither == steps
    assert row.only_active == 0 and row.only_shadow > 0

    result = gate(rig, noisy, budget=8.0)
    assert result.exit_code == 1, result.output
    assert "gate refused:" in result.output
    burden = row.shadow["alarm_steps"] * 24.0 / steps
    assert f"shadow burden {burden:.1f} alarm-hours/patient-day > budget 8 at {GW}" in (
        result.output
    )
    assert "kappa" in result.output and f"{GW}: " in result.output
    assert gw.model.version == active[1]  # nothing published

    # Not enough patients seen: refused with that reason too.
    result = gate(rig, noisy, budget=100.0, min_days=50)
    assert result.exit_code == 1 and "< --min-patient-days 50" in result.output

    # A corrupt shadow release: refused with the reason; active and shadow go on.
    manifest, blob = read_bundle_folder(candidate(tmp_path / "bad", "11", 0.5))
    bad = make_release(manifest, blob, "stable", rig["provider"], seq=1_500, shadow=True)
    bad.model_b64 = bad.model_b64[:-8] + "AAAAAAA="
    publish_shadow(rig["client"], bad)
    assert wait_until(lambda: summaries(engine, "11", "refused"), what="refusal reported")
    (refused,) = summaries(engine, "11", "refused")
    assert refused.reason.startswith(("wrong_hash", "wrong_size")), refused.reason
    assert runner.loaded.manifest.version == "9" and gw.model.version == active[1]

    # A quiet candidate: the same model with a high threshold.
    quiet = candidate(tmp_path / "quiet", "10", 0.95)
    shadow_release(rig, quiet)
    assert wait_until(lambda: runner.loaded.manifest.version == "10")
    feed(gw, frames, half, CYCLES)
    ask_report(rig)
    assert wait_until(lambda: summaries(engine, "10"), timeout=30, what="quiet summary")
    (row10,) = summaries(engine, "10")
    # A higher threshold alarms only where the active model alarms too.
    assert row10.only_shadow == 0 and row10.shadow["alarm_steps"] < row10.active["alarm_steps"]
    burden10 = row10.shadow["alarm_steps"] * 24.0 / row10.shadow["steps"]
    assert burden10 < 8.0 < burden, (burden10, burden)

    result = gate(rig, quiet, budget=8.0)
    assert result.exit_code == 0, result.output
    assert f"gate passed: shadow burden {burden10:.2f} <= budget 8" in result.output
    kappa = cohen_kappa(row10.both, row10.only_active, row10.only_shadow, row10.neither)
    assert f"kappa {kappa:.2f}" in result.output
    assert "published vigil-sepsis 10 on stable" in result.output
    assert wait_until(lambda: gw.model.version == "10", what="promoted candidate active")
    assert [(r.shadow_version, r.state) for r in summaries(engine)] == [
        ("9", "running"),
        ("11", "refused"),
        ("10", "running"),  # (no empty summary of "9": nothing scored since its report)
    ]
    with engine.connect() as c:
        assert not c.execute(select(DeadLetter.__table__)).all()


def test_a_shadow_model_never_changes_the_nurses_alarms(rig, frames, tmp_path):
    """The same beds through a gateway with a noisy shadow model and one without: the
    alarm trail, the risks and the steps are identical."""
    gw, runner = rig["gw"], rig["runner"]
    shadow_release(rig, candidate(tmp_path / "noisy", "9", 0.05))
    assert wait_until(lambda: runner.loaded is not None)
    toml = write_config(
        tmp_path / "plain.toml", tmp_path / "plain" / "gw.sqlite", tmp_path / "none.pub", 1
    )
    plain = Gateway(load_config(toml))
    try:
        feed(gw, frames, 0, 600)
        feed(plain, frames, 0, 600)
        assert runner.drain(10)
        assert runner.counters["steps"] == len(gw.store.rows("steps")) > 0
        assert runner._shadow.alarm_steps > runner._active.alarm_steps  # it would alarm more
        with_shadow, without = model_alarms(gw), model_alarms(plain)
        assert any(a[1] == "raised" for a in without)
        assert with_shadow == without
        risks = [
            (r["bed"], r["window_end"], r["risk"], r["alarm_level"]) for r in gw.store.rows("risk")
        ]
        assert risks == [
            (r["bed"], r["window_end"], r["risk"], r["alarm_level"])
            for r in plain.store.rows("risk")
        ]
    finally:
        plain._stop.set()
        plain.store.close()
