"""Hub ingest benchmark: messages/s through Mosquitto into the store, side by side
with Mosquitto's own delivery rate to a plain subscriber, measured in one run.

Every scenario uses the same Mosquitto (started here on a free loopback port), the
same pre-built QoS 1 vitals payloads and the same publisher (this process). The
receivers run as separate processes:
- `mosquitto -> plain subscriber`: a paho MQTT 5 client that only counts (QoS 1,
  automatic acks): what the broker and paho deliver on this machine;
- `hub, N worker(s)`: `vigil hub serve` processes on one shared subscription,
  validating, storing idempotently and acking after commit (SQLite / PostgreSQL).
A rate is messages / (last one received or stored - first one published).
`store rows/s` calls `write_batch` directly (no MQTT): the store's own ceiling.

Bounded: --messages per scenario (default 10,000), --repeat (default 3, median
reported), --timeout seconds per scenario.

    .venv/bin/python -m benches.bench_hub [--messages 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from cloud_hub.store import Accepted, postgres_url, write_batch
from cloud_hub.store.models import VitalsSummary
from contracts import topics
from contracts.messages import Vitals
from tests.support.broker import Mosquitto
from tests.support.hub import PG, fresh_engine
from tests.support.net import free_port

T0 = datetime(2026, 3, 1, tzinfo=UTC)

SUBSCRIBER = textwrap.dedent(
    """
    import sys, time, threading
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port, n = int(sys.argv[1]), int(sys.argv[2])
    count, done, last = [0], threading.Event(), [0.0]
    def on_message(c, u, m):
        count[0] += 1
        if count[0] >= n:
            last[0] = time.time(); done.set()
    proto = mqtt.MQTTv5 if sys.argv[4] == "5" else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto)
    c.on_message = on_message
    c.on_subscribe = lambda *a: print("ready", flush=True)
    c.connect("127.0.0.1", port)
    c.subscribe("vigil/v1/gw/+/bed/+/vitals", qos=1)
    c.loop_start()
    done.wait(float(sys.argv[3]))
    print(last[0] if done.is_set() else "timeout", count[0], flush=True)
    """
)


def start_mosquitto(folder: Path) -> Mosquitto:
    """Mosquitto as this bench has always measured it: no log, a deep queue, Nagle on."""
    return Mosquitto(
        folder / "mosquitto",
        max_queued_messages=1_000_000,
        set_tcp_nodelay=None,
        log_dest="none",
        log_type=None,
    ).start()


def build_messages(n: int) -> list[tuple[str, bytes, Vitals]]:
    out = []
    for i in range(n):
        gw, bed = f"gw{i % 20}", f"b{i % 4}"
        m = Vitals(
            gw=gw,
            bed=bed,
            stay=f"{gw}-{bed}",
            step_start=T0 + timedelta(minutes=i),
            step_seconds=60,
            iculos_hours=i / 60,
            values={
                "HR": 80.0,
                "O2Sat": 97.0,
                "Temp": 37.0,
                "SBP": 120.0,
                "MAP": 85.0,
                "DBP": 70.0,
                "Resp": 16.0,
            },
            readings=60,
            static={"Age": 64.0, "Gender": 1.0, "HospAdmTime": -3.0},
        )
        out.append((topics.vitals(gw, bed), m.to_json(), m))
    return out


def start_amqtt(folder: Path) -> tuple[subprocess.Popen, int]:
    """The demo's in-process broker (vigil_cli.broker.AmqttBroker) in a process of its own."""
    port = free_port()
    code = (
        "import sys, time; from pathlib import Path;"
        "from vigil_cli.broker import AmqttBroker;"
        "AmqttBroker(Path(sys.argv[1]), int(sys.argv[2])).start(); print('ready', flush=True);"
        "time.sleep(1e9)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder / "amqtt"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("amqtt did not start")
    return proc, port


def publish(port: int, msgs, protocol: str = "5") -> float:
    """Publish every message QoS 1 (window of 1,000 in flight); returns the start time."""
    proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.time()
    infos = [c.publish(t, p, qos=1) for t, p, _ in msgs]
    for i in infos:
        i.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()
    return t0


def plain_subscriber_rate(port: int, msgs, timeout: float, protocol: str = "5") -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, str(port), str(len(msgs)), str(timeout), protocol],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    t0 = publish(port, msgs, protocol)
    last, count = proc.stdout.readline().split()
    proc.wait(10)
    if last == "timeout":
        raise RuntimeError(f"plain subscriber got {count}/{len(msgs)} in {timeout}s")
    return len(msgs) / (float(last) - t0)


def count_rows(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(VitalsSummary)).scalar_one()


