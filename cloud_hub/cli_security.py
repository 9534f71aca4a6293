"""`vigil hub ca ...`, `vigil hub enroll`, `vigil hub revoke`: the fleet's identities.

See `cloud_hub/ca.py` for what each certificate is for and `deploy/README.md` for
how an operator uses them. `cloud_hub.cli` adds these commands to `vigil hub`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud_hub.ca import (
    DEFAULT_CA_DAYS,
    DEFAULT_CERT_DAYS,
    DEFAULT_CRL_DAYS,
    CertificateAuthority,
    PkiError,
)
from contracts.cli import fail

app = typer.Typer()
ca_app = typer.Typer(no_args_is_help=True, help="The fleet's certificate authority.")
app.add_typer(ca_app, name="ca")

Pki = Annotated[
    Path | None,
    typer.Option("--pki", help="CA folder (default: <work_dir>/pki).", file_okay=False),
]
CertDays = Annotated[int, typer.Option("--days", help="Validity in days.")]


@ca_app.command("init")
def ca_init(
    pki: Pki = None,
    name: Annotated[str, typer.Option(help="The CA's common name.")] = "Vigil fleet CA",
    days: Annotated[int, typer.Option(help="CA validity in days.")] = DEFAULT_CA_DAYS,
) -> None:
    """Create the CA (key, certificate, empty CRL).

    Example: vigil hub ca init --pki /etc/vigil/pki
    """
    ca = CertificateAuthority(pki)
    try:
        path = ca.init(common_name=name, days=days)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    typer.echo(f"CA certificate: {path}\nCA key (keep offline, mode 0600): {ca.ca_key_path}")


@ca_app.command("server")
def ca_server(
    pki: Pki = None,
    dns: Annotated[list[str], typer.Option("--dns", help="DNS name (repeatable).")] = (
        "localhost",
    ),
    ip: Annotated[list[str], typer.Option("--ip", help="IP address (repeatable).")] = (
        "127.0.0.1",
    ),
    days: CertDays = DEFAULT_CERT_DAYS,
) -> None:
    """Issue the broker's server certificate (SANs = names the gateways dial).

    Example: vigil hub ca server --dns broker.ward.example --ip 10.0.0.5
    """
    ca = CertificateAuthority(pki)
    try:
        rec = ca.issue_server(dns=dns, ips=ip, days=days)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    typer.echo(f"broker files in {ca.root / rec.folder} (serial {rec.serial})")


@ca_app.command("hub")
def ca_hub(pki: Pki = None, days: CertDays = DEFAULT_CERT_DAYS) -> None:
    """Issue the hub's client certificate (CN = hub).

    Example: vigil hub ca hub --days 365
    """
    ca = CertificateAuthority(pki)
    try:
        rec = ca.issue_hub(days=days)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    typer.echo(f"hub files in {ca.root / rec.folder} (serial {rec.serial})")


@ca_app.command("crl")
def ca_crl(
    pki: Pki = None,
    days: Annotated[
        int, typer.Option(help="Days until the CRL must be re-signed.")
    ] = DEFAULT_CRL_DAYS,
) -> None:
    """Re-sign the revocation list (before its next update, or the broker refuses all).

    Example: vigil hub ca crl --days 30
    """
    ca = CertificateAuthority(pki)
    try:
        path = ca.write_crl(days=days)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    typer.echo(f"CRL: {path} (copy it to the broker, then: systemctl reload mosquitto)")


@ca_app.command("list")
def ca_list(pki: Pki = None) -> None:
    """Show every certificate issued, with its state.

    Example: vigil hub ca list
    """
    ca = CertificateAuthority(pki)
    if not (ca.ca_cert_path.exists() or ca.index_path.exists()):
        raise fail(f"no CA in {ca.root}: check --pki, or run `vigil hub ca init` first")
    try:
        rows = ca.index()
    except PkiError as e:
        raise fail(e) from None
    for r in rows:
        state = f"revoked {r.revoked_at}" if r.revoked_at else f"valid until {r.not_after}"
        typer.echo(f"{r.kind:8} {r.name:24} {r.serial:>40}  {state}")


@app.command("enroll")
def enroll(
    gateway_id: Annotated[str, typer.Argument(help="The gateway's id (its MQTT identity).")],
    pki: Pki = None,
    days: CertDays = DEFAULT_CERT_DAYS,
    renew: Annotated[
        bool, typer.Option(help="Issue a new certificate beside a valid one.")
    ] = False,
) -> None:
    """Issue a gateway's client certificate and key (copy the folder to the gateway).

    Example: vigil hub enroll gw-icu-3
    """
    ca = CertificateAuthority(pki)
    try:
        rec = ca.enroll_gateway(gateway_id, days=days, renew=renew)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    folder = ca.root / rec.folder
    typer.echo(
        f"gateway {gateway_id}: {folder}/{{ca.crt,client.crt,client.key}} "
        f"valid until {rec.not_after} (serial {rec.serial})"
    )


@app.command("revoke")
def revoke(
    gateway_id: Annotated[str, typer.Argument(help="The gateway to lock out.")],
    pki: Pki = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the CA index).")] = "",
    serial: Annotated[
        str | None,
        typer.Option(help="Revoke only this certificate (hex serial, see `vigil hub ca list`)."),
    ] = None,
) -> None:
    """Revoke a gateway's certificates and re-sign the CRL the broker reads.

    Example: vigil hub revoke gw-icu-3 --reason "gateway stolen"
    """
    ca = CertificateAuthority(pki)
    try:
        hit = ca.revoke(gateway_id, reason=reason, serial=serial)
    except (PkiError, ValueError) as e:
        raise fail(e) from None
    serials = ", ".join(r.serial for r in hit)
    typer.echo(
        f"revoked {gateway_id} (serial {serials}); CRL {ca.crl_path}. Copy it to the "
        "broker's crlfile and restart the broker (a reload refuses new connections; "
        "a restart also drops the open session)."
    )
