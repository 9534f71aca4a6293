"""What the locked-down broker costs: TLS + client certificates + ACL vs plain MQTT.

Starts two real Mosquitto processes side by side on free ports:
- "secure": the shipped deploy/mosquitto config (TLS 1.2/1.3, ECDSA P-256 client
  certificates from cloud_hub.ca, CRL, ACL), as in tests/test_security_broker.py;
- "plain": the same Mosquitto with a plain listener, anonymous, no ACL.
and measures, with paho-mqtt 2 MQTT 5 clients on loopback:
- connect: TCP (+TLS handshake) + CONNECT/CONNACK, median over N connects;
- throughput: a gateway publishes M QoS 1 risk-sized messages (about 450 bytes) to
  its own topic; the hub receives them through `$share/hub/...`; messages per second
  from first publish to last delivery, median over R rounds.

With --gateway-layer it also rebuilds, without Docker, the Python layer of
deploy/docker/gateway.Dockerfile (the same files copied, `pip install -e '.[edge]'`
into a fresh venv) and reports its size, the install time and whether TensorFlow or
pandas got in.

Run: .venv/bin/python -m benches.bench_security [--connects 40] [--messages 2000] [--rounds 3]
     [--gateway-layer]
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.ca import CertificateAuthority
from contracts import topics
from tests.support.broker import Mosquitto
from tests.support.tls import Broker

ROOT = Path(__file__).resolve().parent.parent

PAYLOAD = b"x" * 450


class BrokerWithoutNodelay(Broker):
    """The shipped config minus `set_tcp_nodelay true`: shows why that line is there."""

    def install(self) -> None:
        super().install()
        conf = self.folder / "etc" / "mosquitto.conf"
        text = conf.read_text()
        assert "set_tcp_nodelay true\n" in text
        conf.write_text(text.replace("set_tcp_nodelay true\n", ""))


def plain_broker(folder: Path) -> Mosquitto:
    """The same Mosquitto, plain: anonymous, no TLS, no ACL, no log, its default Nagle."""
    return Mosquitto(
        folder / "plain",
        max_queued_messages=10000,
        set_tcp_nodelay=None,
        log_dest="none",
        log_type=None,
    ).start()


def plain_client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(5), "plain connect failed"
    return c


def time_connects(make, n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        c = make(i)
        times.append(time.perf_counter() - t0)
        c.disconnect()
        c.loop_stop()
    return statistics.median(times) * 1000


def throughput(pub: mqtt.Client, sub: mqtt.Client, topic: str, m: int) -> float:
    got = threading.Event()
    count = [0]

    def on_message(*_):
        count[0] += 1
        if count[0] >= m:
            got.set()

    sub.on_message = on_message
    t0 = time.perf_counter()
    for _ in range(m):
        pub.publish(topic, PAYLOAD, qos=1)
    assert got.wait(120), f"only {count[0]} of {m} delivered"
    return m / (time.perf_counter() - t0)


def gateway_layer() -> None:
    """The gateway image's Python layer, built as its Dockerfile does, minus Docker."""
    work = Path(tempfile.mkdtemp(prefix="vigil-gwlayer-"))
    try:
        src = work / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, src / name)
        for name in ("contracts", "edge_agent", "vigil_cli", "models"):
            if (ROOT / name).exists():
                shutil.copytree(
                    ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
                )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
        pip = [str(work / "venv" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-e", f"{src}[edge]"], check=True)
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (work / "venv").rglob("*") if f.is_file())
        py = str(work / "venv" / "bin" / "python")
        probe = subprocess.run(
            [
                py,
                "-c",
                "import importlib.util as u; print([m for m in ('tensorflow', 'pandas') "
                "if u.find_spec(m)])",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(
            f"gateway layer: venv {size / 1e6:.0f} MB, install {seconds:.0f} s, "
            f"heavy packages present: {probe.stdout.strip()}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=40)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gateway-layer", action="store_true")
    args = ap.parse_args()
    if args.gateway_layer:
        gateway_layer()

    work = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    ca = CertificateAuthority(work / "pki")
    ca.init()
    ca.issue_server()
    ca.issue_hub()
    ca.enroll_gateway("gw-bench")
    secure = Broker(Path(tempfile.mkdtemp(prefix="vigil-broker-")), ca)
    secure.start()
    nagle = BrokerWithoutNodelay(Path(tempfile.mkdtemp(prefix="vigil-broker-")), ca)
    nagle.start()
    plain = plain_broker(work)
    plain_port = plain.port
    try:

        def tls_client(i: int, name: str = "gw-bench", broker: Broker = secure) -> mqtt.Client:
            # the same paho calls as plain_client, plus tls_set (deploy/README.md)
            folder = ca.hub_dir if name == "hub" else ca.gateway_dir(name)
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{i}", protocol=5)
            c.tls_set(
                ca_certs=str(ca.ca_cert_path),
                certfile=str(folder / "client.crt"),
                keyfile=str(folder / "client.key"),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            done = threading.Event()
            c.on_connect = lambda *a: done.set()
            c.connect("localhost", broker.port)
            c.loop_start()
            assert done.wait(5), "TLS connect failed"
            return c

        tls_ms = time_connects(tls_client, args.connects)
        nagle_ms = time_connects(lambda i: tls_client(i, broker=nagle), args.connects)
        plain_ms = time_connects(lambda i: plain_client(plain_port, f"p-{i}"), args.connects)

        topic = topics.risk("gw-bench", "bed-1")
        share = topics.shared(f"{topics.PREFIX}/gw/+/bed/+/risk")
        rates: dict[str, list[float]] = {"secure": [], "plain": []}
        for r in range(args.rounds):
            for kind in ("secure", "plain"):
                if kind == "secure":
                    hub, gw = tls_client(1000 + r, "hub"), tls_client(2000 + r)
                else:
                    hub = plain_client(plain_port, f"hub-{r}")
                    gw = plain_client(plain_port, f"gw-{r}")
                ready = threading.Event()
                hub.on_subscribe = lambda *a, ev=ready: ev.set()
                hub.subscribe(share, qos=1)
                assert ready.wait(5)
                rates[kind].append(throughput(gw, hub, topic, args.messages))
                for c in (hub, gw):
                    c.disconnect()
                    c.loop_stop()
        sec, pla = statistics.median(rates["secure"]), statistics.median(rates["plain"])
        print(
            f"connect median over {args.connects}: TLS+client cert {tls_ms:.2f} ms, "
            f"plain {plain_ms:.2f} ms, ratio {tls_ms / plain_ms:.1f}x; "
            f"TLS without set_tcp_nodelay {nagle_ms:.2f} ms"
        )
        print(
            f"QoS1 {args.messages} x {len(PAYLOAD)} B gateway->hub ($share), median of "
            f"{args.rounds}: TLS+ACL {sec:,.0f} msg/s, plain {pla:,.0f} msg/s, "
            f"ratio {pla / sec:.2f}x"
        )
    finally:
        secure.stop()
        nagle.stop()
        plain.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(secure.folder, ignore_errors=True)
        shutil.rmtree(nagle.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
