"""The shared ICU data the tests read, and the one rule when it is absent.

Tests that read the real data (`../shared/data`, or `$VIGIL_DATA_DIR`) get its paths
from here: when an archive is missing (a checkout without the shared folder, e.g. a
hosted CI runner) the test is SKIPPED with the path it looked for; it never errors and
never falls back to other data silently. `needs_physionet` / `needs_mimic` mark a whole
test or module; `physionet()` / `mimic()` skip from inside a fixture or helper.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.paths import mimic_demo_archive, physionet_archive


def _reason(path: Path) -> str:
    return f"shared data absent: {path} (set VIGIL_DATA_DIR to the folder that holds it)"


def physionet() -> Path:
    """The PhysioNet 2019 set A archive, or skip the calling test."""
    path = physionet_archive()
    if not path.exists():
        pytest.skip(_reason(path))
    return path


def mimic() -> Path:
    """The MIMIC-III demo folder, or skip the calling test."""
    path = mimic_demo_archive()
    if not path.exists():
        pytest.skip(_reason(path))
    return path


needs_physionet = pytest.mark.skipif(
    not physionet_archive().exists(), reason=_reason(physionet_archive())
)
needs_mimic = pytest.mark.skipif(
    not mimic_demo_archive().exists(), reason=_reason(mimic_demo_archive())
)
