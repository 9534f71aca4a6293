"""A release: a bundle stamped, signed and checked as a gateway would, then published.

The hub adds `release = {"seq", "issued_at", "rollback"}` to the manifest and signs
the whole manifest; `publish_release` sends it retained on `vigil/v1/models/{channel}`
(QoS 1, waiting for the broker's PUBACK) and only then records it in the ledger
(cloud_hub/rollout/ledger.py). `rollback` republishes the model that was current
before; `assign` tells a gateway which channel to follow.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from cloud_hub.keys import KeyProvider
from contracts import topics
from contracts.broker import BrokerSettings, make_client
from contracts.bundle import (
    MANIFEST,
    MODEL,
    RELEASE_FUTURE_MARGIN_SECONDS,
    BundleError,
    Manifest,
    key_id,
    load_trusted_keys,
    verify_parts,
)
from contracts.messages import Command, ModelRelease
from contracts.paths import default_trusted_keys_dir
from contracts.timeutil import iso_ms, utc_now

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from .ledger import Ledger, LedgerEntry, StoreLedger

log = logging.getLogger(__name__)

HUB_ID = "hub"
RELEASE_KEY = "release"  # read by edge_agent.model_update (same name, kept in step)


class RolloutError(RuntimeError):
    """A rollout step that cannot be done; the message says what and what to do."""


def read_bundle_folder(folder: Path) -> tuple[dict[str, Any], bytes]:
    folder = Path(folder)
    try:
        return json.loads((folder / MANIFEST).read_text()), (folder / MODEL).read_bytes()
    except FileNotFoundError as e:
        raise RolloutError(f"{folder} is not a bundle: missing {Path(e.filename).name}") from None


def next_seq(after: int = 0) -> int:
    """Milliseconds since the epoch, strictly above `after` (the ledger's last).

    A ledger's last seq beyond this clock + `RELEASE_FUTURE_MARGIN_SECONDS` (a release
    stamped while the hub's clock was far ahead) is not followed: gateways refuse such
    a seq as `from_the_future`, and they lower one they accepted before to their clock
    (edge_agent/model_update.py), so the clock's own value is what they take next."""
    now = int(time.time() * 1000)
    if after > now + RELEASE_FUTURE_MARGIN_SECONDS * 1000:
        log.warning("ledger's last release seq %d is in the future: stamping %d", after, now)
        return now
    return max(now, after + 1)


def make_release(
    manifest: dict[str, Any],
    model: bytes,
    channel: str,
    provider: KeyProvider,
    *,
    seq: int,
    rollback: bool = False,
    check: bool = True,
    shadow: bool = False,
) -> ModelRelease:
    """Stamp, sign and (unless `check` is False) verify a release as a gateway would.

    `shadow`: the stamp says `mode: shadow` (signed with the rest): gateways run the
    bundle silently beside their active model and never activate it (issue 13)."""
    m = dict(manifest)
    m[RELEASE_KEY] = {
        "seq": seq,
        "issued_at": iso_ms(utc_now()),
        "rollback": rollback,
    } | ({"mode": "shadow"} if shadow else {})
    signature = provider.sign_manifest(m)
    if check:
        pub = provider.public_key()
        try:
            parsed = verify_parts(m, signature, model, {key_id(pub): pub})
            _check_runs(parsed, model)
        except BundleError as e:
            raise RolloutError(f"the bundle would be refused by gateways: {e}") from None
    return ModelRelease(
        gw=HUB_ID,
        channel=topics.check_id("channel", channel),
        manifest=m,
        signature=signature,
        model_b64=base64.b64encode(model).decode(),
    )


def _check_runs(manifest: Manifest, model: bytes) -> None:
    """Load in LiteRT and run the golden windows: never ship what the edge would refuse."""
    from model_runtime.litert import LiteRTError, RiskModel
    from model_runtime.verify import check_model

    try:
        runner = RiskModel(model)
    except LiteRTError as e:
        raise BundleError("model_load", str(e)) from None
    check_model(manifest, runner)


def connect(b: BrokerSettings, timeout: float = 10.0) -> mqtt.Client:
    """A connected client (network loop running) for a rollout command; RolloutError when
    it cannot. Client id: `b.client_id`, else vigil-rollout-<pid>."""
    c = make_client(b, client_id=f"vigil-rollout-{os.getpid()}")
    ready = threading.Event()
    failure: list[str] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        if rc.is_failure:
            failure.append(str(rc))
        ready.set()

    c.on_connect = on_connect
    c.max_queued_messages_set(0)
    try:
        c.connect(b.host, b.port, keepalive=b.keepalive)
    except OSError as e:
        raise RolloutError(f"cannot reach the broker at {b.host}:{b.port}: {e}") from None
    c.loop_start()
    if not ready.wait(timeout) or failure:
        c.loop_stop()
        raise RolloutError(
            f"broker {b.host}:{b.port} did not accept the connection: {failure or 'timeout'}"
        )
    return c


def publish_and_wait(
    client: mqtt.Client, topic: str, payload: bytes, *, retain: bool, timeout: float = 30.0
) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise RolloutError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
    info.wait_for_publish(timeout)
    if not info.is_published():
        raise RolloutError(f"the broker did not acknowledge {topic} within {timeout:g} s")
    rc = getattr(info, "reason_code", None)  # MQTT 5 PUBACK reason (e.g. not authorised)
    if rc is not None and getattr(rc, "is_failure", False):
        raise RolloutError(f"the broker refused {topic}: {rc}")


def publish_release(
    client: mqtt.Client, release: ModelRelease, ledger: Ledger | StoreLedger
) -> LedgerEntry:
    """Publish retained on the channel topic, then record it (only once the broker has it)."""
    publish_and_wait(client, topics.models(release.channel), release.to_json(), retain=True)
    return ledger.record(release)


def publish_shadow(client: mqtt.Client, release: ModelRelease) -> None:
    """Publish a shadow release retained on `vigil/v1/models/{channel}/shadow`.

    Not recorded in the ledger: the ledger is what each channel runs for its nurses
    (rollbacks, fleet targets); a shadow candidate is promoted only by a later active
    release (`vigil hub rollout --gate shadow`)."""
    if RELEASE_KEY not in release.manifest or release.manifest[RELEASE_KEY].get("mode") != "shadow":
        raise RolloutError("not a shadow release (make_release(..., shadow=True))")
    publish_and_wait(client, topics.shadow_models(release.channel), release.to_json(), retain=True)


def assign(client: mqtt.Client, gw: str, channel: str) -> Command:
    """Tell gateway `gw` to follow `channel` (it remembers it across restarts)."""
    cmd = Command(
        gw=HUB_ID,
        command="join_channel",
        channel=topics.check_id("channel", channel),
    )
    publish_and_wait(client, topics.cmd(gw), cmd.to_json(), retain=False)
    return cmd


def rollback(
    client: mqtt.Client,
    channel: str,
    provider: KeyProvider,
    ledger: Ledger | StoreLedger,
    trusted: dict[str, Any] | None = None,
) -> LedgerEntry:
    """Republish the model that was current before the current one, as a rollback release.

    The old release is re-signed with the hub's key, so first it must verify as it
    was published, against a key the hub trusts (`trusted`; default: the hub's own
    key and the shipped trusted keys, i.e. also keys rotated out): the ledger also
    records what the ingest saw on the broker, and a rollback must never launder a
    release nobody trusted into a signed one.
    """
    target = ledger.rollback_target(channel)
    old = target.release()
    if trusted is None:
        pub = provider.public_key()
        trusted = load_trusted_keys([default_trusted_keys_dir()]) | {key_id(pub): pub}
    try:
        verify_parts(old.manifest, old.signature, base64.b64decode(old.model_b64), trusted)
    except (BundleError, ValueError) as e:
        raise RolloutError(
            f"release {target.seq} ({target.name} {target.version}) on {channel!r} does not "
            f"verify with the hub's trusted keys, not rolling back to it: {e}"
        ) from None
    manifest = {k: v for k, v in old.manifest.items() if k != RELEASE_KEY}
    release = make_release(
        manifest,
        base64.b64decode(old.model_b64),
        channel,
        provider,
        seq=next_seq(ledger.last_seq()),
        rollback=True,
    )
    return publish_release(client, release, ledger)
