"""MQTT message models (docs/ARCHITECTURE.md "Messages").

Every payload is JSON with schema, event_id, gw, ts.

Incoming payloads are untrusted: `parse_message` validates them into these models
and raises `MessageError` with the reason, which receivers count and dead-letter.
It is the one strict contract of the wire (issue 18), checked in this order:

1. size (`max_bytes`) and JSON nesting depth (`MAX_DEPTH`, a scan of the bytes for
   `[`/`{` outside strings) BEFORE any parsing, so no parser can recurse too deep;
2. JSON and the model in pydantic's strict JSON mode: no booleans or strings for
   numbers, no number for a time, finite numbers only (no NaN/Infinity, nor a 1e400
   that reads as one), numbers in their physical or defined ranges (risk and
   threshold in [0, 1], vital values within `VITAL_SLACK` times the catalogue range of
   contracts/vitals.py or null, counters >= 0 and within a 32-bit column), ids of
   `ID_PATTERN` (the class contracts/topics.py states), free text bounded and without
   NUL/control/bidirectional-override characters, every time an ISO-8601 text between
   `EARLIEST` and `LATEST`;
3. the envelope's `ts` within a window of the receiver's clock (`TimeWindow`, default
   one year back, one day ahead; a model release only the "ahead" side, as a retained
   release may be old): outside, `stale_or_future`.
Whatever a payload makes the parser or a validator raise becomes a `MessageError`;
its reason never repeats a value, and is cut and cleaned of control characters.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_serializer,
    model_validator,
)

from contracts.timeutil import iso_ms, utc_now
from contracts.vitals import BY_NAME

MAX_PAYLOAD_BYTES = 256 * 1024  # gateway telemetry; model releases have their own limit
MAX_RELEASE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32  # JSON nesting ([ and { outside strings); a release manifest uses < 10
MAX_REASON_CHARS = 500  # a refusal's reason, as logged and dead-lettered

# Ids on the wire and in topics: gateway, bed, stay, channel (contracts/topics.py).
ID_CHARS = r"[A-Za-z0-9_.-]"
ID_MAX = 64
ID_PATTERN = rf"^{ID_CHARS}{{1,{ID_MAX}}}$"
INT32_MAX = 2**31 - 1  # the hub's Integer columns
# Vital values may lie this many catalogue ranges beyond the plausible range (the
# gateway only sends medians of plausible readings; the slack is for future units).
VITAL_SLACK = 1.0
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # any time on the wire, absolute bounds
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


# Why a payload was refused, as its dead letter records it (`reason_kind`).
RefusalKind = Literal[
    "malformed", "oversized", "schema", "stale_or_future", "topic_mismatch", "unknown_topic"
]
REFUSAL_KINDS: tuple[str, ...] = get_args(RefusalKind)

# What no text on the wire may hold: C0 controls but tab/newline/CR, DEL, C1 controls,
# bidirectional embeddings/overrides/isolates (a RLO makes a log lie), lone surrogates.
_BAD_TEXT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def clean_text(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` safe for a log line and any database: bad characters escaped, cut."""
    out = _BAD_TEXT.sub(lambda m: m[0].encode("unicode_escape", "backslashreplace").decode(), text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class MessageError(ValueError):
    """A payload that is not a valid Vigil message: `kind` (a RefusalKind) and `reason`.

    `str(e)` is the reason alone, cleaned (`clean_text`): it may name a key the sender
    chose, never with a NUL or an override character in it.
    """

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        reason = clean_text(reason)
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# -- field types --------------------------------------------------------------------
def _no_bad_chars(v: str) -> str:
    m = _BAD_TEXT.search(v)
    if m:
        raise ValueError(
            f"contains a control or bidirectional-override character at position {m.start()}"
        )
    return v


def Text(max_length: int) -> Any:  # noqa: N802 - a type factory, used as a type
    """Free text (notes, reasons, names): bounded, no control/override characters."""
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_bad_chars)]


Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$")


