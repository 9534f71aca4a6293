"""`vigil hub retrain | rollout | rollback | assign | targets | releases`: to the fleet.

Heavy imports (TensorFlow, MLflow, pandas, paho) happen inside the commands.
`cloud_hub.cli` adds these commands to `vigil hub`.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloud_hub.cli_options import (
    AsJson,
    BatchSize,
    BrokerHost,
    BrokerPort,
    Channel,
    Epochs,
    HubDb,
    Ledger,
    LimitStays,
    ModelName,
    Patience,
    Seed,
    SigningKey,
    TlsCa,
    TlsCert,
    TlsKey,
    TrackingUri,
    Units,
    Window,
    existing_store,
)
from contracts.cli import CanonicalTable, fail

if TYPE_CHECKING:
    from cloud_hub.rollout.ledger import Ledger as FolderLedger
    from cloud_hub.rollout.ledger import StoreLedger
    from contracts.broker import BrokerSettings

app = typer.Typer()


def _ledger(
    folder: Path | None, db: str | None, *, read_only: bool = False
) -> FolderLedger | StoreLedger:
    """The folder ledger when --ledger is given, else the hub store's (shared by replicas).

    A command that only reads it (`releases`, `targets`) wants it to exist: a mistyped
    --ledger or --db would otherwise read as "nothing published".
    """
    from cloud_hub.rollout.ledger import Ledger, StoreLedger
    from cloud_hub.store import StoreError

    if folder is not None:
        if read_only and not folder.is_dir():
            raise fail(f"--ledger {folder}: no release ledger there (does not exist)")
        return Ledger(folder)
    try:
        return StoreLedger(existing_store(db) if read_only else db)
    except StoreError as e:
        raise fail(e) from None


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r}: expected e.g. 90s, 30m, 24h, 7d")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


@app.command("retrain")
def retrain_cmd(
    data: CanonicalTable = None,
    db: HubDb = None,
    no_fleet: Annotated[bool, typer.Option("--no-fleet", help="Base dataset only.")] = False,
    eval_set: Annotated[
        Path | None, typer.Option("--eval-set", help="Frozen evaluation set (made on first use).")
    ] = None,
    arch: Annotated[str, typer.Option(help="Architecture of the candidate.")] = "gru",
    units: Units = 32,
    epochs: Epochs = 12,
    patience: Patience = 3,
    batch_size: BatchSize = 1024,
    window: Window = 12,
    seed: Seed = 2019,
    limit_stays: LimitStays = None,
    max_auroc_drop: Annotated[
        float, typer.Option(help="Gate: tolerated drop of eval AUROC.")
    ] = 0.0,
    max_utility_drop: Annotated[
        float, typer.Option(help="Gate: tolerated drop of eval utility.")
    ] = 0.0,
    tracking_uri: TrackingUri = None,
    model_name: ModelName = "vigil-sepsis",
    bundles: Annotated[
        Path | None, typer.Option("--bundles", help="Where signed bundles go.")
    ] = None,
    key: SigningKey = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Run again after this long (e.g. 24h); runs until stopped."),
    ] = None,
    min_new_labels: Annotated[
        int,
        typer.Option(
            "--min-new-labels", help="Retrain only when this many new labelled fleet hours came."
        ),
    ] = 0,
    once: Annotated[
        bool, typer.Option("--check-once", help="With --every: one check, then exit.")
    ] = False,
) -> None:
    """Train a candidate on base + fleet data; promote, convert and sign it if not worse.

    Example: vigil hub retrain --every 24h --min-new-labels 500 --bundles models/releases
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cloud_hub.keys import SigningKeyError, open_provider
    from cloud_hub.retrain import Gate, RetrainConfig, RetrainError, labels_since_last, retrain
    from cloud_hub.training.dataset import DatasetError
    from cloud_hub.training.train import default_data_path

    try:
        provider = open_provider(key)
        provider.public_key()
    except SigningKeyError as e:
        raise fail(e) from None
    cfg = RetrainConfig(
        base_data=data or default_data_path(),
        fleet_db=None if no_fleet else db or _default_db(),
        arch=arch,
        units=units,
        epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        steps=window,
        seed=seed,
        limit_stays=limit_stays,
        tracking_uri=tracking_uri,
        registered_model=model_name,
        experiment=model_name,
        gate=Gate(max_auroc_drop, max_utility_drop),
        **({"eval_set": eval_set} if eval_set else {}),
        **({"bundle_root": bundles} if bundles else {}),
    )
    period = _duration(every) if every else None
    while True:
        now, before = labels_since_last(cfg) if min_new_labels else (0, 0)
        if min_new_labels and now - before < min_new_labels:
            typer.echo(
                f"{now - before} new labelled fleet hours (< {min_new_labels}): not retraining"
            )
        else:
            try:
                result = retrain(cfg, provider, echo=typer.echo)
            except (RetrainError, DatasetError, ValueError) as e:
                raise fail(e) from None
            for line in result.lines():
                typer.echo(line)
        if period is None or once:
            return
        time.sleep(period)


