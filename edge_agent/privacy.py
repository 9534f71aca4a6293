"""Stay pseudonyms: what the gateway publishes and stores instead of the monitor's PID-3.

A hospital monitor sends the patient's identifier (often the medical record number) in
PID-3. DESIGN.md: no names or record numbers leave the gateway. So at the gateway
boundary (`Gateway.process_reading`) the raw PID-3 value is replaced by

    "st-" + first 16 hex digits of HMAC-SHA256(site secret, PID-3 + "|" + PV1-44)

(`+ "|" + PV1-44` only when the monitor sends an ICU admission time; PV1-44 in the
canonical form `YYYYMMDDHHMMSS.fff+0000`, UTC). The same patient and admission give the
same id on every restart (the secret is kept), a new admission gives a new stay id,
and without the secret the id cannot be linked back to the record number (a keyed
hash: record numbers are too few to resist a plain hash being brute-forced).

The secret: `privacy.stay_secret` or `privacy.stay_secret_file` in the config
(VIGIL_EDGE__PRIVACY__STAY_SECRET / ..._FILE); otherwise generated once (32 random
bytes) into `stay_secret` beside the gateway's store, mode 0600. The raw PID-3 lives
only in memory (the decoded `Reading`); it is never stored, published or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "st-"
HEX_DIGITS = 16
MIN_SECRET_CHARS = 16
SECRET_FILE_NAME = "stay_secret"


class SecretError(ValueError):
    """The stay secret cannot be read or is too short; the message says which file."""


def hl7_ts(ts: datetime) -> str:
    """`ts` as the HL7 time the monitor sends (`YYYYMMDDHHMMSS.fff+0000`, UTC)."""
    u = ts.astimezone(UTC)
    return u.strftime("%Y%m%d%H%M%S") + f".{u.microsecond // 1000:03d}+0000"


def stay_pseudonym(secret: bytes, raw: str, admit: datetime | str | None = None) -> str:
    """The pseudonymous stay id for PID-3 `raw` and ICU admission time `admit` (PV1-44)."""
    text = raw
    if admit is not None and admit != "":
        text += "|" + (hl7_ts(admit) if isinstance(admit, datetime) else admit)
    digest = hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


def _check(secret: str, where: str) -> bytes:
    secret = secret.strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise SecretError(f"{where}: the stay secret must have at least {MIN_SECRET_CHARS} chars")
    return secret.encode("utf-8")


def read_secret_file(path: Path) -> bytes:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(
            f"stay secret file {path} cannot be read: {e.__class__.__name__}"
        ) from None
    return _check(text, f"stay secret file {path}")


def generated_secret(folder: Path) -> bytes:
    """The site secret kept in `folder`/stay_secret, created (mode 0600) on first use."""
    path = Path(folder) / SECRET_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two gateways starting on one folder cannot both write a secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("stay secret %s had mode %o; set to 0600", path, mode)
            path.chmod(0o600)
        return read_secret_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "generated a new stay pseudonym secret %s: back it up, the stay ids depend on it", path
    )
    return read_secret_file(path)


def load_secret(secret: str | None, secret_file: Path | None, store_folder: Path) -> bytes:
    """The configured secret, else the configured file, else the generated one."""
    if secret is not None:
        return _check(secret, "privacy.stay_secret")
    if secret_file is not None:
        return read_secret_file(secret_file)
    return generated_secret(store_folder)
