"""`vigil hub retrain | rollout | rollback | assign | targets | releases`: to the fleet.

Heavy imports (TensorFlow, MLflow, pandas, paho) happen inside the commands.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import typer

KEY_OPTION = typer.Option(
    None,
    "--key",
    envvar="VIGIL_SIGNING_KEY",
    help="Signing key: a PEM path, file:PATH or azurekv://VAULT/SECRET "
    "(default <work_dir>/keys/signing.key).",
)
TRACKING_OPTION = typer.Option(None, "--tracking-uri", help="MLflow tracking URI.")
LEDGER_OPTION = typer.Option(
    None,
    "--ledger",
    help="A release ledger folder instead of the hub store's (the default: --db).",
)
DB_OPTION = typer.Option(
    None,
    "--db",
    envvar="VIGIL_HUB_DB_URL",
    help="Hub store holding the release ledger (default sqlite:///<work_dir>/hub.db).",
)


def _ledger(folder: Path | None, db: str | None):  # noqa: ANN202 - Ledger | StoreLedger
    """The folder ledger when --ledger is given, else the hub store's (shared by replicas)."""
    from cloud_hub.rollout.ledger import Ledger, StoreLedger
    from cloud_hub.store import StoreError

    if folder is not None:
        return Ledger(folder)
    try:
        return StoreLedger(db)
    except StoreError as e:
        raise _fail(e) from None


