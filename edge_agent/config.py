"""Gateway configuration: one TOML file plus environment overrides, validated at start.

Environment variables override the file with the prefix `VIGIL_EDGE__` and `__`
between nesting levels, e.g. `VIGIL_EDGE__MQTT__HOST=broker.local`,
`VIGIL_EDGE__GATEWAY_ID=ward-3`. An invalid value fails at start with a `ConfigError`
naming the key, the value given and what was expected (`vigil edge check-config`).
Example: deploy/edge/gateway.example.toml.

Monitor lines: a bed reads a serial line or dials out to a monitor's TCP port (one
line, one bed), or shares an MLLP listener (`type = "mllp-listen"`) to which monitors
and HL7 gateways connect: beds with the same host and port share one listener, and each
message goes to the first of them whose `match` rules it fits (`BedMatch`). `[hl7]`
holds what every line shares: the site's time zone for timestamps without an offset,
the clock-skew flag, frame and connection limits, and the site vocabulary (private
codes, per-vital source priority) handed to the PCD-01 parser.
"""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contracts.broker import BrokerSettings, TlsFiles
from contracts.errors import describe
from contracts.mdc import SiteVocabulary, site_vocabulary
from contracts.mllp import DEFAULT_MAX_FRAME
from contracts.paths import default_bundle_dir, default_trusted_keys_dir, work_dir
from contracts.topics import check_id
from contracts.vitals import VITAL_NAMES


