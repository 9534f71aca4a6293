"""`vigil sim`: run simulated bedside monitors; `vigil sim watch`: decode one's line.

    vigil sim --pty --scenario sepsis --seed 1            # prints "bed-1 /dev/pts/5"
    vigil sim --pty --beds 3 --scenario stable,sepsis,desaturation
    vigil sim --tcp 6001 --replay pn-p000001 --data data/canonical/physionet2019.parquet
    vigil sim --device /dev/ttyUSB0 --baud 115200 --fault sensor_off:O2Sat@30s+60s
    vigil sim watch /dev/pts/5

The first lines on stdout are one per bed, ``bed-N ADDRESS`` (machine-readable); logs go
to stderr. Bad arguments exit with status 2 and a message saying what was wrong.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import typer

from contracts.paths import work_dir
from contracts.timeutil import naive_as_utc, parse_iso

from .faults import FaultLog, FaultSpec, FaultSpecError, parse_fault, parse_time
from .monitor import DEFAULT_MAX_RATE, Monitor, MonitorRunner
from .physiology import SCENARIOS, DataError, GeneratedSource, load_replay, stay_ids_in

app = typer.Typer(no_args_is_help=True, invoke_without_command=True)
log = logging.getLogger("firmware_sim")


def default_data() -> Path:
    return work_dir() / "canonical" / "physionet2019.parquet"


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"vigil sim: {msg}", err=True)
    return typer.Exit(2)


def _seconds(text: str, what: str) -> float:
    try:
        t = parse_time(text, text, what)
    except FaultSpecError:
        raise _fail(f"{what} {text!r} is not a time (e.g. 90, 30s, 5m, 2h)") from None
    if t.cycles:
        raise _fail(f"{what} {text!r}: give a time, not a message count")
    return t.value


@app.callback()
def sim(
    ctx: typer.Context,
    pty: bool = typer.Option(False, "--pty", help="One pseudo-terminal per bed (default)."),
    tcp: int | None = typer.Option(
        None, "--tcp", help="Listen on TCP PORT (beds use PORT, PORT+1, ...; 0 = any free)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address the TCP server binds."),
    device: str | None = typer.Option(
        None, "--device", help="Real serial device(s), comma-separated, one per bed."
    ),
    baud: int = typer.Option(115200, help="Baud rate of --device."),
    replay: str | None = typer.Option(
        None, "--replay", help="Stay id(s) of the canonical table to replay, one bed each."
    ),
    data: Path | None = typer.Option(None, "--data", help="Canonical Parquet table for --replay."),
    scenario: str | None = typer.Option(
        None, help=f"Generated patients: {', '.join(SCENARIOS)} (comma list cycles over beds)."
    ),
    seed: int = typer.Option(0, help="Seed of generated patients and noise (bed i: seed+i-1)."),
    onset: str | None = typer.Option(None, help="Scenario onset after monitoring starts (2h)."),
    speed: float = typer.Option(1.0, help="Simulated seconds per wall second (3600: 1 h/s)."),
    interval: float = typer.Option(1.0, help="Simulated seconds between readings at speed 1."),
    max_rate: float = typer.Option(DEFAULT_MAX_RATE, help="Wall cap: messages/s per bed."),
    beds: int | None = typer.Option(None, help="Number of monitors (default 1 or one per stay)."),
    fault: list[str] = typer.Option(
        [], "--fault", help="Fault spec, repeatable (e.g. sensor_off:O2Sat@30s+60s)."
    ),
    fault_log: Path | None = typer.Option(None, help="Append injected faults as JSON lines."),
    duration: str | None = typer.Option(None, help="Stop after this wall time (30s, 5m)."),
    start: str | None = typer.Option(None, help="Simulated clock start, ISO-8601 (default now)."),
    control: bool = typer.Option(False, help="Read fault specs from stdin, one per line."),
) -> None:
    """Run simulated bedside monitors (HL7 v2 ORU^R01 over MLLP)."""
    if ctx.invoked_subcommand is not None:
        return
    if not speed > 0:
        raise _fail(f"--speed must be > 0, got {speed}")
    if not interval > 0 or not max_rate > 0:
        raise _fail("--interval and --max-rate must be > 0")
    if sum(x is not None and x is not False for x in (tcp, device, pty or None)) > 1:
        raise _fail("choose one transport: --pty, --tcp PORT or --device PATH")
    if replay and scenario:
        raise _fail("choose --replay STAY_ID or --scenario NAME, not both")
    if beds is not None and beds < 1:
        raise _fail(f"--beds must be >= 1, got {beds}")
    try:
        specs: list[FaultSpec] = [parse_fault(f) for f in fault]
    except FaultSpecError as e:
        raise _fail(str(e)) from None
    wall = _seconds(duration, "--duration") if duration else None
    clock_start = None
    if start:
        try:
            clock_start = naive_as_utc(parse_iso(start))
        except ValueError:
            raise _fail(f"--start {start!r} is not an ISO-8601 time") from None
    onset_s = _seconds(onset, "--onset") if onset else None

    if replay:
        ids = [s.strip() for s in replay.split(",") if s.strip()]
        if beds is not None and beds != len(ids):
            raise _fail(f"--beds {beds} but {len(ids)} stay(s) to replay: one bed per stay")
        path = data or default_data()
        if not path.exists():
            raise _fail(
                f"canonical table {path} not found (make one with `vigil convert physionet`, "
                "or pass --data PATH)"
            )
        try:
            sources = load_replay(path, ids, seed=seed)
        except DataError as e:
            raise _fail(str(e)) from None
    else:
        names = [s.strip() for s in (scenario or "stable").split(",")]
        bad = [s for s in names if s not in SCENARIOS]
        if bad:
            raise _fail(f"unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}")
        n = beds or len(names)
        sources = [GeneratedSource(names[i % len(names)], seed + i, onset_s) for i in range(n)]
    n = len(sources)
    for spec in specs:
        if spec.beds and max(spec.beds) > n:
            raise _fail(f"fault {spec.text!r} names bed {max(spec.beds)}, only {n} bed(s)")

    transports = []
    try:
        if device:
            devs = [d.strip() for d in device.split(",")]
            if len(devs) != n:
                raise _fail(f"{n} bed(s) need {n} device path(s), got {len(devs)}")
            from .transports import SerialTransport

            transports = [SerialTransport(d, baud) for d in devs]
        elif tcp is not None:
            from .transports import TcpServerTransport

            for i in range(n):
                transports.append(TcpServerTransport(tcp + i if tcp else 0, host))
        else:
            from .transports import PtyTransport

            transports = [PtyTransport() for _ in range(n)]
    except OSError as e:
        for t in transports:
            t.close()
        raise _fail(str(e)) from None

    flog = FaultLog(fault_log)
    try:
        monitors = [
            Monitor(
                f"bed-{i + 1}",
                src,
                transports[i],
                bed_number=i + 1,
                speed=speed,
                interval=interval,
                max_rate=max_rate,
                clock_start=clock_start,
                faults=specs,
                fault_log=flog,
                seed=seed + i,
            )
            for i, src in enumerate(sources)
        ]
    except ValueError as e:  # e.g. a stay id the wire cannot carry
        for t in transports:
            t.close()
        raise _fail(str(e)) from None
    for m in monitors:
        typer.echo(f"{m.bed} {m.address}")
    sys.stdout.flush()
    runner = MonitorRunner(monitors)
    log.info(
        "%d monitor(s), %s, a message every %.3f s wall = %.1f s simulated",
        n,
        f"replay {replay}" if replay else f"scenario {scenario or 'stable'}",
        monitors[0].wall_interval,
        monitors[0].sim_step,
    )
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    if control:
        threading.Thread(target=_control, args=(monitors,), daemon=True).start()
    try:
        runner.run(duration=wall)
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()
        flog.close()
    for m in monitors:
        s = m.stats
        typer.echo(
            f"{m.bed}: {s.cycles} cycles, {s.sent} sent, {s.silent} silent (faults), "
            f"{s.overruns} not taken by the line",
            err=True,
        )
    typer.echo(f"faults injected: {sum(e.visible for e in flog.events)}", err=True)


def _control(monitors: list[Monitor]) -> None:
    """Fault specs typed on stdin are injected at once (or at their @ time)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            spec = parse_fault(line)
        except FaultSpecError as e:
            print(f"vigil sim: {e}", file=sys.stderr)
            continue
        for m in monitors:
            m.inject(spec)
        print(f"vigil sim: injected {spec.text}", file=sys.stderr)


@app.command()
def watch(
    address: str = typer.Argument(..., help="Serial device (/dev/pts/5) or tcp://host:port."),
    baud: int = typer.Option(115200),
    count: int | None = typer.Option(None, help="Stop after this many messages."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds."),
) -> None:
    """Decode a monitor's line and print one line per message."""
    from .watch import watch as _watch

    try:
        counts = _watch(address, baud=baud, count=count, duration=duration)
    except (OSError, EOFError, ValueError) as e:
        raise _fail(f"cannot watch {address}: {e}") from None
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()), err=True)


@app.command()
def stays(
    data: Path | None = typer.Option(None, "--data", help="Canonical Parquet table."),
    limit: int = typer.Option(20, help="How many to list."),
) -> None:
    """List stay ids of the canonical table (what --replay accepts)."""
    path = data or default_data()
    try:
        for sid in stay_ids_in(path, limit):
            typer.echo(sid)
    except DataError as e:
        raise _fail(str(e)) from None
