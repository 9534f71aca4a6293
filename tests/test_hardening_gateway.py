"""Issue 18, items 2, 4, 8 and 12: the gateway's command, release and bundle inputs.

- A poison corpus (200 KB of nesting, wrong types, NaN, 17 MB, non-UTF-8, wrong schema,
  a release with a bad signature, seq 2^62, issued in 9999) published on real Mosquitto
  to a running real Gateway's cmd and models topics, retained and not: the gateway keeps
  publishing (a reading fed after the corpus reaches a subscriber), the refusals are
  counted once per delivery, every thread it owns is alive, no payload reaches the log;
  a retained poison release does not stall it at the next start either.
- Bundle files corrupted in every JSON shape in `active` (and `previous`): boot falls
  back to `previous`, then to the shipped default, and scores; `vigil convert verify`
  and the gateway refuse the same 20 MB model.
- A release from the future is refused; a gateway that accepted one earlier recovers.
- The supervisor restarts a thread that dies (health loop, outbox sender, paho's
  network thread) and reports it; one that keeps dying is given up and shown as a fault.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.rollout.release import next_seq
from contracts import topics
from contracts.bundle import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_MODEL_BYTES,
    MODEL,
    SIGNATURE,
    BundleError,
    key_id,
    read_bundle,
    sha256_hex,
    sign_manifest,
    verify_bundle,
    verify_parts,
)
from contracts.messages import Command, Status
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from edge_agent.config import load_config
from edge_agent.gateway import Gateway
from edge_agent.model_hook import attach_updater
from edge_agent.model_update import ModelUpdater, load_verified
from edge_agent.state import GatewayState
from edge_agent.supervisor import Supervisor
from edge_agent.ui.view import GatewayView
from edge_agent.ui.widgets.status_line import status_text
from tests.support.broker import Subscriber, needs_mosquitto
from tests.support.edge import valid_frame
from tests.support.rollout import default_parts, make_key, release
from tests.support.waiting import wait_until

GW = "ward-poison"
BED = "bed-1"
SECRET = "PATIENT-ID-4711-DOE"  # inside payloads: must never reach the log


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    trusted, pub = make_key(d)
    untrusted, _ = make_key(d, "stranger")
    return trusted, untrusted, pub


# --- the running gateway on real Mosquitto ------------------------------------------------
def gateway_toml(tmp: Path, port: int, pub: Path) -> Path:
    toml = tmp / "gw.toml"
    toml.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{tmp / "gw" / "gw.sqlite"}"\n'
        f'bundle_dirs = ["{default_bundle_dir()}"]\n'
        f'trusted_keys = ["{default_trusted_keys_dir()}", "{pub}"]\n'
        f'[[beds]]\nid = "{BED}"\nsource = {{ type = "serial", port = "/dev/null-not-a-port" }}\n'
        f"[mqtt]\nport = {port}\nstatus_interval_seconds = 1\n"
    )
    return toml


def start_gateway(toml: Path) -> Gateway:
    gw = Gateway(load_config(toml))
    attach_updater(gw)
    gw.start(sources=False)
    # subscribed (SUBACK), not only connected: what is sent to its cmd topic arrives
    assert wait_until(gw.publisher.subscribed.is_set, timeout=10)
    return gw


def feed_hour(gw: Gateway, hour: int) -> None:
    """A reading in hour `hour` of the test stay: closes the step of the hour before."""
    gw.process_bytes(BED, valid_frame(hour * 3600 + 1, bed=BED))


class Poisoner:
    """A raw MQTT client that publishes anything, QoS 1, waiting for the broker's ack."""

    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(30)
        assert info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _envelope(schema: str, **fields: object) -> bytes:
    return json.dumps({"schema": schema, "gw": "hub", **fields}).encode()