class ConfigError(ValueError):
    """The configuration cannot be used; the message lists every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BedMatch(_Strict):
    """Which messages are this bed's: every rule given must fit (none given: any message).

    `sending_app`/`sending_facility`: MSH-3.1/MSH-4.1; `device_id`: an equipment id in
    OBX-18 or MSH-3 (e.g. the monitor's EUI-64, compared without case); `location`:
    PV1-3, each component given must equal the message's, or its first subcomponent
    (`"ICU^^bed-1"` fits `ICU^^bed-1&0&0`; `"ICU"` fits the whole unit);
    `bed_label`: PV1-3.3, the bed component. On a single-bed serial/tcp line a rule set
    here drops (and counts as `wrong_bed`) a message that does not fit it.
    """

    sending_app: str | None = Field(None, min_length=1)
    sending_facility: str | None = Field(None, min_length=1)
    device_id: str | None = Field(None, min_length=1)
    location: str | None = Field(None, min_length=1)
    bed_label: str | None = Field(None, min_length=1)

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in type(self).model_fields)

    def describe(self) -> str:
        """The rules as `key=value` pairs (for logs and errors)."""
        rules = [f"{k}={v}" for k in type(self).model_fields if (v := getattr(self, k))]
        return ", ".join(rules) or "any message"


class SerialSource(_Strict):
    type: Literal["serial"]
    port: str = Field(min_length=1, description="device path, e.g. /dev/ttyUSB0")
    baud: int = Field(115200, gt=0)
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    bytesize: Literal[5, 6, 7, 8] = 8
    stopbits: Literal[1, 1.5, 2] = 1
    ack: bool = False  # write an HL7 ACK back for every message (monitors that expect one)
    match: BedMatch | None = None  # set: drop messages labelled for another bed


class TcpSource(_Strict):
    """The gateway dials out to a monitor's (or terminal server's) TCP port."""

    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    ack: bool = False
    match: BedMatch | None = None


class MllpListenSource(_Strict):
    """Monitors connect to the gateway (HL7 MLLP, usually port 2575). Beds with the same
    host/port share one listener; `match` tells their messages apart. The default host
    is loopback only: a hospital sets the address of its monitor network."""

    type: Literal["mllp-listen"]
    host: str = Field("127.0.0.1", min_length=1)
    # 0: the kernel picks a free port, logged and shown as "listening for monitors on"
    # (tests; a hospital sets the port its monitors are configured with).
    port: int = Field(2575, ge=0, le=65535)
    match: BedMatch = BedMatch()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class SimSource(_Strict):
    """An in-process firmware_sim monitor (imported only when a bed uses it)."""

    type: Literal["sim"]
    scenario: Literal["stable", "sepsis", "hypotension", "desaturation"] = "stable"
    seed: int = 0
    replay: Path | None = None  # canonical Parquet table; with `stay`, replays a real stay
    stay: str | None = None
    speed: float = Field(1.0, gt=0)
    interval: float = Field(1.0, gt=0)
    max_rate: float = Field(10.0, gt=0)
    faults: list[str] = []

    @model_validator(mode="after")
    def _replay_needs_stay(self) -> SimSource:
        if (self.replay is None) != (self.stay is None):
            raise ValueError("replay and stay go together (a table and a stay id in it)")
        return self


class IntelliVueSource(_Strict):
    """A Philips IntelliVue spoken to in its own Data Export protocol (issue 16,
    edge_agent/intellivue/): over its MIB/RS-232 port (`port`, 115200 8N1) or the LAN
    (`udp = "host"` or `"host:24105"`). `poll_seconds`: numerics poll period (the monitor
    takes one numerics poll a second, Guide p. 28); `silence_seconds`: no message for that
    long and the driver associates again (cable pulled, monitor rebooted)."""

    type: Literal["intellivue"]
    port: str | None = Field(None, min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    udp: str | None = Field(None, min_length=1, description="monitor host[:port] on the LAN")
    baud: int = Field(115200, gt=0)
    poll_seconds: float = Field(1.0, gt=0)
    keep_alive_seconds: float = Field(10.0, ge=0)
    silence_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_line(self) -> IntelliVueSource:
        if (self.port is None) == (self.udp is None):
            raise ValueError("give the monitor's port (serial) or udp (LAN), one of them")
        return self


Source = Annotated[
    SerialSource | TcpSource | MllpListenSource | SimSource | IntelliVueSource,
    Field(discriminator="type"),
]


class BedConfig(_Strict):
    id: str
    source: Source

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_id("bed", v)


class TlsConfig(TlsFiles):
    """`[mqtt.tls]`: the broker's CA and the gateway's client certificate, files that exist."""

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (the gateway's client certificate)")
        for name in ("ca", "cert", "key"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name} file {p} does not exist")
        return self


class MqttConfig(BrokerSettings):
    """`[mqtt]`: the broker (host, port, protocol, tls, keepalive, client_id: see
    contracts/broker.py) and how the gateway publishes to it. MQTT 5, the default, is
    what reports an ACL refusal in the PUBACK."""

    tls: TlsConfig | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    client_id: str | None = None  # default: vigil-edge-{gateway_id}
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    max_inflight: int = Field(100, ge=1, le=65535)
    status_interval_seconds: float = Field(30.0, gt=0)
    # Acknowledged messages are kept this long for a hub's `resend` (a broker that
    # dies after its PUBACK can lose them); 0: not kept.
    sent_retention_hours: float = Field(24.0, ge=0)


class AlarmConfig(_Strict):
    """Alarm logic parameters (edge_agent/alarms.py); the threshold comes from the bundle."""

    hysteresis: float = Field(0.05, ge=0, le=0.5)
    min_steps: int = Field(2, ge=1, le=48)
    escalate_after_steps: int = Field(3, ge=1, le=168)
    escalate_margin: float = Field(0.2, ge=0, le=1)
    watch_fraction: float = Field(0.8, gt=0, le=1)
    max_silence_seconds: int = Field(3600, ge=60)


class News2Config(_Strict):
    """`[news2]`: the NEWS2 response alarm beside the model's, and how long a nurse
    observation is trusted (docs/ARCHITECTURE.md "NEWS2 at the bedside").

    `alarm`: which alarms the site uses: "both" (default), "news2" only (the model is
    still scored, shown and sent, but raises no alarm) or "model" only (NEWS2 shown
    without an alarm). `alarm_at`: the RCP response band that raises the NEWS2 alarm
    (low-medium: any single 3; medium: 5-6; high: 7 or more); the band above it
    escalates. `reassess_minutes`: a supplemental-oxygen or ACVPU entry older than this
    is still used and flagged "re-assess" (60: the hourly observations of an ICU; the
    SpO2 scale is a standing clinical decision and is never flagged).
    """

    alarm: Literal["both", "news2", "model"] = "both"
    alarm_at: Literal["low-medium", "medium", "high"] = "medium"
    reassess_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)

    @property
    def model_alarm(self) -> bool:
        return self.alarm in ("both", "model")

    @property
    def news2_alarm(self) -> bool:
        return self.alarm in ("both", "news2")


class AdmissionConfig(_Strict):
    """`[admission]`: `require = true` scores only beds with an admitted patient (from
    the ADT feed or admitted at the bedside): other beds' vitals are shown, not scored,
    and their snapshot says why. False (default): the monitor's patient is scored."""

    require: bool = False


