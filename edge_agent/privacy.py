"""Stay pseudonyms: what the gateway publishes and stores instead of the monitor's PID-3.

A hospital monitor sends the patient's identifier (often the medical record number) in
PID-3. No names or record numbers leave the gateway (docs/ARCHITECTURE.md, "Pseudonymous
stays"). So at the gateway boundary (`Gateway.process_reading`) the raw PID-3 value is
replaced by

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

import csv
import hashlib
import hmac
import io
import logging
import os
import secrets
import stat
from datetime import datetime
from pathlib import Path

from contracts.timeutil import hl7_ts, parse_iso, parse_iso_utc

log = logging.getLogger(__name__)

PREFIX = "st-"
HEX_DIGITS = 16
MIN_SECRET_CHARS = 16
SECRET_FILE_NAME = "stay_secret"


class SecretError(ValueError):
    """The stay secret cannot be read or is too short; the message says which file."""


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


# --- outcome records: from the hospital's identifiers to the stay ids the hub knows -------
OUTCOME_COLUMNS = ("patient_id", "onset_time")  # required; `icu_admit` is optional


class OutcomeFileError(ValueError):
    """The outcomes file as a whole cannot be used (unreadable, wrong header)."""


def existing_secret(secret: str | None, secret_file: Path | None, store_folder: Path) -> bytes:
    """Like `load_secret`, but never makes a new secret: a new one maps to nothing."""
    if secret is not None or secret_file is not None:
        return load_secret(secret, secret_file, store_folder)
    path = Path(store_folder) / SECRET_FILE_NAME
    if not path.is_file():
        raise SecretError(
            f"no stay secret at {path}: run this where the gateway runs (same config), "
            "or set privacy.stay_secret_file to the site secret"
        )
    return read_secret_file(path)


def _admit_of(text: str) -> datetime | None:
    """ICU admission as ISO-8601 (naive = UTC) or as the monitor's HL7 time."""
    from .pcd01 import parse_hl7_time

    text = text.strip()
    if not text:
        return None
    try:
        return parse_iso_utc(text)
    except ValueError:
        pass
    try:
        return parse_hl7_time(text)
    except ValueError:
        raise ValueError(
            "icu_admit is neither ISO-8601 (2026-03-01T08:00:00Z) nor an HL7 time "
            "(20260301080000.000+0000)"
        ) from None


def pseudonymise_outcomes(secret: bytes, text: str) -> tuple[list[dict[str, str]], list[str]]:
    """The hospital's outcomes CSV -> rows `stay_id,onset_time` for `vigil hub labels import`.

    Input columns: `patient_id` (what the monitor sends in PID-3, e.g. the record
    number), `icu_admit` (optional: the ICU admission the monitor sends in PV1-44; give
    it when the monitors send one, since it is part of the stay id) and `onset_time`
    (ISO-8601; empty = no sepsis). Every other column is dropped: only pseudonyms leave.
    Errors name the row (header = row 1) and the column, never the identifier.
    """
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in OUTCOME_COLUMNS if c not in cols]
    if missing:
        raise OutcomeFileError(
            f"missing column(s) {', '.join(missing)}: the header must name "
            f"{', '.join(OUTCOME_COLUMNS)} (and may name icu_admit)"
        )
    reader.fieldnames = cols
    out: list[dict[str, str]] = []
    errors: list[str] = []
    first: dict[str, int] = {}
    for i, row in enumerate(reader, start=2):
        if None in row:
            errors.append(f"row {i}: more values than the header's columns")
            continue
        raw = (row.get("patient_id") or "").strip()
        if not raw:
            errors.append(f"row {i}: patient_id is empty")
            continue
        try:
            admit = _admit_of(row.get("icu_admit") or "")
        except ValueError as e:
            errors.append(f"row {i}: {e}")
            continue
        onset = (row.get("onset_time") or "").strip()
        if onset:
            try:
                parse_iso(onset)
            except ValueError:
                errors.append(
                    f"row {i}: onset_time is not ISO-8601 (e.g. 2026-03-01T14:00:00Z), "
                    "nor empty for 'no sepsis'"
                )
                continue
        stay = stay_pseudonym(secret, raw, admit)
        if stay in first:
            errors.append(f"row {i}: same patient_id and icu_admit as row {first[stay]}")
            continue
        first[stay] = i
        out.append({"stay_id": stay, "onset_time": onset})
    return out, errors


def write_outcomes(rows: list[dict[str, str]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["stay_id", "onset_time"])
        w.writeheader()
        w.writerows(rows)
