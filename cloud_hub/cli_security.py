"""`vigil hub ca ...`, `vigil hub enroll`, `vigil hub revoke`: the fleet's identities.

See `cloud_hub/ca.py` for what each certificate is for and `deploy/README.md` for
how an operator uses them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cloud_hub.ca import (
    DEFAULT_CA_DAYS,
    DEFAULT_CERT_DAYS,
    DEFAULT_CRL_DAYS,
    CertificateAuthority,
    PkiError,
)

PKI_OPTION = typer.Option(None, "--pki", help="CA folder (default: <work_dir>/pki).")


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    ca_app = typer.Typer(no_args_is_help=True, help="The fleet's certificate authority.")
    app.add_typer(ca_app, name="ca")

    @ca_app.command("init")
    def ca_init(
        pki: Path | None = PKI_OPTION,
        name: str = typer.Option("Vigil fleet CA", help="The CA's common name."),
        days: int = typer.Option(DEFAULT_CA_DAYS, help="CA validity in days."),
    ) -> None:
        """Create the CA (key, certificate, empty CRL)."""
        ca = CertificateAuthority(pki)
        try:
            path = ca.init(common_name=name, days=days)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        typer.echo(f"CA certificate: {path}\nCA key (keep offline, mode 0600): {ca.ca_key_path}")

    @ca_app.command("server")
    def ca_server(
        pki: Path | None = PKI_OPTION,
        dns: list[str] = typer.Option(["localhost"], "--dns", help="DNS name (repeatable)."),
        ip: list[str] = typer.Option(["127.0.0.1"], "--ip", help="IP address (repeatable)."),
        days: int = typer.Option(DEFAULT_CERT_DAYS, help="Validity in days."),
    ) -> None:
        """Issue the broker's server certificate (SANs = names the gateways dial)."""
        ca = CertificateAuthority(pki)
        try:
            rec = ca.issue_server(dns=dns, ips=ip, days=days)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        typer.echo(f"broker files in {ca.root / rec.folder} (serial {rec.serial})")

    @ca_app.command("hub")
    def ca_hub(
        pki: Path | None = PKI_OPTION,
        days: int = typer.Option(DEFAULT_CERT_DAYS, help="Validity in days."),
    ) -> None:
        """Issue the hub's client certificate (CN = hub)."""
        ca = CertificateAuthority(pki)
        try:
            rec = ca.issue_hub(days=days)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        typer.echo(f"hub files in {ca.root / rec.folder} (serial {rec.serial})")

    @ca_app.command("crl")
    def ca_crl(
        pki: Path | None = PKI_OPTION,
        days: int = typer.Option(DEFAULT_CRL_DAYS, help="Days until the CRL must be re-signed."),
    ) -> None:
        """Re-sign the revocation list (before its next update, or the broker refuses all)."""
        ca = CertificateAuthority(pki)
        try:
            path = ca.write_crl(days=days)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        typer.echo(f"CRL: {path} (copy it to the broker, then: systemctl reload mosquitto)")

    @ca_app.command("list")
    def ca_list(pki: Path | None = PKI_OPTION) -> None:
        """Show every certificate issued, with its state."""
        ca = CertificateAuthority(pki)
        try:
            rows = ca.index()
        except PkiError as e:
            raise _fail(e) from None
        for r in rows:
            state = f"revoked {r.revoked_at}" if r.revoked_at else f"valid until {r.not_after}"
            typer.echo(f"{r.kind:8} {r.name:24} {r.serial:>40}  {state}")

    @app.command("enroll")
    def enroll(
        gateway_id: str = typer.Argument(..., help="The gateway's id (its MQTT identity)."),
        pki: Path | None = PKI_OPTION,
        days: int = typer.Option(DEFAULT_CERT_DAYS, help="Validity in days."),
        renew: bool = typer.Option(False, help="Issue a new certificate beside a valid one."),
    ) -> None:
        """Issue a gateway's client certificate and key (copy the folder to the gateway)."""
        ca = CertificateAuthority(pki)
        try:
            rec = ca.enroll_gateway(gateway_id, days=days, renew=renew)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        folder = ca.root / rec.folder
        typer.echo(
            f"gateway {gateway_id}: {folder}/{{ca.crt,client.crt,client.key}} "
            f"valid until {rec.not_after} (serial {rec.serial})"
        )

    @app.command("revoke")
    def revoke(
        gateway_id: str = typer.Argument(..., help="The gateway to lock out."),
        pki: Path | None = PKI_OPTION,
        reason: str = typer.Option("", help="Why (kept in the CA index)."),
        serial: str | None = typer.Option(
            None, help="Revoke only this certificate (hex serial, see `vigil hub ca list`)."
        ),
    ) -> None:
        """Revoke a gateway's certificates and re-sign the CRL the broker reads."""
        ca = CertificateAuthority(pki)
        try:
            hit = ca.revoke(gateway_id, reason=reason, serial=serial)
        except (PkiError, ValueError) as e:
            raise _fail(e) from None
        serials = ", ".join(r.serial for r in hit)
        typer.echo(
            f"revoked {gateway_id} (serial {serials}); CRL {ca.crl_path}. Copy it to the "
            "broker's crlfile and restart the broker (a reload refuses new connections; "
            "a restart also drops the open session)."
        )
