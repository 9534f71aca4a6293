"""Durability you can show: a power cut (not a crash) loses nothing the gateway called
stored, and the model swap fsyncs in the order that makes it atomic.

A SIGKILL keeps the page cache, so it never tests an fsync. Here the gateway's outbox
runs under tests/support/powercut.c (LD_PRELOAD): for the files of its store folder,
only what was fsynced survives the kill, exactly as after a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.store import Store
from tests.support import powercut
from tests.support.broker import Subscriber, needs_mosquitto
from tests.support.edge import edge_settings, make_publisher
from tests.support.net import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 8


def _stored(out: Path) -> list[str]:
    """The ids the child reported stored (a half-written last line is not a report)."""
    lines = out.read_text().split("\n")[:-1]
    return [line.split(" ", 1)[1] for line in lines if line.startswith("stored ")]


def _run_and_cut(args: list[str], env: dict[str, str], out: Path, after: float) -> None:
    """Run the child until it has stored 20 messages, `after` seconds more, SIGKILL it."""
    with open(out, "wb") as fh:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.powercut", *args],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.PIPE,
        )  # fmt: skip
    assert child.stderr is not None
    try:
        wait_until(
            lambda: len(_stored(out)) >= 20 or child.poll() is not None,
            30,
            "the child to store its first messages",
        )
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        time.sleep(after)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()


def _cut_rounds(tmp_path: Path, broker_port: int, synchronous: str) -> tuple[set, set, dict]:
    """ROUNDS runs of the outbox under the shim, each power-cut at a random instant
    (every other one while the broker is unreachable, so its outbox holds everything),
    then a normal boot that sends the outbox. Returns (stored, received, stats)."""
    lib = powercut.build(tmp_path)
    watched = tmp_path / "store"
    shadow = tmp_path / "shadow"
    watched.mkdir()
    shadow.mkdir()
    db = watched / "gw.sqlite"
    sub = Subscriber(broker_port, "vigil/v1/gw/gw-test/bed/+/vitals")
    rng = random.Random(20)
    stored: set[str] = set()
    stats: dict = {"rounds": [], "lost_bytes": []}
    try:
        for r in range(ROUNDS):
            outage = r % 2 == 1
            port = free_port() if outage else broker_port
            out = tmp_path / f"round{r}.out"
            _run_and_cut(
                [str(db), str(port), f"r{r}", synchronous],
                powercut.shim_env(lib, watched, shadow),
                out,
                rng.uniform(0.05, 0.6),
            )
            mine = _stored(out)
            stored.update(mine)
            stats["rounds"].append((outage, len(mine)))
            stats["lost_bytes"].append(powercut.power_cut(watched, shadow))
            if db.exists():  # what the cut left is a sound database (or nothing yet)
                with sqlite3.connect(db) as check:
                    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                check.close()
            powercut.resync(watched, shadow)
        # Boot again, no shim, broker reachable: the outbox goes out.
        s = edge_settings(watched, port=broker_port, store=db.name)
        store = Store(db)
        pub, _ = make_publisher(s, store)
        try:
            assert pub.wait_idle(60), f"{store.outbox_size()} messages never acknowledged"
        finally:
            pub.stop()
            store.close()
        # Everything acknowledged has reached the subscriber once its count stops growing.
        last = -1
        while True:
            with sub.lock:
                n = len(sub.messages)
            if n == last:
                break
            last = n
            time.sleep(0.5)
        with sub.lock:
            received = {json.loads(p)["id"] for _, p, _ in sub.messages}
    finally:
        sub.close()
    return stored, received, stats


@needs_mosquitto
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_power_cut_at_random_instants_loses_nothing_the_outbox_called_stored(broker, tmp_path):
    """8 power cuts (4 while the broker is away) with synchronous=FULL: every message
    `publish` returned a row id for reaches the broker after the next boot.

    With synchronous=NORMAL this very harness loses messages (next test). Measured
    (3 runs): FULL lost 0 of 5,855 / 9,389 stored; NORMAL lost 2,390 of 42,552 and
    1,452 of 55,293 (the commits after its last checkpoint)."""
    stored, received, stats = _cut_rounds(tmp_path, broker.port, "FULL")
    assert sum(n for outage, n in stats["rounds"] if outage) > 0
    missing = stored - received
    assert not missing, (
        f"{len(missing)} of {len(stored)} stored messages lost at a power cut, e.g. "
        f"{sorted(missing)[:5]}; rounds {stats['rounds']}"
    )
    print(f"FULL: {len(stored)} stored, 0 lost; rounds {stats['rounds']}")


@needs_mosquitto
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_harness_catches_the_loss_with_synchronous_normal(broker, tmp_path):
    """The same power cuts with synchronous=NORMAL (WAL synced only at checkpoints):
    messages reported stored are lost, so the test above can fail."""
    stored, received, stats = _cut_rounds(tmp_path, broker.port, "NORMAL")
    missing = stored - received
    assert missing, f"NORMAL lost nothing: the harness cuts no unsynced write {stats}"
    print(f"NORMAL: {len(stored)} stored, {len(missing)} lost; rounds {stats['rounds']}")


# --- the model swap's fsync order ------------------------------------------------------
def _record_fs_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record fsync (with the path of the descriptor), replace/rename and symlink calls."""
    calls: list[tuple[str, ...]] = []
    real_fsync, real_replace, real_rename, real_symlink = (
        os.fsync, os.replace, os.rename, os.symlink,
    )  # fmt: skip

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(("fsync_dir" if os.path.isdir(path) else "fsync", path))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(("rename", str(src), str(dst)))
        real_replace(src, dst)

    def rename(src: str | Path, dst: str | Path) -> None:
        calls.append(("rename", str(src), str(dst)))
        real_rename(src, dst)

    def symlink(target: str, link: str | Path) -> None:
        calls.append(("symlink", str(target), str(link)))
        real_symlink(target, link)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "symlink", symlink)
    return calls