def corpus(trusted, untrusted) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(not releases, releases that parse): the poison for the cmd and models topics."""
    deep_manifest = (
        b'{"schema":"vigil.bundle/1","gw":"hub","channel":"stable","signature":{},'
        b'"model_b64":"","manifest":{"x":' + b"[" * 3000 + b"]" * 3000 + b"}}"
    )
    junk = [
        ("nested_list_200KB", b"[" * 100_000 + b"]" * 100_000),
        ("nested_object", b'{"a":' * 40_000 + b"1" + b"}" * 40_000),
        ("null", b"null"),
        ("list", b"[1, 2]"),
        ("string", b'"resend"'),
        ("number", b"4611686018427387904"),
        ("empty", b""),
        ("non_utf8", b"\xff\xfe\xfd" * 100),
        ("huge_17MB", b'{"a":"' + b"x" * (17 * 1024 * 1024) + b'"}'),
        ("nan", b'{"schema":"vigil.cmd/1","gw":"hub","command":"resend","since":NaN}'),
        ("wrong_types", _envelope("vigil.cmd/1", command=["resend"], since=5, note=SECRET)),
        ("unknown_schema", _envelope("vigil.nope/9", note=SECRET)),
        ("status_on_gateway_input", Status(gw="x", state="online").to_json()),
        (
            "release_wrong_types",
            _envelope("vigil.bundle/1", channel="stable", manifest=[], signature="x", model_b64=5),
        ),
        ("release_deep_manifest", deep_manifest),
    ]
    seq = now_ms()

    def issued_9999(m: dict) -> None:
        m["release"]["issued_at"] = "9999-12-31T00:00:00.000Z"

    def nan_threshold(m: dict) -> None:
        m["threshold"]["value"] = float("nan")

    def stamp_as_text(m: dict) -> None:
        m["release"]["seq"] = "99999999999999999999"

    releases = [
        ("release_bad_signature", release(untrusted, seq=seq, version="8").to_json()),
        ("release_seq_2^62", release(trusted, seq=2**62, version="9").to_json()),
        (
            "release_issued_9999",
            release(trusted, seq=seq, version="10", edit=issued_9999).to_json(),
        ),
        (
            "release_nan_threshold",
            release(trusted, seq=seq, version="11", edit=nan_threshold).to_json(),
        ),
        (
            "release_seq_as_text",
            release(trusted, seq=seq, version="12", edit=stamp_as_text).to_json(),
        ),
    ]
    return junk, releases


@needs_mosquitto
def test_a_poison_corpus_on_cmd_and_models_never_stops_the_gateway_publishing(
    broker, tmp_path, keys, caplog
):
    trusted, untrusted, pub = keys
    caplog.set_level(logging.INFO)
    toml = gateway_toml(tmp_path, broker.port, pub)
    sub = Subscriber(broker.port, topics.vitals(GW, BED))
    gw = start_gateway(toml)
    poison = Poisoner(broker.port)
    try:
        updater = gw.updater  # type: ignore[attr-defined]
        feed_hour(gw, 0)
        feed_hour(gw, 1)
        assert len(sub.wait_for(1, 10, "/vitals")) == 1
        junk, releases = corpus(trusted, untrusted)
        t0 = time.monotonic()
        for _, payload in junk + releases:
            poison.send(topics.cmd(GW), payload)
        for _, payload in junk + releases:
            poison.send(topics.models("stable"), payload)
        # Last, a retained poison release: it stays on the broker for the next start.
        poison.send(topics.models("stable"), junk[0][1], retain=True)

        # Every delivery refused and counted once: all of them on cmd (releases there
        # are a topic mismatch), on models the junk by the MQTT client and the
        # releases by the updater (its checks after the message contract's).
        n_cmd, n_models = len(junk) + len(releases), len(junk) + 1 + len(releases)
        total = n_cmd + n_models

        def refused() -> int:
            return gw.publisher.counters["invalid"] + updater.counters["refused"]

        assert wait_until(lambda: refused() == total, timeout=30), (
            gw.publisher.counters,
            updater.counters,
        )
        elapsed = time.monotonic() - t0
        assert gw.publisher.counters["received"] == total
        assert updater.counters["from_the_future"] == 2  # seq 2^62, issued in 9999
        assert updater.counters["errors"] == 0  # every refusal had its reason
        assert gw.publisher.counters["handler_errors"] == 0
        assert gw.publisher.refusals.get("oversized") == 2, gw.publisher.refusals

        # It keeps publishing: a reading fed after the corpus reaches the subscriber,
        # the outbox drains (acks flow), the model is still the default one.
        feed_hour(gw, 2)
        assert len(sub.wait_for(2, 10, "/vitals")) == 2
        assert gw.publisher.wait_idle(10)
        assert gw.model is not None and gw.model.version == "2"
        assert updater.highest_seq() < now_ms() + 1000  # 2^62 never accepted
        # Every thread it owns is alive; none had to be restarted.
        threads = gw.supervisor.threads()
        assert {"mqtt-network", "vigil-outbox", "vigil-status", "vigil-health"} <= set(threads)
        assert "vigil-model-update" in threads and all(threads.values()), threads
        counters = gw.state.snapshot().counters
        assert counters.get("thread_restarts", 0) == 0 and counters["mqtt_invalid"] >= n_cmd
        # One line per refusal, and no payload content in the log.
        assert SECRET not in caplog.text and "[[[[" not in caplog.text
        assert "xxxxxxxx" not in caplog.text
        print(f"corpus of {n_cmd + n_models} deliveries refused in {elapsed:.2f} s")
    finally:
        poison.close()
        gw.stop(2.0)

    # The next start: the retained poison arrives again, is refused once, and the
    # gateway publishes as before.
    gw = start_gateway(toml)
    try:
        assert wait_until(lambda: gw.publisher.counters["invalid"] == 1, timeout=10)
        feed_hour(gw, 3)
        feed_hour(gw, 4)
        assert len(sub.wait_for(3, 10, "/vitals")) >= 3
        assert gw.publisher.wait_idle(10)
        assert all(gw.supervisor.threads().values())
    finally:
        gw.stop(2.0)
        sub.close()


@needs_mosquitto
def test_a_consumer_bug_is_counted_and_the_network_thread_keeps_acking(
    broker, tmp_path, keys, monkeypatch
):
    """What the contract does not catch: the parser raising RecursionError, a command
    handler raising, the inbox write failing. Each is counted; MQTT goes on."""
    import edge_agent.publisher as publisher_mod

    toml = gateway_toml(tmp_path, broker.port, keys[2])
    sub = Subscriber(broker.port, topics.vitals(GW, BED))
    gw = start_gateway(toml)
    poison = Poisoner(broker.port)
    real_parse = publisher_mod.parse_message

    def parse(payload: bytes, **kw: object) -> object:
        if payload == b"BUG":
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(payload, **kw)

    def handler_bug(cmd: object) -> None:
        raise KeyError("handler bug")

    try:
        monkeypatch.setattr(publisher_mod, "parse_message", parse)
        poison.send(topics.cmd(GW), b"BUG")
        poison.send(topics.models("stable"), b"BUG", retain=True)
        assert wait_until(lambda: gw.publisher.counters["invalid"] == 2, timeout=10)
        assert gw.publisher.refusals == {"malformed": 2}

        gw.publisher.on_command = handler_bug
        poison.send(topics.cmd(GW), Command(gw="hub", command="report_status").to_json())
        assert wait_until(lambda: gw.publisher.counters["handler_errors"] == 1, timeout=10)

        def full_disk(*a: object, **k: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(gw.store, "add_inbox", full_disk)
        poison.send(topics.cmd(GW), b"null")
        assert wait_until(lambda: gw.publisher.counters["inbox_errors"] == 1, timeout=10)
        assert gw.publisher.counters["invalid"] == 3

        feed_hour(gw, 0)
        feed_hour(gw, 1)
        assert len(sub.wait_for(1, 10, "/vitals")) == 1
        assert gw.publisher.wait_idle(10) and gw.publisher.network_alive()
        assert gw.state.snapshot().counters.get("thread_restarts", 0) == 0
    finally:
        gw.stop(2.0)
        poison.send(topics.models("stable"), b"", retain=True)  # clear the retained one
        poison.close()
        sub.close()


# --- bundle files in every JSON shape ------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory, keys):
    """A bundle root with active = v8 (release 200) and previous = v7 (release 100)."""
    trusted, _, pub = keys
    root = tmp_path_factory.mktemp("bundles") / "root"
    up = ModelUpdater(root, [default_trusted_keys_dir(), pub], gw=GW)
    up.boot()
    for seq, version in ((100, "7"), (200, "8")):
        st_ = up.handle_release(release(trusted, seq=seq, version=version))
        assert st_ is not None and st_.state == "active", st_
    return root


def _fresh(installed: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    return root


def _shapes(real: bytes) -> dict[str, bytes]:
    return {
        "null": b"null",
        "list": b'[{"algorithm": "ed25519"}]',
        "string": b'"ed25519"',
        "number": b"1e999",
        "true": b"true",
        "nested_list": b"[" * 50_000 + b"]" * 50_000,
        "nested_object": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        "deep_but_parsable": json.dumps({"a": json.loads("[" * 40 + "]" * 40)}).encode(),
        "wrong_types": json.dumps(
            {"algorithm": 1, "key_id": [], "signature": None, "name": 5, "golden": "x"}
        ).encode(),
        "truncated": real[: len(real) // 2],
        "empty": b"",
        "binary": bytes(range(256)) * 8,
        "huge": b" " * (MAX_MANIFEST_BYTES + 1),
    }


SHAPE_NAMES = list(_shapes(b"{}"))


def _updater(root: Path, pub: Path) -> ModelUpdater:
    return ModelUpdater(root, [default_trusted_keys_dir(), pub], gw=GW)


def _scores(loaded) -> None:
    g = loaded.manifest.golden[0]
    got = loaded.model.score(np.asarray(g.window), np.asarray(g.static))
    assert abs(got - g.expected) <= g.tolerance


@pytest.mark.parametrize("shape", SHAPE_NAMES)
@pytest.mark.parametrize("name", [MANIFEST, SIGNATURE])
def test_a_corrupt_active_bundle_file_falls_back_to_previous(
    installed, tmp_path, keys, name, shape
):
    root = _fresh(installed, tmp_path)
    path = root / "active" / name
    path.write_bytes(_shapes(path.read_bytes())[shape])
    up = _updater(root, keys[2])
    with pytest.raises(BundleError) as e:  # a reason, never TypeError & co.
        verify_bundle(root / "active", up.trusted)
    assert e.value.reason in {"bad_manifest", "bad_signature", "too_large"}, e.value
    if shape != "wrong_types":  # the reader names the file and what is wrong with it
        with pytest.raises(BundleError) as e:
            read_bundle(root / "active")
        assert name in e.value.detail, e.value

    loaded = up.boot()
    assert (loaded.source, loaded.manifest.version) == ("previous", "7")
    assert up.counters["errors"] == 0  # a BundleError with its reason, not a crash
    _scores(loaded)
    # The fallback is durable: the next boot starts from it directly.
    again = _updater(root, keys[2]).boot()
    assert (again.source, again.manifest.version) == ("active", "7")


@pytest.mark.parametrize("shape", ["empty", "binary", "truncated", "huge"])
def test_a_corrupt_model_file_falls_back_to_previous(installed, tmp_path, keys, shape):
    root = _fresh(installed, tmp_path)
    path = root / "active" / MODEL
    real = path.read_bytes()
    path.write_bytes(b"\0" * (MAX_MODEL_BYTES + 1) if shape == "huge" else _shapes(real)[shape])
    loaded = _updater(root, keys[2]).boot()
    assert (loaded.source, loaded.manifest.version) == ("previous", "7")
    _scores(loaded)


@pytest.mark.parametrize("shape", ["null", "list", "nested_list", "truncated", "binary"])
def test_active_and_previous_both_corrupt_boot_the_default(installed, tmp_path, keys, shape):
    root = _fresh(installed, tmp_path)
    for slot, name in (("active", SIGNATURE), ("previous", MANIFEST)):
        path = root / slot / name
        path.write_bytes(_shapes(path.read_bytes())[shape])
    up = _updater(root, keys[2])
    reports = []
    up.publish_state = reports.append
    loaded = up.boot()
    assert (loaded.source, loaded.manifest.version) == ("default", "2")
    _scores(loaded)
    (rolled,) = [r for r in reports if r.state == "rolled_back"]
    assert "active: " in rolled.reason and "previous: " in rolled.reason


def test_a_reader_bug_on_the_active_bundle_still_boots_previous(
    installed, tmp_path, keys, monkeypatch
):
    """The second net: not a BundleError (a bug in a check) is logged, counted, and boot
    goes on to the next bundle."""
    import edge_agent.model_update as mu

    root = _fresh(installed, tmp_path)
    real = mu.read_bundle

    def buggy(folder: Path) -> object:
        if folder.resolve() == (root / "active").resolve():
            raise TypeError("'NoneType' object is not subscriptable")
        return real(folder)

    monkeypatch.setattr(mu, "read_bundle", buggy)
    up = _updater(root, keys[2])
    loaded = up.boot()
    assert (loaded.source, loaded.manifest.version) == ("previous", "7")
    assert up.counters["errors"] == 1


def test_the_real_gateway_boots_past_a_null_signature_file(installed, tmp_path, keys):
    """What `vigil edge run` does at start (Gateway + attach_updater): no traceback, the
    previous bundle scores, the terminal's events say why."""
    toml = gateway_toml(tmp_path, 1, keys[2])
    shutil.copytree(installed, tmp_path / "gw" / "bundles", symlinks=True)
    (tmp_path / "gw" / "bundles" / "active" / SIGNATURE).write_bytes(b"null")
    gw = Gateway(load_config(toml))
    try:
        updater = attach_updater(gw)
        assert updater is not None and gw.model is not None
        assert gw.model.version == "7" and updater.current().source == "previous"
    finally:
        gw.store.close()


