"""The gateway's bundles on disk: slots, the `active`/`previous` pointers, atomic swaps.

Layout under the bundle root (one folder on the gateway's disk):

    bundles/<slot>/      whole bundles (manifest.json, manifest.sig.json, model.tflite)
    staging/<tmp>/       a bundle being written; never pointed at
    active -> bundles/<slot>     symlink: the bundle the gateway scores with
    previous -> bundles/<slot>   symlink: the one before it (rollback)
    shadow -> bundles/<slot>     symlink: a candidate scored silently beside `active`
                                 (edge_agent/shadow.py); never scored for a nurse
    state.json           highest release seen, last refusal, channel

Power may go at any instant, so every step leaves a state `boot` can use:
files are written in `staging/`, fsynced, then the folder is renamed into
`bundles/` (a rename is atomic; the parent folder is fsynced so the rename itself
survives); a pointer is switched by creating `active.new` and renaming it over
`active` (atomic on POSIX), then fsyncing the root. `previous` is moved before
`active`, so after a crash either both point at the old bundle or they differ as
intended. Whatever is left half-done is in `staging/` or an unreferenced slot,
and `gc` removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from contracts.bundle import MANIFEST, MODEL, SIGNATURE

ACTIVE = "active"
PREVIOUS = "previous"
SHADOW = "shadow"
_SLOT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside `path` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write and fsync a file (the caller fsyncs the folder once for all files)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class BundleStore:
    """Slots and pointers under `root`; every public method is crash-safe (see module doc)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.bundles = self.root / "bundles"
        self.staging = self.root / "staging"
        self.state_path = self.root / "state.json"
        for d in (self.root, self.bundles, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    # --- pointers ---------------------------------------------------------------------
    def pointer(self, name: str) -> Path | None:
        """The slot folder `active`/`previous` points at, or None (missing or dangling)."""
        link = self.root / name
        if not link.is_symlink():
            return None
        target = self.root / os.readlink(link)
        return target if target.is_dir() else None

    def set_pointer(self, name: str, slot: Path | None) -> None:
        """Point `name` at `slot` atomically (None removes the pointer)."""
        link = self.root / name
        if slot is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            fsync_dir(self.root)
            return
        tmp = self.root / f"{name}.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # Relative target: the root can be moved or mounted elsewhere.
        os.symlink(os.path.relpath(slot, self.root), tmp)
        os.replace(tmp, link)
        fsync_dir(self.root)

    def activate(self, slot: Path) -> None:
        """Make `slot` active; the bundle active until now becomes `previous`."""
        current = self.pointer(ACTIVE)
        if current is not None and current.resolve() != slot.resolve():
            self.set_pointer(PREVIOUS, current)
        self.set_pointer(ACTIVE, slot)

    # --- slots ------------------------------------------------------------------------
    def stage(self, manifest: dict[str, Any], signature: dict[str, str], model: bytes) -> Path:
        """Write the three files into a fresh staging folder, durably; returns it."""
        tmp = Path(tempfile.mkdtemp(prefix="rx-", dir=self.staging))
        tmp.chmod(0o755)
        write_durable(tmp / MODEL, model)
        # The manifest is written exactly as signed-over data would be re-read: the
        # signature covers canonical bytes of the parsed JSON, not these bytes.
        write_durable(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        write_durable(tmp / SIGNATURE, json.dumps(signature, indent=2).encode())
        fsync_dir(tmp)
        return tmp

    def commit(self, staged: Path, slot_name: str) -> Path:
        """Move a staged folder into `bundles/<slot_name>` (atomic rename); returns the slot."""
        if not _SLOT.match(slot_name):
            raise ValueError(f"slot name {slot_name!r} is not a safe folder name")
        slot = self.bundles / slot_name
        if slot.exists():
            if slot.resolve() in self._referenced():
                raise ValueError(f"slot {slot_name} is in use: refusing to replace it")
            shutil.rmtree(slot)
        os.replace(staged, slot)
        fsync_dir(self.bundles)
        fsync_dir(self.staging)
        return slot

    def _referenced(self) -> set[Path]:
        pointers = (self.pointer(ACTIVE), self.pointer(PREVIOUS), self.pointer(SHADOW))
        return {p.resolve() for p in pointers if p}

    def gc(self) -> list[str]:
        """Remove staging leftovers and slots no pointer refers to; returns what went."""
        gone: list[str] = []
        keep = self._referenced()
        for p in sorted(self.staging.iterdir()):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(f"staging/{p.name}")
        for p in sorted(self.bundles.iterdir()):
            if p.resolve() not in keep:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                gone.append(f"bundles/{p.name}")
        for stray in (self.root / f"{n}.new" for n in (ACTIVE, PREVIOUS, SHADOW)):
            if stray.is_symlink() or stray.exists():
                stray.unlink()
                gone.append(stray.name)
        return gone

    # --- small durable state ----------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        """state.json, or {} when absent or unreadable (it only ever narrows what is accepted)."""
        try:
            data = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.root / "state.json.new"
        write_durable(tmp, json.dumps(state, indent=2, sort_keys=True).encode())
        os.replace(tmp, self.state_path)
        fsync_dir(self.root)
