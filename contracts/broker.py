"""The MQTT broker a part connects to, and the one way to build its paho client.

`BrokerSettings` says where the broker is and how to speak to it: host, port,
protocol ("5", or "3.1.1" only for a broker without MQTT 5, such as the demo's
in-process amqtt), TLS (`TlsFiles`; None: plain TCP), keepalive and client id.
The gateway's `[mqtt]` config (edge_agent/config.py `MqttConfig`) is one with the
gateway's own settings added; the hub's ingest settings (cloud_hub/settings.py)
and its rollout commands build one from their options.

`make_client` builds the paho-mqtt 2 client (callback API 2) for it, with TLS when
`tls` is set; `connect_async` starts connecting it (paho's loop reconnects).
paho is imported inside the functions: the simulator imports `contracts` too and
carries no MQTT client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

Protocol = Literal["5", "3.1.1"]
Port = Annotated[int, Field(ge=1, le=65535)]
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883


class TlsFiles(BaseModel):
    """TLS to the broker: the CA that signed its certificate (None: the system's CAs)
    and this client's certificate and key (None: no client certificate)."""

    model_config = ConfigDict(extra="forbid")

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class BrokerSettings(BaseModel):
    """Where the broker is and how to connect; `BrokerSettings(host, port)` also reads."""

    model_config = ConfigDict(extra="forbid")

    host: str = DEFAULT_HOST
    port: Port = DEFAULT_PORT
    protocol: Protocol = "5"
    tls: TlsFiles | None = None  # None: plain TCP
    keepalive: int = Field(30, ge=5)
    client_id: str | None = None  # None: the part's own default

    def __init__(self, *address: Any, **data: Any) -> None:
        if len(address) > 2:
            raise TypeError("BrokerSettings takes at most host and port positionally")
        data.update(zip(("host", "port"), address, strict=False))
        super().__init__(**data)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def make_client(
    settings: BrokerSettings,
    *,
    client_id: str = "",
    clean_session: bool | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client for `settings` (not connected yet).

    `client_id` is used when `settings.client_id` is None. `clean_session` matters
    for MQTT 3.1.1 only (None: paho's default, a clean session); MQTT 5 sets clean
    start when connecting (`connect_async`). TLS (when `settings.tls`) verifies the
    broker's certificate and host name.
    """
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or client_id,
        protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311,
        clean_session=clean_session,
        manual_ack=manual_ack,
    )
    tls = settings.tls
    if tls is not None:
        c.tls_set(
            ca_certs=str(tls.ca) if tls.ca else None,
            certfile=str(tls.cert) if tls.cert else None,
            keyfile=str(tls.key) if tls.key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return c


def connect_async(
    client: mqtt.Client,
    settings: BrokerSettings,
    *,
    clean_start: bool,
    properties: Properties | None = None,
) -> None:
    """Start connecting `client` (run its loop): MQTT 5 with `clean_start` and the
    CONNECT `properties`; MQTT 3.1.1 with the session the client was made with."""
    if settings.protocol == "5":
        client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            clean_start=clean_start,
            properties=properties,
        )
    else:
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