def _iso_text(v: Any) -> Any:
    """A time on the wire is ISO-8601 text; a number (`1e11`: seconds or ms?) is not."""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise ValueError(f"a time must be ISO-8601 text, not {type(v).__name__}")
    if not _ISO.match(v):
        raise ValueError("a time must be ISO-8601 text like 2026-03-01T08:00:00.000Z")
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("a time must be a valid ISO-8601 date and time") from None


def _as_aware(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def _in_era(v: datetime) -> datetime:
    v = _as_aware(v)
    if not EARLIEST <= v < LATEST:
        raise ValueError(f"a time must lie in [{EARLIEST.year}, {LATEST.year})")
    return v


WireTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_in_era)]
# The envelope's `ts`: bounded by the receiver's clock instead (`TimeWindow`).
Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_as_aware)]


@dataclass(frozen=True)
class TimeWindow:
    """How far an envelope's `ts` may lie from the receiver's clock."""

    max_age: timedelta = timedelta(days=365)
    max_ahead: timedelta = timedelta(days=1)


DEFAULT_WINDOW = TimeWindow()


class _Wire(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


class Envelope(_Wire):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, serialize_by_alias=True, allow_inf_nan=False
    )
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    gw: Id
    ts: Timestamp = Field(default_factory=utc_now)

    @field_serializer("ts")
    def _ts(self, ts: datetime) -> str:
        return iso_ms(ts)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ModelRef(_Wire):
    name: Text(128)
    version: Text(64)


class BedSummary(_Wire):
    bed: Id
    stay: Id
    link: Literal["ok", "stale", "down"] = "ok"


StorageState = Literal["ok", "full", "io_error", "read_only", "locked", "unavailable", "corrupt"]


class Status(Envelope):
    schema_: Literal["vigil.status/1"] = Field("vigil.status/1", alias="schema")
    state: Literal["online", "offline"]
    agent_version: Text(64) = ""
    model: ModelRef | None = None
    channel: Id = "stable"
    beds: list[BedSummary] = Field(default=[], max_length=1024)
    outbox: Count = 0
    # The gateway's local store: "ok" or what fails (its alarms go on; data kept in
    # memory, `storage_kept` writes now, `storage_dropped` lost to the memory bound).
    storage: StorageState = "ok"
    storage_kept: Count = 0
    storage_dropped: Count = 0
    # The gateway's thread supervisor (edge_agent/supervisor.py): deaths restarted so
    # far, threads given up (dead now: a gateway fault) and their names (the first 16).
    thread_restarts: Count = 0
    threads_failed: Count = 0
    failed_threads: list[Text(64)] = Field(default=[], max_length=16)


def _vital_in_range(name: str, value: float | None) -> None:
    v = BY_NAME.get(name)
    if value is None or v is None:
        return
    slack = VITAL_SLACK * (v.high - v.low)
    if not max(0.0, v.low - slack) <= value <= v.high + slack:
        raise ValueError(
            f"values.{name} is outside {max(0.0, v.low - slack):g}..{v.high + slack:g} {v.unit}"
        )


class Vitals(Envelope):
    """One step of aggregated vitals for a bed: the training data of the fleet."""

    schema_: Literal["vigil.vitals/1"] = Field("vigil.vitals/1", alias="schema")
    bed: Id
    stay: Id
    step_start: WireTime
    step_seconds: Annotated[int, Field(ge=1, le=86_400)]
    iculos_hours: Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
    # Catalogue names (contracts/vitals.py) are range-checked; a model's other features
    # need a token name and a finite value.
    values: Annotated[
        dict[Id, Annotated[float, Field(ge=-1e6, le=1e6)] | None], Field(max_length=64)
    ]
    readings: Count = 0
    static: Annotated[
        dict[Id, Annotated[float, Field(ge=-1e6, le=1e6)] | None], Field(max_length=32)
    ] = {}
    # Optional (absent from older gateways, left out when empty): vital -> the state
    # in which the monitor withheld it this step (e.g. "invalid", "demo_data";
    # edge_agent/intellivue/), for vitals with no value: why the value is missing.
    quality: Annotated[dict[Id, Text(64)], Field(max_length=64)] | None = None

    def to_json(self) -> bytes:
        """Without `quality` when there is none, so a hub older than it accepts it."""
        skip = {"quality"} if self.quality is None else None
        return self.model_dump_json(exclude=skip).encode()

    @field_serializer("step_start")
    def _ss(self, ts: datetime) -> str:
        return iso_ms(ts)

    @model_validator(mode="after")
    def _vitals_plausible(self) -> Vitals:
        for name, value in self.values.items():
            _vital_in_range(name, value)
        return self


