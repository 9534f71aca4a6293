"""Gateway model updates: good releases switch atomically, bad ones are refused with the
right reason and the running model stays. Real bundles (the committed default model),
real Ed25519 signatures, the real LiteRT interpreter, real files."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest

from contracts.bundle import MANIFEST, MODEL, key_id
from contracts.messages import Command
from edge_agent.bundle_store import ACTIVE, PREVIOUS
from edge_agent.model_update import ModelUpdater, Requirements
from tests.support.rollout import DEFAULT, default_parts, make_key, release, trusted_of


@pytest.fixture()
def keys(tmp_path):
    hub, _ = make_key(tmp_path / "hub")
    other, _ = make_key(tmp_path / "other")
    default_pub = DEFAULT.parent / "trusted_keys"
    return hub, other, default_pub


def _updater(tmp_path, hub, default_pub, **kw):
    from contracts.bundle import load_trusted_keys

    trusted = {**load_trusted_keys([default_pub]), **trusted_of(hub)}
    states, activated = [], []
    u = ModelUpdater(
        tmp_path / "bundles",
        trusted,
        gw="gw-test",
        publish_state=states.append,
        on_activate=activated.append,
        **kw,
    )
    return u, states, activated


def test_boot_without_bundles_runs_the_shipped_default(tmp_path, keys):
    hub, _, pub = keys
    u, states, activated = _updater(tmp_path, hub, pub)
    loaded = u.boot()
    assert loaded.source == "default" and loaded.folder == DEFAULT
    assert activated == [loaded] and states == []  # nothing went wrong: nothing to report
    w = np.asarray(loaded.manifest.golden[0].window)
    s = np.asarray(loaded.manifest.golden[0].static)
    assert abs(loaded.model.score(w, s) - loaded.manifest.golden[0].expected) <= 0.02


def test_a_good_release_is_reported_step_by_step_and_swapped_atomically(tmp_path, keys):
    hub, _, pub = keys
    u, states, activated = _updater(tmp_path, hub, pub)
    u.boot()
    before = u.current()
    final = u.handle_release(release(hub, seq=100, version="7"))
    assert [s.state for s in states] == ["received", "verified", "active"]
    assert final.state == "active" and final.active.version == "7"
    cur = u.current()
    assert cur is activated[-1] and cur.manifest.version == "7" and cur.seq == 100
    assert cur.model is not before.model  # a new interpreter, built before the swap
    active = u.store.pointer(ACTIVE)
    assert active == cur.folder and (active / MODEL).read_bytes() == (DEFAULT / MODEL).read_bytes()
    # A second release: the first becomes `previous` (kept for rollback), staging is empty.
    u.handle_release(release(hub, seq=200, version="8"))
    assert u.store.pointer(PREVIOUS) == active
    assert list(u.store.staging.iterdir()) == []
    assert len(list(u.store.bundles.iterdir())) == 2
    # The retained message again (a reconnect): ignored, not reported twice.
    n = len(states)
    assert u.handle_release(release(hub, seq=200, version="8")) is None
    assert len(states) == n


def _truncated(hub):
    blob = default_parts()[1][:5000]
    return release(hub, seq=500, model=blob)  # hash/size re-computed: only LiteRT can tell


def _wrong_shape(m):
    m["inputs"][0]["shape"] = [1, 12, 8]


def _golden_off(m):
    m["golden"][0]["expected"] = min(1.0, m["golden"][0]["expected"] + 0.3)


def _features_swapped(m):
    f = m["preprocessing"]["features"]
    f[0], f[1] = f[1], f[0]


def _longer_window(m):
    m["preprocessing"]["window"]["steps"] = 24


BAD = {
    "bad signature": (
        lambda hub, other: _tamper(release(hub, seq=500)),
        "bad_signature",
    ),
    "unknown key": (lambda hub, other: release(other, seq=500), "unknown_key"),
    "wrong hash": (
        lambda hub, other: release(hub, seq=500, model=_flip(default_parts()[1]), fix_hash=False),
        "wrong_hash",
    ),
    "truncated model, manifest of the whole": (
        lambda hub, other: release(hub, seq=500, model=default_parts()[1][:5000], fix_hash=False),
        "wrong_size",
    ),
    "truncated model, manifest of the truncated": (
        lambda hub, other: _truncated(hub),
        "model_load",
    ),
    "wrong input shape": (
        lambda hub, other: release(hub, seq=500, edit=_wrong_shape),
        "io_mismatch",
    ),
    "golden mismatch": (
        lambda hub, other: release(hub, seq=500, edit=_golden_off),
        "golden_mismatch",
    ),
    "replayed older release": (lambda hub, other: release(hub, seq=50, version="9"), "replayed"),
    "older version, not a rollback": (
        lambda hub, other: release(hub, seq=500, version="5"),
        "older_version",
    ),
    "features in another order": (
        lambda hub, other: release(hub, seq=500, edit=_features_swapped),
        "incompatible",
    ),
    "another window length": (
        lambda hub, other: release(hub, seq=500, edit=_longer_window),
        "incompatible",
    ),
    "no release stamp": (
        lambda hub, other: release(hub, seq=500, edit=lambda m: m.pop("release")),
        "unreleased",
    ),
    "model not base64": (lambda hub, other: _not_b64(release(hub, seq=500)), "bad_encoding"),
}


def _tamper(r):
    r.manifest["threshold"]["value"] = 0.01  # after signing: the signature no longer matches
    return r


def _flip(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _not_b64(r):
    r.model_b64 = "***" + r.model_b64
    return r


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_bundle_is_refused_with_its_reason_and_the_running_model_stays(tmp_path, keys, case):
    hub, other, pub = keys
    u, states, activated = _updater(tmp_path, hub, pub)
    u.boot()
    u.handle_release(release(hub, seq=100, version="6"))
    running, folder = u.current(), u.store.pointer(ACTIVE)
    n_act = len(activated)
    make, reason = BAD[case]
    final_release = make(hub, other)
    final = u.handle_release(final_release)
    assert final is not None and final.state == "refused", final
    assert final.reason.startswith(reason + ":"), final.reason
    assert states[-2].state == "received"
    assert final.active.version == "6"
    assert u.current() is running and u.store.pointer(ACTIVE) == folder
    assert len(activated) == n_act
    assert list(u.store.staging.iterdir()) == []  # nothing half-written left behind
    # The same refused message again (retained, re-delivered): not re-processed.
    assert u.handle_release(final_release) is None
    # And the gateway still takes a good release afterwards.
    assert u.handle_release(release(hub, seq=900, version="7")).state == "active"


def test_a_rollback_release_of_an_older_version_is_accepted(tmp_path, keys):
    hub, _, pub = keys
    u, states, _ = _updater(tmp_path, hub, pub)
    u.boot()
    u.handle_release(release(hub, seq=100, version="7"))
    final = u.handle_release(release(hub, seq=200, version="6", rollback=True))
    assert final.state == "rolled_back" and u.current().manifest.version == "6"


def test_the_same_model_stamped_again_is_adopted_without_a_reload(tmp_path, keys):
    hub, _, pub = keys
    u, states, activated = _updater(tmp_path, hub, pub)
    u.boot()
    u.handle_release(release(hub, seq=100, version="7", channel="canary"))
    model = u.current().model
    final = u.handle_release(release(hub, seq=300, version="7", channel="stable"))
    assert final.state == "active" and u.current().model is model and u.current().seq == 300
    assert u.handle_release(release(hub, seq=200, version="8")).reason.startswith("replayed")


def test_a_bundle_lacking_a_feature_the_gateway_requires_is_refused(tmp_path, keys):
    hub, _, pub = keys
    req = Requirements(("HR",), ("Age",), 3600)
    u, _, _ = _updater(tmp_path, hub, pub, requirements=req)
    u.boot()
    final = u.handle_release(release(hub, seq=100))
    assert final.state == "refused" and "features" in final.reason


def test_requirements_without_a_pinned_window_allow_another_window_length(tmp_path, keys):
    """A gateway set up for another window length takes the bundle's window when its
    requirements leave the length free (steps=None), and refuses it when pinned."""
    import dataclasses

    from contracts.bundle import Manifest

    hub, _, pub = keys
    base = Requirements.of(Manifest.model_validate(default_parts()[0]))
    assert base.steps is not None and base.steps > 2
    free = dataclasses.replace(base, steps=None)
    u, _, _ = _updater(tmp_path / "free", hub, pub, requirements=free)
    u.boot()
    final = u.handle_release(release(hub, seq=100, version="8"))
    assert final.state == "active", final.reason
    pinned = dataclasses.replace(base, steps=base.steps - 1)  # a gateway on another window
    u2, _, _ = _updater(tmp_path / "pinned", hub, pub, requirements=pinned)
    u2.boot()
    final = u2.handle_release(release(hub, seq=100, version="8"))
    assert final.state == "refused" and "window" in final.reason, final


def test_key_rotation_gateways_trusting_old_and_new_accept_either(tmp_path, keys):
    hub, other, pub = keys
    u, _, _ = _updater(tmp_path, hub, pub)
    u.trusted.update(trusted_of(other))  # the new key shipped next to the old one
    u.boot()
    old_id, new_id = key_id(hub.public_key()), key_id(other.public_key())
    assert old_id != new_id
    assert u.handle_release(release(hub, seq=100, version="7")).state == "active"
    assert u.current().key_id == old_id
    assert u.handle_release(release(other, seq=200, version="8")).state == "active"
    assert u.current().key_id == new_id and u.current().manifest.version == "8"


def test_boot_falls_back_to_previous_when_active_is_damaged(tmp_path, keys):
    hub, _, pub = keys
    u, _, _ = _updater(tmp_path, hub, pub)
    u.boot()
    u.handle_release(release(hub, seq=100, version="7"))
    u.handle_release(release(hub, seq=200, version="8"))
    active = u.store.pointer(ACTIVE)
    with open(active / MODEL, "r+b") as fh:  # a sector lost on the gateway's disk
        fh.truncate(1000)
    u2, states, _ = _updater(tmp_path, hub, pub)
    loaded = u2.boot()
    assert loaded.source == "previous" and loaded.manifest.version == "7"
    assert states[-1].state == "rolled_back" and "wrong_size" in states[-1].reason
    assert u2.store.pointer(ACTIVE) == loaded.folder
    # Both broken: the shipped default.
    (loaded.folder / MANIFEST).write_text("{not json")
    u3, states, _ = _updater(tmp_path, hub, pub)
    assert u3.boot().source == "default"
    # Replay protection survives the restart: release 200 was accepted before.
    assert u3.handle_release(release(hub, seq=150, version="9")).reason.startswith("replayed")


def test_join_channel_is_remembered_across_restarts(tmp_path, keys):
    hub, _, pub = keys
    u, _, _ = _updater(tmp_path, hub, pub)
    assert u.handle_command(Command(gw="hub", command="join_channel", channel="canary")) == "canary"
    u2, _, _ = _updater(tmp_path, hub, pub)
    assert u2.channel == "canary"
    with pytest.raises(ValueError):
        u.handle_command(Command(gw="hub", command="join_channel", channel="a/b"))


def test_edge_module_imports_no_tensorflow_pandas_or_hub():
    import subprocess
    import sys

    code = (
        "import sys, edge_agent.model_update, edge_agent.bundle_store;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','pandas','cloud_hub')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_model_b64_roundtrip_is_what_the_gateway_stores(tmp_path, keys):
    hub, _, pub = keys
    u, _, _ = _updater(tmp_path, hub, pub)
    u.boot()
    r = release(hub, seq=100)
    u.handle_release(r)
    assert (u.store.pointer(ACTIVE) / MODEL).read_bytes() == base64.b64decode(r.model_b64)
