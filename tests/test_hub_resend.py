"""The hub asks the gateways to resend after it lost its broker connection.

A broker restarted without its state (here: persistence off, as a SIGKILLed broker
loses what it held since its last save) has acknowledged gateway messages that it
never delivered to the hub. On its reconnect the hub publishes a `resend` command to
every gateway in its registry, `since` = the last time it stored anything from that
gateway minus the margin.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import pytest
from sqlalchemy import select

from cloud_hub.ingest import HubWorker
from cloud_hub.settings import HubSettings
from cloud_hub.store.models import Gateway
from contracts.messages import Command, parse_message
from tests.support.broker import Mosquitto, Subscriber, needs_mosquitto
from tests.support.hub import Publisher, fresh_engine, risk
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto


def _commands(sub: Subscriber) -> list[tuple[str, Command]]:
    with sub.lock:
        return [(t.split("/")[3], parse_message(p, gateway_only=False)) for t, p, _ in sub.messages]


@dataclass
class Rig:
    """A Mosquitto of its own, a SQLite hub store, a subscriber to every gateway's cmd."""

    broker: Mosquitto
    engine: object
    sub: Subscriber
    workers: list[HubWorker] = field(default_factory=list)

    def worker(self, **kw) -> HubWorker:
        w = _worker(self.broker.port, self.engine, **kw)
        self.workers.append(w)
        return w

    def seed(self, gws: list[str]) -> None:
        """Store one message from each gateway, so the registry knows them."""
        pub = Publisher(self.broker.port)
        pub.send_messages([risk(gw=g) for g in gws])
        pub.close()
        with self.engine.connect() as c:
            wait_until(
                lambda: len(c.execute(select(Gateway.gw)).all()) == len(gws), what="registry"
            )


@pytest.fixture
def rig(broker, tmp_path):
    r = Rig(broker, fresh_engine(f"sqlite:///{tmp_path}/hub.db"), None)
    r.sub = Subscriber(broker.port, "vigil/v1/gw/+/cmd")
    yield r
    for w in r.workers:
        w.stop(drain_seconds=1, retire=True)
    r.sub.close()
    r.engine.dispose()


def _worker(port: int, engine, worker_id: str | None = None) -> HubWorker:
    s = HubSettings(
        mqtt_port=port,
        worker_id=worker_id or f"t-{uuid.uuid4().hex[:8]}",
        batch_ms=20,
        resend_margin_seconds=30,
    )
    w = HubWorker(s, engine).start(migrate_store=False)
    assert w.wait_ready(), "hub worker did not subscribe"
    return w


def test_hub_sends_resend_to_every_known_gateway_after_a_session_loss(rig):
    w = rig.worker()
    rig.seed(["gw1", "gw2"])
    with rig.engine.connect() as c:
        seen = {g: t.replace(tzinfo=t.tzinfo or UTC) for g, t in c.execute(
            select(Gateway.gw, Gateway.last_seen))}  # fmt: skip
    assert _commands(rig.sub) == [], "no resend while nothing was lost"

    rig.sub.ready.clear()
    rig.broker.restart()  # the hub's session and subscriptions are gone
    assert rig.sub.ready.wait(10)
    wait_until(lambda: len(_commands(rig.sub)) >= 2, what="resend commands", timeout=20)
    got = dict(_commands(rig.sub))
    assert set(got) == {"gw1", "gw2"}
    for gw, cmd in got.items():
        assert cmd.command == "resend" and cmd.gw == "hub"
        want = seen[gw] - timedelta(seconds=30)
        assert abs(cmd.since - want) < timedelta(milliseconds=2), (gw, cmd.since, want)
    assert w.resends_sent == 2

    # A worker starting afresh (no session on the broker) also asks, from the registry
    # (its loss, a missing session, comes after the requests above: not covered).
    rig.worker()
    wait_until(lambda: len(_commands(rig.sub)) >= 4, what="resend from a new worker")
    assert sorted(g for g, _ in _commands(rig.sub)[2:]) == ["gw1", "gw2"]


def test_two_workers_reconnecting_together_send_one_resend_per_gateway(rig):
    """N workers on one shared subscription: the store decides which one asks."""
    first = _worker(rig.broker.port, rig.engine)
    rig.seed([f"gw{i}" for i in range(5)])
    first.stop(drain_seconds=1, retire=True)
    # Both new workers know all 5 gateways (from the registry), as after a restart.
    workers = [rig.worker(), rig.worker()]
    for w in workers:  # a first connect asks at once: not what this test is about
        wait_until(lambda w=w: w._resend_due is None, what="start-up resends")
    time.sleep(0.5)
    with rig.sub.lock:
        rig.sub.messages.clear()
    sent_before = sum(w.resends_sent for w in workers)

    rig.sub.ready.clear()
    rig.broker.restart()
    assert rig.sub.ready.wait(10)
    wait_until(lambda: len(_commands(rig.sub)) >= 5, what="resend commands", timeout=20)
    wait_until(lambda: all(w._subscribed.is_set() for w in workers), what="resubscribed")
    time.sleep(2.0)  # room for a second, duplicate round to show up
    got = sorted(g for g, _ in _commands(rig.sub))
    assert got == [f"gw{i}" for i in range(5)], got
    assert sum(w.resends_sent for w in workers) - sent_before == 5
    with rig.engine.connect() as c:
        claims = c.execute(select(Gateway.resend_since, Gateway.resend_at)).all()
    assert all(since is not None and at is not None for since, at in claims)


