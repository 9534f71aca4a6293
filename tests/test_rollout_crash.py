"""A crash during activation: a child process activates releases in a loop and is
SIGKILLed at random instants, 100 times; after every kill `boot()` must find a whole,
verified bundle (the one before, the one being installed, or the shipped default).

A SIGKILL keeps the page cache, so this is a crash, not a power cut: that the swap
fsyncs every file before its rename and the folder after (what a power cut needs) is
tests/test_durability.py.

The child is forked from the test process (already holding LiteRT, cryptography and
the releases in memory) so that 100 real processes cost seconds, not a minute of
imports; what it does between fork and kill is the real activation code on real files.
"""

from __future__ import annotations

import os
import random
import signal
import time

from contracts.bundle import load_trusted_keys
from edge_agent.bundle_store import ACTIVE
from edge_agent.model_update import ModelUpdater
from tests.support.rollout import DEFAULT, make_key, release, trusted_of

KILLS = 100


def _child(root, trusted, releases) -> None:
    """Activate release after release until killed (never returns normally)."""
    try:
        u = ModelUpdater(root, trusted, gw="gw-kill")
        u.boot()
        i = 0
        while True:
            r = releases[i % len(releases)]
            seq = u.highest_seq() + 1
            r.manifest["release"]["seq"] = seq
            r.manifest["version"] = str(1000 + seq)  # always newer: never refused as older
            # Re-sign with the new seq: the releases carry their key in a side field.
            from contracts.bundle import sign_manifest

            r.signature = sign_manifest(r.manifest, r._key)  # type: ignore[attr-defined]
            u.handle_release(r)
            i += 1
    finally:
        os._exit(3)


def test_sigkill_at_random_points_of_activation_always_boots_a_verified_bundle(tmp_path):
    hub, _ = make_key(tmp_path / "hub")
    trusted = {**load_trusted_keys([DEFAULT.parent / "trusted_keys"]), **trusted_of(hub)}
    releases = []
    for version in ("11", "12", "13"):
        r = release(hub, seq=1, version=version)
        object.__setattr__(r, "_key", hub)
        releases.append(r)
    root = tmp_path / "gw"
    rng = random.Random(2026)
    sources: dict[str, int] = {}
    versions: list[str] = []
    t0 = time.monotonic()
    # One activation takes a few tens of ms here; kill anywhere within a few of them.
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:
            _child(root, trusted, releases)
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        u = ModelUpdater(root, trusted, gw="gw-check")
        loaded = u.boot()  # raises if no verified bundle is left
        sources[loaded.source] = sources.get(loaded.source, 0) + 1
        versions.append(loaded.manifest.version)
        if loaded.source != "default":
            assert u.store.pointer(ACTIVE) == loaded.folder
        # What boot left: no staging debris, at most active + previous slots.
        assert list(u.store.staging.iterdir()) == []
        assert len(list(u.store.bundles.iterdir())) <= 2
    elapsed = time.monotonic() - t0
    print(f"{KILLS} kills in {elapsed:.1f} s; booted from {sources}; versions {versions}")
    # The kills really landed during activations: many different releases got installed.
    assert len(set(versions)) >= 20
    assert elapsed < 60
