"""Helpers for the rollout tests: signed releases made from the committed default bundle,
and a gateway-like MQTT client driving a real `ModelUpdater`.

Not a test module (no `test_` prefix).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from contracts import topics
from contracts.bundle import MANIFEST, MODEL, generate_key, key_id, load_private_key, sha256_hex
from contracts.bundle import sign_manifest as sign
from contracts.messages import (
    Command,
    ModelRef,
    ModelRelease,
    ModelState,
    Status,
    parse_message,
)
from contracts.paths import default_bundle_dir

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

DEFAULT = default_bundle_dir()


def default_parts() -> tuple[dict[str, Any], bytes]:
    return json.loads((DEFAULT / MANIFEST).read_text()), (DEFAULT / MODEL).read_bytes()


def make_key(folder: Path, name: str = "signing") -> tuple[Ed25519PrivateKey, Path]:
    key_path, pub_path, _ = generate_key(folder, name)
    return load_private_key(key_path), pub_path


def release(
    private: Ed25519PrivateKey,
    *,
    seq: int,
    version: str = "7",
    channel: str = "stable",
    rollback: bool = False,
    edit: Callable[[dict[str, Any]], None] | None = None,
    model: bytes | None = None,
    fix_hash: bool = True,
    manifest: dict[str, Any] | None = None,
) -> ModelRelease:
    """A release of the default model (or `model`) stamped `seq`, signed by `private`.

    `edit` changes the manifest before signing; `fix_hash` recomputes sha256/size
    for `model` (False: keep the manifest's, i.e. a model that does not match it).
    """
    base, blob = default_parts()
    m = copy.deepcopy(manifest or base)
    blob = blob if model is None else model
    m["version"] = version
    if fix_hash:
        m["sha256"], m["size_bytes"] = sha256_hex(blob), len(blob)
    m["release"] = {"seq": seq, "issued_at": "2026-11-25T10:00:00.000Z", "rollback": rollback}
    if edit is not None:
        edit(m)
    return ModelRelease(
        gw="hub",
        channel=channel,
        manifest=m,
        signature=sign(m, private),
        model_b64=base64.b64encode(blob).decode(),
    )


def trusted_of(*keys: Ed25519PrivateKey) -> dict:
    return {key_id(k.public_key()): k.public_key() for k in keys}


class GatewayClient:
    """A gateway's model side over real MQTT: status (with channel), cmd, model releases.

    What the real gateway's publisher does for model updates, in a few lines: on
    connect publish the retained status and subscribe to its cmd topic and its
    channel's models topic; releases go to `updater.handle_release` on a worker
    thread (verification must not hold up the network loop); join_channel switches
    the subscription and republishes the status.
    """

    def __init__(self, updater, host: str, port: int) -> None:
        import queue

        self.updater = updater
        self.gw = updater.gw
        self.host, self.port = host, port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gw-{self.gw}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.will_set(topics.status(self.gw), self._status("offline"), 1, retain=True)
        updater.publish_state = self._publish_state
        self.states: list[ModelState] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # SUBACK of cmd and models: commands arrive
        self._jobs: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True)

    def _status(self, state: str) -> bytes:
        cur = self.updater.current()
        return Status(
            gw=self.gw,
            state=state,
            agent_version="test",
            model=ModelRef(name=cur.manifest.name, version=cur.manifest.version) if cur else None,
            channel=self.updater.channel,
        ).to_json()

    def _publish_state(self, st: ModelState) -> None:
        self.states.append(st)
        self.client.publish(topics.model_state(self.gw), st.to_json(), qos=1, retain=True)

    def start(self) -> GatewayClient:
        self._worker.start()
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError(f"gateway {self.gw} did not connect")
        if not self.subscribed.wait(10):  # a non-retained command sent now is delivered
            raise RuntimeError(f"gateway {self.gw} did not subscribe")
        return self

    def stop(self) -> None:
        self._jobs.put(None)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        client.publish(topics.status(self.gw), self._status("online"), 1, retain=True)
        client.subscribe([(topics.cmd(self.gw), 1), (topics.models(self.updater.channel), 1)])
        self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *_: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._jobs.put((msg.topic, msg.payload))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            topic, payload = job
            parsed = parse_message(payload, gateway_only=False)
            if isinstance(parsed, Command):
                old = self.updater.channel
                new = self.updater.handle_command(parsed)
                if new and new != old:
                    self.client.unsubscribe(topics.models(old))
                    self.client.subscribe(topics.models(new), 1)
                    self.client.publish(topics.status(self.gw), self._status("online"), 1, True)
            elif isinstance(parsed, ModelRelease) and topic == topics.models(self.updater.channel):
                self.updater.handle_release(parsed)
                self.client.publish(topics.status(self.gw), self._status("online"), 1, True)

    def wait_for(self, pred: Callable[[ModelState], bool], timeout: float = 20.0) -> ModelState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for st in list(self.states):
                if pred(st):
                    return st
            time.sleep(0.05)
        raise AssertionError(f"{self.gw}: no such state; got {[s.state for s in self.states]}")
