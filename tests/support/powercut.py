"""A power cut for one process's files: the LD_PRELOAD shim `powercut.c` keeps, beside
every file of one folder, what was fsynced; `power_cut` then leaves the folder as a
power cut would (unsynced writes gone, never-synced files gone).

Also the child run by tests/test_durability.py (`python -m tests.support.powercut`): the
gateway's outbox path (Store + Publisher, a real broker), printing `stored <id>` only
after `Publisher.publish` returned a row id, the gateway's "stored".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("powercut.c")


def build(folder: Path) -> Path:
    """Compile the shim into `folder`; skips the test (with the reason) without gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the power-cut shim (tests/support/powercut.c) needs it")
    out = folder / "powercut.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl", "-lpthread"],
        check=True,
        capture_output=True,
    )
    return out


def shim_env(lib: Path, watched: Path, shadow: Path) -> dict[str, str]:
    """Environment for a child whose files in `watched` are cut at power loss."""
    return dict(
        os.environ,
        LD_PRELOAD=str(lib),
        POWERCUT_DIR=str(watched.resolve()),
        POWERCUT_SHADOW=str(shadow.resolve()),
    )


def power_cut(watched: Path, shadow: Path) -> dict[str, int]:
    """After the child was killed: every file of `watched` becomes its durable copy,
    or disappears when it was never fsynced; `*-shm` goes. Returns bytes lost per file.
    Call `resync` before the next child runs under the shim."""
    lost: dict[str, int] = {}
    for f in sorted(watched.iterdir()):
        if not f.is_file():
            continue
        durable = shadow / f.name
        size = f.stat().st_size
        if f.name.endswith("-shm"):
            f.unlink()
        elif durable.exists():
            kept = durable.read_bytes()
            if kept != f.read_bytes():
                lost[f.name] = size - len(kept) or -1
            f.write_bytes(kept)
        else:
            lost[f.name] = size
            f.unlink()
    return lost


def resync(watched: Path, shadow: Path) -> None:
    """The shadow becomes a copy of `watched`: all of it is on disk now (a boot)."""
    shutil.rmtree(shadow)
    shadow.mkdir()
    for f in watched.iterdir():
        if f.is_file():
            shutil.copyfile(f, shadow / f.name)


def _child(store_path: str, port: int, tag: str, synchronous: str) -> None:
    """Publish `<tag>-<n>` messages as fast as the outbox takes them, forever."""
    from contracts import topics
    from edge_agent import store as store_mod
    from edge_agent.store import Store
    from tests.support.edge import edge_settings, make_publisher

    store_mod.SYNCHRONOUS = synchronous
    path = Path(store_path)
    s = edge_settings(
        path.parent,
        port=port,
        store=path.name,
        mqtt={"reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.2},
    )
    store = Store(path)
    pub, _ = make_publisher(s, store)
    topic = topics.vitals(s.gateway_id, "b1")
    n = 0
    while True:
        msg_id = f"{tag}-{n}"
        if pub.publish(topic, f'{{"id": "{msg_id}"}}'.encode()) > 0:
            sys.stdout.write(f"stored {msg_id}\n")
            sys.stdout.flush()
        n += 1


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
