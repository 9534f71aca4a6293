"""Is a message the hub received a contract message on its own topic? `Accepted` or why not.

`classify` checks gateway telemetry (size, JSON, contract model, topic gw/bed ==
payload gw/bed); `classify_release` a release on `vigil/v1/models/{channel}`. A
refused message becomes a `Rejected` with its dead letter's `reason_kind`
(malformed | oversized | schema | topic_mismatch | unknown_topic, the
`MessageError.kind` when the contract refused the payload) and the reason.
"""

from __future__ import annotations

from datetime import datetime

from cloud_hub.store import Accepted, Rejected, ReleaseSeen
from cloud_hub.store.writer import KIND_NAME
from contracts import topics
from contracts.messages import (
    MAX_PAYLOAD_BYTES,
    MAX_RELEASE_BYTES,
    Alarm,
    MessageError,
    ModelRelease,
    ModelState,
    Risk,
    Status,
    Vitals,
    parse_message,
)
from contracts.timeutil import parse_iso

TOPIC_KIND = {"status": Status, "model": ModelState, "vitals": Vitals, "risk": Risk, "alarm": Alarm}


def classify(
    topic: str | None,
    payload: bytes,
    received_at: datetime,
    retained: bool = False,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Accepted | Rejected:
    """Validate one message against the contract and its topic."""
    where = topics.parse(topic) if topic is not None else None
    gw = where["gw"] if where else None

    def reject(kind: str, reason: str) -> Rejected:
        return Rejected(topic if topic is not None else "", payload, kind, reason, received_at, gw)

    if topic is None:
        return reject("unknown_topic", "topic is not valid UTF-8")
    if where is None or where["kind"] not in TOPIC_KIND:
        return reject("unknown_topic", f"not a gateway telemetry topic: {topic!r}")
    try:
        msg = parse_message(payload, max_bytes=max_bytes)
    except MessageError as e:
        return reject(e.kind, e.reason)
    expected = TOPIC_KIND[where["kind"]]
    if not isinstance(msg, expected):
        return reject(
            "topic_mismatch",
            f"a {KIND_NAME[type(msg)]} message on a {where['kind']} topic",
        )
    if msg.gw != where["gw"]:
        return reject("topic_mismatch", f"payload gw {msg.gw!r} != topic gw {where['gw']!r}")
    bed = getattr(msg, "bed", None)
    if where["bed"] is not None and bed != where["bed"]:
        return reject("topic_mismatch", f"payload bed {bed!r} != topic bed {where['bed']!r}")
    return Accepted(msg, received_at, retained, topic, payload)


def classify_release(
    topic: str, payload: bytes, received_at: datetime
) -> ReleaseSeen | Rejected | None:
    """What a message on vigil/v1/models/{channel} says; None for a cleared channel.

    The hub only records which release each channel carries (the fleet view's
    target); the gateways verify signatures. A message that is not a release for
    this channel is a dead letter like any other.
    """
    channel = topics.parse_models(topic)

    def reject(kind: str, reason: str) -> Rejected:
        return Rejected(topic, payload, kind, reason, received_at, None)

    if channel is None:
        return reject("unknown_topic", f"not a model release topic: {topic!r}")
    if not payload:
        return None  # the retained release was cleared: nothing to record
    try:
        msg = parse_message(payload, gateway_only=False, max_bytes=MAX_RELEASE_BYTES)
    except MessageError as e:
        return reject(e.kind, e.reason)
    if not isinstance(msg, ModelRelease):
        return reject("topic_mismatch", f"a {msg.schema_} message on a model release topic")
    if msg.channel != channel:
        return reject("topic_mismatch", f"payload channel {msg.channel!r} != topic {channel!r}")
    m, stamp = msg.manifest, msg.manifest.get("release")
    if not isinstance(stamp, dict) or not isinstance(stamp.get("seq"), int):
        return reject("schema", "manifest.release.seq: missing (not a hub release)")
    missing = [k for k in ("name", "version", "sha256") if not isinstance(m.get(k), str | int)]
    if missing:
        return reject("schema", f"manifest: missing {', '.join(missing)}")
    issued = None
    if isinstance(stamp.get("issued_at"), str):
        try:
            issued = parse_iso(stamp["issued_at"])
        except ValueError:
            return reject("schema", f"manifest.release.issued_at: {stamp['issued_at']!r}")
    return ReleaseSeen(
        channel=channel,
        seq=stamp["seq"],
        name=str(m["name"]),
        version=str(m["version"]),
        sha256=str(m["sha256"]),
        key_id=str(msg.signature.get("key_id", "")),
        rollback=bool(stamp.get("rollback")),
        issued_at=issued,
        received_at=received_at,
        payload=payload,
    )
