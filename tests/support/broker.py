"""A Mosquitto of the test's own on a free loopback port: one class, config overrides.

The default config: a plain listener on 127.0.0.1, anonymous, no persistence, no limit
on queued messages (a hub's session must hold what gateways send while it restarts),
TCP_NODELAY, errors/warnings/notices logged to `mosquitto.log` in its folder.
`Mosquitto(folder, **overrides)` changes a line (`max_queued_messages=100`), adds one,
or drops one (`set_tcp_nodelay=None`); a list repeats the key. `tests.support.tls`
starts the shipped TLS + ACL config the same way (it overrides `write_config()`).

The fixture `broker` (tests/conftest.py) is one per test, with the default config or
the overrides of `@pytest.mark.mosquitto(key=value)`; benches and tests that need one
for longer use `with Mosquitto(folder, ...) as broker:`. A `restart()`
keeps the port (sessions are lost: persistence is off, as after a broker replaced
without its volume). `Subscriber` stands in for the hub: it records every message.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.net import free_port
from vigil_cli.broker import mosquitto_path

MOSQUITTO = mosquitto_path() or "/usr/sbin/mosquitto"

needs_mosquitto = pytest.mark.skipif(
    mosquitto_path() is None, reason="mosquitto is not installed (make setup installs it)"
)

Value = str | int | bool | Sequence[str] | None

DEFAULTS: dict[str, Value] = {
    "allow_anonymous": "true",
    "persistence": "false",
    "max_queued_messages": 0,  # no limit
    "set_tcp_nodelay": "true",
    "log_dest": "stderr",
    "log_type": ("error", "warning", "notice"),
}


class Mosquitto:
    """A private Mosquitto process that a test can stop, restart and read the log of."""

    def __init__(self, folder: Path, port: int = 0, **overrides: Value) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.overrides = overrides
        self.conf = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        """The config text: the listener, then DEFAULTS with the overrides applied."""
        lines = [f"listener {self.port} 127.0.0.1"]
        for key, value in (DEFAULTS | self.overrides).items():
            if value is None:
                continue
            many = value if isinstance(value, list | tuple) else (value,)
            lines += [f"{key} {str(v).lower() if isinstance(v, bool) else v}" for v in many]
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        self.conf.write_text(self.config())
        return self.conf

    def ready(self) -> bool:
        """True once the broker takes connections (a TCP accept on its port)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
        ):
            return True
        return False

    def start(self, timeout: float = 10.0) -> Self:
        conf = self.write_config()
        with open(self.log_path, "ab") as log:  # the child holds its own copy
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            if self.ready():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log()}")

    def stop(self) -> None:
        """SIGTERM and wait (Mosquitto exits at once; a no-op when not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """A mosquitto_sub-like client that reconnects fast and records every message."""

    def __init__(self, port: int, filt: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.reconnect_delay_set(0.05, 0.1)

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe(filt, qos=1)

        def on_subscribe(*_: object) -> None:
            self.ready.set()

        def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload, msg.retain))

        c.on_connect, c.on_message, c.on_subscribe = on_connect, on_message, on_subscribe
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "subscriber did not subscribe"

    def wait_for(self, n: int, timeout: float, topic_part: str = "/risk") -> list:
        """The messages whose topic holds `topic_part`, once there are `n` (or at timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [m for m in self.messages if topic_part in m[0]]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
