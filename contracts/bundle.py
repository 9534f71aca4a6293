"""The model bundle: manifest.json + model.tflite, signed with Ed25519.

Layout of a bundle folder:
    manifest.json       the Manifest below, as JSON
    model.tflite        the int8 model; its sha256 is in the manifest
    manifest.sig.json   {"algorithm": "ed25519", "key_id": ..., "signature": base64}

The signature covers `canonical_bytes(manifest)`: JSON with sorted keys and no
spaces. A key's id is the first 16 hex digits of sha256 of its raw public key.
Verification needs only `cryptography` and NumPy-free code: the gateway runs it.

Every file is untrusted input: whatever `manifest.json` and `manifest.sig.json`
hold (`null`, a list, a string, a number, wrong-typed fields, nesting deeper than
`MAX_JSON_DEPTH`, more than `MAX_MANIFEST_BYTES`, not UTF-8) and however large
`model.tflite` is (more than `MAX_MODEL_BYTES`, the one limit the gateway and
`vigil convert verify` share), the reader raises `BundleError` with a reason
(`incomplete`, `unreadable`, `bad_manifest`, `bad_signature`, `too_large`) and a
detail naming the file and what is wrong: never TypeError, AttributeError or
RecursionError.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, Field, ValidationError

from .preprocessing import PreprocessSpec, WindowSpec

MANIFEST = "manifest.json"
MODEL = "model.tflite"
SIGNATURE = "manifest.sig.json"
BUNDLE_SCHEMA = "vigil.manifest/1"

MAX_MODEL_BYTES = 8 * 1024 * 1024  # a Vigil int8 model is ~100 KB; refuse anything absurd
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the default manifest (16 golden windows) is ~30 KB
MAX_JSON_DEPTH = 16  # a manifest nests 5 deep (golden -> window -> step -> value)
# A release stamp (`release.seq`, ms since the epoch, and `release.issued_at`) further
# ahead of the receiving gateway's clock than this is refused as `from_the_future`.
RELEASE_FUTURE_MARGIN_SECONDS = 24 * 3600


class BundleError(ValueError):
    """A bundle that must not run; `reason` is a short code, str() the full story."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TensorSpec(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0


class Threshold(BaseModel):
    value: float = Field(ge=0, le=1)
    method: str  # how it was chosen, in words


class GoldenWindow(BaseModel):
    window: list[list[float]]  # [steps, F] normalised
    static: list[float]  # [S] normalised
    expected: float
    tolerance: float = 0.02


class OperatingPoint(BaseModel):
    """One threshold of the burden-sensitivity curve (cloud_hub/burden.py)."""

    threshold: float = Field(ge=0, le=1)
    alarm_hours_per_patient_day: float = Field(ge=0)
    septic_alarmed_share: float | None = Field(None, ge=0, le=1)  # None: no labels
    median_lead_hours: float | None = None


class OperatingCurve(BaseModel):
    """Threshold -> alarm burden as the gateway's alarm machine raises it (issue 13), and
    what it was measured on, so a site can move along it."""

    points: list[OperatingPoint]
    data: str  # the stays, in words (validation split, or a site's unlabelled history)
    stays: int = Field(ge=0)  # stays counted in the burden
    septic_stays: int = Field(0, ge=0)
    patient_days: float = Field(ge=0)
    labelled: bool
    alarm: dict[str, float] = {}  # the alarm settings replayed (hysteresis, min_steps, ...)


class Calibration(BaseModel):
    """Provenance of a per-site threshold (`vigil hub calibrate`): same model, new threshold."""

    site: str
    channel: str
    base_version: str
    base_threshold: float
    alarm_budget: float = Field(gt=0)
    expected_alarm_hours_per_patient_day: float = Field(ge=0)
    stays: int = Field(ge=0)
    hours: int = Field(ge=0)
    gateways: list[str] = []
    calibrated_at: str
    mlflow_run_id: str = ""
    labels: str = "none: all stays counted"


