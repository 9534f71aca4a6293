"""Is a message the hub received a contract message on its own topic? `Accepted` or why not.

`classify` checks gateway telemetry (size, JSON, contract model, topic gw/bed ==
payload gw/bed); `classify_release` a release on `vigil/v1/models/{channel}`. A
refused message becomes a `Rejected` with its dead letter's `reason_kind`
(malformed | oversized | schema | topic_mismatch | unknown_topic, the
`MessageError.kind` when the contract refused the payload) and the reason.

Neither function raises, whatever the bytes: a failure of the check itself becomes a
`Rejected` of kind `malformed` naming the exception type (never its text: it could
carry a value). Every reason is cleaned and cut (`contracts.messages.clean_text`), and
a release's fields are bounded to what the `channel_releases` columns hold, so the
store never refuses a row the check let through.
"""

from __future__ import annotations

from datetime import datetime

from cloud_hub.store import Accepted, Rejected, ReleaseSeen
from cloud_hub.store.writer import KIND_NAME
from contracts import topics
from contracts.messages import (
    DEFAULT_WINDOW,
    EARLIEST,
    LATEST,
    MAX_PAYLOAD_BYTES,
    MAX_RELEASE_BYTES,
    Alarm,
    MessageError,
    ModelRelease,
    ModelState,
    Observation,
    Risk,
    ShadowSummary,
    Status,
    TimeWindow,
    Vitals,
    clean_text,
    parse_message,
)
from contracts.timeutil import parse_iso

TOPIC_KIND = {
    "status": Status,
    "model": ModelState,
    "vitals": Vitals,
    "risk": Risk,
    "alarm": Alarm,
    "observation": Observation,
    "shadow": ShadowSummary,
}


def classify(
    topic: str | None,
    payload: bytes,
    received_at: datetime,
    retained: bool = False,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    window: TimeWindow = DEFAULT_WINDOW,
) -> Accepted | Rejected:
    """Validate one message against the contract and its topic (never raises)."""
    try:
        return _classify(topic, payload, received_at, retained, max_bytes, window)
    except Exception as e:  # noqa: BLE001 - untrusted input: a reason, never a crash
        return Rejected(
            topic or "", payload, "malformed", f"check failed ({type(e).__name__})", received_at
        )


def _classify(
    topic: str | None,
    payload: bytes,
    received_at: datetime,
    retained: bool,
    max_bytes: int,
    window: TimeWindow,
) -> Accepted | Rejected:
    where = topics.parse(topic) if topic is not None else None
    gw = where["gw"] if where else None

    def reject(kind: str, reason: str) -> Rejected:
        return Rejected(
            topic if topic is not None else "", payload, kind, clean_text(reason), received_at, gw
        )

    if topic is None:
        return reject("unknown_topic", "topic is not valid UTF-8")
    if where is None or where["kind"] not in TOPIC_KIND:
        return reject("unknown_topic", f"not a gateway telemetry topic: {topic[:200]!r}")
    try:
        msg = parse_message(payload, max_bytes=max_bytes, window=window)
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
    this channel is a dead letter like any other. Never raises.
    """
    try:
        return _classify_release(topic, payload, received_at)
    except Exception as e:  # noqa: BLE001 - untrusted input: a reason, never a crash
        return Rejected(
            topic, payload, "malformed", f"check failed ({type(e).__name__})", received_at
        )


# What a `channel_releases` row holds (cloud_hub/store/models.py ChannelRelease).
_RELEASE_TEXT = {"name": 128, "version": 64, "sha256": 64}
_KEY_ID_CHARS = 128
_SEQ_MAX = 2**63 - 1  # BigInteger


def _classify_release(
    topic: str, payload: bytes, received_at: datetime
) -> ReleaseSeen | Rejected | None:
    channel = topics.parse_models(topic)

    def reject(kind: str, reason: str) -> Rejected:
        return Rejected(topic, payload, kind, clean_text(reason), received_at, None)

    if channel is None:
        return reject("unknown_topic", f"not a model release topic: {topic[:200]!r}")
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
    seq = stamp.get("seq") if isinstance(stamp, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool):
        return reject("schema", "manifest.release.seq: missing (not a hub release)")
    if not 0 <= seq <= _SEQ_MAX:
        return reject("schema", f"manifest.release.seq: outside 0..{_SEQ_MAX}")
    missing = [
        k
        for k in _RELEASE_TEXT
        if not isinstance(m.get(k), str | int) or isinstance(m.get(k), bool)
    ]
    if missing:
        return reject("schema", f"manifest: missing {', '.join(missing)}")
    for k, n in _RELEASE_TEXT.items():
        text = str(m[k])
        if len(text) > n or clean_text(text, n) != text:
            return reject("schema", f"manifest.{k}: over {n} characters or with control characters")
    key_id = msg.signature.get("key_id", "")
    if len(key_id) > _KEY_ID_CHARS or clean_text(key_id, _KEY_ID_CHARS) != key_id:
        return reject(
            "schema",
            f"signature.key_id: over {_KEY_ID_CHARS} characters or with control characters",
        )
    issued = None
    if isinstance(stamp.get("issued_at"), str):
        try:
            issued = parse_iso(stamp["issued_at"])
        except ValueError:
            return reject("schema", "manifest.release.issued_at: not an ISO-8601 time")
        aware = issued if issued.tzinfo else issued.replace(tzinfo=EARLIEST.tzinfo)
        if not EARLIEST <= aware < LATEST:
            return reject("schema", "manifest.release.issued_at: outside [2000, 2100)")
    return ReleaseSeen(
        channel=channel,
        seq=seq,
        name=str(m["name"]),
        version=str(m["version"]),
        sha256=str(m["sha256"]),
        key_id=key_id,
        rollback=bool(stamp.get("rollback")),
        issued_at=issued,
        received_at=received_at,
        payload=payload,
    )
