"""End to end with the real parts: PhysioNet stays, a real MLflow store (SQLite), real
training and int8 conversion, the `vigil hub` commands, a real Mosquitto, and two
gateways (real `ModelUpdater`s on real paho clients, real LiteRT).

retrain → gate → signed bundle → assign gw-a to canary → staged rollout: canary
(gw-a) then stable (gw-b), both report the new version; a bundle the canary refuses
halts the rollout before stable; rollback republishes the previous model.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from contracts.bundle import load_trusted_keys
from edge_agent.model_update import ModelUpdater
from tests.support import data as shared
from tests.support.broker import Mosquitto, needs_mosquitto
from tests.support.rollout import DEFAULT, GatewayClient

pytestmark = [pytest.mark.slow, needs_mosquitto]

NAME = "vigil-e2e"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from contracts.bundle import generate_key
    from converters import physionet

    root = tmp_path_factory.mktemp("e2e")
    data = root / "canonical.parquet"
    physionet.import_physionet(shared.physionet(), data, limit=160)
    key, pub, _ = generate_key(root / "keys")
    hub_db = _fleet_store(root)
    with Mosquitto(root / "broker") as broker:
        yield {"root": root, "data": data, "key": key, "pub": pub, "broker": broker, "db": hub_db}


def _fleet_store(root) -> str:
    """A real hub store (SQLite) holding 6 fleet stays of 12 h, 2 with a sepsis onset."""
    from cloud_hub.labels import import_outcomes
    from cloud_hub.store import Accepted, migrate, open_engine, write_batch
    from tests.support.hub import T0, vitals

    url = f"sqlite:///{root / 'hub.db'}"
    engine = open_engine(url)
    migrate(engine)
    msgs = [
        vitals(stay=f"s{i}", hour=h + 0.5, HR=80.0 + h * (3 if i < 2 else 0))
        for i in range(6)
        for h in range(12)
    ]
    write_batch(engine, [Accepted(m, T0) for m in msgs])
    csv = root / "outcomes.csv"
    csv.write_text(
        "stay_id,onset_time\ns0,2026-03-01T18:00:00Z\ns1,2026-03-01T19:00:00Z\n"
        + "".join(f"s{i},\n" for i in range(2, 6))
    )
    assert not import_outcomes(engine, csv).errors
    engine.dispose()
    return url


def _wait_retained_status(world, gw: str, *, channel: str) -> None:
    """A probe subscriber until the broker's retained status of `gw` names `channel`."""
    from contracts import topics
    from contracts.messages import parse_message
    from tests.support.broker import Subscriber
    from tests.support.waiting import wait_until

    def latest() -> str | None:
        sub = Subscriber(world["broker"].port, topics.status(gw))
        try:
            wait_until(lambda: sub.messages, 10, f"the retained status of {gw}")
            with sub.lock:
                return parse_message(sub.messages[-1][1]).channel
        finally:
            sub.close()

    wait_until(lambda: latest() == channel, 15, f"{gw}'s retained status on {channel}")


def _retained_release_version(world, channel: str) -> str:
    from contracts import topics
    from contracts.messages import parse_message
    from tests.support.broker import Subscriber
    from tests.support.waiting import wait_until

    sub = Subscriber(world["broker"].port, topics.models(channel))
    try:
        wait_until(lambda: sub.messages, 10, f"the retained release on {channel}")
        with sub.lock:
            return parse_message(sub.messages[-1][1], gateway_only=False).manifest["version"]
    finally:
        sub.close()


def _cli(args: list[str]):
    from cloud_hub.cli import app

    r = CliRunner().invoke(app, args, catch_exceptions=False)
    return r


def _gateway(world, gw: str) -> GatewayClient:
    trusted = load_trusted_keys([DEFAULT.parent / "trusted_keys", world["pub"]])
    u = ModelUpdater(world["root"] / gw, trusted, gw=gw)
    u.boot()
    assert u.current().source == "default"
    return GatewayClient(u, "127.0.0.1", world["broker"].port).start()


@pytest.fixture(scope="module")
def first_retrain(world):
    """The first retrain into the module's MLflow store (no champion yet): its CLI result.
    Every test that needs a champion asks for it, so each test also runs alone."""
    root = world["root"]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return _cli(
        [
            "retrain", "--data", str(world["data"]), "--db", world["db"], "--tracking-uri", uri,
            "--model-name", NAME, "--units", "8", "--epochs", "2", "--batch-size", "256",
            "--eval-set", str(root / "eval_set.json"), "--bundles", str(root / "bundles"),
            "--key", str(world["key"]),
        ]
    )  # fmt: skip