@app.command("rollout")
def rollout_cmd(
    model: Annotated[
        str | None, typer.Argument(help="NAME@VERSION (or NAME@champion) from the registry.")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="canary or stable: publish on this channel only."),
    ] = None,
    staged: Annotated[
        bool,
        typer.Option("--staged", help="canary first, wait for the canary gateways, then stable."),
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="A bundle folder instead of the registry.")
    ] = None,
    stage_timeout: Annotated[
        float, typer.Option(help="Seconds the canary stage may take.")
    ] = 120.0,
    min_canary: Annotated[
        int, typer.Option(help="Fewest canary gateways for a staged rollout.")
    ] = 1,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="Publish as a shadow candidate: the channel's gateways run it silently "
            "beside their active model and report what it would have done.",
        ),
    ] = False,
    gate: Annotated[
        str | None,
        typer.Option(
            "--gate",
            help="shadow: publish only if the candidate's shadow alarm burden at the "
            "channel's gateways is within --alarm-budget (hub store --db).",
        ),
    ] = None,
    alarm_budget: Annotated[
        float | None,
        typer.Option("--alarm-budget", help="With --gate shadow: alarm-hours per patient-day."),
    ] = None,
    min_patient_days: Annotated[
        float,
        typer.Option("--min-patient-days", help="With --gate shadow: fewest patient-days seen."),
    ] = 1.0,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tracking_uri: TrackingUri = None,
    key: SigningKey = None,
    ledger: Ledger = None,
    db: HubDb = None,
) -> None:
    """Publish a signed model on a channel (retained), or stage it canary -> stable.

    --shadow publishes it as a silent candidate beside the channel's active model;
    --gate shadow promotes it only if its shadow alarm burden there meets the budget.

    Example: vigil hub rollout --bundle cand/ --channel stable --gate shadow --alarm-budget 1.0
    """
    from cloud_hub.keys import SigningKeyError, open_provider
    from cloud_hub.retrain import RetrainError, bundle_of_version
    from cloud_hub.rollout.release import (
        RolloutError,
        connect,
        make_release,
        next_seq,
        publish_release,
        read_bundle_folder,
    )
    from cloud_hub.rollout.watch import staged_rollout

    if (channel is None) == (not staged):
        raise fail("give either --channel canary|stable or --staged")
    if (model is None) == (bundle is None):
        raise fail("give either MODEL@VERSION or --bundle PATH")
    if gate is not None and gate != "shadow":
        raise fail(f"--gate {gate!r}: the only gate is 'shadow'")
    if gate and (staged or shadow):
        raise fail("--gate shadow promotes on one --channel: not with --staged or --shadow")
    if gate and alarm_budget is None:
        raise fail("--gate shadow needs --alarm-budget (alarm-hours per patient-day)")
    if alarm_budget is not None and not gate:
        raise fail("--alarm-budget belongs to --gate shadow")
    if alarm_budget is not None and not alarm_budget > 0:
        raise fail(f"--alarm-budget {alarm_budget:g}: must be above 0")
    if min_patient_days < 0:
        raise fail(f"--min-patient-days {min_patient_days:g}: must be 0 or more")
    if shadow and staged:
        raise fail("--shadow publishes on one --channel: not with --staged")
    try:
        provider = open_provider(key)
        if bundle is None:
            name, _, version = model.partition("@")
            if not name or not version:
                raise fail(f"{model!r}: expected NAME@VERSION, e.g. vigil-sepsis@3")
            bundle = bundle_of_version(name, version, tracking_uri, Path(tempfile.mkdtemp()))
        manifest, blob = read_bundle_folder(bundle)
        led = _ledger(ledger, db)
        if gate:
            _shadow_gate(channel, manifest, db, alarm_budget, min_patient_days)
        client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
    except (SigningKeyError, RetrainError, RolloutError) as e:
        raise fail(e) from None
    try:
        if shadow:
            from cloud_hub.rollout.release import publish_shadow

            rel = make_release(
                manifest, blob, channel, provider, seq=next_seq(led.last_seq()), shadow=True
            )
            publish_shadow(client, rel)
            typer.echo(
                f"published {manifest.get('name')} {manifest.get('version')} as a shadow "
                f"candidate on {channel} (release {rel.manifest['release']['seq']})"
            )
        elif staged:
            report = staged_rollout(
                client,
                manifest,
                blob,
                provider,
                led,
                stage_timeout=stage_timeout,
                min_gateways=min_canary,
                echo=typer.echo,
            )
            for line in report.lines()[-1:]:
                typer.echo(line)
            if report.halted:
                raise typer.Exit(1)
        else:
            rel = make_release(manifest, blob, channel, provider, seq=next_seq(led.last_seq()))
            e = publish_release(client, rel, led)
            typer.echo(
                f"published {e.name} {e.version} on {e.channel} (release {e.seq}, key {e.key_id})"
            )
    except RolloutError as e:
        raise fail(e) from None
    finally:
        client.disconnect()
        client.loop_stop()


