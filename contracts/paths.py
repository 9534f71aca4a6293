"""Where things are: the project root, shared data, the committed default bundle."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Shared ICU data: $VIGIL_DATA_DIR, else ../shared/data beside the project."""
    env = os.environ.get("VIGIL_DATA_DIR")
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "data")


def physionet_archive() -> Path:
    return data_dir() / "physionet2019" / "training_setA.tar.gz"


def mimic_demo_archive() -> Path:
    return data_dir() / "mimic3demo" / "mimic3demo.tar.gz"


def default_bundle_dir() -> Path:
    """The trained default bundle committed in the repository."""
    return PROJECT_ROOT / "models" / "default"


def default_trusted_keys_dir() -> Path:
    """Public keys shipped with the repository (the default bundle's signer)."""
    return PROJECT_ROOT / "models" / "trusted_keys"


def work_dir() -> Path:
    """Git-ignored working folder for caches and local stores: $VIGIL_HOME or ./data."""
    env = os.environ.get("VIGIL_HOME")
    return Path(env) if env else (PROJECT_ROOT / "data")