class News2Out(_Wire):
    """`contracts.news2.News2` on the wire, with its field names (`risk`: the band)."""

    total: Annotated[int, Field(ge=0, le=20)]
    risk: Literal["low", "low-medium", "medium", "high"]
    subscores: Annotated[dict[Id, Annotated[int, Field(ge=0, le=3)]], Field(max_length=16)]
    missing: list[Id] = Field(default=[], max_length=16)
    # Added with the bedside observations (issue 15); defaults read older payloads.
    scale: Literal[1, 2] = 1  # SpO2 scale
    assumed: list[Id] = Field(default=[], max_length=4)  # not recorded: air / Alert
    reassess: list[Id] = Field(default=[], max_length=4)  # recorded, older than allowed


class Risk(Envelope):
    schema_: Literal["vigil.risk/1"] = Field("vigil.risk/1", alias="schema")
    bed: Id
    stay: Id
    risk: Probability | None  # None: insufficient data, not scored
    threshold: Probability
    alarm_level: AlarmLevel
    model: ModelRef
    news2: News2Out
    observed: Count
    insufficient_data: bool = False
    window_end: WireTime

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
    bed: Id
    stay: Id
    action: AlarmAction
    level: AlarmLevel
    by: Text(128)  # operator name, or "system"
    reason: Text(2000) = ""
    risk: Probability | None = None
    model: ModelRef | None = None
    silence_seconds: Annotated[int, Field(ge=0, le=7 * 86_400)] | None = None
    feedback: Literal["deteriorating", "false_alarm"] | None = None
    note: Text(2000) | None = None
    # Which alarm of the bed: the model's risk alarm, or the NEWS2 response alarm
    # (issue 15; `risk` and `model` then None). Older payloads are the model's.
    source: Literal["model", "news2"] = "model"


# Nurse observations at the bedside (issue 15): what a monitor does not send.
ObservationKind = Literal["oxygen", "acvpu", "spo2_scale"]
OBSERVATION_KINDS: tuple[str, ...] = get_args(ObservationKind)
OXYGEN_VALUES = ("air", "oxygen")
ACVPU_VALUES = ("A", "C", "V", "P", "U")
SPO2_SCALE_VALUES = ("1", "2")
OxygenDevice = Literal[
    "nasal cannula", "simple mask", "venturi", "non-rebreather", "high-flow", "NIV", "other"
]
OXYGEN_DEVICES: tuple[str, ...] = get_args(OxygenDevice)
MAX_FLOW_L_MIN = 80.0