FUZZ_KEY = Ed25519PrivateKey.generate()
FUZZ_TRUSTED = {key_id(FUZZ_KEY.public_key()): FUZZ_KEY.public_key()}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    manifest=json_values
    | st.dictionaries(st.sampled_from(["name", "release", "golden"]), json_values),
    signature=json_values
    | st.fixed_dictionaries(
        {"algorithm": json_values, "key_id": json_values, "signature": json_values}
    ),
)
def test_verify_parts_raises_only_bundle_errors_whatever_the_json(manifest, signature):
    with pytest.raises(BundleError) as e:
        verify_parts(manifest, signature, b"model", FUZZ_TRUSTED)
    assert e.value.reason in {"bad_manifest", "bad_signature", "unknown_key"}, e.value
    if isinstance(manifest, dict):  # correctly signed: the schema and shape checks speak
        with pytest.raises(BundleError) as e:
            verify_parts(manifest, sign_manifest(manifest, FUZZ_KEY), b"model", FUZZ_TRUSTED)
        assert e.value.reason == "bad_manifest", e.value


def test_a_correctly_signed_manifest_of_the_wrong_shape_is_bad_manifest(keys):
    trusted, _, _ = keys
    from tests.support.rollout import trusted_of

    for manifest in ({"name": 5}, {"golden": [[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}):
        with pytest.raises(BundleError) as e:
            verify_parts(manifest, sign_manifest(manifest, trusted), b"m", trusted_of(trusted))
        assert e.value.reason == "bad_manifest"


def test_convert_verify_and_the_gateway_refuse_the_same_20_mb_model(tmp_path, keys):
    from typer.testing import CliRunner

    from vigil_cli.main import app

    trusted, _, pub = keys
    manifest, _ = default_parts()
    blob = b"\0" * (20 * 1024 * 1024)
    manifest["sha256"], manifest["size_bytes"] = sha256_hex(blob), len(blob)
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / MODEL).write_bytes(blob)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / SIGNATURE).write_text(json.dumps(sign_manifest(manifest, trusted)))
    r = CliRunner().invoke(app, ["convert", "verify", str(folder), "--trusted", str(pub)])
    assert r.exit_code == 1 and "too_large" in r.output, r.output
    assert "Traceback" not in r.output
    with pytest.raises(BundleError) as e:
        load_verified(folder, _updater(tmp_path / "root", pub).trusted, "release")
    assert e.value.reason == "too_large"