def hub_rate(
    port: int, url: str, workers: int, msgs, timeout: float, tmp: Path, protocol: str = "5"
) -> float:
    engine = fresh_engine(url)
    group = f"bench{uuid.uuid4().hex[:6]}"
    procs, logs = [], []
    for w in range(workers):
        log = tmp / f"hub-{group}-{w}.log"
        env = os.environ | {
            "VIGIL_HUB_MQTT_PORT": str(port),
            "VIGIL_HUB_DB_URL": url,
            "VIGIL_HUB_WORKER_ID": f"{group}-{w}",
            "VIGIL_HUB_SHARE_GROUP": group,
            "VIGIL_HUB_SESSION_EXPIRY": "0",
            "VIGIL_HUB_MQTT_PROTOCOL": protocol,
        }
        with open(log, "wb") as fh:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "vigil_cli.main", "hub", "serve"],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log)
    try:
        deadline = time.monotonic() + 60
        while not all(b"event=subscribed" in p.read_bytes() for p in logs):
            if time.monotonic() > deadline:
                raise RuntimeError("hub workers did not subscribe")
            time.sleep(0.05)
        t0 = time.time()
        pub = threading.Thread(target=publish, args=(port, msgs, protocol))
        pub.start()
        deadline = time.monotonic() + timeout
        while (n := count_rows(engine)) < len(msgs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub stored {n}/{len(msgs)} in {timeout}s")
            time.sleep(0.02)
        t1 = time.time()
        pub.join()
        return len(msgs) / (t1 - t0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        engine.dispose()


def store_rate(url: str, msgs, batch: int = 200) -> float:
    engine = fresh_engine(url)
    now = datetime.now(UTC)
    acc = [Accepted(m, now) for _, _, m in msgs]
    t0 = time.perf_counter()
    for i in range(0, len(acc), batch):
        write_batch(engine, acc[i : i + batch])
    dt = time.perf_counter() - t0
    assert count_rows(engine) == len(msgs)
    engine.dispose()
    return len(msgs) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument(
        "--amqtt",
        action="store_true",
        help="also the demo's fallback broker (amqtt, MQTT 3.1.1) in a process of its own",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    broker = start_mosquitto(tmp)
    port = broker.port
    amqtt, aport = start_amqtt(tmp) if args.amqtt else (None, 0)
    db = f"vigil_hub_bench_{os.getpid()}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    pg, lite = postgres_url(db), f"sqlite:///{tmp}/hub.db"
    msgs = build_messages(args.messages)
    size = statistics.median(len(p) for _, p, _ in msgs)
    print(
        f"{args.messages} QoS 1 vitals messages of ~{size:.0f} B, median of {args.repeat} runs, "
        f"{os.cpu_count()} CPUs, Mosquitto on 127.0.0.1:{port}"
    )
    scenarios = [
        ("mosquitto -> plain subscriber", lambda: plain_subscriber_rate(port, msgs, args.timeout)),
        ("hub, 1 worker, SQLite", lambda: hub_rate(port, lite, 1, msgs, args.timeout, tmp)),
        ("hub, 2 workers, SQLite", lambda: hub_rate(port, lite, 2, msgs, args.timeout, tmp)),
        ("hub, 1 worker, PostgreSQL", lambda: hub_rate(port, pg, 1, msgs, args.timeout, tmp)),
        ("hub, 2 workers, PostgreSQL", lambda: hub_rate(port, pg, 2, msgs, args.timeout, tmp)),
        ("store rows/s, SQLite (no MQTT)", lambda: store_rate(lite, msgs)),
        ("store rows/s, PostgreSQL (no MQTT)", lambda: store_rate(pg, msgs)),
    ]
    if amqtt is not None:
        scenarios += [
            (
                "amqtt (3.1.1) -> plain subscriber",
                lambda: plain_subscriber_rate(aport, msgs, args.timeout, "3.1.1"),
            ),
            (
                "hub, 1 worker, SQLite, via amqtt (3.1.1)",
                lambda: hub_rate(aport, lite, 1, msgs, args.timeout, tmp, "3.1.1"),
            ),
        ]
    results: dict[str, float] = {}
    try:
        for _ in range(args.repeat):  # interleaved, so drift hits every scenario alike
            for name, run in scenarios:
                results.setdefault(name, [])
                results[name].append(run())
    finally:
        broker.stop()
        if amqtt is not None:
            amqtt.terminate()
            amqtt.wait(10)
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results["mosquitto -> plain subscriber"])
    print(f"{'scenario':42} {'msg/s (median)':>15} {'min':>8} {'max':>8} {'vs plain':>9}")
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"{name:42} {med:15,.0f} {min(rates):8,.0f} {max(rates):8,.0f} {med / base:8.2f}x")


if __name__ == "__main__":
    main()
