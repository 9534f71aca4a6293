"""Fleet registry from retained statuses and last wills, through a REAL Mosquitto.

A "gateway" here is a separate process (a paho client with a last will); killing it
with SIGKILL is the unclean loss the will exists for: the broker publishes the will
and the hub marks the gateway offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

from typer.testing import CliRunner

from cloud_hub.fleet import fleet
from cloud_hub.ingest import HubWorker
from cloud_hub.settings import HubSettings
from contracts.paths import PROJECT_ROOT
from tests.support.broker import needs_mosquitto
from tests.support.hub import Publisher, status, vitals
from tests.support.waiting import wait_until
from vigil_cli.main import app

pytestmark = needs_mosquitto

GATEWAY = textwrap.dedent(
    """
    import sys, time, threading
    from tests.support.hub import Publisher, status
    gw, port = sys.argv[1], int(sys.argv[2])
    will = status(gw=gw, state="offline")
    pub = Publisher(port, client_id=gw, will=will)
    pub.send_messages([status(gw=gw, outbox=12, version="4")], retain=True)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def start_gateway(broker, gw: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", GATEWAY, gw, str(broker.port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,  # `python -c` imports from its folder: tests.support
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def by_gw(engine) -> dict:
    return {g.gw: g for g in fleet(engine)}


def test_fleet_from_retained_status_and_last_will(broker, db):
    url, engine = db
    gw_a, gw_b = f"gwa-{uuid.uuid4().hex[:6]}", f"gwb-{uuid.uuid4().hex[:6]}"
    gateway = start_gateway(broker, gw_a)  # online BEFORE the hub starts: retained
    worker = HubWorker(
        HubSettings(mqtt_port=broker.port, worker_id=uuid.uuid4().hex[:8], batch_ms=20), engine
    ).start(migrate_store=False)
    try:
        assert worker.wait_ready()
        wait_until(lambda: gw_a in by_gw(engine), what="the retained status")
        g = by_gw(engine)[gw_a]
        assert (g.state, g.outbox, g.model, g.agent_version) == (
            "online",
            12,
            "vigil-gru@4",
            "0.1.0",
        )
        # a second gateway comes and goes cleanly, telling the hub it is offline
        pub = Publisher(broker.port)
        pub.send_messages([status(gw=gw_b), vitals(gw=gw_b)])
        wait_until(lambda: by_gw(engine).get(gw_b) and by_gw(engine)[gw_b].state == "online")
        gateway.kill()  # SIGKILL: no DISCONNECT, the broker publishes the will
        gateway.wait(10)
        wait_until(lambda: by_gw(engine)[gw_a].state == "offline", what="the last will")
        pub.send_messages([status(gw=gw_b, state="offline")], retain=True)
        wait_until(lambda: by_gw(engine)[gw_b].state == "offline")
        pub.close()
    finally:
        if gateway.poll() is None:
            gateway.kill()
        worker.stop(drain_seconds=1, retire=True)
        for gw in (gw_a, gw_b):  # clear the retained messages for the next parameter
            p = Publisher(broker.port)
            p.send(f"vigil/v1/gw/{gw}/status", b"", retain=True)
            p.close()

    runner = CliRunner()
    res = runner.invoke(app, ["hub", "fleet", "--json", "--db", url])
    assert res.exit_code == 0, res.output
    rows = {r["gw"]: r for r in json.loads(res.output)}
    assert rows[gw_a]["state"] == "offline" and rows[gw_a]["model"] == "vigil-gru@4"
    assert rows[gw_a]["last_seen"].endswith("Z")
    table = runner.invoke(app, ["hub", "fleet", "--db", url]).output
    assert "GATEWAY" in table and gw_a in table and "offline" in table
    assert "2 gateways, 0 online" in table


def test_fleet_target_is_the_newest_release_on_the_gateways_channel(broker, db, tmp_path):
    """Retained releases on vigil/v1/models/{channel} become each gateway's target."""
    from sqlalchemy import func, select

    from cloud_hub.store.models import ChannelRelease, DeadLetter
    from contracts import topics
    from tests.support.rollout import make_key, release

    url, engine = db
    key, _ = make_key(tmp_path)
    ch_stable, ch_canary = f"st-{uuid.uuid4().hex[:6]}", f"ca-{uuid.uuid4().hex[:6]}"

    def rel(seq: int, version: str, channel: str):
        r = release(key, seq=seq, version=version, channel=channel)
        r.manifest["name"] = "vigil-gru"  # what status() reports running
        return r

    def on(gw: str, channel: str, version: str):
        return status(gw=gw, version=version).model_copy(update={"channel": channel})

    pub = Publisher(broker.port)
    # Published (retained) before the hub exists: it must still learn it.
    pub.send(topics.models(ch_stable), rel(100, "4", ch_stable).to_json(), retain=True)
    worker = HubWorker(
        HubSettings(mqtt_port=broker.port, worker_id=uuid.uuid4().hex[:8], batch_ms=20), engine
    ).start(migrate_store=False)
    gw_a, gw_b = f"gwa-{uuid.uuid4().hex[:6]}", f"gwb-{uuid.uuid4().hex[:6]}"
    try:
        assert worker.wait_ready()
        pub.send_messages([on(gw_a, ch_stable, "4"), on(gw_b, ch_canary, "4")])
        wait_until(lambda: {gw_a, gw_b} <= set(by_gw(engine)), what="both statuses")
        wait_until(lambda: by_gw(engine)[gw_a].target, what="target")
        a = by_gw(engine)[gw_a]
        assert (a.target, a.model, a.in_step) == ("vigil-gru@4", "vigil-gru@4", True)
        assert by_gw(engine)[gw_b].target is None  # nothing published on canary yet

        # Live: a canary release, a newer stable one, then junk and a cleared channel.
        pub.send(topics.models(ch_canary), rel(200, "5", ch_canary).to_json(), retain=True)
        pub.send(topics.models(ch_stable), rel(300, "5", ch_stable).to_json(), retain=True)
        pub.send(topics.models(ch_stable), b"{not json", retain=False)
        pub.send(topics.models(ch_canary), rel(201, "6", ch_stable).to_json(), retain=False)
        wait_until(lambda: by_gw(engine)[gw_a].target == "vigil-gru@5", what="new target")
        wait_until(lambda: by_gw(engine)[gw_b].target == "vigil-gru@5", what="canary target")
        assert not by_gw(engine)[gw_a].in_step  # runs 4, its channel now carries 5
        wait_until(lambda: worker.totals["dead"] >= 2, what="the two bad releases")
    finally:
        worker.stop(drain_seconds=1, retire=True)

    # A restarted hub receives the retained releases again: stored once.
    again = HubWorker(
        HubSettings(mqtt_port=broker.port, worker_id=uuid.uuid4().hex[:8], batch_ms=20), engine
    ).start(migrate_store=False)
    try:
        assert again.wait_ready()
        assert again.wait_idle(quiet=0.5)
        assert again.totals["duplicates"] >= 2 and again.totals["stored"] == 0
    finally:
        again.stop(drain_seconds=1, retire=True)
        for ch in (ch_stable, ch_canary):  # clear for the next parameter
            pub.send(topics.models(ch), b"", retain=True)
        pub.close()

    with engine.connect() as c:
        n = c.execute(
            select(func.count())
            .select_from(ChannelRelease)
            .where(ChannelRelease.channel.in_([ch_stable, ch_canary]))
        ).scalar()
        dead = c.execute(
            select(DeadLetter.reason_kind, DeadLetter.reason).where(
                DeadLetter.topic.in_([topics.models(ch_stable), topics.models(ch_canary)])
            )
        ).all()
    assert n == 3
    # What the ingest saw is the hub's ledger too: a rollback can republish it.
    from cloud_hub.rollout.ledger import StoreLedger

    led = StoreLedger(engine)
    assert [e.seq for e in led.history(ch_stable)] == [100, 300]
    assert led.rollback_target(ch_stable).release().manifest["version"] == "4"
    assert sorted(k for k, _ in dead) == ["malformed", "topic_mismatch"]
    assert any("payload channel" in r for _, r in dead)

    res = CliRunner().invoke(app, ["hub", "fleet", "--json", "--db", url])
    rows = {r["gw"]: r for r in json.loads(res.output)}
    assert rows[gw_a]["target"] == "vigil-gru@5" and rows[gw_a]["in_step"] is False
    table = CliRunner().invoke(app, ["hub", "fleet", "--db", url]).output
    assert "TARGET" in table and "vigil-gru@5 BEHIND" in table