def _fail(msg: object) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r}: expected e.g. 90s, 30m, 24h, 7d")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def register(app: typer.Typer) -> None:
    @app.command("retrain")
    def retrain_cmd(
        data: Path = typer.Option(
            None,
            "--data",
            help="Base canonical table (default <work_dir>/canonical/physionet2019.parquet).",
        ),
        db: str | None = typer.Option(
            None,
            "--db",
            envvar="VIGIL_HUB_DB_URL",
            help="Hub store with the fleet's labelled data.",
        ),
        no_fleet: bool = typer.Option(False, "--no-fleet", help="Base dataset only."),
        eval_set: Path | None = typer.Option(
            None, "--eval-set", help="Frozen evaluation set (made on first use)."
        ),
        arch: str = typer.Option("gru", help="Architecture of the candidate."),
        units: int = typer.Option(32),
        epochs: int = typer.Option(12),
        patience: int = typer.Option(3),
        batch_size: int = typer.Option(1024, "--batch-size"),
        window: int = typer.Option(12, "--window"),
        seed: int = typer.Option(2019),
        limit_stays: int | None = typer.Option(None, "--limit-stays"),
        max_auroc_drop: float = typer.Option(0.0, help="Gate: tolerated drop of eval AUROC."),
        max_utility_drop: float = typer.Option(0.0, help="Gate: tolerated drop of eval utility."),
        tracking_uri: str | None = TRACKING_OPTION,
        model_name: str = typer.Option("vigil-sepsis", "--model-name"),
        bundles: Path | None = typer.Option(None, "--bundles", help="Where signed bundles go."),
        key: str | None = KEY_OPTION,
        every: str | None = typer.Option(
            None, "--every", help="Run again after this long (e.g. 24h); runs until stopped."
        ),
        min_new_labels: int = typer.Option(
            0, "--min-new-labels", help="Retrain only when this many new labelled fleet hours came."
        ),
        once: bool = typer.Option(
            False, "--check-once", help="With --every: one check, then exit."
        ),
    ) -> None:
        """Train a candidate on base + fleet data; promote, convert and sign it if not worse."""
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
            raise _fail(e) from None
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
                    raise _fail(e) from None
                for line in result.lines():
                    typer.echo(line)
            if period is None or once:
                return
            time.sleep(period)

    @app.command("rollout")
    def rollout_cmd(
        model: str = typer.Argument(
            None, help="NAME@VERSION (or NAME@champion) from the registry."
        ),
        channel: str = typer.Option(
            None, "--channel", help="canary or stable: publish on this channel only."
        ),
        staged: bool = typer.Option(
            False, "--staged", help="canary first, wait for the canary gateways, then stable."
        ),
        bundle: Path | None = typer.Option(
            None, "--bundle", help="A bundle folder instead of the registry."
        ),
        stage_timeout: float = typer.Option(120.0, help="Seconds the canary stage may take."),
        min_canary: int = typer.Option(1, help="Fewest canary gateways for a staged rollout."),
        host: str = typer.Option("127.0.0.1", help="MQTT broker host."),
        port: int = typer.Option(1883, help="MQTT broker port."),
        tls_ca: Path | None = typer.Option(None),
        tls_cert: Path | None = typer.Option(None),
        tls_key: Path | None = typer.Option(None),
        tracking_uri: str | None = TRACKING_OPTION,
        key: str | None = KEY_OPTION,
        ledger: Path | None = LEDGER_OPTION,
        db: str | None = DB_OPTION,
    ) -> None:
        """Publish a signed model on a channel (retained), or stage it canary -> stable."""
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
            raise _fail("give either --channel canary|stable or --staged")
        if (model is None) == (bundle is None):
            raise _fail("give either MODEL@VERSION or --bundle PATH")
        try:
            provider = open_provider(key)
            if bundle is None:
                name, _, version = model.partition("@")
                if not name or not version:
                    raise _fail(f"{model!r}: expected NAME@VERSION, e.g. vigil-sepsis@3")
                bundle = bundle_of_version(name, version, tracking_uri, Path(tempfile.mkdtemp()))
            manifest, blob = read_bundle_folder(bundle)
            led = _ledger(ledger, db)
            client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
        except (SigningKeyError, RetrainError, RolloutError) as e:
            raise _fail(e) from None
        try:
            if staged:
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
                    f"published {e.name} {e.version} on {e.channel} "
                    f"(release {e.seq}, key {e.key_id})"
                )
        except RolloutError as e:
            raise _fail(e) from None
        finally:
            client.disconnect()
            client.loop_stop()

    @app.command("rollback")
    def rollback_cmd(
        channel: str = typer.Option("stable", "--channel"),
        host: str = typer.Option("127.0.0.1"),
        port: int = typer.Option(1883),
        tls_ca: Path | None = typer.Option(None),
        tls_cert: Path | None = typer.Option(None),
        tls_key: Path | None = typer.Option(None),
        key: str | None = KEY_OPTION,
        ledger: Path | None = LEDGER_OPTION,
        db: str | None = DB_OPTION,
    ) -> None:
        """Republish, as a new rollback release, the model the channel had before."""
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
            raise _fail(err) from None
        typer.echo(f"rolled {channel} back to {e.name} {e.version} (release {e.seq})")

    @app.command("assign")
    def assign_cmd(
        gw: str = typer.Argument(..., help="Gateway id."),
        channel: str = typer.Option(..., "--channel", help="canary or stable."),
        host: str = typer.Option("127.0.0.1"),
        port: int = typer.Option(1883),
        tls_ca: Path | None = typer.Option(None),
        tls_cert: Path | None = typer.Option(None),
        tls_key: Path | None = typer.Option(None),
    ) -> None:
        """Send a gateway a join_channel command."""
        from cloud_hub.rollout.release import RolloutError, assign, connect

        try:
            client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
            try:
                assign(client, gw, channel)
            finally:
                client.disconnect()
                client.loop_stop()
        except (RolloutError, ValueError) as e:
            raise _fail(e) from None
        typer.echo(f"{gw}: join_channel {channel} sent")

    @app.command("targets")
    def targets_cmd(
        host: str = typer.Option("127.0.0.1"),
        port: int = typer.Option(1883),
        tls_ca: Path | None = typer.Option(None),
        tls_cert: Path | None = typer.Option(None),
        tls_key: Path | None = typer.Option(None),
        ledger: Path | None = LEDGER_OPTION,
        db: str | None = DB_OPTION,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Each gateway's channel, target version (published there) and active version."""
        from dataclasses import asdict

        from cloud_hub.rollout.release import RolloutError, connect
        from cloud_hub.rollout.targets import fleet_targets, render_targets
        from cloud_hub.rollout.watch import FleetWatch

        try:
            client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
        except RolloutError as e:
            raise _fail(e) from None
        try:
            watch = FleetWatch(client)
            watch.settle(1.0)
            rows = fleet_targets(watch, _ledger(ledger, db))
        finally:
            client.disconnect()
            client.loop_stop()
        if as_json:
            typer.echo(json.dumps([asdict(r) | {"in_step": r.in_step} for r in rows], indent=2))
        else:
            typer.echo(render_targets(rows))

    @app.command("releases")
    def releases_cmd(
        channel: str | None = typer.Option(None, "--channel", help="One channel (default all)."),
        ledger: Path | None = LEDGER_OPTION,
        db: str | None = DB_OPTION,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The release ledger: what was published on each channel, when, signed by which key."""
        from cloud_hub.rollout.ledger import render_releases
        from cloud_hub.rollout.release import RolloutError

        try:
            rows = render_releases(_ledger(ledger, db), channel)
        except RolloutError as e:
            raise _fail(e) from None
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


def _default_db() -> str:
    from cloud_hub.store import default_url

    return default_url()


def _broker(host, port, tls_ca, tls_cert, tls_key):
    from pydantic import ValidationError

    from contracts.broker import BrokerSettings, TlsFiles
    from contracts.errors import describe

    tls = TlsFiles(ca=tls_ca, cert=tls_cert, key=tls_key) if tls_ca or tls_cert else None
    try:
        return BrokerSettings(host, port, tls=tls)
    except ValidationError as e:  # e.g. a port out of range
        raise _fail(f"invalid broker setting:\n{describe(e)}") from None
