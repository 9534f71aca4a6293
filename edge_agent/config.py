"""Gateway configuration: one TOML file plus environment overrides, validated at start.

Environment variables override the file with the prefix `VIGIL_EDGE__` and `__`
between nesting levels, e.g. `VIGIL_EDGE__MQTT__HOST=broker.local`,
`VIGIL_EDGE__GATEWAY_ID=ward-3`. An invalid value fails at start with a `ConfigError`
naming the key, the value given and what was expected (`vigil edge check-config`).
Example: deploy/edge/gateway.example.toml.
"""

from __future__ import annotations

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
from contracts.paths import default_bundle_dir, default_trusted_keys_dir, work_dir
from contracts.topics import check_id


class ConfigError(ValueError):
    """The configuration cannot be used; the message lists every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SerialSource(_Strict):
    type: Literal["serial"]
    port: str = Field(min_length=1, description="device path, e.g. /dev/ttyUSB0")
    baud: int = Field(115200, gt=0)
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    bytesize: Literal[5, 6, 7, 8] = 8
    stopbits: Literal[1, 1.5, 2] = 1


class TcpSource(_Strict):
    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


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


Source = Annotated[SerialSource | TcpSource | SimSource, Field(discriminator="type")]


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


class LinkConfig(_Strict):
    stale_after_seconds: float = Field(10.0, gt=0)
    down_after_seconds: float = Field(30.0, gt=0)
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(10.0, gt=0)


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
    link: LinkConfig = LinkConfig()
    privacy: PrivacyConfig = PrivacyConfig()
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
        return self

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