# --- releases from the future ---------------------------------------------------------------
def test_a_release_from_the_future_is_refused_and_the_next_normal_one_accepted(tmp_path, keys):
    trusted, _, pub = keys
    up = _updater(tmp_path / "root", pub)
    up.boot()
    st_ = up.handle_release(release(trusted, seq=2**62, version="7"))
    assert st_.state == "refused" and st_.reason.startswith("from_the_future"), st_
    st_ = up.handle_release(release(trusted, seq=now_ms(), version="7"))
    assert st_.state == "active", st_


def test_a_gateway_that_accepted_seq_2_62_recovers_at_its_next_start(tmp_path, keys):
    """The fleet that saw a bad release before this check: the absurd seq is lowered to
    the gateway's clock, so the hub's next release is accepted and old ones stay replays."""
    trusted, _, pub = keys
    root = tmp_path / "root"
    old = _updater(root, pub)
    old.boot()
    old.seq_ceiling = lambda: 2**63  # type: ignore[method-assign] # the gateway before the fix
    assert old.handle_release(release(trusted, seq=2**62, version="7")).state == "active"
    assert old.highest_seq() == 2**62

    up = _updater(root, pub)
    loaded = up.boot()
    assert loaded.manifest.version == "7" and up.counters["seq_reset"] == 1
    assert up.highest_seq() <= now_ms()
    state = json.loads((root / "state.json").read_text())
    assert state["seq_reset_from"] == 2**62
    assert up.handle_release(release(trusted, seq=500, version="8")).reason.startswith("replayed")
    # The hub's next stamp (its clock, even with 2^62 in its ledger) is accepted.
    seq = next_seq(2**62)
    assert seq <= now_ms() + 1000
    time.sleep(0.01)
    assert up.handle_release(release(trusted, seq=seq + 5, version="8")).state == "active"
    assert next_seq(5) >= now_ms() - 1000 and next_seq(seq + 10**6) == seq + 10**6 + 1


