"""The fleet CA (`cloud_hub.ca`, `vigil hub enroll/revoke`): identities, key files, CRL."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from cloud_hub.ca import CertificateAuthority, PkiError
from cloud_hub.cli import app as hub_app


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path / "pki")
    ca.init()
    return ca


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_gateway_certificate_names_the_gateway_and_is_for_clients_only(ca):
    rec = ca.enroll_gateway("icu-3-bed-12", days=90)
    folder = ca.gateway_dir("icu-3-bed-12")
    cert = _cert(folder / "client.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "icu-3-bed-12"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    life = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89) < life <= timedelta(days=90)
    # signed by our CA
    cert.verify_directly_issued_by(_cert(ca.ca_cert_path))
    assert rec.serial == f"{cert.serial_number:x}"
    assert (folder / "ca.crt").read_bytes() == ca.ca_cert_path.read_bytes()


def test_private_keys_are_readable_by_their_owner_only(ca):
    ca.enroll_gateway("gw-1")
    ca.issue_hub()
    ca.issue_server()
    keys = [ca.ca_key_path, ca.gateway_dir("gw-1") / "client.key"]
    keys += [ca.hub_dir / "client.key", ca.broker_dir / "server.key"]
    for key in keys:
        assert _mode(key) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    assert _mode(ca.ca_key_path.parent) == 0o700
    assert _mode(ca.gateway_dir("gw-1") / "client.crt") == 0o644


def test_broker_certificate_carries_the_addresses_gateways_dial(ca):
    ca.issue_server(dns=["localhost", "mqtt.icu.example"], ips=["127.0.0.1", "::1"])
    cert = _cert(ca.broker_dir / "server.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "mqtt.icu.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(PkiError, match="not an IP address"):
        ca.issue_server(ips=["mqtt.icu.example"])


def test_hub_identity_is_hub(ca):
    ca.issue_hub()
    cert = _cert(ca.hub_dir / "client.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hub"


@pytest.mark.parametrize("bad", ["", "a/b", "gw+", "gw#", "x" * 65, "bed 1"])
def test_enroll_refuses_ids_that_are_not_topic_safe(ca, bad):
    with pytest.raises(ValueError, match="gateway id"):
        ca.enroll_gateway(bad)


@pytest.mark.parametrize("reserved", ["hub", "HUB", "admin"])
def test_enroll_refuses_service_identities(ca, reserved):
    with pytest.raises(PkiError, match="reserved"):
        ca.enroll_gateway(reserved)


def test_enroll_twice_needs_renew_and_keeps_both_until_revoked(ca):
    first = ca.enroll_gateway("gw-1")
    with pytest.raises(PkiError, match="--renew"):
        ca.enroll_gateway("gw-1")
    second = ca.enroll_gateway("gw-1", renew=True)
    assert first.serial != second.serial
    assert {r.serial for r in ca.active("gw-1")} == {first.serial, second.serial}


def test_revoke_lists_every_certificate_of_the_gateway_in_a_signed_crl(ca):
    a = ca.enroll_gateway("gw-1")
    b = ca.enroll_gateway("gw-1", renew=True)
    keep = ca.enroll_gateway("gw-2")
    ca.revoke("gw-1", reason="stolen")
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    ca_cert = _cert(ca.ca_cert_path)
    assert crl.is_signature_valid(ca_cert.public_key())
    revoked = {f"{r.serial_number:x}" for r in crl}
    assert revoked == {a.serial, b.serial}
    assert keep.serial not in revoked
    assert crl.next_update_utc > datetime.now(UTC) + timedelta(days=29)
    assert ca.active("gw-1") == [] and len(ca.active("gw-2")) == 1
    with pytest.raises(PkiError, match="no unrevoked"):
        ca.revoke("gw-1")


def test_renewal_then_revoking_only_the_old_serial_keeps_the_new_one(ca):
    old = ca.enroll_gateway("gw-1")
    new = ca.enroll_gateway("gw-1", renew=True)
    ca.revoke("gw-1", serial=old.serial, reason="superseded")
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert {f"{r.serial_number:x}" for r in crl} == {old.serial}
    assert [r.serial for r in ca.active("gw-1")] == [new.serial]
    with pytest.raises(PkiError, match="with serial"):
        ca.revoke("gw-1", serial=old.serial)


def test_strict_broker_access_lists_valid_identities_only(ca):
    import json

    ca.issue_server()
    ca.issue_hub()
    ca.enroll_gateway("gw-1")
    ca.enroll_gateway("gw-2")
    ca.revoke("gw-2")
    doc = json.loads(ca.broker_access_path.read_text())
    assert [c["username"] for c in doc["clients"]] == ["gw-1", "hub"]
    assert not any(doc["defaultACLAccess"][k] for k in ("publishClientSend", "subscribe"))
    roles = {r["rolename"]: r["acls"] for r in doc["roles"]}
    sends = {a["topic"] for a in roles["gateway-gw-1"] if a["acltype"] == "publishClientSend"}
    assert sends == {
        "vigil/v1/gw/gw-1/status",
        "vigil/v1/gw/gw-1/model",
        "vigil/v1/gw/gw-1/shadow",
        "vigil/v1/gw/gw-1/bed/+/vitals",
        "vigil/v1/gw/gw-1/bed/+/risk",
        "vigil/v1/gw/gw-1/bed/+/alarm",
        "vigil/v1/gw/gw-1/bed/+/observation",
    }
    subs = {a["topic"] for a in roles["gateway-gw-1"] if a["acltype"] == "subscribePattern"}
    assert subs == {"vigil/v1/gw/gw-1/cmd", "vigil/v1/models/#"}
    hub_subs = {a["topic"] for a in roles["hub"] if a["acltype"] == "subscribePattern"}
    assert "$share/hub/vigil/v1/gw/#" in hub_subs


def test_the_ca_is_never_overwritten(ca):
    before = ca.ca_key_path.read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        ca.init()
    assert ca.ca_key_path.read_bytes() == before


def test_ca_key_can_be_protected_by_a_passphrase_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_CA_PASSPHRASE", "correct horse")
    ca = CertificateAuthority(tmp_path / "pki")
    ca.init()
    assert b"ENCRYPTED PRIVATE KEY" in ca.ca_key_path.read_bytes()
    ca.enroll_gateway("gw-1")
    monkeypatch.setenv("VIGIL_CA_PASSPHRASE", "wrong")
    with pytest.raises(PkiError, match="VIGIL_CA_PASSPHRASE"):
        ca.enroll_gateway("gw-2")


def test_certificates_cannot_outlive_the_ca(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    ca.init(days=30)
    with pytest.raises(PkiError, match="outlive the CA"):
        ca.enroll_gateway("gw-1", days=365)


def test_cli_enroll_revoke_and_list(tmp_path):
    runner = CliRunner()
    pki = str(tmp_path / "pki")
    r = runner.invoke(hub_app, ["ca", "init", "--pki", pki])
    assert r.exit_code == 0, r.output
    r = runner.invoke(hub_app, ["enroll", "icu-7", "--pki", pki, "--days", "10"])
    assert r.exit_code == 0 and "icu-7" in r.output
    assert (tmp_path / "pki" / "gateways" / "icu-7" / "client.key").exists()
    r = runner.invoke(hub_app, ["enroll", "no/slash", "--pki", pki])
    assert r.exit_code == 2 and "gateway id" in r.output
    r = runner.invoke(hub_app, ["revoke", "icu-7", "--pki", pki, "--reason", "lost"])
    assert r.exit_code == 0 and "revoked icu-7" in r.output
    r = runner.invoke(hub_app, ["ca", "list", "--pki", pki])
    assert "icu-7" in r.output and "revoked" in r.output
    r = runner.invoke(hub_app, ["enroll", "icu-8", "--pki", str(tmp_path / "none")])
    assert r.exit_code == 2 and "vigil hub ca init" in r.output
