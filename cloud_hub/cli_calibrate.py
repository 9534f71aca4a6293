"""`vigil hub calibrate`: a site's threshold from its own unlabelled history (issue 13).

What it does is in `cloud_hub/calibrate.py`; this module parses the options, opens the
store, the ledger, the signing key and the broker, and prints the outcome. Heavy
imports (SQLAlchemy, LiteRT, MLflow, paho) happen inside the command.
`cloud_hub.cli` adds it to `vigil hub`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloud_hub.cli_options import (
    BrokerHost,
    BrokerPort,
    HubDb,
    SigningKey,
    TlsCa,
    TlsCert,
    TlsKey,
    TrackingUri,
    existing_store,
)
from contracts.cli import fail

if TYPE_CHECKING:
    from cloud_hub.rollout.ledger import LedgerEntry
    from contracts.messages import ModelRelease

app = typer.Typer()


@app.command("calibrate")
def calibrate_cmd(
    site: Annotated[str, typer.Option("--site", help="The site: the channel its gateways follow.")],
    alarm_budget: Annotated[
        float,
        typer.Option("--alarm-budget", help="Alarm-hours per patient-day the site accepts."),
    ],
    db: HubDb = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="The model to calibrate (default: the channel's current release)."
        ),
    ] = None,
    channel: Annotated[
        str | None, typer.Option("--channel", help="Publish on this channel (default: --site).")
    ] = None,
    key: SigningKey = None,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Set a site's threshold so its alarm burden meets its budget; publish it signed.

    Reads the site's vital-sign history from the hub store (no labels: all stays count),
    replays it through the gateway's alarm machine per threshold, logs the evidence to
    MLflow and publishes the re-signed bundle on the site's channel.

    Example: vigil hub calibrate --site icu-north --alarm-budget 1.0
    """
    from cloud_hub.calibrate import CalibrationError, calibrate
    from cloud_hub.cli_rollout import _broker
    from cloud_hub.keys import SigningKeyError, open_provider
    from cloud_hub.rollout.ledger import StoreLedger
    from cloud_hub.rollout.release import RolloutError, connect, publish_release
    from cloud_hub.store import StoreError, open_engine

    if not alarm_budget > 0:
        raise fail(f"--alarm-budget must be > 0 alarm-hours per patient-day, got {alarm_budget:g}")
    try:
        engine = open_engine(existing_store(db))
        ledger = StoreLedger(engine)
        provider = open_provider(key)
        provider.public_key()
    except (StoreError, SigningKeyError) as e:
        raise fail(e) from None
    client = None

    def publish(release: ModelRelease) -> LedgerEntry:
        nonlocal client
        client = connect(_broker(host, port, tls_ca, tls_cert, tls_key))
        return publish_release(client, release, ledger)

    try:
        result = calibrate(
            engine,
            site,
            alarm_budget,
            provider,
            ledger,
            channel=channel,
            bundle=bundle,
            tracking_uri=tracking_uri,
            publish=publish,
            echo=typer.echo,
        )
    except (CalibrationError, RolloutError) as e:
        raise fail(e) from None
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
    for line in result.lines():
        typer.echo(line)