class Manifest(BaseModel):
    schema_: str = Field(BUNDLE_SCHEMA, alias="schema")
    name: str
    version: str
    created_at: str
    mlflow_run_id: str = ""
    architecture: str
    horizon_hours: int = 6
    task: str = "SepsisLabel: 1 from 6 h before onset (PhysioNet/CinC 2019)"
    preprocessing: PreprocessSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    threshold: Threshold
    metrics: dict[str, float] = {}
    dataset_fingerprint: str = ""
    sha256: str
    size_bytes: int
    golden: list[GoldenWindow] = []
    # Optional (issue 13): absent from older manifests, which stay valid and verify.
    alarm_budget: float | None = Field(None, gt=0)  # alarm-hours/patient-day aimed at
    operating_curve: OperatingCurve | None = None
    calibration: Calibration | None = None

    model_config = {"populate_by_name": True, "serialize_by_alias": True}

    @property
    def window(self) -> WindowSpec:
        return self.preprocessing.window


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(out_dir: Path, name: str = "signing") -> tuple[Path, Path, str]:
    """Write NAME.key (PKCS8 PEM, mode 0600) and NAME.pub (PEM); return paths and key id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path = out_dir / f"{name}.key"
    pub_path = out_dir / f"{name}.pub"
    if key_path.exists():
        raise FileExistsError(f"{key_path} exists: refusing to overwrite a signing key")
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path, key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def load_trusted_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by id, from .pub files or folders of them."""
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        for f in files:
            k = load_public_key(f)
            keys[key_id(k)] = k
    return keys


