"""The shipped TLS + ACL broker (deploy/mosquitto) on a test's own Mosquitto, and a client.

`Broker` is `tests.support.broker.Mosquitto` with the shipped config: only its file paths
and the listener port are rewritten (`render_conf`), the PKI comes from `cloud_hub.ca`.
Mosquitto 2.0.11 started as root drops to user `mosquitto` *before* it reads the TLS
files, the CRL and the ACL; so, as in production, the broker's folder is handed to that
user (when the tests run as root), and lives outside pytest's private tmp folder
(`broker_folder`). `Client` is a paho MQTT 5 client over TLS that records CONNACK,
SUBACK and PUBACK reason codes and what it received, for assertions.

Used by tests/test_security_broker.py, tests/test_edge_tls.py, tests/test_security_phi.py
and benches/bench_security.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import ssl
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub.ca import CertificateAuthority
from contracts.paths import PROJECT_ROOT
from tests.support.broker import Mosquitto

SHIPPED_CONF = PROJECT_ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
STRICT_CONF = PROJECT_ROOT / "deploy" / "mosquitto" / "mosquitto-strict.conf"
SHIPPED_ACL = PROJECT_ROOT / "deploy" / "mosquitto" / "acl"
SHIPPED_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
_plugins = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")) + sorted(
    Path("/usr/lib").glob("mosquitto_dynamic_security.so")
)
DYNSEC_PLUGIN = _plugins[0] if _plugins else None
CONFIGS = {"acl": SHIPPED_CONF, "strict": STRICT_CONF}
WAIT = 5.0


def render_conf(conf_dir: Path, data_dir: Path, port: int, shipped: Path = SHIPPED_CONF) -> str:
    """A shipped config with only its paths and its listener port rewritten."""
    text = shipped.read_text()
    assert "/etc/mosquitto/vigil/" in text and "listener 8883\n" in text
    if DYNSEC_PLUGIN:  # the plugin's folder depends on the machine's architecture
        text = text.replace(SHIPPED_PLUGIN, str(DYNSEC_PLUGIN))
    return (
        text.replace("/etc/mosquitto/vigil/", f"{conf_dir}/")
        .replace("/var/lib/mosquitto/", f"{data_dir}/")
        .replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    )


class Broker(Mosquitto):
    """One Mosquitto on a free port, with the shipped config and our PKI."""

    def __init__(
        self, folder: Path, ca: CertificateAuthority, mode: str = "acl", port: int = 0
    ) -> None:
        super().__init__(folder, port)
        self.ca = ca
        self.mode = mode  # which shipped config: "acl" (acl_file) or "strict" (dynsec)
        self.conf = self.folder / "etc" / "mosquitto.conf"

    def install(self) -> None:
        """Copy the broker's files as an operator would (deploy/README.md)."""
        conf_dir, data_dir = self.folder / "etc", self.folder / "data"
        conf_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "server.crt", "server.key"):
            shutil.copy(self.ca.broker_dir / name, conf_dir / name)
        shutil.copy(self.ca.crl_path, conf_dir / "crl.pem")
        shutil.copy(SHIPPED_ACL, conf_dir / "acl")
        shutil.copy(self.ca.broker_access_path, conf_dir / "dynamic-security.json")
        conf = render_conf(conf_dir, data_dir, self.port, CONFIGS[self.mode])
        self.conf.write_text(conf)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("mosquitto")
            except KeyError:
                user = None
            if user:
                for p in [self.folder, *self.folder.rglob("*")]:
                    os.chown(p, user.pw_uid, user.pw_gid)

    def write_config(self) -> Path:
        self.install()
        return self.conf

    def ready(self) -> bool:
        return self.log_path.exists() and b"running" in self.log_path.read_bytes()

    def reload(self) -> None:
        """Install the current files (e.g. a new CRL) and send SIGHUP, as `systemctl reload`."""
        self.install()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while b"Reloading config" not in self.log_path.read_bytes():
            assert time.monotonic() < deadline, "mosquitto did not reload"
            time.sleep(0.02)


class Client:
    """A paho MQTT 5 client over TLS that records what happened, for assertions."""

    def __init__(
        self,
        broker: Broker,
        folder: Path | None,
        *,
        client_id: str,
        ca_file: Path | None = None,
        cert_name: str = "client",
    ):
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.connack: ReasonCode | None = None
        self.suback: dict[int, list[ReasonCode]] = {}
        self.puback: dict[int, ReasonCode] = {}
        self.received: list[tuple[str, bytes]] = []
        self._acks = threading.Condition()
        self.error: BaseException | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.tls_set(
            ca_certs=str(ca_file or broker.ca.ca_cert_path),
            certfile=str(folder / f"{cert_name}.crt") if folder else None,
            keyfile=str(folder / f"{cert_name}.key") if folder else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c
        self.broker = broker

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        if not reason_code.is_failure:
            self.connected.set()
        else:
            self.closed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.closed.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks:
            self.suback[mid] = list(reason_codes)
            self._acks.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._acks:
            self.puback[mid] = reason_code
            self._acks.notify_all()

    def _on_message(self, client, userdata, msg):
        self.received.append((msg.topic, msg.payload))

    def connect(self, timeout: float = WAIT) -> bool:
        """True once the broker accepted us; False if it refused or hung up."""
        try:
            self.client.connect("localhost", self.broker.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            self.error = e
            return False
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.closed.is_set():
                return False
            time.sleep(0.02)
        return False

    def subscribe(self, filter_: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(filter_, qos=1)
        with self._acks:
            assert self._acks.wait_for(lambda: mid in self.suback, WAIT), f"no SUBACK {filter_}"
            return self.suback[mid]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._acks:
            assert self._acks.wait_for(lambda: info.mid in self.puback, WAIT), f"no PUBACK {topic}"
            return self.puback[info.mid]

    def wait_for(self, payload: bytes, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p == payload for _, p in self.received):
                return True
            time.sleep(0.02)
        return False

    def got(self, payload: bytes) -> bool:
        return any(p == payload for _, p in self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def broker_folder() -> Path:
    # Not under pytest's tmp folder: that is private to root (0700), and the broker,
    # as user mosquitto, must be able to reach its files.
    return Path(tempfile.mkdtemp(prefix="vigil-broker-"))
