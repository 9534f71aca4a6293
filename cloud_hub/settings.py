"""Settings of one hub ingest worker (`vigil hub serve`): broker, store, batching, TLS.

Every field can be set as VIGIL_HUB_<NAME> (e.g. VIGIL_HUB_MQTT_HOST,
VIGIL_HUB_TLS_CA) or as the matching `vigil hub serve` option.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import topics
from contracts.broker import DEFAULT_HOST, DEFAULT_PORT, BrokerSettings, Port, Protocol, TlsFiles
from contracts.messages import MAX_PAYLOAD_BYTES


class HubSettings(BaseSettings):
    """Settings of one hub worker; every field can be set as VIGIL_HUB_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_HUB_")

    mqtt_host: str = DEFAULT_HOST
    mqtt_port: Port = DEFAULT_PORT
    # "3.1.1" only for a broker without MQTT 5 (the demo's in-process amqtt): no shared
    # subscription there, so ONE worker; no session expiry (the broker decides).
    mqtt_protocol: Protocol = "5"
    db_url: str | None = None  # None: sqlite:///<work_dir>/hub.db
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-1")
    share_group: str = topics.HUB_SHARE_GROUP
    batch_size: int = Field(200, ge=1, le=10_000)
    batch_ms: int = Field(50, ge=1, le=60_000)
    max_payload: int = Field(MAX_PAYLOAD_BYTES, ge=1024)
    # Queued QoS 1 messages survive a hub restart for this long.
    session_expiry: int = Field(7 * 24 * 3600, ge=0)
    # Unacknowledged messages the broker may send us at once: must exceed batch_size.
    receive_maximum: int = Field(1000, ge=1, le=65535)
    keepalive: int = Field(30, ge=5)
    # resend `since` = last stored message of the gateway minus this (skew, in flight).
    resend_margin_seconds: float = Field(60.0, ge=0)
    # A message's `ts` may lie this far behind / ahead of the hub's clock; outside it is
    # dead-lettered `stale_or_future` (contracts/messages.py TimeWindow).
    max_message_age_seconds: float = Field(365 * 86400.0, gt=0)
    max_message_ahead_seconds: float = Field(86400.0, gt=0)
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no HTTP endpoint
    metrics_addr: str = "0.0.0.0"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _window_holds_a_batch(self) -> HubSettings:
        if self.receive_maximum < self.batch_size:
            raise ValueError(
                f"receive_maximum ({self.receive_maximum}) must be >= batch_size "
                f"({self.batch_size}): the broker stops sending at receive_maximum unacked"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def client_id(self) -> str:
        # Stable across restarts: the broker keeps this id's session (and its queue).
        return f"vigil-hub-{self.worker_id}"

    def broker(self) -> BrokerSettings:
        """The broker as contracts/broker.py connects to it: TLS when `tls_ca` is given."""
        tls = (
            TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key) if self.tls_ca else None
        )
        return BrokerSettings(
            host=self.mqtt_host,
            port=self.mqtt_port,
            protocol=self.mqtt_protocol,
            tls=tls,
            keepalive=self.keepalive,
            client_id=self.client_id,
        )
