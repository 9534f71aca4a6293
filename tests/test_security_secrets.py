"""No secret or private key is in the repository, and CA output lands in ignored paths.

Scans every tracked file (and every untracked file git would add) for PEM private
key headers and common credential shapes. Keys made by tests live in temporary
folders, never in the work tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built from parts so that this file does not match itself.
_BEGIN = "-----" + "BEGIN"
PATTERNS = {
    "PEM private key": re.compile(_BEGIN + r" ([A-Z0-9 ]+ )?PRIVATE KEY-----"),
    "Azure storage key": re.compile(r"AccountKey=[A-Za-z0-9+/=]{40,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "password in a URL": re.compile(r"://[^/\s:@${}]+:(?!\$)[^@\s/${}]{6,}@"),
}


def _git(*args: str) -> list[str]:
    """NUL-separated output of a git command (exit 1 = "nothing", as check-ignore says)."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except OSError as e:
        pytest.skip(f"git is not available: {e}")
    if out.returncode not in (0, 1):
        pytest.skip(f"not a git checkout: {out.stderr.strip()}")
    return [p for p in out.stdout.split("\0") if p.strip()]


def test_no_private_key_or_credential_in_the_repository():
    files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    assert files, "git listed no files"
    hits = []
    for rel in files:
        path = ROOT / rel
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(errors="ignore")
        except OSError:
            continue
        for what, pattern in PATTERNS.items():
            # throw-away DSNs of the test databases (trust auth) are not secrets
            if what == "password in a URL" and rel.startswith("tests/"):
                continue
            if pattern.search(text):
                hits.append(f"{rel}: {what}")
    assert hits == []


def test_the_scan_would_catch_a_key(tmp_path):
    from cloud_hub.ca import CertificateAuthority

    ca = CertificateAuthority(tmp_path / "pki")
    ca.init()
    ca.enroll_gateway("gw-1")
    key = (ca.gateway_dir("gw-1") / "client.key").read_text()
    assert PATTERNS["PEM private key"].search(key)
    assert PATTERNS["password in a URL"].search("postgresql://vigil:" + "hunter22@db/vigil")
    assert not PATTERNS["password in a URL"].search("postgresql://vigil:${POSTGRES_PASSWORD}@db")


def test_default_ca_folder_and_keys_are_git_ignored():
    for rel in ("data/pki/ca/ca.key", "data/pki/gateways/gw-1/client.key", "keys/signing.key"):
        assert _git("check-ignore", "--no-index", rel) == [rel + "\n"], f"{rel} would be committed"