def test_retrain_promote_canary_then_stable_and_a_canary_refusal_halts(world, first_retrain):
    root, port = world["root"], str(world["broker"].port)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = ["--key", str(world["key"]), "--host", "127.0.0.1", "--port", port]
    ledger = ["--ledger", str(root / "ledger")]

    # 1. Retrain on the base dataset + the fleet's labelled hours: promoted and signed.
    r = first_retrain
    assert r.exit_code == 0, r.output
    assert "PROMOTED" in r.output, r.output
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    run = client.search_runs(  # the first retrain run (another test may have added more)
        [client.get_experiment_by_name(NAME).experiment_id],
        "tags.kind = 'retrain'",
        order_by=["attributes.start_time ASC"],
    )[0]
    es = json.loads((root / "eval_set.json").read_text())
    assert run.data.params["eval_set_sha256"] == es["sha256"]
    assert run.data.tags["gate"] == "no_champion" and "eval_candidate_auroc" in run.data.metrics
    assert run.data.params["fleet_labelled_rows"] == "72"  # 6 stays x 12 h, all labelled
    assert run.data.params["fleet_stays"] == "6"
    # The label threshold: nothing new since this retrain, so the next check does nothing.
    r = _cli(
        ["retrain", "--data", str(world["data"]), "--db", world["db"], "--tracking-uri", uri,
         "--model-name", NAME, "--key", str(world["key"]), "--min-new-labels", "10",
         "--eval-set", str(root / "eval_set.json"), "--bundles", str(root / "bundles-check")]
    )  # fmt: skip
    assert r.exit_code == 0 and "0 new labelled fleet hours (< 10): not retraining" in r.output

    # 2. Two gateways on the default bundle; gw-a joins canary.
    gw_a, gw_b = _gateway(world, "gw-a"), _gateway(world, "gw-b")
    try:
        r = _cli(["assign", "gw-a", "--channel", "canary", "--host", "127.0.0.1", "--port", port])
        assert r.exit_code == 0, r.output
        import time

        deadline = time.monotonic() + 10
        while gw_a.updater.channel != "canary" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw_a.updater.channel == "canary"
        # The new retained status is at the broker (what the rollout reads): a probe sees it.
        _wait_retained_status(world, "gw-a", channel="canary")

        # 3. Staged rollout from the registry: canary first, then stable.
        r = _cli(
            ["rollout", f"{NAME}@1", "--staged", "--tracking-uri", uri, *common, *ledger,
             "--stage-timeout", "30"]
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "canary: 1/1 active" in r.output and "done" in r.output, r.output
        for g in (gw_a, gw_b):
            st = g.wait_for(lambda s: s.state == "active" and s.version == "1")
            assert st.active.name == NAME
            assert g.updater.current().manifest.name == NAME
        # The fleet view: both on target.
        r = _cli(["targets", "--host", "127.0.0.1", "--port", port, *ledger, "--json"])
        rows = {x["gw"]: x for x in json.loads(r.output)}
        assert rows["gw-a"]["target"] == rows["gw-a"]["active"] == f"{NAME}@1"
        assert rows["gw-b"]["in_step"] and rows["gw-a"]["channel"] == "canary"

        # 4. A bundle the canary refuses (features in another order): stable untouched.
        bundle = next((root / "bundles").iterdir())
        bad = root / "bad_bundle"
        bad.mkdir()
        m = json.loads((bundle / "manifest.json").read_text())
        m["version"] = "2"
        f = m["preprocessing"]["features"]
        f[0], f[1] = f[1], f[0]
        (bad / "manifest.json").write_text(json.dumps(m))
        (bad / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes())
        b_states = len(gw_b.states)
        r = _cli(
            ["rollout", "--bundle", str(bad), "--staged", *common, *ledger,
             "--stage-timeout", "30"]
        )  # fmt: skip
        assert r.exit_code == 1, r.output
        assert "HALTED" in r.output and "gw-a refused (incompatible" in r.output, r.output
        assert gw_a.updater.current().manifest.version == "1"
        # Stable never saw it: the retained release on stable is still version 1, and
        # gw-b, whose stable subscription would deliver it, has no new state.
        assert _retained_release_version(world, "stable") == "1"
        assert len(gw_b.states) == b_states

        # 5. Rollback on canary: the previous model is published again, as a rollback.
        r = _cli(["rollback", "--channel", "canary", *common, *ledger])
        assert r.exit_code == 0, r.output
        assert f"back to {NAME} 1" in r.output
        st = gw_a.wait_for(
            lambda s: (
                s.state in ("active", "rolled_back")
                and s.version == "1"
                and s.ts > gw_a.states[-2].ts
            )
        )
        assert gw_a.updater.current().manifest.version == "1", st
    finally:
        gw_a.stop()
        gw_b.stop()


def test_a_second_retrain_is_judged_against_the_champion_on_the_same_eval_set(world, first_retrain):
    """After the first retrain (same MLflow store): a gate no model can pass (AUROC must
    rise by 1) rejects the candidate; the champion alias stays; everything is logged."""
    assert first_retrain.exit_code == 0, first_retrain.output
    import mlflow

    root = world["root"]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    r = _cli(
        [
            "retrain", "--data", str(world["data"]), "--db", world["db"], "--tracking-uri", uri,
            "--model-name", NAME, "--units", "8", "--epochs", "1", "--batch-size", "256",
            "--eval-set", str(root / "eval_set.json"), "--bundles", str(root / "bundles2"),
            "--key", str(world["key"]), "--max-auroc-drop", "-1",
        ]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "not promoted: auroc" in r.output, r.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    runs = client.search_runs(
        [client.get_experiment_by_name(NAME).experiment_id],
        "tags.kind = 'retrain'",
        order_by=["attributes.start_time DESC"],
    )
    latest, first = runs[0], runs[-1]
    assert latest.data.tags["gate"] == "rejected"
    assert latest.data.params["eval_set_sha256"] == first.data.params["eval_set_sha256"]
    assert latest.data.params["champion_version_before"] == "1"
    assert {"eval_candidate_auroc", "eval_champion_auroc", "eval_champion_utility"} <= set(
        latest.data.metrics
    )
    assert client.get_model_version(NAME, "2").tags["gate"] == "rejected"
    assert not (root / "bundles2").exists()
