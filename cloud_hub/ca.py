"""A small certificate authority for the fleet: who may talk to the broker.

The broker (Mosquitto, `deploy/mosquitto/`) trusts this CA, requires a client
certificate and uses the certificate's common name as the MQTT user name; the ACL
then confines a gateway to `vigil/v1/gw/{its id}/...`. So the CN *is* the identity:

- a gateway: CN = gateway id (`vigil hub enroll GW`), client auth only;
- the hub: CN = `hub` (`vigil hub ca hub`), the only identity that may publish
  models and commands;
- the broker: a server certificate with the host names/addresses gateways dial
  (`vigil hub ca server`), server auth only.

Revocation (`vigil hub revoke GW`) writes a PEM CRL that the broker reads
(`crlfile`). A CRL has a `next_update`: OpenSSL refuses every client once it has
passed, so `vigil hub ca crl` must re-sign it before then (a daily timer does).

Layout under `<work_dir>/pki` (or `--pki DIR`), private keys mode 0600:

    ca/ca.crt  ca/ca.key  crl.pem  index.json
    gateways/<id>/{ca.crt, client.crt, client.key}
    hub/{ca.crt, client.crt, client.key}
    broker/{ca.crt, server.crt, server.key, crl.pem}

Keys are ECDSA P-256. The CA key may be encrypted with a passphrase taken from the
environment variable `VIGIL_CA_PASSPHRASE` (never from a file in the repository).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts import paths, topics
from contracts.timeutil import iso_s, parse_iso, utc_now
from contracts.topics import check_id

HUB_IDENTITY = "hub"
# Identities the ACL gives special rights to, or that operators use: a gateway
# enrolled under one of these names would inherit them, so enroll refuses them.
RESERVED_IDS = frozenset({"hub", "broker", "admin", "ops", "root", "mosquitto"})
PASSPHRASE_ENV = "VIGIL_CA_PASSPHRASE"
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 365
DEFAULT_CRL_DAYS = 30
# Backdate validity a little: a gateway whose clock lags the CA's must still accept it.
_CLOCK_SKEW = timedelta(minutes=5)


class PkiError(RuntimeError):
    """A CA operation that cannot proceed; the message says what to do."""


@dataclass
class Issued:
    """One issued certificate, as recorded in index.json."""

    name: str
    kind: str  # gateway | hub | server
    serial: str  # hex
    not_before: str
    not_after: str
    folder: str
    revoked_at: str | None = None
    reason: str = ""


def default_pki_dir() -> Path:
    return paths.work_dir() / "pki"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret so that it is never, even briefly, readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


class CertificateAuthority:
    """The CA in one folder. Every method leaves the folder consistent on disk."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_pki_dir()

    # -- paths -------------------------------------------------------------------
    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def gateway_dir(self, gateway_id: str) -> Path:
        return self.root / "gateways" / check_id("gateway", gateway_id)

    @property
    def hub_dir(self) -> Path:
        return self.root / "hub"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    # -- CA ----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.ca_cert_path.exists() and self.ca_key_path.exists()

    def init(self, *, common_name: str = "Vigil fleet CA", days: int = DEFAULT_CA_DAYS) -> Path:
        """Create the CA key, its self-signed certificate and an empty CRL."""
        if self.exists():
            raise PkiError(f"a CA already exists in {self.root}; refusing to overwrite it")
        if days < 1:
            raise PkiError(f"CA validity must be at least 1 day, got {days}")
        key = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = utc_now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        self.ca_key_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.ca_key_path.parent, 0o700)  # nobody else even lists the CA folder
        _write_private(self.ca_key_path, _key_pem(key, _passphrase()))
        _write_public(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM))
        self._save_index([])
        self.write_crl()
        return self.ca_cert_path

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self.exists():
            raise PkiError(f"no CA in {self.root}: run `vigil hub ca init` first")
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        try:
            key = serialization.load_pem_private_key(
                self.ca_key_path.read_bytes(), password=_passphrase()
            )
        except (TypeError, ValueError) as e:
            raise PkiError(
                f"cannot open the CA key {self.ca_key_path} ({e}); "
                f"is {PASSPHRASE_ENV} set to the CA passphrase?"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"the CA key {self.ca_key_path} is not an EC key")
        return cert, key

    # -- index -------------------------------------------------------------------
    def index(self) -> list[Issued]:
        if not self.index_path.exists():
            return []
        try:
            rows = json.loads(self.index_path.read_text())
            return [Issued(**row) for row in rows]
        except (ValueError, TypeError) as e:
            raise PkiError(f"the CA index {self.index_path} is unreadable: {e}") from None

    def _save_index(self, rows: Iterable[Issued]) -> None:
        data = json.dumps([asdict(r) for r in rows], indent=2).encode()
        _write_public(self.index_path, data)

    def active(self, name: str, kind: str | None = None) -> list[Issued]:
        now = iso_s(utc_now())
        return [
            r
            for r in self.index()
            if r.name == name
            and (kind is None or r.kind == kind)
            and r.revoked_at is None
            and r.not_after > now
        ]

    # -- issuing -----------------------------------------------------------------
    def _issue(
        self,
        *,
        name: str,
        kind: str,
        folder: Path,
        days: int,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName] = (),
        cert_file: str,
        key_file: str,
    ) -> Issued:
        if days < 1:
            raise PkiError(f"certificate validity must be at least 1 day, got {days}")
        ca_cert, ca_key = self._load()
        now = utc_now()
        not_after = now + timedelta(days=days)
        if not_after > ca_cert.not_valid_after_utc:
            raise PkiError(
                f"{days} days would outlive the CA (valid until "
                f"{iso_s(ca_cert.not_valid_after_utc)}); choose fewer days"
            )
        key = _new_key()
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(folder / key_file, _key_pem(key))
        _write_public(folder / cert_file, cert.public_bytes(serialization.Encoding.PEM))
        _write_public(folder / "ca.crt", self.ca_cert_path.read_bytes())
        rec = Issued(
            name=name,
            kind=kind,
            serial=f"{serial:x}",
            not_before=iso_s(cert.not_valid_before_utc),
            not_after=iso_s(cert.not_valid_after_utc),
            folder=str(folder.relative_to(self.root)),
        )
        self._save_index([*self.index(), rec])
        if kind in ("gateway", "hub"):
            self.write_broker_access()
        return rec

    def enroll_gateway(
        self, gateway_id: str, *, days: int = DEFAULT_CERT_DAYS, renew: bool = False
    ) -> Issued:
        """Issue a gateway's client certificate and key (CN = gateway id)."""
        check_id("gateway", gateway_id)
        if gateway_id.lower() in RESERVED_IDS:
            raise PkiError(
                f"gateway id {gateway_id!r} is reserved for a service identity; choose another"
            )
        if self.active(gateway_id, "gateway") and not renew:
            raise PkiError(
                f"gateway {gateway_id!r} already holds a valid certificate; pass --renew to "
                "issue a new one (then revoke the old one once the gateway uses the new)"
            )
        return self._issue(
            name=gateway_id,
            kind="gateway",
            folder=self.gateway_dir(gateway_id),
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            cert_file="client.crt",
            key_file="client.key",
        )

    def issue_hub(self, *, days: int = DEFAULT_CERT_DAYS) -> Issued:
        """The hub's client certificate (CN = hub): publishes models and commands."""
        return self._issue(
            name=HUB_IDENTITY,
            kind="hub",
            folder=self.hub_dir,
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            cert_file="client.crt",
            key_file="client.key",
        )

    def issue_server(
        self,
        *,
        dns: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1",),
        days: int = DEFAULT_CERT_DAYS,
    ) -> Issued:
        """The broker's server certificate; SANs are the names gateways dial."""
        if not dns and not ips:
            raise PkiError("a server certificate needs at least one --dns name or --ip address")
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        for ip in ips:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise PkiError(f"--ip {ip!r} is not an IP address") from None
        rec = self._issue(
            name=(list(dns) or list(ips))[0],
            kind="server",
            folder=self.broker_dir,
            days=days,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
            cert_file="server.crt",
            key_file="server.key",
        )
        _write_public(self.broker_dir / "crl.pem", self.crl_path.read_bytes())
        self.write_broker_access()
        return rec

    # -- revocation --------------------------------------------------------------
    def revoke(
        self, name: str, *, reason: str = "", kind: str = "gateway", serial: str | None = None
    ) -> list[Issued]:
        """Revoke the valid certificates of `name` (or only `serial`) and re-sign the CRL."""
        if kind == "gateway":
            check_id("gateway", name)
        want = serial.lower().lstrip("0") if serial else None
        rows = self.index()
        now = iso_s(utc_now())
        hit = []
        for r in rows:
            if want is not None and r.serial.lstrip("0") != want:
                continue
            if r.name == name and r.kind == kind and r.revoked_at is None:
                r.revoked_at = now
                r.reason = reason
                hit.append(r)
        if not hit:
            which = f" with serial {serial}" if serial else ""
            raise PkiError(
                f"no unrevoked {kind} certificate for {name!r}{which} in {self.index_path}"
            )
        self._save_index(rows)
        self.write_crl()
        self.write_broker_access()
        return hit

    def write_crl(self, *, days: int = DEFAULT_CRL_DAYS) -> Path:
        """(Re-)sign the CRL from the index; the broker must reload it afterwards."""
        ca_cert, ca_key = self._load()
        now = utc_now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + timedelta(days=days))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        )
        for r in self.index():
            if r.revoked_at is None:
                continue
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(r.serial, 16))
                .revocation_date(parse_iso(r.revoked_at))
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(ca_key, hashes.SHA256())
        pem = crl.public_bytes(serialization.Encoding.PEM)
        _write_public(self.crl_path, pem)
        if self.broker_dir.exists():
            _write_public(self.broker_dir / "crl.pem", pem)
        return self.crl_path

    # -- broker access for the strict config (Mosquitto dynamic-security plugin) --------
    @property
    def broker_access_path(self) -> Path:
        return self.broker_dir / "dynamic-security.json"

    def write_broker_access(self) -> Path:
        """Write the dynamic-security config for `deploy/mosquitto/mosquitto-strict.conf`.

        One client and role per valid identity (Mosquitto 2.0's plugin has no `%u`
        patterns). Unlike the acl_file it also checks SUBSCRIBE, so a gateway cannot
        join the hub's `$share/hub/...` group. The broker reads it at start.
        """
        now = iso_s(utc_now())
        valid = [r for r in self.index() if r.revoked_at is None and r.not_after > now]
        clients, roles = [], []
        for name in sorted({r.name for r in valid if r.kind == "gateway"}):
            role = f"gateway-{name}"
            clients.append({"username": name, "roles": [{"rolename": role}]})
            roles.append({"rolename": role, "acls": gateway_acls(name)})
        if any(r.kind == "hub" for r in valid):
            clients.append({"username": HUB_IDENTITY, "roles": [{"rolename": "hub"}]})
            roles.append({"rolename": "hub", "acls": hub_acls()})
        doc = {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": False,
                "subscribe": False,
                "unsubscribe": True,
            },
            "clients": clients,
            "groups": [],
            "roles": roles,
        }
        _write_public(self.broker_access_path, json.dumps(doc, indent=2).encode())
        return self.broker_access_path


