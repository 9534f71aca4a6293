"""MQTT message models (docs/ARCHITECTURE.md "Messages").

Every payload is JSON with schema, event_id, gw, ts.

Incoming payloads are untrusted: `parse_message` validates them into these models
and raises `MessageError` with the reason, which receivers count and dead-letter.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_serializer

from contracts.errors import validation_problems
from contracts.timeutil import iso_ms, utc_now

MAX_PAYLOAD_BYTES = 256 * 1024  # gateway telemetry; model releases have their own limit
MAX_RELEASE_BYTES = 16 * 1024 * 1024


# Why a payload was refused, as its dead letter records it (`reason_kind`).
RefusalKind = Literal["malformed", "oversized", "schema", "topic_mismatch", "unknown_topic"]


class MessageError(ValueError):
    """A payload that is not a valid Vigil message: `kind` (a RefusalKind) and `reason`.

    `str(e)` is the reason alone.
    """

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    gw: str = Field(min_length=1, max_length=64)
    ts: datetime = Field(default_factory=utc_now)

    @field_serializer("ts")
    def _ts(self, ts: datetime) -> str:
        return iso_ms(ts)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ModelRef(BaseModel):
    name: str
    version: str


class BedSummary(BaseModel):
    bed: str
    stay: str
    link: Literal["ok", "stale", "down"] = "ok"


class Status(Envelope):
    schema_: Literal["vigil.status/1"] = Field("vigil.status/1", alias="schema")
    state: Literal["online", "offline"]
    agent_version: str = ""
    model: ModelRef | None = None
    channel: str = "stable"
    beds: list[BedSummary] = []
    outbox: int = 0


class Vitals(Envelope):
    """One step of aggregated vitals for a bed: the training data of the fleet."""

    schema_: Literal["vigil.vitals/1"] = Field("vigil.vitals/1", alias="schema")
    bed: str
    stay: str
    step_start: datetime
    step_seconds: int
    iculos_hours: float
    values: dict[str, float | None]
    readings: int = 0
    static: dict[str, float | None] = {}

    @field_serializer("step_start")
    def _ss(self, ts: datetime) -> str:
        return iso_ms(ts)


class News2Out(BaseModel):
    """`contracts.news2.News2` on the wire, with its field names (`risk`: the band)."""

    total: int
    risk: str
    subscores: dict[str, int]
    missing: list[str] = []


class Risk(Envelope):
    schema_: Literal["vigil.risk/1"] = Field("vigil.risk/1", alias="schema")
    bed: str
    stay: str
    risk: float | None  # None: insufficient data, not scored
    threshold: float
    alarm_level: AlarmLevel
    model: ModelRef
    news2: News2Out
    observed: int
    insufficient_data: bool = False
    window_end: datetime

    @field_serializer("window_end")
    def _we(self, ts: datetime) -> str:
        return iso_ms(ts)


# The risk alarm's levels, lowest first (edge_agent.alarms): `alarm_level` and `level`
# on the wire, and what the gateway's state and nurse terminal show.
AlarmLevel = Literal["none", "watch", "alarm", "escalated"]
ALARM_LEVELS: tuple[AlarmLevel, ...] = get_args(AlarmLevel)
ALARM_RANK: dict[str, int] = {name: i for i, name in enumerate(ALARM_LEVELS)}

AlarmAction = Literal[
    "raised", "escalated", "acknowledged", "silenced", "resolved", "re-alarmed", "feedback"
]


class Alarm(Envelope):
    schema_: Literal["vigil.alarm/1"] = Field("vigil.alarm/1", alias="schema")
    bed: str
    stay: str
    action: AlarmAction
    level: AlarmLevel
    by: str  # operator name, or "system"
    reason: str = ""
    risk: float | None = None
    model: ModelRef | None = None
    silence_seconds: int | None = None
    feedback: Literal["deteriorating", "false_alarm"] | None = None
    note: str | None = Field(default=None, max_length=2000)


class ModelState(Envelope):
    schema_: Literal["vigil.model/1"] = Field("vigil.model/1", alias="schema")
    state: Literal["received", "verified", "active", "refused", "rolled_back"]
    name: str
    version: str
    channel: str = "stable"
    reason: str = ""
    active: ModelRef | None = None


class Command(Envelope):
    schema_: Literal["vigil.cmd/1"] = Field("vigil.cmd/1", alias="schema")
    command: Literal["join_channel", "report_status", "resend"]
    channel: str | None = None
    # resend: re-publish the gateway's retained messages enqueued at or after `since`.
    since: datetime | None = None

    @field_serializer("since")
    def _since(self, ts: datetime | None) -> str | None:
        return None if ts is None else iso_ms(ts)


class ModelRelease(Envelope):
    """A signed bundle on vigil/v1/models/{channel}; `gw` is the publisher (hub)."""

    schema_: Literal["vigil.bundle/1"] = Field("vigil.bundle/1", alias="schema")
    channel: str
    manifest: dict[str, Any]
    signature: dict[str, str]
    model_b64: str


GatewayMessage = Annotated[
    Status | Vitals | Risk | Alarm | ModelState, Field(discriminator="schema_")
]
_GATEWAY = TypeAdapter(GatewayMessage)
AnyMessage = Annotated[
    Status | Vitals | Risk | Alarm | ModelState | Command | ModelRelease,
    Field(discriminator="schema_"),
]
_ANY = TypeAdapter(AnyMessage)


def parse_message(
    payload: bytes, *, gateway_only: bool = True, max_bytes: int | None = None
) -> Status | Vitals | Risk | Alarm | ModelState | Command | ModelRelease:
    """Validate one payload into its message model, or raise MessageError(kind, reason)."""
    limit = max_bytes or (MAX_PAYLOAD_BYTES if gateway_only else MAX_RELEASE_BYTES)
    if len(payload) > limit:
        raise MessageError("oversized", f"oversized: {len(payload)} bytes > limit {limit}")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageError("malformed", f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise MessageError("malformed", f"not a JSON object: {type(data).__name__}")
    if "schema" not in data:
        raise MessageError("schema", "missing field 'schema'")
    try:
        return (_GATEWAY if gateway_only else _ANY).validate_python(data)
    except ValidationError as e:
        problems = "; ".join(validation_problems(e, values=False, limit=5))
        raise MessageError("schema", f"schema {data.get('schema')!r}: {problems}") from None
