"""Rollout to 1,000 simulated gateways over a real Mosquitto on loopback.

Each simulated gateway is a paho-mqtt client (MQTT 5; one thread drives all the
clients of a worker process through paho's external-loop API) that subscribes to
`vigil/v1/models/stable` and, on a release, does what a gateway does before it would
load a bundle: parse the `ModelRelease`, decode the model, check the Ed25519
signature against its trusted key, the size and sha256 (`contracts.bundle.
verify_parts`), then publishes its `ModelState` (retained) on `vigil/v1/gw/{gw}/model`.
Loading LiteRT and running the golden windows are left out here (they cost ~5 ms per
gateway and happen on each gateway's own CPU, not on the broker or hub); the full
activation is measured apart (`activation_ms`, one real `ModelUpdater` on this machine).

The gateways live in a few worker processes (threads of paho's network loops); the
hub publishes one retained release with `cloud_hub.rollout.release` and measures the time
until every gateway's state is back. Run:

    python -m benches.bench_rollout                 # 1000 gateways, 4 processes
    python -m benches.bench_rollout --gateways 200 --procs 2
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import select
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contracts import topics
from contracts.bundle import BundleError, generate_key, load_trusted_keys, verify_parts
from contracts.messages import ModelRelease, ModelState, parse_message
from tests.support.broker import Mosquitto

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode


def start_mosquitto(folder: Path) -> Mosquitto:
    """The fleet's broker: a 10,000-message queue per session, its default Nagle."""
    return Mosquitto(
        folder / "broker", max_queued_messages=10000, set_tcp_nodelay=None, log_type="error"
    ).start()


def gateway_worker(
    wid: int, n: int, port: int, pub_path: str, ready: mp.Queue, stop: mp.Event
) -> None:
    """`n` simulated gateways in this process; reports (wid, connected) then serves."""
    trusted = load_trusted_keys([Path(pub_path)])
    clients = []
    connected = threading.Semaphore(0)

    def make(gw: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, protocol=mqtt.MQTTv5)

        def on_connect(
            client: mqtt.Client,
            userdata: Any,
            flags: mqtt.ConnectFlags,
            rc: ReasonCode,
            props: Properties | None,
        ) -> None:
            client.subscribe(topics.models("stable"), 1)

        def on_subscribe(
            client: mqtt.Client,
            userdata: Any,
            mid: int,
            rcs: list[ReasonCode],
            props: Properties | None,
        ) -> None:
            connected.release()

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            rx = time.time()  # wall clock: comparable across the processes of this machine
            try:
                r = parse_message(msg.payload, gateway_only=False)
                assert isinstance(r, ModelRelease)
                blob = base64.b64decode(r.model_b64, validate=True)
                m = verify_parts(r.manifest, r.signature, blob, trusted)
                st = ModelState(
                    gw=gw, state="verified", name=m.name, version=m.version, reason=f"rx={rx:.6f}"
                )
            except (BundleError, AssertionError, ValueError) as e:
                st = ModelState(gw=gw, state="refused", name="?", version="?", reason=str(e))
            client.publish(topics.model_state(gw), st.to_json(), qos=1, retain=True)

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect("127.0.0.1", port, keepalive=120)
        return c

    # One thread drives every client of this process (paho's external-loop API): a
    # thread per client would spend the time fighting over the GIL, not verifying.
    for i in range(n):
        clients.append(make(f"sim-{wid:02d}-{i:04d}"))
    by_sock = {c.socket(): c for c in clients}
    reported = False
    last_misc = 0.0
    while not stop.is_set():
        socks = [k for k in by_sock if k is not None]
        writers = [k for k in socks if by_sock[k].want_write()]
        readable, writable, _ = select.select(socks, writers, [], 0.2)
        for k in readable:
            by_sock[k].loop_read()
        for k in writable:
            by_sock[k].loop_write()
        now = time.monotonic()
        if now - last_misc > 1.0:
            for c in clients:
                c.loop_misc()
            last_misc = now
        if not reported and connected.acquire(blocking=False):
            done = 1
            while done < n and connected.acquire(blocking=False):
                done += 1
            if done < n:  # not all yet: give back what was taken
                for _ in range(done):
                    connected.release()
            else:
                ready.put((wid, n))
                reported = True
    for c in clients:
        c.disconnect()


def activation_ms(key_path: Path, pub_path: Path, repeats: int = 20) -> float:
    """Median time of one full gateway activation (verify, stage, LiteRT, golden, swap)."""
    from cloud_hub.keys import open_provider
    from cloud_hub.rollout.release import make_release, read_bundle_folder
    from contracts.paths import default_bundle_dir
    from edge_agent.model_update import ModelUpdater

    provider = open_provider(key_path)
    manifest, blob = read_bundle_folder(default_bundle_dir())
    trusted = load_trusted_keys([pub_path, default_bundle_dir().parent / "trusted_keys"])
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        u = ModelUpdater(tmp, trusted, gw="bench")
        u.boot()
        for i in range(repeats):
            r = make_release(
                dict(manifest, version=str(100 + i)),
                blob,
                "stable",
                provider,
                seq=1000 + i,
                check=False,
            )
            t0 = time.perf_counter()
            st = u.handle_release(r)
            times.append((time.perf_counter() - t0) * 1000)
            assert st is not None and st.state == "active", st
    return statistics.median(times)


