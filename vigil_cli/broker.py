"""The demo's MQTT broker: a Mosquitto of its own when installed, else amqtt in-process.

Mosquitto runs on a free loopback port with a conf written into the work folder:
anonymous on loopback only (the demo is one machine; production brokers use the
TLS/ACL config in deploy/), persistence ON in the work folder, saved on every
change, so that the hub's persistent session (its subscription and queued
messages) survives a broker restart: without it, messages published between a
broker restart and the hub re-subscribing would be acknowledged to the gateway and
dropped by the broker (nobody subscribed yet). The chaos tests restart it in place.

amqtt (docs/ARCHITECTURE.md "Known pitfalls": runs in a thread with its own asyncio
loop) is the fallback when no Mosquitto is installed; it speaks MQTT 3.1.1 only, so the demo
then runs its clients on 3.1.1 (see `protocol`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

from .procs import free_port, spawn, stop, wait_port

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_path() -> str | None:
    for c in MOSQUITTO_CANDIDATES:
        found = shutil.which(c) or (c if Path(c).is_file() else None)
        if found:
            return found
    return None


class MosquittoBroker:
    kind = "mosquitto"

    def __init__(self, folder: Path, port: int = 0, exe: str | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.exe = exe or mosquitto_path()
        if self.exe is None:
            raise RuntimeError("mosquitto is not installed")
        self.conf = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def _write_conf(self) -> None:
        data = self.folder / "mosquitto-data"
        data.mkdir(exist_ok=True)
        # Mosquitto started as root drops to user `mosquitto` (ARCHITECTURE.md pitfalls), which
        # cannot reach a folder under a private (0700) temporary directory: its saves then
        # fail with "Permission denied" and the sessions do not survive a restart. This
        # broker is the demo's own, on loopback only: keep the starting user.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            user + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_on_changes true\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        self._write_conf()
        self.proc = spawn([self.exe, "-c", str(self.conf)], self.log_path)
        if not wait_port(self.port, timeout, self.proc):
            text = self.log_path.read_text(errors="replace")[-2000:]
            stop(self.proc, 2)
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{text}")
        return self

    def stop(self) -> None:
        stop(self.proc, 10)

    def kill(self) -> None:
        from .procs import kill

        kill(self.proc)

    def restart(self) -> MosquittoBroker:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> str:
        pid = self.proc.pid if self.proc else "-"
        return f"Mosquitto {self.exe} on 127.0.0.1:{self.port} (pid {pid}, conf {self.conf})"


class AmqttBroker:
    """amqtt in a daemon thread with its own asyncio loop."""

    kind = "amqtt"

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> AmqttBroker:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
        }

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as e:  # reported by start()
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None or not wait_port(self.port, timeout):
            raise RuntimeError(f"amqtt broker did not start on {self.port}: {self._error}")
        return self

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    kill = stop

    def restart(self) -> AmqttBroker:
        self.stop()
        self._ready.clear()
        return self.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def describe(self) -> str:
        return f"in-process amqtt broker on 127.0.0.1:{self.port} (MQTT 3.1.1)"


def embedded_broker(
    folder: Path, port: int = 0, prefer: str = "auto"
) -> MosquittoBroker | AmqttBroker:
    """Start Mosquitto when installed (or `prefer='mosquitto'`), else amqtt."""
    if prefer not in ("auto", "mosquitto", "amqtt"):
        raise ValueError(f"broker must be auto, mosquitto or amqtt, got {prefer!r}")
    if prefer != "amqtt" and mosquitto_path() is not None:
        return MosquittoBroker(folder, port).start()
    if prefer == "mosquitto":
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    log.warning("mosquitto not installed: using the in-process amqtt broker")
    return AmqttBroker(folder, port).start()