# --- the supervisor -------------------------------------------------------------------------
def _view(counters: dict[str, int]) -> GatewayView:
    return GatewayView(
        gw=GW,
        broker_connected=True,
        outbox=0,
        serial_link="ok",
        model_name="m",
        model_version="1",
        now=datetime.now(UTC),
        counters=counters,
    )


@needs_mosquitto
def test_the_supervisor_restarts_dead_threads_and_reports_them(broker, tmp_path, keys, caplog):
    toml = gateway_toml(tmp_path, broker.port, keys[2])
    sub = Subscriber(broker.port, topics.vitals(GW, BED))
    gw = start_gateway(toml)
    try:
        # 1. The health loop: an exception it does not catch.
        real_mirror, calls = gw._mirror_counters, []

        def boom() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected")
            real_mirror()

        gw._mirror_counters = boom  # type: ignore[method-assign]
        assert wait_until(lambda: len(calls) >= 3, timeout=10)  # restarted, looping again
        # 2. The outbox sender: SystemExit (not an Exception) out of its loop.
        real_take, raised = gw.publisher._take_acks, []

        def die() -> None:
            if not raised:
                raised.append(1)
                raise SystemExit("injected")
            real_take()

        gw.publisher._take_acks = die  # type: ignore[method-assign]
        assert wait_until(lambda: bool(raised), timeout=5)
        # 3. paho's network thread ends.
        gw.publisher.client._thread_terminate = True
        assert wait_until(lambda: not gw.publisher.network_alive(), timeout=5)

        assert wait_until(
            lambda: gw.state.snapshot().counters.get("thread_restarts") == 3, timeout=15
        )
        assert wait_until(lambda: all(gw.supervisor.threads().values()), timeout=10)
        faults = [e.text for e in gw.state.snapshot().events if e.kind == "fault"]
        assert any("vigil-health died (RuntimeError)" in t for t in faults), faults
        assert any("vigil-outbox died (SystemExit)" in t for t in faults), faults
        assert any("mqtt-network" in t for t in faults), faults
        assert "Traceback" in caplog.text and "injected" in caplog.text
        # Everything works after: a step goes out through the restarted sender and
        # network thread.
        assert wait_until(lambda: gw.publisher.connected, timeout=10)
        feed_hour(gw, 0)
        feed_hour(gw, 1)
        assert len(sub.wait_for(1, 10, "/vitals")) == 1
        assert gw.publisher.wait_idle(10)
        snap = gw.state.snapshot()
        view = _view(dict(snap.counters))
        assert "gateway fault: 3 restart(s)" in status_text(view, "nurse")
    finally:
        gw.stop(2.0)
        sub.close()