class Observation(Envelope):
    """One nurse observation of a bed (supplemental oxygen, ACVPU, SpO2 scale) with
    who entered it and when (`ts`); carried into the bed's NEWS2 until changed.

    `value`: "air"/"oxygen" (oxygen, with `device` and `flow_l_min` 0-80 when on
    oxygen, neither on air), "A".."U" (acvpu), "1"/"2" (spo2_scale; "2" needs a
    `reason`). No model field: a nurse entry is no model output."""

    schema_: Literal["vigil.observation/1"] = Field("vigil.observation/1", alias="schema")
    bed: Id
    stay: Id
    kind: ObservationKind
    value: Text(16)
    device: OxygenDevice | None = None
    flow_l_min: Annotated[float, Field(ge=0.0, le=MAX_FLOW_L_MIN, allow_inf_nan=False)] | None = (
        None
    )
    reason: Text(500) | None = None
    by: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_bad_chars)]

    @model_validator(mode="after")
    def _consistent(self) -> Observation:
        allowed = {
            "oxygen": OXYGEN_VALUES,
            "acvpu": ACVPU_VALUES,
            "spo2_scale": SPO2_SCALE_VALUES,
        }[self.kind]
        if self.value not in allowed:
            raise ValueError(f"value of a {self.kind} observation must be one of {allowed}")
        if (self.device is not None or self.flow_l_min is not None) and self.value != "oxygen":
            raise ValueError("device and flow_l_min belong to an oxygen observation 'oxygen'")
        if self.kind == "spo2_scale" and self.value == "2" and not (self.reason or "").strip():
            raise ValueError("SpO2 scale 2 needs a reason")
        if not self.by.strip():
            raise ValueError("by must name who entered the observation")
        return self


class ModelState(Envelope):
    schema_: Literal["vigil.model/1"] = Field("vigil.model/1", alias="schema")
    state: Literal["received", "verified", "active", "refused", "rolled_back"]
    name: Text(128)
    version: Text(64)
    channel: Id = "stable"
    reason: Text(4000) = ""
    active: ModelRef | None = None


# Shadow evaluation (issue 13): a candidate bundle scored silently beside the active
# one on a gateway; every step it saw counts once in each model's summary.
SHADOW_BINS = 10  # fixed risk histogram: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]


class ModelSummary(_Wire):
    """One model's part of a shadow summary, over the summary's period.

    `steps`: closed steps offered to the model (scored or not: the patient time);
    `scored`: steps with a risk; `histogram`: the risks in `SHADOW_BINS` equal bins
    (sums to `scored`); `alarm_steps`: steps after which its alarm machine was at level
    alarm or above (alarm time = alarm_steps x step_seconds); `raised`: alarms raised."""

    name: Text(128)
    version: Text(64)
    threshold: Probability
    steps: Count
    scored: Count
    histogram: list[Count] = Field(min_length=SHADOW_BINS, max_length=SHADOW_BINS)
    alarm_steps: Count
    raised: Count

    @model_validator(mode="after")
    def _consistent(self) -> ModelSummary:
        if self.scored > self.steps:
            raise ValueError("scored must not exceed steps")
        if sum(self.histogram) != self.scored:
            raise ValueError("histogram must sum to scored")
        if self.alarm_steps > self.steps:
            raise ValueError("alarm_steps must not exceed steps")
        return self


