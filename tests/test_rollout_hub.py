"""Hub-side rollout logic without a broker: the gate, the eval set, releases, the ledger,
key providers (file and the Key Vault provider's interface)."""

from __future__ import annotations

import base64
import math

import pytest

from cloud_hub.keys import AzureKeyVaultProvider, FileKeyProvider, SigningKeyError, open_provider
from cloud_hub.retrain import EvalSet, Gate, RetrainError
from cloud_hub.rollout.ledger import Ledger, StoreLedger
from cloud_hub.rollout.release import RolloutError, make_release
from contracts.bundle import generate_key, key_id, load_private_key, verify_parts
from tests.support.hub import fresh_engine
from tests.support.rollout import default_parts


def test_the_gate_promotes_only_a_model_not_worse_on_every_metric():
    g = Gate(max_auroc_drop=0.01, max_utility_drop=0.0)
    champ = {"auroc": 0.80, "utility": 0.30}
    assert g.decide({"auroc": 0.795, "utility": 0.30}, champ)[0]
    ok, why = g.decide({"auroc": 0.85, "utility": 0.29}, champ)
    assert not ok and why.startswith("utility 0.2900 < champion 0.3000")
    assert not g.decide({"auroc": math.nan, "utility": 0.5}, champ)[0]
    assert g.decide({"auroc": 0.1, "utility": 0.0}, None) == (
        True,
        "no champion yet: the first model is promoted",
    )


def test_the_eval_set_is_frozen_stratified_and_guarded_by_its_hash(tmp_path):
    stays = {f"s{i:03d}": i % 10 == 0 for i in range(200)}
    es = EvalSet.freeze(stays, 0.15, 7, "eval-v1")
    assert es == EvalSet.freeze(stays, 0.15, 7, "eval-v1")  # seeded
    assert sum(stays[s] for s in es.stay_ids) == 3 and len(es.stay_ids) == 30
    p = tmp_path / "eval.json"
    es.save(p)
    assert EvalSet.load(p) == es
    p.write_text(p.read_text().replace(es.stay_ids[0], "s999"))
    with pytest.raises(RetrainError, match="does not match its sha256"):
        EvalSet.load(p)


def test_a_release_is_stamped_signed_by_the_provider_and_checked_before_it_leaves(tmp_path):
    key, _, kid = generate_key(tmp_path)
    provider = open_provider(f"file:{key}")
    assert isinstance(provider, FileKeyProvider) and provider.key_id == kid
    manifest, model = default_parts()
    r = make_release(manifest, model, "canary", provider, seq=123)
    assert r.manifest["release"]["seq"] == 123 and r.signature["key_id"] == kid
    pub = load_private_key(key).public_key()
    verify_parts(r.manifest, r.signature, model, {key_id(pub): pub})
    bad = dict(manifest, golden=[dict(manifest["golden"][0], expected=0.99)])
    with pytest.raises(RolloutError, match="golden_mismatch"):
        make_release(bad, model, "canary", provider, seq=124)
    with pytest.raises(ValueError):
        make_release(manifest, model, "no/such", provider, seq=125)


