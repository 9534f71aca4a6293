"""Where the hub's bundle-signing key lives: one interface, a file or Azure Key Vault.

`KeyProvider` signs bytes with an Ed25519 key and names the key (`key_id`, the same
id `contracts.bundle.key_id` gives, which gateways look up among their trusted keys).

- `FileKeyProvider`: a PKCS8 PEM file made by `vigil hub keys init` (the embedded
  default, `<work_dir>/keys/signing.key`).
- `AzureKeyVaultProvider` (production): Azure Key Vault keys do not offer Ed25519
  (only RSA and the NIST/secp256k1 EC curves), and the gateways verify Ed25519 as
  the bundle contract says, so the Ed25519 private key is kept as a Key Vault
  SECRET (PKCS8 PEM) and read into memory with the hub's managed identity when a
  bundle is signed; it never touches the hub's disk. Needs the `azure` extra
  (`azure-keyvault-secrets`, `azure-identity`), imported only when used. This
  implementation is real code but tested here only through the interface (no vault
  in the test environment).

Key rotation without bricking gateways: make the new key (`vigil hub keys init
--name signing-2026`), ship its `.pub` to every gateway's trusted keys next to the
old one, wait until the fleet reports it (gateways trust old + new), then sign with
the new key; retire the old public key only after every gateway runs a bundle the
new key signed. `open_provider` takes "file:PATH", a plain path, or
"azurekv://<vault-name>/<secret-name>".
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from contracts.bundle import MANIFEST, SIGNATURE, canonical_bytes, key_id, load_private_key
from contracts.paths import work_dir

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

KEY_ENV = "VIGIL_SIGNING_KEY"  # provider spec, e.g. azurekv://vigil-kv/bundle-signing


class SigningKeyError(RuntimeError):
    """The signing key cannot be used; the message says which and what to do."""


class KeyProvider(ABC):
    """An Ed25519 signing key the hub can use but need not hold on disk."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the key is, for logs and MLflow tags (never the key itself)."""

    @abstractmethod
    def public_key(self) -> Ed25519PublicKey: ...

    @abstractmethod
    def sign(self, data: bytes) -> bytes: ...

    @property
    def key_id(self) -> str:
        return key_id(self.public_key())

    def sign_manifest(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The detached signature object of `contracts.bundle` (manifest.sig.json)."""
        import base64

        return {
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "signature": base64.b64encode(self.sign(canonical_bytes(manifest))).decode(),
        }

    def public_pem(self) -> bytes:
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class FileKeyProvider(KeyProvider):
    """A PKCS8 PEM private key file (mode 0600)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SigningKeyError(
                f"signing key {self.path} not found: run `vigil hub keys init` "
                "(or give --key / $VIGIL_SIGNING_KEY)"
            )
        try:
            self._key = load_private_key(self.path)
        except ValueError as e:
            raise SigningKeyError(f"{self.path}: {e}") from None
        mode = self.path.stat().st_mode & 0o077
        if mode:
            # Not fatal (a container volume may force modes), but worth a line in the log.
            import logging

            logging.getLogger(__name__).warning(
                "signing key %s is readable by group/others (mode %o)", self.path, mode
            )

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class AzureKeyVaultProvider(KeyProvider):
    """The Ed25519 key as a Key Vault secret, read with the managed identity (see module doc)."""

    def __init__(
        self,
        vault: str,
        secret: str,
        version: str | None = None,
        credential: TokenCredential | None = None,
    ) -> None:
        self.vault_url = (
            vault if vault.startswith("https://") else f"https://{vault}.vault.azure.net"
        )
        self.secret = secret
        self.version = version
        self._credential = credential
        self._key: Ed25519PrivateKey | None = None

    @property
    def description(self) -> str:
        return f"azurekv:{self.vault_url}/secrets/{self.secret}"

    def _load(self) -> Ed25519PrivateKey:
        if self._key is not None:
            return self._key
        try:
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient
        except ImportError as e:
            raise SigningKeyError(
                f"Azure Key Vault signing needs the azure extra: pip install 'vigil[azure]' ({e})"
            ) from None
        client = SecretClient(self.vault_url, self._credential or DefaultAzureCredential())
        try:
            value = client.get_secret(self.secret, self.version).value
        except Exception as e:  # network, identity, permissions: say which vault and secret
            raise SigningKeyError(
                f"cannot read secret {self.secret} from {self.vault_url}: {e}"
            ) from e
        if not value:
            raise SigningKeyError(f"secret {self.secret} in {self.vault_url} is empty")
        key = serialization.load_pem_private_key(value.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"secret {self.secret} is not an Ed25519 private key (PKCS8 PEM)")
        self._key = key
        return key

    def public_key(self) -> Ed25519PublicKey:
        return self._load().public_key()

    def sign(self, data: bytes) -> bytes:
        return self._load().sign(data)


def default_key_path() -> Path:
    return work_dir() / "keys" / "signing.key"


def open_provider(spec: str | Path | None = None) -> KeyProvider:
    """A provider from "file:PATH", a path, "azurekv://VAULT/SECRET[/VERSION]"; default:
    $VIGIL_SIGNING_KEY, else `<work_dir>/keys/signing.key`."""
    spec = str(spec) if spec is not None else os.environ.get(KEY_ENV, "")
    if not spec:
        return FileKeyProvider(default_key_path())
    if spec.startswith("azurekv://"):
        parts = spec[len("azurekv://") :].strip("/").split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise SigningKeyError(f"{spec!r}: expected azurekv://<vault>/<secret>[/<version>]")
        return AzureKeyVaultProvider(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    if spec.startswith("file:"):
        spec = spec[len("file:") :]
    return FileKeyProvider(Path(spec))


def resign_bundle(folder: Path, provider: KeyProvider) -> dict[str, str]:
    """Sign the bundle in `folder` again with `provider` (e.g. after building it with an
    ephemeral key, or for a rotation); writes manifest.sig.json atomically."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    sig = provider.sign_manifest(manifest)
    tmp = folder / (SIGNATURE + ".new")
    tmp.write_text(json.dumps(sig, indent=2))
    os.replace(tmp, folder / SIGNATURE)
    return sig
