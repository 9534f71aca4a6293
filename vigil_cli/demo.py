"""`vigil demo`: the whole system on one machine with embedded defaults.

What it starts, in order, and stops in the reverse order on Ctrl-C / SIGTERM / the
end of `--duration`:
1. a broker: a Mosquitto of its own on a free loopback port, or where Mosquitto is not
   installed (or `--broker amqtt`) the in-process amqtt broker, whose MQTT 3.1.1 the
   gateway and the one hub worker then speak (vigil_cli/broker.py);
2. the hub: `vigil hub serve` as a child process, ingesting into a SQLite file in the
   demo folder, with a local MLflow store (`MLFLOW_TRACKING_URI`) beside it;
3. one gateway (in this process) with the committed default bundle, whose beds are
   `mllp-listen` sources on one loopback MLLP listener (told apart by the bed in PV1-3);
4. one simulated monitor per bed (firmware_sim, in this process) connecting to that
   listener as an MLLP client, as real monitors do, sending standard IHE PCD-01
   ORU^R01 and waiting for each ACK; each replays a real ICU stay of the canonical
   PhysioNet table at an accelerated clock (`--speed`, default 1800: an hour in 2 s);
   With `--driver intellivue` each bed's monitor is instead a simulated Philips
   IntelliVue on a pty (firmware_sim/intellivue.py, the same stay or scenario), and the
   bed an `intellivue` source: the gateway's Data Export driver associates and polls it
   (edge_agent/intellivue/), as at a bed whose monitor's MIB/RS-232 port is cabled in;
5. the ward terminal in the foreground, or with `--headless` one line per bed every
   `--every` seconds (risk with the model version, NEWS2, alarm).

Stays: by default half the beds replay septic stays that the bundle flags early and
half replay stays that never became septic (vigil_cli/demo_stays.py picks them
from the data at start). Without the canonical table the demo imports it first from
the shared PhysioNet archive (about a minute); without the archive it falls back to
the simulator's generated scenarios and says so.

Children run in their own session (Ctrl-C reaches only this process, which then
stops them in order so that the gateway's outbox drains into the hub first) and
die with it if it is killed (procs.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from contracts.cli import fail
from contracts.paths import (
    default_bundle_dir,
    default_trusted_keys_dir,
    physionet_archive,
    work_dir,
)

from .procs import free_port, spawn, stop, vigil_argv

if TYPE_CHECKING:
    from types import FrameType

    from edge_agent.config import EdgeSettings
    from edge_agent.gateway import Gateway
    from edge_agent.state import BedSnapshot
    from firmware_sim.monitor import MonitorRunner

log = logging.getLogger("vigil.demo")

GENERATED_SCENARIOS = ("sepsis", "stable", "hypotension", "stable", "desaturation", "stable")
GATEWAY_ID = "demo-ward"
OPERATOR = "demo-nurse"


@dataclass(frozen=True)
class BedPlan:
    bed: str
    label: str  # what the bed plays, for the legend
    stay: str | None  # replayed stay id; None: generated scenario
    scenario: str
    hours: int | None = None  # length of the replayed stay, when known


def canonical_table() -> Path:
    return work_dir() / "canonical" / "physionet2019.parquet"


def ensure_table(echo: Callable[[str], None]) -> Path | None:
    """The canonical PhysioNet table, imported first if missing; None: not available."""
    table = canonical_table()
    if table.is_file():
        return table
    archive = physionet_archive()
    if not archive.is_file():
        echo(f"no canonical table {table} and no PhysioNet archive {archive}")
        return None
    echo(f"importing the PhysioNet 2019 stays from {archive} (about a minute, once) ...")
    r = subprocess.run(vigil_argv("convert", "physionet"), capture_output=True, text=True)
    if r.returncode != 0 or not table.is_file():
        echo(f"import failed ({r.returncode}): {(r.stderr or r.stdout)[-500:]}")
        return None
    return table


def plan_beds(
    beds: int, stays: str, table: Path | None, echo: Callable[[str], None]
) -> tuple[list[BedPlan], Path | None]:
    """Which bed plays what; falls back to generated scenarios without a table."""
    if stays == "generated" or table is None:
        if stays not in ("auto", "generated"):
            raise typer.BadParameter("--stays needs the canonical table, which is not available")
        if stays != "generated":
            echo("falling back to the simulator's generated scenarios (no real stays)")
        plans = [
            BedPlan(f"bed-{i + 1}", f"generated '{sc}'", None, sc)
            for i, sc in (
                (i, GENERATED_SCENARIOS[i % len(GENERATED_SCENARIOS)]) for i in range(beds)
            )
        ]
        return plans, None
    if stays == "auto":
        from .demo_stays import pick_stays

        chosen = pick_stays(table, default_bundle_dir(), default_trusted_keys_dir(), beds)
        plans = []
        for i, c in enumerate(chosen):
            what = (
                f"septic (label from h{c.onset_hour}, model alert at h{c.crossing_hour})"
                if c.septic
                else "never septic"
            )
            plans.append(
                BedPlan(f"bed-{i + 1}", f"{c.stay} {c.hours} h, {what}", c.stay, "replay", c.hours)
            )
        return plans, table
    ids = [s.strip() for s in stays.split(",") if s.strip()]
    if not ids:
        raise typer.BadParameter("--stays: give stay ids (e.g. pn-p000009), 'auto' or 'generated'")
    import pyarrow.parquet as pq

    known = set(pq.read_table(table, columns=["stay_id"])["stay_id"].unique().to_pylist())
    unknown = [s for s in ids if s not in known]
    if unknown:
        raise typer.BadParameter(f"--stays: not in {table}: {unknown}")
    plans = [
        BedPlan(f"bed-{i + 1}", f"{ids[i % len(ids)]} (chosen)", ids[i % len(ids)], "replay")
        for i in range(beds)
    ]
    return plans, table


def gateway_settings(
    plans: list[BedPlan],
    table: Path | None,
    port: int,
    folder: Path,
    speed: float,
    protocol: str = "5",
    listen_port: int = 2575,
    intellivue: dict[str, str] | None = None,
) -> EdgeSettings:
    """The gateway's settings: every bed an `mllp-listen` source on 127.0.0.1:`listen_port`,
    matched by its bed label (PV1-3.3); the monitors come from `start_monitors`. With
    `intellivue` (bed -> pty of its simulated IntelliVue), every bed an `intellivue`
    source polled 10 times a second (one poll per 3 simulated minutes at x1800)."""
    from edge_agent.config import (
        BedConfig,
        BedMatch,
        EdgeSettings,
        IntelliVueSource,
        MllpListenSource,
        MqttConfig,
    )

    beds = [
        BedConfig(
            id=p.bed,
            source=MllpListenSource(
                type="mllp-listen",
                host="127.0.0.1",
                port=listen_port,
                match=BedMatch(bed_label=p.bed),
            )
            if intellivue is None
            else IntelliVueSource(type="intellivue", port=intellivue[p.bed], poll_seconds=0.1),
        )
        for p in plans
    ]
    return EdgeSettings(
        gateway_id=GATEWAY_ID,
        operator=OPERATOR,
        beds=beds,
        mqtt=MqttConfig(host="127.0.0.1", port=port, status_interval_seconds=5, protocol=protocol),
        store_path=folder / "gateway.sqlite",
        bundle_dirs=[default_bundle_dir()],
        trusted_keys=[default_trusted_keys_dir()],
    )


def start_monitors(
    plans: list[BedPlan], table: Path | None, listen_port: int, speed: float
) -> MonitorRunner:
    """One simulated monitor per bed, an MLLP client of the gateway's listener (standard
    PCD-01, waiting for each ACK), started in a background thread once connected."""
    from firmware_sim.monitor import MonitorRunner, make_monitor
    from firmware_sim.transports import MllpClientTransport

    monitors = []
    for i, p in enumerate(plans):
        line = MllpClientTransport("127.0.0.1", listen_port, ack_timeout=2.0, retries=3)
        replay = p.stay is not None
        monitors.append(
            make_monitor(
                p.bed,
                line,
                scenario=p.scenario if not replay else "stable",
                replay=table if replay else None,
                stay=p.stay,
                seed=i,
                speed=speed,
                bed_number=i + 1,
                profile="standard",
            )
        )
    for m in monitors:
        if not m.transport.wait_connected(10):  # type: ignore[attr-defined]
            log.warning("%s: monitor not connected to the listener yet", m.bed)
    runner = MonitorRunner(monitors)
    runner.start()
    return runner


class IntelliVueMonitors:
    """One simulated IntelliVue per bed on a pty (`--driver intellivue`)."""

    def __init__(self, plans: list[BedPlan], table: Path | None, speed: float) -> None:
        from firmware_sim.intellivue import IntelliVueSim
        from firmware_sim.physiology import GeneratedSource, load_replay

        self.sims: list[IntelliVueSim] = []
        try:
            for i, p in enumerate(plans):
                if p.stay is not None and table is not None:
                    (src,) = load_replay(table, [p.stay], seed=i)
                else:
                    src = GeneratedSource(p.scenario, i)  # type: ignore[assignment]
                self.sims.append(IntelliVueSim(bed_label=p.bed, seed=i, speed=speed, source=src))
        except BaseException:
            self.close()
            raise

    @property
    def ports(self) -> dict[str, str]:
        return {s.bed_label: s.address for s in self.sims}

    def close(self) -> None:
        for s in self.sims:
            s.close()


def wait_hub_ready(proc: subprocess.Popen, log_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            if "event=subscribed" in log_path.read_text(errors="replace"):
                return True
        time.sleep(0.1)
    return False


def bed_line(b: BedSnapshot, now_txt: str) -> str:
    risk = "  -  " if b.risk is None else f"{b.risk:.2f}"
    if b.risk is None and b.insufficient_data:
        risk = "n/a  "
    trend = ""
    pts = [p.risk for p in b.risk_history if p.risk is not None]
    if len(pts) >= 2:
        trend = "↑" if pts[-1] > pts[-2] + 0.01 else "↓" if pts[-1] < pts[-2] - 0.01 else "→"
    n2 = f"{b.news2.total:>2} {b.news2.risk:<10}" if b.news2 else " - " + " " * 10
    alarm = b.alarm_level if b.alarm_level != "none" else "-"
    if b.alarm_state not in ("none", "active") and alarm != "-":
        alarm += f" ({b.alarm_state})"
    n2_alarm = b.news2_alarm_level if b.news2_alarm_level != "none" else "-"
    thr = f"thr {b.threshold:.2f}, " if b.threshold else ""
    return (
        f"{now_txt} {b.bed:<6} {b.stay or '-':<11} risk {risk}{trend:1} "
        f"({thr}{b.model_name} v{b.model_version})  "
        f"NEWS2 {n2} alarm {alarm:<10} NEWS2 alarm {n2_alarm:<9} link {b.link}"
    )


def hub_counts(db: Path) -> dict[str, int]:
    """Rows per table in the hub's SQLite store (read-only)."""
    out: dict[str, int] = {}
    if not db.is_file():
        return out
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for t in ("vitals_summaries", "risk_events", "alarms", "gateway_status", "dead_letters"):
            with contextlib.suppress(sqlite3.Error):
                out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
    finally:
        con.close()
    return out