def sign_manifest(manifest: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, str]:
    sig = private.sign(canonical_bytes(manifest))
    return {
        "algorithm": "ed25519",
        "key_id": key_id(private.public_key()),
        "signature": base64.b64encode(sig).decode(),
    }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kind(value: object) -> str:
    """A JSON value's kind in words, for an error detail (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def json_depth_over(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `value` nests lists/objects deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            items: Any = v.values()
        elif isinstance(v, list):
            items = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in items)
    return False


def check_manifest_shape(manifest: object, where: str = MANIFEST) -> dict[str, Any]:
    """The manifest as a JSON object of bounded depth, else BundleError('bad_manifest')."""
    if not isinstance(manifest, dict):
        raise BundleError("bad_manifest", f"{where} is {_kind(manifest)}, not a JSON object")
    if json_depth_over(manifest):
        raise BundleError("bad_manifest", f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
    return manifest


def check_signature_shape(signature: object, where: str = SIGNATURE) -> dict[str, str]:
    """`{"algorithm", "key_id", "signature"}`, all strings, else BundleError('bad_signature')."""
    if not isinstance(signature, dict):
        raise BundleError("bad_signature", f"{where} is {_kind(signature)}, not a JSON object")
    for name in ("algorithm", "key_id", "signature"):
        if name not in signature:
            raise BundleError("bad_signature", f"{where} has no field {name!r}")
        if not isinstance(signature[name], str):
            raise BundleError(
                "bad_signature",
                f"{where}: field {name!r} is {_kind(signature[name])}, not a string",
            )
        if len(signature[name]) > 1024:
            raise BundleError("bad_signature", f"{where}: field {name!r} is over 1024 characters")
    return signature


def verify_parts(
    manifest: dict[str, Any],
    signature: dict[str, str],
    model_bytes: bytes,
    trusted: dict[str, Ed25519PublicKey],
) -> Manifest:
    """Check the JSON shapes and size, the signature, then the manifest schema, then sha256
    and size. Raises BundleError whatever `manifest` and `signature` hold."""
    signature = check_signature_shape(signature)
    manifest = check_manifest_shape(manifest)
    if not isinstance(model_bytes, (bytes, bytearray)):
        raise BundleError("incomplete", f"{MODEL} is {_kind(model_bytes)}, not bytes")
    if len(model_bytes) > MAX_MODEL_BYTES:
        raise BundleError(
            "too_large", f"{MODEL} is {len(model_bytes)} bytes, over the {MAX_MODEL_BYTES} limit"
        )
    if signature["algorithm"] != "ed25519":
        raise BundleError("bad_signature", f"algorithm {signature['algorithm'][:32]!r}")
    kid = signature["key_id"]
    if kid not in trusted:
        raise BundleError("unknown_key", f"key id {kid[:32]!r} is not among the trusted keys")
    try:
        signed = canonical_bytes(manifest)
    except (ValueError, TypeError, RecursionError) as e:
        raise BundleError("bad_manifest", f"{MANIFEST} cannot be canonicalised: {e}") from None
    try:
        sig = base64.b64decode(signature["signature"], validate=True)
        trusted[kid].verify(sig, signed)
    except (InvalidSignature, ValueError):
        raise BundleError("bad_signature", f"signature does not match (key {kid})") from None
    try:
        m = Manifest.model_validate(manifest)
    except ValidationError as e:
        raise BundleError("bad_manifest", str(e).splitlines()[0]) from None
    except (ValueError, TypeError, RecursionError) as e:  # a validator tripped on odd input
        raise BundleError("bad_manifest", f"{MANIFEST}: {type(e).__name__}") from None
    digest = sha256_hex(model_bytes)
    if len(model_bytes) != m.size_bytes:
        raise BundleError(
            "wrong_size", f"model is {len(model_bytes)} bytes, manifest says {m.size_bytes}"
        )
    if digest != m.sha256:
        raise BundleError("wrong_hash", f"model sha256 {digest[:16]}… != manifest {m.sha256[:16]}…")
    return m


def _read_file(folder: Path, name: str, limit: int) -> bytes:
    path = folder / name
    try:
        size = path.stat().st_size
        if size > limit:
            raise BundleError("too_large", f"{folder}: {name} is {size} bytes, over {limit}")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise BundleError("incomplete", f"{folder}: missing {name}") from None
    except OSError as e:  # a folder where a file should be, no permission, I/O error
        raise BundleError("unreadable", f"{folder}: cannot read {name}: {e.strerror}") from None
    if len(data) > limit:  # grew while being read
        raise BundleError("too_large", f"{folder}: {name} is over {limit} bytes")
    return data


def _read_json(folder: Path, name: str, reason: str) -> object:
    data = _read_file(folder, name, MAX_MANIFEST_BYTES)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(reason, f"{folder}: {name} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        detail = "empty" if not data.strip() else f"not JSON ({e.msg} at line {e.lineno})"
        raise BundleError(reason, f"{folder}: {name} is {detail}") from None
    except RecursionError:
        raise BundleError(reason, f"{folder}: {name} nests too deeply to read") from None


def read_bundle(folder: Path) -> tuple[dict[str, Any], dict[str, str], bytes]:
    """The three files of a bundle folder, their JSON shapes checked; BundleError else."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a bundle folder"
        raise BundleError("incomplete", f"{folder} {what}")
    manifest = check_manifest_shape(
        _read_json(folder, MANIFEST, "bad_manifest"), f"{folder.name}/{MANIFEST}"
    )
    signature = check_signature_shape(
        _read_json(folder, SIGNATURE, "bad_signature"), f"{folder.name}/{SIGNATURE}"
    )
    model = _read_file(folder, MODEL, MAX_MODEL_BYTES)
    return manifest, signature, model


def verify_bundle(folder: Path, trusted: dict[str, Ed25519PublicKey]) -> Manifest:
    manifest, signature, model = read_bundle(folder)
    return verify_parts(manifest, signature, model, trusted)


def write_bundle(
    folder: Path, manifest: dict[str, Any], model_bytes: bytes, private: Ed25519PrivateKey
) -> Path:
    """Write a signed bundle; sha256 and size are filled in from `model_bytes`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = dict(manifest)
    manifest["sha256"] = sha256_hex(model_bytes)
    manifest["size_bytes"] = len(model_bytes)
    Manifest.model_validate(manifest)  # refuse to sign what the edge would refuse
    if len(model_bytes) > MAX_MODEL_BYTES:
        raise BundleError(
            "too_large", f"{MODEL} is {len(model_bytes)} bytes, over the {MAX_MODEL_BYTES} limit"
        )
    (folder / MODEL).write_bytes(model_bytes)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (folder / SIGNATURE).write_text(json.dumps(sign_manifest(manifest, private), indent=2))
    return folder
