"""Load: 64 beds on one gateway, N simulated gateways on one hub, backlog drain.

Every part runs real processes on this machine: a Mosquitto of its own
(vigil_cli/broker.py), `vigil hub serve` into a SQLite file, and either a real
gateway (`vigil edge run --headless`, in-process simulated monitors) or many
lightweight paho clients playing gateways.

1. `beds`: one gateway with 64 beds, each monitor sending one HL7 frame per second.
   Two runs: `realtime` (speed 1: what a ward does; a step closes hourly, so no
   events in a bounded run) and `stress` (speed 3600: every frame closes an hour, so
   every reading produces a scored risk event and a vitals summary: 128 messages/s).
   CPU (% of one core) and RSS of the gateway process (psutil, sampled every second),
   and latency gateway event -> hub (`risk_events.received_at - ts`) p50/p99.
2. `fleet`: N simulated gateways (paho MQTT 5 clients, a few processes, one thread
   each driving its clients with paho's external loop) each publishing a retained
   `online` status and one risk event every --fleet-interval s for --fleet-seconds;
   figures: connect time, messages published, stored by the hub, ingest lag p50/p99.
3. `drain`: the 64-bed stress gateway cut from the broker (a loopback proxy that
   stops passing bytes) for --outage s, then restored: time until its outbox is
   empty and until the hub holds every risk event it recorded.

    .venv/bin/python -m benches.bench_load [--only beds,fleet,drain] [--gateways 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import select
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from tests.support.chaos import BlackholeProxy, count, query
from tests.support.waiting import wait_until
from vigil_cli.broker import MosquittoBroker
from vigil_cli.procs import spawn, stop, vigil_argv

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

SCENARIOS = ("sepsis", "stable", "hypotension", "desaturation")


def start_hub(folder: Path, port: int) -> tuple:
    db = folder / "hub.db"
    log = folder / "hub.log"
    hub = spawn(
        vigil_argv("hub", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--db", f"sqlite:///{db}", "--worker-id", "bench-hub"),
        log, env={"VIGIL_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    wait_until(lambda: "event=subscribed" in log.read_text(), 60, "the hub", 0.2)
    return hub, db


def gateway_conf(folder: Path, port: int, beds: int, speed: float, max_rate: float) -> Path:
    lines = [
        'gateway_id = "load-gw"',
        f'store_path = "{folder / "gateway.sqlite"}"',
        f'bundle_dirs = ["{default_bundle_dir()}"]',
        f'trusted_keys = ["{default_trusted_keys_dir()}"]',
        'log_level = "WARNING"',
        "[mqtt]",
        f'host = "127.0.0.1"\nport = {port}\nkeepalive = 5',
        "reconnect_min_seconds = 0.2\nreconnect_max_seconds = 1.0\nmax_inflight = 500",
    ]
    for i in range(beds):
        lines += [
            "[[beds]]",
            f'id = "bed-{i + 1}"',
            "[beds.source]",
            f'type = "sim"\nscenario = "{SCENARIOS[i % len(SCENARIOS)]}"\nseed = {i}',
            f"speed = {speed}\ninterval = 1.0\nmax_rate = {max_rate}",
        ]
    conf = folder / "gateway.toml"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def sample_process(proc, seconds: float) -> dict:
    p = psutil.Process(proc.pid)
    p.cpu_percent(None)
    cpu, rss = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1.0)
        cpu.append(p.cpu_percent(None))
        rss.append(p.memory_info().rss / 2**20)
    return {
        "cpu_pct_median": statistics.median(cpu),
        "cpu_pct_max": max(cpu),
        "rss_mib_max": max(rss),
    }


def _dt(s: str) -> datetime:
    d = datetime.fromisoformat(str(s))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def latencies(db: Path, since_id: int = 0, gw: str | None = None) -> list[float]:
    where = f" AND gw='{gw}'" if gw else ""
    rows = query(db, f"SELECT ts, received_at FROM risk_events WHERE id > {since_id}{where}")  # noqa: S608
    return sorted((_dt(r) - _dt(t)).total_seconds() for t, r in rows)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def bench_beds(tmp: Path, beds: int, seconds: float) -> dict:
    out = {}
    for name, speed, rate in (("realtime", 1.0, 1.0), ("stress", 3600.0, 1.0)):
        folder = tmp / f"beds-{name}"
        folder.mkdir()
        broker = MosquittoBroker(folder / "broker").start()
        hub, db = start_hub(folder, broker.port)
        gw = spawn(
            vigil_argv("edge", "run", "--headless", "-c",
                       str(gateway_conf(folder, broker.port, beds, speed, rate))),
            folder / "gateway.log",
        )  # fmt: skip
        try:
            time.sleep(8)  # start-up: bundle, 64 ptys and monitors, first steps
            n0 = count(db, "risk_events")
            last_id = query(db, "SELECT coalesce(max(id), 0) FROM risk_events")[0][0]
            res = sample_process(gw, seconds)
            n1 = count(db, "risk_events")
            lat = latencies(db, last_id)
            res.update(
                risk_per_s=(n1 - n0) / seconds,
                latency_p50_ms=pct(lat, 0.5) * 1000,
                latency_p99_ms=pct(lat, 0.99) * 1000,
                latency_n=len(lat),
            )
            out[name] = res
            print(f"beds {beds} {name:8} (speed {speed:g}): {json.dumps(res)}", flush=True)
        finally:
            stop(gw, 20)
            stop(hub, 20)
            broker.stop()
    return out


# --- fleet of lightweight gateways -------------------------------------------------


def fleet_worker(
    wid: int,
    n: int,
    port: int,
    interval: float,
    seconds: float,
    ready: Queue[int],
    go: Event,
    result: Queue[tuple[int, int, int]],
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from contracts import topics
    from contracts.messages import ModelRef, News2Out, Risk, Status

    clients: list = []
    acked = [0]
    connected = [0]

    def make(gw: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, protocol=mqtt.MQTTv5)

        def on_connect(
            client: mqtt.Client,
            userdata: Any,
            flags: mqtt.ConnectFlags,
            rc: ReasonCode,
            props: Properties | None,
        ) -> None:
            connected[0] += 1
            st = Status(gw=gw, state="online", channel="stable", beds=[], outbox=0)
            client.publish(topics.status(gw), st.to_json(), qos=1, retain=True)

        def on_publish(
            client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties
        ) -> None:
            acked[0] += 1

        c.on_connect, c.on_publish = on_connect, on_publish
        c.connect_async("127.0.0.1", port, keepalive=120)
        c.reconnect()  # connect now (non-blocking socket afterwards)
        return c

    for i in range(n):
        clients.append((f"load-{wid:02d}-{i:04d}", make(f"load-{wid:02d}-{i:04d}")))

    def pump(timeout: float) -> None:
        by_sock = {c.socket(): c for _, c in clients if c.socket() is not None}
        writers = [k for k, c in by_sock.items() if c.want_write()]
        r, w, _ = select.select(list(by_sock), writers, [], timeout)
        for k in r:
            by_sock[k].loop_read()
        for k in w:
            by_sock[k].loop_write()

    t_misc = 0.0
    while connected[0] < n:
        pump(0.1)
        if time.monotonic() - t_misc > 1:
            for _, c in clients:
                c.loop_misc()
            t_misc = time.monotonic()
    ready.put(wid)
    go.wait()
    published = 0
    start = time.monotonic()
    # Spread each gateway's sends over the interval.
    nxt = [start + interval * (i / n) for i in range(n)]
    model = ModelRef(name="vigil-sepsis", version="bench")
    news2 = News2Out(total=1, risk="low", subscores={}, missing=[])
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        for i, (gw, c) in enumerate(clients):
            if now >= nxt[i]:
                msg = Risk(
                    gw=gw, bed="bed-1", stay="load", risk=0.1, threshold=0.5, alarm_level="none",
                    model=model, news2=news2, observed=7, insufficient_data=False,
                    window_end=datetime.now(UTC),
                )  # fmt: skip
                c.publish(topics.risk(gw, "bed-1"), msg.to_json(), qos=1)
                published += 1
                nxt[i] += interval
        pump(0.01)
        if now - t_misc > 1:
            for _, c in clients:
                c.loop_misc()
            t_misc = now
    end = time.monotonic() + 15
    while acked[0] < published + n and time.monotonic() < end:
        pump(0.05)
    result.put((wid, published, acked[0] - n))
    for _, c in clients:
        c.disconnect()
    for _ in range(20):
        pump(0.01)


def bench_fleet(tmp: Path, gateways: int, procs: int, interval: float, seconds: float) -> dict:
    folder = tmp / "fleet"
    folder.mkdir()
    broker = MosquittoBroker(folder / "broker").start()
    hub, db = start_hub(folder, broker.port)
    ctx = mp.get_context("fork")
    ready, result, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [gateways // procs + (1 if i < gateways % procs else 0) for i in range(procs)]
    ps = [
        ctx.Process(
            target=fleet_worker,
            args=(i, n, broker.port, interval, seconds, ready, go, result),
            daemon=True,
        )
        for i, n in enumerate(per)
    ]
    t0 = time.perf_counter()
    try:
        for p in ps:
            p.start()
        for _ in ps:
            ready.get(timeout=180)
        connect_s = time.perf_counter() - t0
        print(f"fleet: {gateways} gateways connected in {connect_s:.1f} s", flush=True)
        hub_proc = psutil.Process(hub.pid)
        hub_proc.cpu_percent(None)
        go.set()
        pub = ack = 0
        for _ in ps:
            _, p_, a_ = result.get(timeout=seconds + 120)
            pub += p_
            ack += a_
        hub_cpu = hub_proc.cpu_percent(None)
        t_end = time.perf_counter()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: count(db, "risk_events") >= pub, 120, "the hub to store all", 0.2)
        drained = time.perf_counter() - t_end
        stored = count(db, "risk_events")
        gws = query(db, "SELECT count(*) FROM gateways")[0][0]
        lat = latencies(db)
        res = {
            "gateways": gateways,
            "gateways_in_registry": gws,
            "connect_s": round(connect_s, 1),
            "published": pub,
            "acked_by_broker": ack,
            "stored": stored,
            "rate_msg_s": round(pub / seconds, 1),
            "hub_cpu_pct_avg": round(hub_cpu, 1),
            "hub_caught_up_s_after_last": round(drained, 1),
            "ingest_lag_p50_ms": round(pct(lat, 0.5) * 1000, 1),
            "ingest_lag_p99_ms": round(pct(lat, 0.99) * 1000, 1),
        }
        print(f"fleet: {json.dumps(res)}", flush=True)
        return res
    finally:
        for p in ps:
            p.join(20)
            if p.is_alive():
                p.kill()
        stop(hub, 20)
        broker.stop()


def bench_drain(tmp: Path, beds: int, outage: float) -> dict:
    folder = tmp / "drain"
    folder.mkdir()
    broker = MosquittoBroker(folder / "broker").start()
    hub, db = start_hub(folder, broker.port)
    proxy = BlackholeProxy(broker.port)
    gw = spawn(
        vigil_argv("edge", "run", "--headless", "-c",
                   str(gateway_conf(folder, proxy.port, beds, 3600.0, 1.0))),
        folder / "gateway.log",
    )  # fmt: skip
    gdb = folder / "gateway.sqlite"
    try:
        time.sleep(8)
        proxy.cut()
        time.sleep(outage)
        backlog = count(gdb, "outbox")
        t0 = time.perf_counter()
        proxy.restore()
        # The gateway keeps producing 128 msg/s meanwhile: "drained" = below 1 s of it.
        wait_until(lambda: count(gdb, "outbox") < 2 * beds, 300, "the outbox to drain", 0.1)
        outbox_s = time.perf_counter() - t0
        want = count(gdb, "risk")
        wait_until(lambda: count(db, "risk_events") >= want, 300, "the hub to catch up", 0.1)
        hub_s = time.perf_counter() - t0
        res = {
            "outage_s": outage,
            "backlog_msgs": backlog,
            "outbox_drained_s": round(outbox_s, 1),
            "hub_caught_up_s": round(hub_s, 1),
            "drain_rate_msg_s": round(backlog / outbox_s, 0),
        }
        print(f"drain: {json.dumps(res)}", flush=True)
        return res
    finally:
        stop(gw, 20)
        proxy.close()
        stop(hub, 20)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="beds,fleet,drain")
    ap.add_argument("--beds", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0, help="sampling time per beds run")
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--fleet-interval", type=float, default=5.0)
    ap.add_argument("--fleet-seconds", type=float, default=30.0)
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    parts = set(args.only.split(","))
    out: dict = {"cpu_count": psutil.cpu_count()}
    if "beds" in parts:
        out["beds"] = bench_beds(tmp, args.beds, args.seconds)
    if "fleet" in parts:
        out["fleet"] = bench_fleet(
            tmp, args.gateways, args.procs, args.fleet_interval, args.fleet_seconds
        )
    if "drain" in parts:
        out["drain"] = bench_drain(tmp, args.beds, args.outage)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench-load"
    main()