def _acl(kind: str, topic: str) -> dict[str, object]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def gateway_acls(gw: str) -> list[dict[str, object]]:
    """docs/ARCHITECTURE.md "Access" for one gateway, as dynamic-security ACLs."""
    bed = "BED"  # topics.* validate ids; swap in the MQTT wildcard afterwards
    own = [
        topics.status(gw),
        topics.model_state(gw),
        topics.shadow(gw),
        topics.vitals(gw, bed).replace(bed, "+"),
        topics.risk(gw, bed).replace(bed, "+"),
        topics.alarm(gw, bed).replace(bed, "+"),
        topics.observation(gw, bed).replace(bed, "+"),
    ]
    reads = [topics.cmd(gw), f"{topics.PREFIX}/models/#"]
    return (
        [_acl("publishClientSend", t) for t in own]
        + [_acl("subscribePattern", t) for t in reads]
        + [_acl("publishClientReceive", t) for t in reads]
    )


def hub_acls() -> list[dict[str, object]]:
    """The hub reads every gateway topic (also as `$share/hub/...`), sends models and cmds."""
    fleet = f"{topics.PREFIX}/gw/#"
    models = f"{topics.PREFIX}/models/#"
    return [
        _acl("subscribePattern", fleet),
        _acl("subscribePattern", topics.shared(fleet)),
        _acl("subscribePattern", models),
        _acl("publishClientReceive", fleet),
        _acl("publishClientReceive", models),
        _acl("publishClientSend", models),
        _acl("publishClientSend", f"{topics.PREFIX}/gw/+/cmd"),
    ]