def test_activation_fsyncs_every_file_before_its_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real activation (release 2 over release 1), every fsync/rename/symlink recorded:
    - whatever a rename moves (a staged bundle folder with its three files, state.json)
      was fsynced before the rename, the folder itself too;
    - after every rename, the folder it landed in is fsynced before the next rename;
    - the slot is in `bundles/` before `previous` moves, `previous` before `active`,
      `active` before state.json; the previous bundle stays whole and pointed at.
    Fails when any one fsync of bundle_store.py is removed (tried: write_durable's,
    stage's fsync_dir(tmp), commit's fsync_dir(bundles), set_pointer's fsync_dir(root))."""
    from contracts.bundle import MANIFEST, MODEL, SIGNATURE, load_trusted_keys
    from edge_agent.bundle_store import ACTIVE, PREVIOUS
    from edge_agent.model_update import ModelUpdater
    from tests.support.rollout import DEFAULT, make_key, release, trusted_of

    hub, _ = make_key(tmp_path / "hub")
    trusted = {**load_trusted_keys([DEFAULT.parent / "trusted_keys"]), **trusted_of(hub)}
    u = ModelUpdater(tmp_path / "gw", trusted, gw="gw-order")
    u.boot()
    u.handle_release(release(hub, seq=1, version="11"))
    old = u.store.pointer(ACTIVE)
    assert old is not None
    calls = _record_fs_calls(monkeypatch)
    u.handle_release(release(hub, seq=2, version="12"))
    monkeypatch.undo()
    new = u.store.pointer(ACTIVE)
    assert new is not None and new != old
    renames = [i for i, c in enumerate(calls) if c[0] == "rename"]
    fsynced_before = lambda i: {c[1] for c in calls[:i] if c[0].startswith("fsync")}  # noqa: E731
    for n, i in enumerate(renames):
        _, src, dst = calls[i]
        src = os.path.realpath(src) if not os.path.islink(src) else src
        done = fsynced_before(i)
        if os.path.isdir(dst) and not os.path.islink(dst):  # a bundle folder moved
            for name in (MODEL, MANIFEST, SIGNATURE):
                assert f"{src}/{name}" in done, f"{name} not fsynced before {calls[i]}"
            assert src in done, f"the staged folder not fsynced before {calls[i]}"
        elif not os.path.islink(dst):  # a file (state.json)
            assert src in done, f"{src} not fsynced before its rename"
        else:  # a pointer: its symlink was created first
            link = [c for c in calls[:i] if c[0] == "symlink" and c[2] == src]
            assert link, f"{calls[i]} renames no symlink created before it"
        folder = os.path.realpath(os.path.dirname(dst))
        end = renames[n + 1] if n + 1 < len(renames) else len(calls)
        after = [c for c in calls[i + 1 : end] if c[0] == "fsync_dir"]
        assert ("fsync_dir", folder) in after, (
            f"{folder} not fsynced after {calls[i]} (before the next rename)"
        )
    targets = [os.path.basename(calls[i][2]) for i in renames]
    slot = new.name
    assert targets == [slot, PREVIOUS, ACTIVE, "state.json"], targets
    assert os.path.realpath(u.store.pointer(PREVIOUS) or "") == os.path.realpath(old)
    for name in (MODEL, MANIFEST, SIGNATURE):
        assert (old / name).is_file()


# --- a real gateway, a real hub -----------------------------------------------------------
def _committed_risk_ids(db: Path) -> set[str]:
    """The risk events the running gateway has committed to its outbox (sent or not):
    what it calls stored, read by a second connection that sees committed data only."""
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            rows = c.execute(
                "SELECT payload FROM outbox WHERE topic LIKE '%/risk' UNION ALL "
                "SELECT payload FROM outbox_sent WHERE topic LIKE '%/risk'"
            ).fetchall()
        except sqlite3.OperationalError as e:  # the gateway is still creating its tables
            if "no such table" not in str(e):
                raise
            rows = []
    c.close()
    return {json.loads(p)["event_id"] for (p,) in rows}


# `vigil edge run` with the store's synchronous setting given first (the gateway under
# test is the installed CLI; only this one module constant is set before it runs).
_GATEWAY = (
    "import runpy, sys; import edge_agent.store as s; s.SYNCHRONOUS = sys.argv.pop(1); "
    "runpy.run_module('vigil_cli.main', run_name='__main__')"
)


@needs_mosquitto
@pytest.mark.slow
@pytest.mark.timeout(240)
# FULL only: with 15-40 events per run a NORMAL store does not lose one every time, so
# the harness's power to fail is shown by the outbox test's NORMAL run above (thousands
# of messages, 8 cuts: 1,452-2,390 lost in every run).
@pytest.mark.parametrize("synchronous", ["FULL"])
def test_a_real_gateway_loses_no_committed_event_at_a_power_cut(
    tmp_path: Path, synchronous: str
) -> None:
    """`vigil edge run` (3 simulated beds, fast clock) under the shim, a real hub: 4
    power cuts at random instants, every other one while the broker is cut off (the
    outbox holds a backlog). Just before each cut the risk events committed to the
    outbox are read; after the cuts and a normal boot the hub holds every one.
    With synchronous=NORMAL the same run loses committed events (asserted, so this
    test can fail)."""
    from tests.support.chaos import Rig
    from vigil_cli.procs import kill, spawn

    lib = powercut.build(tmp_path)
    watched, shadow = tmp_path / "gwstore", tmp_path / "gwshadow"
    watched.mkdir()
    shadow.mkdir()
    rig = Rig(tmp_path / "rig")
    rig.gw_db = watched / "gateway.sqlite"
    rng = random.Random(2020)
    committed: set[str] = set()
    rounds = []
    try:
        rig.start_hub()
        for r in range(4):
            conf = rig.write_gateway_config(via_proxy=True)
            gw = spawn(
                [sys.executable, "-c", _GATEWAY, synchronous,
                 "edge", "run", "--headless", "-c", str(conf)],
                rig.folder / "gateway.log",
                env={k: v for k, v in powercut.shim_env(lib, watched, shadow).items()
                     if k.startswith(("LD_", "POWERCUT_"))},
            )  # fmt: skip
            try:
                wait_until(
                    lambda: len(_committed_risk_ids(rig.gw_db)) >= 3,
                    60,
                    "the gateway to commit risk events",
                )
                if r % 2 == 1:
                    assert rig.proxy is not None
                    rig.proxy.cut()
                time.sleep(rng.uniform(1.0, 3.0))
                now = _committed_risk_ids(rig.gw_db)
            finally:
                kill(gw)
            if rig.proxy is not None:
                rig.proxy.restore()
            committed |= now
            rounds.append(len(now))
            powercut.power_cut(watched, shadow)
            with sqlite3.connect(rig.gw_db) as check:
                assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            check.close()
            powercut.resync(watched, shadow)
        rig.start_gateway(via_proxy=True)  # no shim: the boot after the last cut
        hub_ids: set[str] = set()

        def hub_has_all() -> bool:
            c = sqlite3.connect(rig.hub_db)
            try:
                hub_ids.update(r for (r,) in c.execute("SELECT event_id FROM risk_events"))
            finally:
                c.close()
            return committed <= hub_ids

        def drained() -> bool:  # the gateway's outbox sent: the hub has had its chance
            c = sqlite3.connect(rig.gw_db)
            try:
                return c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
            except sqlite3.OperationalError:  # booting: its tables not created yet
                return False
            finally:
                c.close()

        with contextlib.suppress(AssertionError):  # the assertion below says what is missing
            wait_until(lambda: hub_has_all() or drained(), 60, "the outbox to drain")
            wait_until(hub_has_all, 3, "the hub to store what was sent")
        missing = committed - hub_ids
        print(f"real gateway, {synchronous}: {len(committed)} committed risk events, "
              f"{len(missing)} lost; committed by each cut {rounds}")  # fmt: skip
        if synchronous == "NORMAL":
            assert missing, "NORMAL lost nothing: the cuts dropped no unsynced write"
            return
        assert not missing, (
            f"{len(missing)} of {len(committed)} committed risk events lost at a power cut "
            f"(committed per round {rounds})"
        )
    finally:
        rig.close()
