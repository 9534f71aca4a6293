"""The chaos rig: real processes that the chaos tests kill, cut and restart.

- a Mosquitto of its own (vigil_cli/broker.py: persistent, saved on every change);
- the hub: `vigil hub serve` as a child process into a SQLite file;
- one gateway: `vigil edge run --headless` as a child process with in-process
  simulated monitors (generated scenarios, fast clock), optionally talking to the
  broker through `BlackholeProxy`, a loopback TCP proxy the test can cut;
- `check_exactly_once`: the gateway's own records (steps, risk, alarms) against the
  hub store: every one stored exactly once, in order per bed, outbox empty.

Not a test module (no `test_` prefix).
"""

from __future__ import annotations

import contextlib
import select
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from tests.support.waiting import wait_until
from vigil_cli.broker import MosquittoBroker
from vigil_cli.procs import kill, spawn, stop, vigil_argv

SPEED = 7200  # a simulated hour in 0.5 s at 10 frames/s per bed
BEDS = (("bed-1", "sepsis"), ("bed-2", "stable"), ("bed-3", "hypotension"))


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def count(db: Path, table: str) -> int:
    try:
        return query(db, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 - test tables
    except sqlite3.OperationalError:  # not created yet
        return 0


class BlackholeProxy:
    """Loopback TCP proxy that can stop forwarding bytes, like a pulled network cable.

    `cut()`: nothing passes in either direction and new connections hang unanswered
    (no RST, no FIN: the peers only notice through their keepalive), `restore()`:
    bytes flow again. Connections the peers gave up on are closed when they error.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        # Bound to port 0 and read back: no window for another process to take the port.
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        with contextlib.suppress(OSError):
            self._srv.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # While cut, a new connection is accepted by the kernel but goes nowhere.
        while not self._open.wait(0.1):
            if self._stop.is_set():
                client.close()
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._socks += [client, upstream]
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if not self._open.is_set():
                    time.sleep(0.05)  # cable pulled: read nothing, send nothing
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if not self._open.is_set():
                        # Cut between select and recv: hold the bytes until restored.
                        self._open.wait()
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()


@dataclass
class Rig:
    folder: Path
    broker: MosquittoBroker = field(init=False)
    proxy: BlackholeProxy | None = None
    hub: subprocess.Popen | None = None
    gateway: subprocess.Popen | None = None
    gateway_starts: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hub_db = self.folder / "hub.db"
        self.gw_db = self.folder / "gateway.sqlite"
        self.broker = MosquittoBroker(self.folder / "broker").start()

    # -- parts ----------------------------------------------------------------------
    def start_hub(self) -> None:
        log = self.folder / "hub.log"
        start = log.read_text().count("event=subscribed") if log.exists() else 0
        self.hub = spawn(
            vigil_argv(
                "hub", "serve", "--host", "127.0.0.1", "--port", str(self.broker.port),
                "--db", f"sqlite:///{self.hub_db}", "--worker-id", "chaos-hub",
                "--batch-ms", "20",
            ),
            log,
            env={"VIGIL_LOG_LEVEL": "INFO"},
        )  # fmt: skip
        wait_until(
            lambda: log.read_text().count("event=subscribed") > start, 60, "the hub to subscribe"
        )

    def stop_hub(self) -> None:
        assert stop(self.hub, 30) == 0, (self.folder / "hub.log").read_text()[-2000:]

    def kill_hub(self) -> None:
        kill(self.hub)

    def write_gateway_config(self, via_proxy: bool = False) -> Path:
        if via_proxy and self.proxy is None:
            self.proxy = BlackholeProxy(self.broker.port)
        port = self.proxy.port if via_proxy and self.proxy else self.broker.port
        beds = "\n".join(
            f'[[beds]]\nid = "{bed}"\n[beds.source]\ntype = "sim"\nscenario = "{sc}"\n'
            f"speed = {SPEED}\nseed = {i}\n"
            for i, (bed, sc) in enumerate(BEDS)
        )
        conf = self.folder / "gateway.toml"
        conf.write_text(
            'gateway_id = "chaos-gw"\n'
            f'store_path = "{self.gw_db}"\n'
            f'bundle_dirs = ["{default_bundle_dir()}"]\n'
            f'trusted_keys = ["{default_trusted_keys_dir()}"]\n'
            "[mqtt]\n"
            f'host = "127.0.0.1"\nport = {port}\nkeepalive = 5\n'
            "reconnect_min_seconds = 0.2\nreconnect_max_seconds = 1.0\n"
            "status_interval_seconds = 5\n" + beds
        )
        return conf

    def start_gateway(self, via_proxy: bool = False) -> None:
        conf = self.write_gateway_config(via_proxy)
        self.gateway_starts += 1
        self.gateway = spawn(
            vigil_argv("edge", "run", "--headless", "-c", str(conf)),
            self.folder / "gateway.log",
        )

    def stop_gateway(self) -> None:
        """SIGTERM: the gateway flushes its outbox (what the broker takes) and leaves."""
        assert stop(self.gateway, 30) == 0, (self.folder / "gateway.log").read_text()[-2000:]

    def kill_gateway(self) -> None:
        kill(self.gateway)

    def close(self) -> None:
        for p in (self.gateway, self.hub):
            stop(p, 10)
        if self.proxy:
            self.proxy.close()
        self.broker.stop()

    # -- observation ----------------------------------------------------------------
    def hub_risk(self) -> int:
        return count(self.hub_db, "risk_events") if self.hub_db.exists() else 0

    def hub_vitals(self) -> int:
        return count(self.hub_db, "vitals_summaries") if self.hub_db.exists() else 0

    def wait_hub_grows(self, by: int, timeout: float = 60) -> None:
        n0 = self.hub_risk()
        wait_until(lambda: self.hub_risk() >= n0 + by, timeout, f"{by} more risk events in the hub")

    def outbox(self) -> int:
        return count(self.gw_db, "outbox")

    def drain(self, timeout: float = 20) -> None:
        """Stop the gateway cleanly, then wait until the hub holds all it recorded."""
        self.stop_gateway()
        assert self.outbox() == 0, f"{self.outbox()} messages never acknowledged by the broker"
        want = count(self.gw_db, "risk")
        wait_until(lambda: self.hub_risk() >= want, timeout, f"the hub to store {want} risks")
        steps = count(self.gw_db, "steps")
        wait_until(
            lambda: self.hub_vitals() >= steps, timeout, f"the hub to store {steps} summaries"
        )


def chains(seq: list[int]) -> int:
    """The fewest increasing runs `seq` splits into (= its longest strictly decreasing
    subsequence, Dilworth): 1 for a sequence in order, 2 for an in-order stream with a
    replayed in-order stream merged into it."""
    import bisect

    tails: list[int] = []  # longest decreasing subsequence, on the negated values
    for x in seq:
        i = bisect.bisect_left(tails, -x)
        if i == len(tails):
            tails.append(-x)
        else:
            tails[i] = -x
    return len(tails)


def check_exactly_once(
    gw_db: Path,
    hub_db: Path,
    *,
    gateway_crashed: bool = False,
    replayed: int = 0,
    alarms: bool = False,
) -> dict:
    """Every reading summary and event the gateway recorded is in the hub exactly once,
    in order per bed; returns the counts compared.

    `replayed`: how many times the hub asked the gateway to resend (after a broker
    loss): what was lost arrives late, after newer messages. The hub's arrival order
    per bed must then be the gateway's order split into at most `replayed + 1` runs
    each in the gateway's order (the live stream and each replay), not any order.

    `alarms`: the run is long enough for the sepsis bed to alarm (the chaos tests): at
    least one alarm must be recorded and reach the hub, else the alarm path was not
    exercised and "no alarm lost" would say nothing.

    `gateway_crashed`: a SIGKILL between queueing a message and recording it in the
    gateway's own table can leave the hub with a message the gateway's table lacks
    (it was sent, as the outbox is written first); then the hub may hold more.
    """
    gw_steps = query(gw_db, "SELECT bed, stay, step_start FROM steps ORDER BY rowid")
    gw_risk_rows = query(gw_db, "SELECT event_id, bed FROM risk ORDER BY rowid")
    hub_vit_order = hub_risk_order = "id"  # arrival order
    gw_risk = {r for (r, _) in gw_risk_rows}
    gw_alarm = {r for (r,) in query(gw_db, "SELECT event_id FROM alarms")}
    hub_vit = query(
        hub_db,
        "SELECT bed, stay, step_start FROM vitals_summaries WHERE gw='chaos-gw' "
        f"ORDER BY {hub_vit_order}",
    )
    hub_risk = query(
        hub_db,
        "SELECT event_id, bed, window_end FROM risk_events WHERE gw='chaos-gw' "
        f"ORDER BY {hub_risk_order}",
    )
    hub_alarm = [r for (r,) in query(hub_db, "SELECT event_id FROM alarms WHERE gw='chaos-gw'")]

    def key(bed: str, stay: str, start: str) -> tuple[str, str, str]:
        # The hub stores datetimes; compare on the instant, to the millisecond.
        s = str(start).replace("T", " ").replace("+00:00", "").rstrip("Z")
        return bed, stay, s[:23].ljust(23, "0")

    gw_keys = [key(*r) for r in gw_steps]
    hub_keys = [key(*r) for r in hub_vit]
    # Exactly once: no reading summary twice, no event_id twice.
    assert len(hub_keys) == len(set(hub_keys)), "a vitals summary was stored twice"
    hub_ids = [r[0] for r in hub_risk]
    assert len(hub_ids) == len(set(hub_ids)), "a risk event was stored twice"
    assert len(hub_alarm) == len(set(hub_alarm)), "an alarm event was stored twice"
    # Nothing lost.
    missing_steps = set(gw_keys) - set(hub_keys)
    assert not missing_steps, (
        f"{len(missing_steps)} summaries lost, e.g. {sorted(missing_steps)[:3]}"
    )
    missing_risk = gw_risk - set(hub_ids)
    assert not missing_risk, f"{len(missing_risk)} risk events lost"
    assert gw_alarm <= set(hub_alarm), f"{len(gw_alarm - set(hub_alarm))} alarm events lost"
    if not gateway_crashed:
        assert set(hub_keys) == set(gw_keys)
        assert set(hub_ids) == gw_risk
    if alarms:  # the model's own alarm (a NEWS2 alarm beside it would not show its path)
        model = {r for (r,) in query(gw_db, "SELECT event_id FROM alarms WHERE source='model'")}
        assert model, "no model alarm recorded: the alarm path was not exercised"
        assert set(hub_alarm) & model, "no model alarm of the gateway reached the hub"
    # In order per bed: the hub stored each bed's summaries and risks in the order the
    # gateway produced them (its own tables' insertion order). Not by time stamp: a
    # restarted gateway restarts its simulated clocks. After `replayed` replays, the
    # arrival order is at most `replayed + 1` runs each in the gateway's order.
    runs = int(replayed) + 1
    for bed, _ in BEDS:
        mine = [k for k in gw_keys if k[0] == bed]
        pos = {k: i for i, k in enumerate(mine)}
        got = [pos[k] for k in hub_keys if k in pos]
        assert chains(got) <= runs, f"{bed}: summaries out of order ({chains(got)} runs)"
        mine_r = [r for (r, b) in gw_risk_rows if b == bed]
        pos_r = {r: i for i, r in enumerate(mine_r)}
        got_r = [pos_r[r] for r in hub_ids if r in pos_r]
        assert chains(got_r) <= runs, f"{bed}: risk out of order ({chains(got_r)} runs)"
    return {"steps": len(gw_keys), "risk": len(gw_risk), "alarms": len(gw_alarm)}