def _setup_logging(folder: Path, headless: bool) -> None:
    """Everything to demo.log; in headless mode warnings also to stderr (the UI owns
    the terminal otherwise)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fh = logging.FileHandler(folder / "demo.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(fh)
    root.setLevel(logging.INFO)
    if headless:
        sh = logging.StreamHandler(sys.stderr)
        sh.setLevel(logging.ERROR)
        sh.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root.addHandler(sh)


def _run_ui(gw: Gateway, stop_event: threading.Event) -> None:
    from textual.binding import Binding

    from edge_agent.ui.app import VigilApp
    from edge_agent.ui.gateway_port import GatewayPort

    class DemoApp(VigilApp):
        # Ctrl-C in a demo means "stop everything", without the quit question.
        BINDINGS = [*VigilApp.BINDINGS, Binding("ctrl+c", "quit", "Stop demo", priority=True)]

    app = DemoApp(GatewayPort(gw), operator=OPERATOR)

    def _watch() -> None:  # SIGTERM or --duration: leave the UI from outside
        stop_event.wait()
        with contextlib.suppress(Exception):
            app.call_from_thread(app.exit)

    threading.Thread(target=_watch, name="demo-ui-stop", daemon=True).start()
    app.run()


def demo(
    beds: int = typer.Option(6, "--beds", min=1, max=64, help="Number of beds (monitors)."),
    speed: float = typer.Option(
        1800.0, "--speed", min=1.0, help="Simulated seconds per real second (1800: 1 h in 2 s)."
    ),
    stays: str = typer.Option(
        "auto",
        "--stays",
        help="'auto' (septic stays flagged early + never-septic stays), comma-separated "
        "stay ids of the canonical table (e.g. pn-p000009), or 'generated'.",
    ),
    duration: float = typer.Option(
        0.0, "--duration", min=0.0, help="Stop after this many seconds (0: until Ctrl-C)."
    ),
    headless: bool = typer.Option(
        False, "--headless", help="No terminal UI: print one line per bed every --every s."
    ),
    every: float = typer.Option(2.0, "--every", min=0.2, help="Seconds between headless lines."),
    folder: Path = typer.Option(
        None, "--workdir", help="Demo folder (default <work_dir>/demo); its stores start fresh."
    ),
    broker_kind: str = typer.Option(
        "auto",
        "--broker",
        help="auto (Mosquitto when installed, else in-process amqtt), mosquitto or amqtt.",
    ),
    driver: str = typer.Option(
        "pcd01",
        "--driver",
        help="pcd01 (monitors send HL7 ORU^R01 over MLLP) or intellivue (simulated Philips "
        "IntelliVues on ptys, polled by the gateway's Data Export driver).",
    ),
) -> None:
    """Run the whole system on this machine (broker, hub, monitors, gateway, ward UI).

    Example: vigil demo --beds 4 --headless --duration 60
    """
    folder = (folder or work_dir() / "demo").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # One demo per folder: a second one would wipe the first one's stores.
    lock = open(folder / ".lock", "w")  # noqa: SIM115 - held for the life of the demo
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise fail(f"another vigil demo is running in {folder}; stop it or use --workdir") from None
    for name in (
        "hub.db",
        "hub.db-wal",
        "hub.db-shm",
        "gateway.sqlite",
        "gateway.sqlite-wal",
        "gateway.sqlite-shm",
        "hub.log",
        "demo.log",
    ):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _setup_logging(folder, headless)
    echo = typer.echo

    stop_event = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    table = ensure_table(echo) if stays != "generated" else None
    plans, table = plan_beds(beds, stays, table, echo)

    from .broker import embedded_broker

    if broker_kind not in ("auto", "mosquitto", "amqtt"):
        raise fail(f"--broker {broker_kind!r}: expected auto, mosquitto or amqtt")
    if driver not in ("pcd01", "intellivue"):
        raise fail(f"--driver {driver!r}: expected pcd01 or intellivue")

    hub_db = folder / "hub.db"
    broker = hub = gw = monitors = None
    ivue: IntelliVueMonitors | None = None
    code = 0
    try:
        broker = embedded_broker(folder / "broker", prefer=broker_kind)
        # amqtt speaks MQTT 3.1.1 only: the gateway and the (single) hub worker follow.
        protocol = "5" if broker.kind == "mosquitto" else "3.1.1"
        echo(f"broker : {broker.describe()}")
        hub_log = folder / "hub.log"
        hub = spawn(
            vigil_argv(
                "hub",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(broker.port),
                "--db",
                f"sqlite:///{hub_db}",
                "--worker-id",
                "demo-hub",
                "--mqtt-protocol",
                protocol,
            ),
            hub_log,
            env={
                "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
                "VIGIL_HOME": str(folder),
                # INFO: hub.log is the demo's record, and readiness is read from it.
                "VIGIL_LOG_LEVEL": "INFO",
            },
        )
        if not wait_hub_ready(hub, hub_log, 60):
            raise RuntimeError(f"the hub did not start; see {hub_log}")
        echo(
            f"hub    : pid {hub.pid}, store sqlite:///{hub_db}, MLflow sqlite:///{folder / 'mlflow.db'}"
        )

        from edge_agent.gateway import Gateway

        listen_port = free_port()
        if driver == "intellivue":
            ivue = IntelliVueMonitors(plans, table, speed)
        gw = Gateway(
            gateway_settings(
                plans,
                table,
                broker.port,
                folder,
                speed,
                protocol,
                listen_port,
                intellivue=ivue.ports if ivue else None,
            )
        )
        m = gw.model
        echo(
            f"gateway: {GATEWAY_ID}, model {m.name} v{m.version} (threshold {m.threshold:.2f})"
            if m
            else f"gateway: {GATEWAY_ID}, NO verified model (vitals and NEWS2 only)"
        )
        echo(
            f"monitors at x{speed:g} (1 simulated hour = {3600 / speed:.1f} s), MLLP clients "
            f"of the gateway's listener 127.0.0.1:{listen_port} (IHE PCD-01, ACKed):"
            if ivue is None
            else f"monitors at x{speed:g} (1 simulated hour = {3600 / speed:.1f} s), "
            "simulated Philips IntelliVues on ptys polled by the gateway (Data Export):"
        )
        for p in plans:
            echo(f"  {p.bed:<6} {p.label}")
        known = [p.hours for p in plans if p.hours]
        if known:
            echo(
                "  (a replay ends with its stay; that bed's monitor link then shows down; "
                f"the shortest here lasts ~{min(known) * 3600 / speed:.0f} s)"
            )
        echo(f"logs   : {folder}/demo.log, hub.log; stop with Ctrl-C")
        gw.start()
        if ivue is None:
            monitors = start_monitors(plans, table, listen_port, speed)
        if duration:
            threading.Timer(duration, stop_event.set).start()
        if headless:
            while not stop_event.wait(every):
                snap = gw.state.snapshot()
                now = time.strftime("%H:%M:%S")
                for b in snap.beds:
                    echo(bed_line(b, now))
                echo(
                    f"{now} broker {'up' if snap.broker_connected else 'DOWN'}, "
                    f"outbox {snap.outbox}, hub {hub_counts(hub_db)}"
                )
        else:
            _run_ui(gw, stop_event)
            stop_event.set()
    except KeyboardInterrupt:
        stop_event.set()
    except Exception as e:
        log.exception("demo failed")
        echo(f"error: {e}", err=True)
        code = 1
    finally:
        stop_event.set()
        # Order: the monitors stop, the gateway flushes its outbox into the broker, the
        # hub drains and commits what it received, then the broker goes.
        if monitors is not None:
            monitors.close()
        if gw is not None:
            gw.stop(flush_timeout=5)  # releases the IntelliVue associations
        if ivue is not None:
            ivue.close()
        rc = stop(hub, 20)
        if broker is not None:
            broker.stop()
        counts = hub_counts(hub_db)
        echo(f"stopped (hub exit {rc}); hub store {hub_db}: {counts}")
    if code:
        raise typer.Exit(code)