def test_a_restarted_worker_asks_again_even_when_the_broker_kept_its_session(rig):
    """The kept session may have overflowed its queue while the hub was down: ask."""
    w = _worker(rig.broker.port, rig.engine, worker_id="kept")
    rig.seed(["gw1"])
    w.stop(drain_seconds=1)  # not retired: the broker keeps its session
    with rig.sub.lock:
        rig.sub.messages.clear()
    rig.worker(worker_id="kept")
    wait_until(lambda: len(_commands(rig.sub)) >= 1, what="resend after restart")
    ((gw, cmd),) = _commands(rig.sub)
    assert gw == "gw1" and cmd.command == "resend"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_hub_serve_processes_on_postgresql_ask_each_gateway_once_after_a_broker_restart(
    broker, tmp_path
):
    """Production: separate `vigil hub serve` worker processes on one PostgreSQL store,
    a real Mosquitto restarted without its state. Both workers know every gateway (from
    the registry, as after a hub restart), both notice each loss and decide for every
    gateway; the claim in the store lets exactly one of them send each gateway its
    `resend`, at start-up and again after the broker restart."""
    from sqlalchemy import create_engine

    from tests.support.hub import postgres_database
    from vigil_cli.procs import spawn, stop, vigil_argv

    gws = ["gw-a", "gw-b", "gw-c", "gw-d"]
    env = {"VIGIL_LOG_LEVEL": "INFO", "VIGIL_HUB_RESEND_MARGIN_SECONDS": "30"}
    with postgres_database("vigil_resend_procs") as url:
        logs = [tmp_path / f"hub-{i}.log" for i in range(2)]
        procs = []

        def serve(worker: str, log):  # noqa: ANN001, ANN202
            argv = vigil_argv(
                "hub", "serve", "--host", "127.0.0.1", "--port", str(broker.port),
                "--db", url, "--worker-id", worker, "--batch-ms", "20",
            )  # fmt: skip
            p = spawn(argv, log, env=env)
            procs.append(p)
            return p

        def subscribed(log) -> int:  # noqa: ANN001
            return log.read_text().count("event=subscribed") if log.exists() else 0

        def decided(gw: str) -> tuple[int, int]:
            """(sent, found claimed by the other) for `gw`, over both workers' logs."""
            text = "".join(log.read_text() for log in logs if log.exists())
            return (
                text.count(f"event=resend_requested gw={gw} "),
                text.count(f"event=resend_already_requested gw={gw} "),
            )

        def by_gw() -> dict[str, int]:
            return {g: [x for x, _ in _commands(sub)].count(g) for g in gws}

        sub = Subscriber(broker.port, "vigil/v1/gw/+/cmd")
        engine = create_engine(url)
        try:
            # The registry: a first worker stores one message of each gateway, then stops.
            seed_log = tmp_path / "hub-seed.log"
            seed = serve("resend-seed", seed_log)
            wait_until(lambda: subscribed(seed_log) >= 1, 60, "the seeding worker")
            pub = Publisher(broker.port)
            pub.send_messages([risk(gw=g) for g in gws])
            pub.close()
            with engine.connect() as c:
                wait_until(
                    lambda: len(c.execute(select(Gateway.gw)).all()) == len(gws), what="registry"
                )
            assert stop(seed, 30) == 0, seed_log.read_text()[-2000:]
            assert _commands(sub) == [], "no resend while nothing was lost"

            # Two workers start (no session yet: each asks every gateway it knows). A
            # worker started later than another's claim counts its own start as a new
            # loss and asks again (cloud_hub/ingest.py `_claim_resend`): at start-up a
            # gateway may get one request per worker. Not what this test is about.
            for i, log in enumerate(logs):
                serve(f"resend-proc-{i}", log)
            wait_until(
                lambda: all(sum(decided(g)) == 2 for g in gws),
                60,
                lambda: f"both workers to decide at start-up: {[decided(g) for g in gws]}",
            )
            start = {g: decided(g) for g in gws}
            sent_at_start = sum(s for s, _ in start.values())
            wait_until(lambda: sum(by_gw().values()) >= sent_at_start, 20, "start-up resends")
            print("start-up (sent, found claimed) per gateway:", start)
            with sub.lock:
                sub.messages.clear()

            sub.ready.clear()
            broker.restart()  # both workers lose their sessions and subscriptions
            assert sub.ready.wait(10)
            for log in logs:
                wait_until(lambda log=log: subscribed(log) >= 2, 60, f"{log.name} to resubscribe")

            def after(g: str) -> tuple[int, int]:
                (s1, c1), (s0, c0) = decided(g), start[g]
                return s1 - s0, c1 - c0

            wait_until(
                lambda: all(sum(after(g)) == 2 for g in gws),
                60,
                lambda: f"both workers to decide after the loss: {[after(g) for g in gws]}",
            )
            # One worker sent, the other found the request claimed: once per gateway.
            assert [after(g) for g in gws] == [(1, 1)] * len(gws)
            wait_until(lambda: sum(by_gw().values()) >= len(gws), 20, "the resend commands")
            assert by_gw() == dict.fromkeys(gws, 1), by_gw()
            assert all(c.command == "resend" and c.since is not None for _, c in _commands(sub))
            with engine.connect() as c:
                claims = c.execute(select(Gateway.resend_since, Gateway.resend_at)).all()
            assert len(claims) == len(gws) and all(s and a for s, a in claims)
        finally:
            for p in procs:
                stop(p, 30)
            sub.close()
            engine.dispose()
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