def verify_ms(release_json: bytes, pub_path: Path, repeats: int = 50) -> float:
    """Median CPU time of what each simulated gateway does with a release."""
    trusted = load_trusted_keys([pub_path])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = parse_message(release_json, gateway_only=False)
        verify_parts(r.manifest, r.signature, base64.b64decode(r.model_b64), trusted)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    from cloud_hub.keys import open_provider
    from cloud_hub.rollout.ledger import Ledger
    from cloud_hub.rollout.release import (
        connect,
        make_release,
        publish_release,
        read_bundle_folder,
    )
    from contracts.broker import BrokerSettings
    from contracts.paths import default_bundle_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    key, pub, _ = generate_key(tmp / "keys")
    broker = start_mosquitto(tmp)
    port = broker.port
    ctx = mp.get_context("fork")
    ready, stop = ctx.Queue(), ctx.Event()
    per = [args.gateways // args.procs + (1 if i < args.gateways % args.procs else 0)
           for i in range(args.procs)]  # fmt: skip
    procs = [
        ctx.Process(target=gateway_worker, args=(i, n, port, str(pub), ready, stop), daemon=True)
        for i, n in enumerate(per)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    total = sum(ready.get(timeout=args.timeout)[1] for _ in procs)
    connect_s = time.perf_counter() - t0
    print(
        f"{total} gateways connected and subscribed in {connect_s:.1f} s ({args.procs} processes)"
    )

    provider = open_provider(key)
    manifest, blob = read_bundle_folder(default_bundle_dir())
    hub = connect(BrokerSettings("127.0.0.1", port, client_id="bench-hub"))
    led = Ledger(tmp / "ledger")
    results: list[float] = []
    delivery: list[float] = []
    try:
        for rnd in range(args.rounds):
            version = str(100 + rnd)
            got: dict[str, float] = {}
            rx: dict[str, float] = {}
            bad: dict[str, str] = {}
            done = threading.Event()

            def on_state(
                client: mqtt.Client,
                userdata: Any,
                msg: mqtt.MQTTMessage,
                version: str = version,
                got: dict[str, float] = got,
                bad: dict[str, str] = bad,
                done: threading.Event = done,
                rx: dict[str, float] = rx,
            ) -> None:
                st = parse_message(msg.payload)
                if st.version != version and st.state != "refused":
                    return  # a retained state of the previous round
                if st.state == "refused":
                    bad[st.gw] = st.reason
                else:
                    got[st.gw] = time.perf_counter()
                    rx[st.gw] = float(st.reason.removeprefix("rx="))
                if len(got) + len(bad) >= total:
                    done.set()

            hub.message_callback_add(f"{topics.PREFIX}/gw/+/model", on_state)
            hub.subscribe(f"{topics.PREFIX}/gw/+/model", 1)
            time.sleep(1.0)  # retained states of the last round arrive and are skipped
            rel = make_release(dict(manifest, version=version), blob, "stable", provider,
                               seq=1_000_000 + rnd)  # fmt: skip
            size = len(rel.to_json())
            per_gw_ms = verify_ms(rel.to_json(), pub)
            t_pub, wall_pub = time.perf_counter(), time.time()
            publish_release(hub, rel, led)
            ok = done.wait(args.timeout)
            hub.unsubscribe(f"{topics.PREFIX}/gw/+/model")
            hub.message_callback_remove(f"{topics.PREFIX}/gw/+/model")
            if not ok or bad:
                print(f"round {rnd}: {len(got)} verified, {len(bad)} refused, timeout={not ok}")
            lat = sorted(t - t_pub for t in got.values())
            all_s = lat[-1] if lat else float("nan")
            delivered = sorted(t - wall_pub for t in rx.values())
            results.append(all_s)
            delivery.append(delivered[-1] if delivered else float("nan"))
            print(
                f"round {rnd}: release {size / 1024:.0f} KiB -> {len(got)}/{total} gateways "
                f"verified; median {statistics.median(lat) * 1000:.0f} ms, "
                f"p95 {lat[int(0.95 * (len(lat) - 1))] * 1000:.0f} ms, all {all_s:.2f} s; "
                f"broker delivered to all in {delivery[-1]:.2f} s"
            )
    finally:
        stop.set()
        hub.disconnect()
        hub.loop_stop()
        for p in procs:
            p.join(20)
        broker.stop()
    act = activation_ms(key, pub) if os.environ.get("SKIP_ACTIVATION") != "1" else float("nan")
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nrollout to {total} gateways (median of {len(results)} rounds): "
        f"{statistics.median(results):.2f} s from publish to the last gateway's state "
        f"(broker delivery to the last gateway {statistics.median(delivery):.2f} s); "
        f"full activation on one gateway (verify+stage+LiteRT+golden+swap): {act:.1f} ms median"
    )
    print(
        f"per simulated gateway: parse+verify {per_gw_ms:.2f} ms median, i.e. "
        f"{total * per_gw_ms / 1000:.2f} s of CPU for the whole fleet on this machine's cores"
    )


if __name__ == "__main__":
    main()