def cohen_kappa(both: int, only_a: int, only_b: int, neither: int) -> float | None:
    """Cohen's kappa of two raters' yes/no per item; None when undefined (no items, or
    chance agreement is 1: both always said the same one thing)."""
    n = both + only_a + only_b + neither
    if n == 0:
        return None
    po = (both + neither) / n
    pa, pb = (both + only_a) / n, (both + only_b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe >= 1.0 else (po - pe) / (1 - pe)


class ShadowSummary(Envelope):
    """`vigil.shadow/1` on vigil/v1/gw/{gw}/shadow: what the active and the shadow
    model did on this gateway's beds over [period_start, period_end).

    `state`: running (the shadow model scored this period), dropped (it failed and was
    unloaded: `reason`), refused (a shadow release did not verify: `reason`, the
    release's claimed `candidate`). Agreement counts steps both models saw by their
    alarm state after the step: `both`, `only_active`, `only_shadow`, `neither`."""

    schema_: Literal["vigil.shadow/1"] = Field("vigil.shadow/1", alias="schema")
    channel: Id
    trigger: Literal["periodic", "on_demand", "dropped", "refused"]
    state: Literal["running", "dropped", "refused"]
    reason: Text(2000) = ""
    candidate: ModelRef | None = None
    period_start: WireTime
    period_end: WireTime
    step_seconds: Annotated[int, Field(ge=1, le=86_400)]
    active: ModelSummary | None = None
    shadow: ModelSummary | None = None
    both: Count = 0
    only_active: Count = 0
    only_shadow: Count = 0
    neither: Count = 0

    @field_serializer("period_start", "period_end")
    def _period(self, ts: datetime) -> str:
        return iso_ms(ts)

    @model_validator(mode="after")
    def _consistent(self) -> ShadowSummary:
        if self.period_end < self.period_start:
            raise ValueError("period_end must not be before period_start")
        if self.state == "running" and (self.active is None or self.shadow is None):
            raise ValueError("a running shadow summary carries active and shadow")
        if self.state != "running" and not self.reason.strip():
            raise ValueError(f"a {self.state} shadow summary needs a reason")
        agreed = self.both + self.only_active + self.only_shadow + self.neither
        if self.shadow is not None and agreed > self.shadow.steps:
            raise ValueError("agreement counts more steps than the shadow model saw")
        return self

    @property
    def kappa(self) -> float | None:
        return cohen_kappa(self.both, self.only_active, self.only_shadow, self.neither)


class Command(Envelope):
    schema_: Literal["vigil.cmd/1"] = Field("vigil.cmd/1", alias="schema")
    # report_shadow: send the shadow summary now (vigil.shadow/1), not at the period.
    command: Literal["join_channel", "report_status", "report_shadow", "resend"]
    channel: Id | None = None
    # resend: re-publish the gateway's retained messages enqueued at or after `since`.
    since: WireTime | None = None

    @field_serializer("since")
    def _since(self, ts: datetime | None) -> str | None:
        return None if ts is None else iso_ms(ts)


class ModelRelease(Envelope):
    """A signed bundle on vigil/v1/models/{channel}; `gw` is the publisher (hub).

    The manifest's own fields are checked by contracts/bundle.py (signature first)."""

    schema_: Literal["vigil.bundle/1"] = Field("vigil.bundle/1", alias="schema")
    channel: Id
    manifest: dict[str, Any]
    signature: dict[str, str]
    model_b64: str


GatewayMessage = Annotated[
    Status | Vitals | Risk | Alarm | ModelState | Observation | ShadowSummary,
    Field(discriminator="schema_"),
]
_GATEWAY = TypeAdapter(GatewayMessage)
AnyMessage = Annotated[
    Status
    | Vitals
    | Risk
    | Alarm
    | ModelState
    | Observation
    | ShadowSummary
    | Command
    | ModelRelease,
    Field(discriminator="schema_"),
]
_ANY = TypeAdapter(AnyMessage)


# -- before parsing: nesting depth ----------------------------------------------------
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(payload: bytes, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of `[`/`{` outside JSON strings, exact up to `limit` (more:
    some number above it). Never parses: a regex and byte translations, C speed.

    Fast path: a payload with at most `limit` openers cannot nest deeper.
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return min(limit, payload.count(b"[") + payload.count(b"{"))
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    import numpy as np  # only for payloads with many brackets

    step = np.zeros(256, dtype=np.int64)
    step[ord("[")] = step[ord("{")] = 1
    step[ord("]")] = step[ord("}")] = -1
    deltas = step[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(deltas).max(initial=0))


# -- parse ----------------------------------------------------------------------------
def _problems(e: ValidationError, limit: int = 5) -> tuple[str | None, str]:
    """(the schema tag the errors are under, `key: what` lines; no values)."""
    errors = e.errors(include_url=False, include_input=False)
    tag = None
    lines = []
    for err in errors[:limit]:
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0].startswith("vigil."):
            tag, loc = loc[0], loc[1:]
        lines.append(f"{'.'.join(loc) or '(root)'}: {err['msg']}")
    more = len(errors) - limit
    return tag, "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def parse_message(
    payload: bytes,
    *,
    gateway_only: bool = True,
    max_bytes: int | None = None,
    now: datetime | None = None,
    window: TimeWindow = DEFAULT_WINDOW,
) -> (
    Status
    | Vitals
    | Risk
    | Alarm
    | ModelState
    | Observation
    | ShadowSummary
    | Command
    | ModelRelease
):
    """Validate one payload into its message model, or raise MessageError(kind, reason).

    Never raises anything else, whatever the bytes. `now`: the receiver's clock (default
    the machine's), which `ts` must lie near (`window`).
    """
    try:
        return _parse(payload, gateway_only, max_bytes, now, window)
    except MessageError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad payload must never escape as a crash
        raise MessageError("malformed", f"unreadable payload ({type(e).__name__})") from None