def test_a_thread_that_keeps_dying_is_given_up_and_shown_as_a_gateway_fault():
    state = GatewayState("gw", ["b1"])
    stop = threading.Event()
    sup = Supervisor(state, stop, max_restarts=3, backoff_min=0.01, backoff_max=0.02)
    runs: list[int] = []

    def always() -> None:
        runs.append(1)
        raise ValueError("broken for good")

    t = sup.spawn("doomed", always)
    t.join(5)
    assert not t.is_alive() and len(runs) == 4  # the first run and 3 restarts
    snap = state.snapshot()
    assert snap.counters["threads_failed"] == 1 and snap.counters["thread_restarts"] == 3
    assert sup.failed() == ["doomed"] and sup.threads() == {"doomed": False}
    assert "stopped after 4 failures" in [e.text for e in snap.events][-1]
    view = _view(dict(snap.counters))
    assert status_text(view, None).startswith("⚠ GATEWAY FAULT: 1 part(s) stopped")
    # A loop that returns while the gateway runs is a death too; at stop it is not.
    ended: list[int] = []
    sup.spawn("returns", lambda: ended.append(1))
    assert wait_until(lambda: len(ended) >= 2, timeout=5)
    stop.set()


def test_the_release_window_follows_the_gateways_clock_and_its_ahead_setting(tmp_path, keys):
    """A hub whose clock is 3 days ahead: refused with the default 1-day window, accepted
    where the site widened `max_message_ahead_seconds` (the gateway's clock is `clock=`)."""
    from datetime import timedelta

    trusted, _, pub = keys
    ahead = now_ms() + 3 * 86400 * 1000
    strict = ModelUpdater(tmp_path / "a", [default_trusted_keys_dir(), pub], gw=GW)
    strict.boot()
    got = strict.handle_release(release(trusted, seq=ahead, version="7"))
    assert got.state == "refused" and got.reason.startswith("from_the_future"), got
    wide = ModelUpdater(
        tmp_path / "b", [default_trusted_keys_dir(), pub], gw=GW, future_margin_seconds=4 * 86400
    )
    wide.boot()
    assert wide.handle_release(release(trusted, seq=ahead, version="7")).state == "active"
    # The same release to a gateway whose own clock is 3 days ahead too: within a day.
    late = ModelUpdater(
        tmp_path / "c",
        [default_trusted_keys_dir(), pub],
        gw=GW,
        clock=lambda: datetime.now(UTC) + timedelta(days=3),
    )
    late.boot()
    assert late.handle_release(release(trusted, seq=ahead, version="7")).state == "active"