class ShadowConfig(_Strict):
    """`[shadow]`: shadow evaluation of a candidate bundle (edge_agent/shadow.py).

    `enabled`: accept shadow releases from the hub (false: they are ignored, nothing
    runs beside the active model). `report_minutes`: how often the per-model summary
    (`vigil.shadow/1`) goes to the hub while a shadow model runs; the hub's
    `report_shadow` command asks for one at once. `queue_steps`: steps waiting for the
    shadow model; beyond it a step is skipped for the shadow and counted, so the
    shadow can never slow the patient-facing path."""

    enabled: bool = True
    report_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)
    queue_steps: int = Field(1024, ge=1, le=1_000_000)


class LinkConfig(_Strict):
    stale_after_seconds: float = Field(10.0, gt=0)
    down_after_seconds: float = Field(30.0, gt=0)
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(10.0, gt=0)


class PrivateCode(_Strict):
    """A vendor-private OBX-3 code the site maps to a catalogue vital (`[[hl7.private_codes]]`)."""

    system: str = ""  # OBX-3.3 coding system, e.g. 99MNDRY ("" matches any)
    code: str = Field(min_length=1)  # OBX-3.1
    vital: str  # catalogue name: HR, O2Sat, Temp, SBP, MAP, DBP, Resp
    source: str = Field("site", min_length=1)  # for the priority rules, e.g. ecg, spo2, nibp

    @field_validator("vital")
    @classmethod
    def _vital(cls, v: str) -> str:
        if v not in VITAL_NAMES:
            raise ValueError(f"expected a catalogue vital, one of {', '.join(VITAL_NAMES)}")
        return v


class Hl7Config(_Strict):
    """`[hl7]`: what every monitor line shares (parser, listener limits, vocabulary)."""

    timezone: str = "UTC"  # IANA name: the time of an HL7 timestamp without UTC offset
    clock_skew_seconds: float = Field(300.0, gt=0)  # a message time further off: flagged
    max_frame_bytes: int = Field(DEFAULT_MAX_FRAME, ge=1024, le=16 * 1024 * 1024)
    max_connections: int = Field(64, ge=1, le=4096)  # per listener
    idle_timeout_seconds: float = Field(300.0, gt=0)  # a silent monitor connection closes
    private_codes: list[PrivateCode] = []
    # vital -> its sources, best first, e.g. HR = ["ecg", "abp", "spo2", "nibp", "pulse"]
    priority: dict[str, list[str]] = {}

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name, e.g. UTC, Europe/Paris") from None
        return v

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        bad = sorted(set(v) - set(VITAL_NAMES))
        if bad:
            raise ValueError(f"{bad}: expected catalogue vitals ({', '.join(VITAL_NAMES)})")
        return v

    def tzinfo(self) -> tzinfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)

    def vocabulary(self) -> SiteVocabulary:
        return site_vocabulary([c.model_dump() for c in self.private_codes], self.priority)