def _parse(
    payload: bytes,
    gateway_only: bool,
    max_bytes: int | None,
    now: datetime | None,
    window: TimeWindow,
) -> (
    Status
    | Vitals
    | Risk
    | Alarm
    | ModelState
    | Observation
    | ShadowSummary
    | Command
    | ModelRelease
):
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MessageError("malformed", f"payload is {type(payload).__name__}, not bytes")
    payload = bytes(payload)
    limit = max_bytes or (MAX_PAYLOAD_BYTES if gateway_only else MAX_RELEASE_BYTES)
    if len(payload) > limit:
        raise MessageError("oversized", f"oversized: {len(payload)} bytes > limit {limit}")
    if not payload.strip():
        raise MessageError("malformed", "not JSON: empty payload")
    depth = json_depth(payload)
    if depth > MAX_DEPTH:
        raise MessageError("malformed", f"not JSON we read: nested deeper than {MAX_DEPTH} levels")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError("malformed", f"not JSON: not UTF-8 at byte {e.start}") from None
    if not text.lstrip().startswith("{"):
        first = text.lstrip()[:1]
        kind = {"[": "list", '"': "str"}.get(first)
        if kind is None:  # a scalar, or not JSON at all (depth and size are bounded here)
            try:
                kind = type(json.loads(text)).__name__
            except ValueError:
                raise MessageError("malformed", "not JSON: not a JSON value") from None
        raise MessageError("malformed", f"not a JSON object: {kind}")
    try:
        msg = (_GATEWAY if gateway_only else _ANY).validate_json(payload, strict=True)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        types = {err["type"] for err in errors}
        if "json_invalid" in types:
            err = next(x for x in errors if x["type"] == "json_invalid")
            raise MessageError("malformed", f"not JSON: {err['msg']}") from None
        if "union_tag_not_found" in types:
            raise MessageError("schema", "missing field 'schema'") from None
        if "union_tag_invalid" in types:
            raise MessageError("schema", "field 'schema' names no message kind here") from None
        tag, problems = _problems(e)
        raise MessageError("schema", f"schema {tag!r}: {problems}") from None
    _check_time(msg, now or utc_now(), window)
    return msg


def _check_time(msg: Envelope, now: datetime, window: TimeWindow) -> None:
    ts = msg.ts if msg.ts.tzinfo else msg.ts.replace(tzinfo=UTC)
    ahead = (ts - now).total_seconds()
    if ahead > window.max_ahead.total_seconds():
        raise MessageError(
            "stale_or_future",
            f"ts {iso_ms(ts)} is {_span(ahead)} ahead of the receiver's clock "
            f"(at most {_span(window.max_ahead.total_seconds())})",
        )
    if isinstance(msg, ModelRelease):  # a retained release may be as old as it is
        return
    if -ahead > window.max_age.total_seconds():
        raise MessageError(
            "stale_or_future",
            f"ts {iso_ms(ts)} is {_span(-ahead)} behind the receiver's clock "
            f"(at most {_span(window.max_age.total_seconds())})",
        )


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s >= 2 * 86400:
        return f"{math.floor(s / 86400)} days"
    if s >= 2 * 3600:
        return f"{math.floor(s / 3600)} hours"
    return f"{math.floor(s)} s"