@pytest.fixture(params=["folder", "sqlite", "postgresql"])
def ledger(request, tmp_path):
    """Both ledgers: a folder, and the hub store on SQLite and on PostgreSQL."""
    if request.param == "folder":
        yield Ledger(tmp_path / "ledger")
        return
    url = (
        f"sqlite:///{tmp_path}/hub.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = fresh_engine(url)
    yield StoreLedger(engine)
    engine.dispose()


def test_the_ledger_finds_the_previous_model_for_a_rollback(tmp_path, ledger):
    key, _, _ = generate_key(tmp_path)
    provider = open_provider(key)
    manifest, model = default_parts()
    led = ledger
    with pytest.raises(RolloutError, match="nothing was ever published"):
        led.rollback_target("stable")
    for seq, version in ((10, "1"), (20, "2"), (30, "2")):
        led.record(
            make_release(dict(manifest, version=version), model, "stable", provider, seq=seq)
        )
    assert led.current("stable").seq == 30 and led.last_seq() == 30
    target = led.rollback_target("stable")
    assert (target.version, target.seq) == ("1", 10)
    # what a rollback republishes: the whole signed release, as it was published
    again = target.release()
    assert again.manifest["version"] == "1" and again.manifest["release"]["seq"] == 10
    pub = load_private_key(key).public_key()
    assert base64.b64decode(again.model_b64) == model
    verify_parts(again.manifest, again.signature, model, {key_id(pub): pub})  # still signed
    assert [e.seq for e in led.history("stable")] == [10, 20, 30]
    assert led.history("canary") == [] and led.current("canary") is None


def test_key_providers_name_what_is_wrong():
    with pytest.raises(SigningKeyError, match="not found"):
        open_provider("/nonexistent/signing.key")
    with pytest.raises(SigningKeyError, match="azurekv://<vault>/<secret>"):
        open_provider("azurekv://only-vault")
    kv = open_provider("azurekv://vigil-kv/bundle-signing")
    assert isinstance(kv, AzureKeyVaultProvider)
    assert kv.description == "azurekv:https://vigil-kv.vault.azure.net/secrets/bundle-signing"


def test_rollback_cli_reads_the_ledger_in_the_hub_store(broker, tmp_path):
    """Without --ledger the CLI uses the hub store named by --db (shared by replicas)."""
    from typer.testing import CliRunner

    from vigil_cli.main import app

    key, _, _ = generate_key(tmp_path)
    provider = open_provider(key)
    manifest, model = default_parts()
    url = f"sqlite:///{tmp_path}/hub.db"
    args = ["hub", "rollback", "--db", url, "--key", str(key), "--port", str(broker.port)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "nothing was ever published on channel 'stable'" in (res.output)
    led = StoreLedger(url)
    for seq, version in ((10, "1"), (20, "2")):
        led.record(
            make_release(dict(manifest, version=version), model, "stable", provider, seq=seq)
        )
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "rolled stable back to vigil-sepsis 1" in res.output
    cur = led.current("stable")
    assert (cur.version, cur.rollback) == ("1", True) and cur.seq > 20


def test_a_new_host_recovers_the_frozen_eval_set_from_mlflow(tmp_path):
    """The eval set file is local; its copy in MLflow keeps retrains comparable when the
    hub runs somewhere new (a fresh container): real MLflow, SQLite store."""
    import mlflow

    from cloud_hub.retrain import RetrainConfig, labels_since_last, recover_eval_set
    from cloud_hub.training import tracking

    uri, _ = tracking.setup(f"sqlite:///{tmp_path}/mlflow.db", "exp-recover")
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert recover_eval_set(client, "exp-recover") is None  # no retrain ran yet
    assert recover_eval_set(client, "no-such-experiment") is None
    es = EvalSet("eval-v1", ("pn-p000001", "pn-p000002", "pn-p000009"))

    def logged(stays, sha):
        with mlflow.start_run(run_name="retrain") as run:
            mlflow.set_tag("kind", "retrain")
            mlflow.log_params({"eval_set_sha256": sha, "fleet_labelled_rows": 120})
            mlflow.log_dict({"name": "eval-v1", "sha256": sha, "stay_ids": stays}, "eval_set.json")
        return run.info.run_id

    first = logged(list(es.stay_ids), es.sha256)
    with mlflow.start_run(run_name="other"):  # not a retrain run: ignored
        mlflow.set_tag("kind", "train")
    got, run_id = recover_eval_set(client, "exp-recover")
    assert (got, run_id) == (es, first)
    # The label-count trigger: the local state file, else the newest retrain's count.
    cfg = RetrainConfig(
        base_data=tmp_path / "base.parquet",
        eval_set=tmp_path / "new-host" / "eval_set.json",
        tracking_uri=uri,
        experiment="exp-recover",
    )
    assert labels_since_last(cfg) == (0, 120)
    cfg.state_path.parent.mkdir(parents=True)
    cfg.state_path.write_text('{"labelled_fleet_rows": 7}')
    assert labels_since_last(cfg) == (0, 7)

    logged(["pn-p000001"], es.sha256)  # newest retrain, list edited after hashing
    with pytest.raises(RetrainError, match="does not match its sha256"):
        recover_eval_set(client, "exp-recover")
    mlflow.set_tracking_uri(None)


def test_rollback_refuses_a_release_no_trusted_key_signed(tmp_path):
    """The ledger also holds what the ingest saw on the broker: re-signing must not
    turn a release signed by an unknown key into a trusted one."""
    from cloud_hub.rollout.release import rollback

    hub_key, _, _ = generate_key(tmp_path / "hub")
    rogue_key, _, _ = generate_key(tmp_path / "rogue")
    hub, rogue = open_provider(hub_key), open_provider(rogue_key)
    manifest, model = default_parts()
    led = Ledger(tmp_path / "ledger")
    led.record(make_release(dict(manifest, version="1"), model, "stable", rogue, seq=10))
    led.record(make_release(dict(manifest, version="2"), model, "stable", hub, seq=20))
    with pytest.raises(RolloutError, match="does not verify with the hub's trusted keys"):
        rollback(None, "stable", hub, led)  # refused before anything is published
    assert led.current("stable").seq == 20


def test_a_store_ledger_that_fails_says_so_instead_of_a_traceback(tmp_path):
    from sqlalchemy import text

    key, _, _ = generate_key(tmp_path)
    manifest, model = default_parts()
    led = StoreLedger(f"sqlite:///{tmp_path}/hub.db")
    with led.engine.begin() as c:
        c.execute(text("DROP TABLE channel_releases"))
    with pytest.raises(RolloutError, match="release ledger in sqlite:///.*unreadable"):
        led.history("stable")
    with pytest.raises(RolloutError, match="unreadable"):
        led.last_seq()
    release = make_release(manifest, model, "stable", open_provider(key), seq=5)
    with pytest.raises(RolloutError, match="is published, but the ledger .* could not record"):
        led.record(release)


@pytest.mark.parametrize("where", ["store", "folder"])
def test_releases_lists_the_ledger_per_channel(tmp_path, where):
    import json as _json

    from typer.testing import CliRunner

    from vigil_cli.main import app

    key, _, _ = generate_key(tmp_path)
    provider = open_provider(key)
    manifest, model = default_parts()
    url = f"sqlite:///{tmp_path}/hub.db"
    led = StoreLedger(url) if where == "store" else Ledger(tmp_path / "ledger")
    place = ["--db", url] if where == "store" else ["--ledger", str(tmp_path / "ledger")]
    (tmp_path / "ledger").mkdir()  # a read-only command names a missing ledger (exit 2)
    res = CliRunner().invoke(app, ["hub", "releases", *place])
    assert res.exit_code == 0 and "0 release(s)" in res.output
    for seq, version, ch in ((10, "1", "stable"), (20, "2", "canary"), (30, "2", "stable")):
        led.record(make_release(dict(manifest, version=version), model, ch, provider, seq=seq))
    res = CliRunner().invoke(app, ["hub", "releases", *place, "--json"])
    assert res.exit_code == 0, res.output
    rows = _json.loads(res.output)
    assert [(r["channel"], r["seq"], r["current"]) for r in rows] == [
        ("canary", 20, True),
        ("stable", 10, False),
        ("stable", 30, True),
    ]
    assert all(r["issued_at"].endswith("Z") and r["key_id"] for r in rows)
    table = CliRunner().invoke(app, ["hub", "releases", *place, "--channel", "stable"]).output
    assert "vigil-sepsis@2" in table and "current" in table and "2 release(s)" in table