class PrivacyConfig(_Strict):
    """The site secret for stay pseudonyms (edge_agent/privacy.py); neither given: the
    gateway generates one into `stay_secret` beside its store (mode 0600)."""

    stay_secret: SecretStr | None = None
    stay_secret_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> PrivacyConfig:
        if self.stay_secret is not None and self.stay_secret_file is not None:
            raise ValueError("give stay_secret or stay_secret_file, not both")
        if self.stay_secret is not None and len(self.stay_secret.get_secret_value().strip()) < 16:
            raise ValueError("stay_secret must have at least 16 characters")
        if self.stay_secret_file is not None and not Path(self.stay_secret_file).is_file():
            raise ValueError(f"stay_secret_file {self.stay_secret_file} does not exist")
        return self


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIGIL_EDGE__", env_nested_delimiter="__", extra="forbid"
    )

    gateway_id: str
    operator: str | None = None
    channel: str = "stable"
    beds: list[BedConfig] = Field(min_length=1)
    mqtt: MqttConfig = MqttConfig()
    store_path: Path = Field(default_factory=lambda: work_dir() / "edge" / "gateway.sqlite")
    bundle_dirs: list[Path] = Field(default_factory=lambda: [default_bundle_dir()])
    trusted_keys: list[Path] = Field(default_factory=lambda: [default_trusted_keys_dir()])
    alarms: AlarmConfig = AlarmConfig()
    news2: News2Config = News2Config()
    admission: AdmissionConfig = AdmissionConfig()
    shadow: ShadowConfig = ShadowConfig()
    link: LinkConfig = LinkConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    hl7: Hl7Config = Hl7Config()
    # A command or model release from the hub is read only when its `ts` lies at most
    # this far behind / ahead of the gateway's clock (the hub's settings of the same
    # names); outside it is refused `stale_or_future`, counted and logged. Widen them on
    # a gateway whose clock is known to be off by days until it is fixed.
    max_message_age_seconds: float = Field(365 * 86400.0, gt=0)
    max_message_ahead_seconds: float = Field(86400.0, gt=0)
    log_json: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("gateway_id", "channel")
    @classmethod
    def _ids(cls, v: str, info: Any) -> str:
        return check_id(info.field_name, v)

    @model_validator(mode="after")
    def _unique_beds(self) -> EdgeSettings:
        ids = [b.id for b in self.beds]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"bed ids must be unique; repeated: {dup}")
        for addr, beds in self.listeners().items():
            if len(beds) < 2:
                continue
            loose = [b.id for b in beds if b.source.match.empty]
            if loose:
                raise ValueError(
                    f"beds {[b.id for b in beds]} share the listener {addr[0]}:{addr[1]}: "
                    f"each needs match rules (none on {loose})"
                )
            seen: dict[str, str] = {}
            for b in beds:
                rules = b.source.match.describe()
                if rules in seen:
                    raise ValueError(
                        f"beds {seen[rules]} and {b.id} on {addr[0]}:{addr[1]} have the same "
                        f"match rules ({rules}): expected rules that tell them apart"
                    )
                seen[rules] = b.id
        return self

    def listeners(self) -> dict[tuple[str, int], list[BedConfig]]:
        """(host, port) -> the beds of each MLLP listener, in config order."""
        out: dict[tuple[str, int], list[BedConfig]] = {}
        for b in self.beds:
            if isinstance(b.source, MllpListenSource):
                out.setdefault(b.source.address, []).append(b)
        return out

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"vigil-edge-{self.gateway_id}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [env_settings, init_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_config(path: str | Path, **overrides: Any) -> EdgeSettings:
    """Read `path` (TOML), apply VIGIL_EDGE__* env overrides, validate; ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    import tomllib

    try:
        tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    conf = SettingsConfigDict(**{**EdgeSettings.model_config, "toml_file": p})  # type: ignore[typeddict-item]
    cls = type("EdgeSettingsFromFile", (EdgeSettings,), {"model_config": conf})
    try:
        return cls(**overrides)
    except ValidationError as e:
        raise ConfigError(f"invalid gateway config {p}:\n{describe(e)}") from None
    except ValueError as e:  # e.g. an env override that is not JSON for a nested field
        raise ConfigError(f"invalid gateway config {p}: {e}") from None