@app.command("rollback")
def rollback_cmd(
    channel: Channel = "stable",
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    key: SigningKey = None,
    ledger: Ledger = None,
    db: HubDb = None,
) -> None:
    """Republish, as a new rollback release, the model the channel had before.

    Example: vigil hub rollback --channel stable
    """
    from cloud_hub.keys import SigningKeyError, open_provider
    from cloud_hub.rollout.release import RolloutError, connect, rollback

    led = _ledger(ledger, db)
    try:
        provider = open_provider(key)
        client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
        try:
            e = rollback(client, channel, provider, led)
        finally:
            client.disconnect()
            client.loop_stop()
    except (SigningKeyError, RolloutError) as err:
        raise fail(err) from None
    typer.echo(f"rolled {channel} back to {e.name} {e.version} (release {e.seq})")


@app.command("assign")
def assign_cmd(
    gw: Annotated[str, typer.Argument(help="Gateway id.")],
    channel: Channel,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Send a gateway a join_channel command.

    Example: vigil hub assign gw-icu-3 --channel canary
    """
    from cloud_hub.rollout.release import RolloutError, assign, connect

    try:
        client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
        try:
            assign(client, gw, channel)
        finally:
            client.disconnect()
            client.loop_stop()
    except (RolloutError, ValueError) as e:
        raise fail(e) from None
    typer.echo(f"{gw}: join_channel {channel} sent")


@app.command("targets")
def targets_cmd(
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    ledger: Ledger = None,
    db: HubDb = None,
    as_json: AsJson = False,
) -> None:
    """Each gateway's channel, target version (published there) and active version.

    Example: vigil hub targets --json
    """
    from dataclasses import asdict

    from cloud_hub.rollout.release import RolloutError, connect
    from cloud_hub.rollout.targets import fleet_targets, render_targets
    from cloud_hub.rollout.watch import FleetWatch

    try:
        client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
    except RolloutError as e:
        raise fail(e) from None
    try:
        watch = FleetWatch(client)
        watch.settle(1.0)
        rows = fleet_targets(watch, _ledger(ledger, db, read_only=True))
    finally:
        client.disconnect()
        client.loop_stop()
    if as_json:
        typer.echo(json.dumps([asdict(r) | {"in_step": r.in_step} for r in rows], indent=2))
    else:
        typer.echo(render_targets(rows))


@app.command("releases")
def releases_cmd(
    channel: Annotated[
        str | None, typer.Option("--channel", help="One channel (default all).")
    ] = None,
    ledger: Ledger = None,
    db: HubDb = None,
    as_json: AsJson = False,
) -> None:
    """The release ledger: what was published on each channel, when, signed by which key.

    Example: vigil hub releases --channel stable
    """
    from cloud_hub.rollout.ledger import render_releases
    from cloud_hub.rollout.release import RolloutError

    try:
        rows = render_releases(_ledger(ledger, db, read_only=True), channel)
    except RolloutError as e:
        raise fail(e) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    head = ("CHANNEL", "SEQ", "ISSUED", "MODEL", "KEY", "ROLLBACK", "")
    body = [
        (
            r["channel"],
            str(r["seq"]),
            r["issued_at"] or "-",
            r["model"],
            r["key_id"],
            "yes" if r["rollback"] else "",
            "current" if r["current"] else "",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    for row in (head, *body):
        typer.echo("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(f"{len(rows)} release(s)")


def _shadow_gate(
    channel: str,
    manifest: dict,
    db: str | None,
    budget: float,
    min_patient_days: float,
) -> None:
    """Print the candidate's shadow figures; exit 1 with the reasons when refused."""
    from cloud_hub.rollout.gate import shadow_gate
    from cloud_hub.store import StoreError, open_engine

    name, version = manifest.get("name"), manifest.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise fail("the bundle's manifest has no name/version to look up shadow evidence for")
    try:
        engine = open_engine(existing_store(db))
        decision = shadow_gate(
            engine, channel, name, version, budget=budget, min_patient_days=min_patient_days
        )
    except StoreError as e:
        raise fail(e) from None
    except Exception as e:  # e.g. a store without the shadow_summaries table (not migrated)
        raise fail(f"cannot read shadow summaries from the hub store: {e}") from None
    for line in decision.lines():
        typer.echo(line)
    if not decision.passed:
        raise typer.Exit(1)


def _default_db() -> str:
    from cloud_hub.store import default_url

    return default_url()


def _broker(
    host: str | None,
    port: int | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> BrokerSettings:
    from pydantic import ValidationError

    from contracts.broker import BrokerSettings, TlsFiles
    from contracts.errors import describe

    tls = TlsFiles(ca=tls_ca, cert=tls_cert, key=tls_key) if tls_ca or tls_cert else None
    try:
        return BrokerSettings(host, port, tls=tls)
    except ValidationError as e:  # e.g. a port out of range
        raise fail(f"invalid broker setting:\n{describe(e)}") from None
