"""`vigil sim`: run simulated bedside monitors; `vigil sim watch`: decode one's line.

    vigil sim --pty --scenario sepsis --seed 1            # prints "bed-1 /dev/pts/5"
    vigil sim --pty --beds 3 --scenario stable,sepsis,desaturation
    vigil sim --tcp 6001 --replay pn-p000001 --data data/canonical/physionet2019.parquet
    vigil sim --device /dev/ttyUSB0 --baud 115200 --fault sensor_off:O2Sat@30s+60s
    vigil sim --mllp-connect 127.0.0.1:2575 --beds 4 --profile mindray   # monitors dial in
    vigil sim watch /dev/pts/5

`--profile` chooses how the monitor writes HL7: `standard` IHE PCD-01, or the `ge`,
`ge-degf`, `mindray`, `philips` dialects (firmware_sim/hl7.py says what each follows).
With `--mllp-connect` every bed is an MLLP client of one listener (a gateway's
`mllp-listen` source): it waits for each ACK and resends after `--ack-timeout`.

The first lines on stdout are one per bed, ``bed-N ADDRESS`` (machine-readable); logs go
to stderr. Bad arguments exit with status 2 and a message saying what was wrong.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from contracts.cli import CanonicalTable, fail
from contracts.paths import work_dir
from contracts.timeutil import naive_as_utc, parse_iso

from .faults import FaultLog, FaultSpec, FaultSpecError, parse_fault, parse_time
from .hl7 import DEFAULT_PROFILE, PROFILES
from .monitor import DEFAULT_MAX_RATE, Monitor, MonitorRunner
from .physiology import SCENARIOS, DataError, GeneratedSource, load_replay, stay_ids_in

app = typer.Typer(no_args_is_help=True, invoke_without_command=True)
log = logging.getLogger("firmware_sim")

SIM = "vigil sim: "
"""What the simulator's error messages start with (`fail(..., prefix=SIM)`)."""

Baud = Annotated[int, typer.Option("--baud", help="Baud rate of a serial device.")]


def default_data() -> Path:
    return work_dir() / "canonical" / "physionet2019.parquet"


def _seconds(text: str, what: str) -> float:
    try:
        t = parse_time(text, text, what)
    except FaultSpecError:
        raise fail(f"{what} {text!r} is not a time (e.g. 90, 30s, 5m, 2h)", prefix=SIM) from None
    if t.cycles:
        raise fail(f"{what} {text!r}: give a time, not a message count", prefix=SIM)
    return t.value


@app.callback()
def sim(
    ctx: typer.Context,
    pty: Annotated[
        bool, typer.Option("--pty", help="One pseudo-terminal per bed (default).")
    ] = False,
    tcp: Annotated[
        int | None,
        typer.Option(
            "--tcp",
            help="Listen on TCP PORT (beds use PORT, PORT+1, ...; 0 = any free).",
            min=0,
            max=65535,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the TCP server binds.")] = "127.0.0.1",
    device: Annotated[
        str | None,
        typer.Option("--device", help="Real serial device(s), comma-separated, one per bed."),
    ] = None,
    baud: Baud = 115200,
    mllp_connect: Annotated[
        str | None,
        typer.Option(
            "--mllp-connect",
            help="Connect every bed to an MLLP listener HOST:PORT (waits for ACKs).",
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help=f"HL7 dialect: {', '.join(PROFILES)}."),
    ] = DEFAULT_PROFILE,
    ack_timeout: Annotated[
        float, typer.Option(help="--mllp-connect: seconds to wait for an ACK before resending.")
    ] = 2.0,
    retries: Annotated[
        int, typer.Option(help="--mllp-connect: resends of a frame without ACK (GE: 3).")
    ] = 3,
    replay: Annotated[
        str | None,
        typer.Option("--replay", help="Stay id(s) of the canonical table to replay, one bed each."),
    ] = None,
    data: CanonicalTable = None,
    bedside: Annotated[
        bool,
        typer.Option(
            "--bedside",
            help="--replay as a bedside monitor measures: continuous vitals interpolated"
            " between charted values with beat-to-beat noise, NIBP per cuff cycle, Temp per"
            " probe (firmware_sim/bedside.py); default: the chart as charted.",
        ),
    ] = False,
    cuff: Annotated[
        str, typer.Option(help="--bedside: NIBP cuff cycle (15m..60m typical).")
    ] = "30m",
    max_gap: Annotated[
        str, typer.Option(help="--bedside: charted values further apart are not interpolated.")
    ] = "4h",
    scenario: Annotated[
        str | None,
        typer.Option(
            help=f"Generated patients: {', '.join(SCENARIOS)} (comma list cycles over beds)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of generated patients and noise (bed i: seed+i-1).")
    ] = 0,
    onset: Annotated[
        str | None, typer.Option(help="Scenario onset after monitoring starts (2h).")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per wall second (3600: 1 h/s).")
    ] = 1.0,
    interval: Annotated[
        float, typer.Option(help="Simulated seconds between readings at speed 1.")
    ] = 1.0,
    max_rate: Annotated[
        float, typer.Option(help="Wall cap: messages/s per bed.")
    ] = DEFAULT_MAX_RATE,
    beds: Annotated[
        int | None, typer.Option(help="Number of monitors (default 1 or one per stay).")
    ] = None,
    fault: Annotated[
        list[str],
        typer.Option("--fault", help="Fault spec, repeatable (e.g. sensor_off:O2Sat@30s+60s)."),
    ] = (),
    fault_log: Annotated[
        Path | None, typer.Option(help="Append injected faults as JSON lines.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this wall time (30s, 5m).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Simulated clock start, ISO-8601 (default now).")
    ] = None,
    control: Annotated[
        bool, typer.Option(help="Read fault specs from stdin, one per line.")
    ] = False,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="hl7 (ORU^R01 over MLLP) or intellivue (Philips Data Export, answers polls;"
            " --pty, or --tcp PORT for UDP on the LAN; faults demo, invalid:P, off:P, crc:N).",
        ),
    ] = "hl7",
) -> None:
    """Run simulated bedside monitors (HL7 v2 ORU^R01 over MLLP, or Philips IntelliVue).

    With --protocol intellivue each bed is a Philips IntelliVue speaking Data Export
    (firmware_sim/intellivue.py): on a pty as its MIB/RS-232 port, or with --tcp PORT
    on UDP ports PORT, PORT+1, ...; --control reads `cable_pull BED SECONDS` and
    `reboot BED SECONDS` from stdin.

    Example: vigil sim --pty --beds 3 --scenario stable,sepsis,desaturation --speed 60
    """
    if ctx.invoked_subcommand is not None:
        return
    if protocol == "intellivue":
        from .intellivue import FaultError, serve

        if device or mllp_connect:
            raise fail("--protocol intellivue runs on --pty or --tcp PORT (UDP)", prefix=SIM)
        if replay and scenario:
            raise fail("choose --replay STAY_ID or --scenario NAME, not both", prefix=SIM)
        played = None  # what the monitors measure: replayed stays or scenarios
        try:
            if replay:
                ids = [s.strip() for s in replay.split(",") if s.strip()]
                played = load_replay(_table(data or default_data()), ids, seed=seed)
            elif scenario:
                names = [s.strip() for s in scenario.split(",")]
                if bad := [s for s in names if s not in SCENARIOS]:
                    raise DataError(
                        f"unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}"
                    )
                onset_s = _seconds(onset, "--onset") if onset else None
                n = beds or len(names)
                played = [
                    GeneratedSource(names[i % len(names)], seed + i, onset_s) for i in range(n)
                ]
        except DataError as e:
            raise fail(e, prefix=SIM) from None
        try:
            serve(
                beds or 1,
                sources=played,
                speed=speed,
                seed=seed,
                clock_start=naive_as_utc(parse_iso(start)) if start else None,
                faults=list(fault),
                udp_port=tcp,
                duration=_seconds(duration, "--duration") if duration else None,
                echo=typer.echo,
                control=control,
            )
        except (FaultError, ValueError, OSError) as e:
            raise fail(e, prefix=SIM) from None
        return
    if protocol != "hl7":
        raise fail(f"--protocol {protocol!r}: choose hl7 or intellivue", prefix=SIM)
    if not speed > 0:
        raise fail(f"--speed must be > 0, got {speed}", prefix=SIM)
    if not interval > 0 or not max_rate > 0:
        raise fail("--interval and --max-rate must be > 0", prefix=SIM)
    if sum(x is not None and x is not False for x in (tcp, device, pty or None, mllp_connect)) > 1:
        raise fail(
            "choose one transport: --pty, --tcp PORT, --device PATH or --mllp-connect HOST:PORT",
            prefix=SIM,
        )
    if profile not in PROFILES:
        raise fail(f"unknown --profile {profile!r}; choose from {', '.join(PROFILES)}", prefix=SIM)
    if not ack_timeout > 0 or retries < 0:
        raise fail("--ack-timeout must be > 0 and --retries >= 0", prefix=SIM)
    connect_to = _host_port(mllp_connect) if mllp_connect else None
    if replay and scenario:
        raise fail("choose --replay STAY_ID or --scenario NAME, not both", prefix=SIM)
    if beds is not None and beds < 1:
        raise fail(f"--beds must be >= 1, got {beds}", prefix=SIM)
    try:
        specs: list[FaultSpec] = [parse_fault(f) for f in fault]
    except FaultSpecError as e:
        raise fail(e, prefix=SIM) from None
    wall = _seconds(duration, "--duration") if duration else None
    clock_start = None
    if start:
        try:
            clock_start = naive_as_utc(parse_iso(start))
        except ValueError:
            raise fail(f"--start {start!r} is not an ISO-8601 time", prefix=SIM) from None
    onset_s = _seconds(onset, "--onset") if onset else None

    if replay:
        ids = [s.strip() for s in replay.split(",") if s.strip()]
        if beds is not None and beds != len(ids):
            raise fail(
                f"--beds {beds} but {len(ids)} stay(s) to replay: one bed per stay", prefix=SIM
            )
        path = _table(data or default_data())
        try:
            if bedside:
                from .bedside import BedsideConfig, load_bedside

                step = max(interval / speed, 1.0 / max_rate) * speed  # = Monitor.sim_step
                try:
                    cfg = BedsideConfig(
                        cadence_s=step,
                        cuff_interval_s=_seconds(cuff, "--cuff"),
                        max_gap_h=_seconds(max_gap, "--max-gap") / 3600.0,
                    )
                except ValueError as e:
                    raise fail(f"--bedside: {e}", prefix=SIM) from None
                sources = load_bedside(path, ids, seed=seed, config=cfg)
            else:
                sources = load_replay(path, ids, seed=seed)
        except DataError as e:
            raise fail(e, prefix=SIM) from None
    elif bedside:
        raise fail("--bedside replays a stay: give --replay STAY_ID", prefix=SIM)
    else:
        names = [s.strip() for s in (scenario or "stable").split(",")]
        bad = [s for s in names if s not in SCENARIOS]
        if bad:
            raise fail(
                f"unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}", prefix=SIM
            )
        n = beds or len(names)
        sources = [GeneratedSource(names[i % len(names)], seed + i, onset_s) for i in range(n)]
    n = len(sources)
    if tcp and tcp + n - 1 > 65535:
        raise fail(f"--tcp {tcp}: {n} bed(s) need ports up to {tcp + n - 1} (> 65535)", prefix=SIM)
    for spec in specs:
        if spec.beds and max(spec.beds) > n:
            raise fail(
                f"fault {spec.text!r} names bed {max(spec.beds)}, only {n} bed(s)", prefix=SIM
            )

    transports = []
    try:
        if connect_to is not None:
            from .transports import MllpClientTransport

            transports = [
                MllpClientTransport(
                    connect_to[0], connect_to[1], ack_timeout=ack_timeout, retries=retries
                )
                for _ in range(n)
            ]
        elif device:
            devs = [d.strip() for d in device.split(",")]
            if len(devs) != n:
                raise fail(f"{n} bed(s) need {n} device path(s), got {len(devs)}", prefix=SIM)
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
        raise fail(e, prefix=SIM) from None

    try:
        flog = FaultLog(fault_log)
    except OSError as e:
        for t in transports:
            t.close()
        raise fail(
            f"--fault-log {fault_log}: cannot append to it ({e.strerror or e})", prefix=SIM
        ) from None
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
                profile=profile,
            )
            for i, src in enumerate(sources)
        ]
    except ValueError as e:  # e.g. a stay id the wire cannot carry
        for t in transports:
            t.close()
        raise fail(e, prefix=SIM) from None
    for m in monitors:
        typer.echo(f"{m.bed} {m.address}")
    sys.stdout.flush()
    runner = MonitorRunner(monitors)
    log.info(
        "%d monitor(s), %s, a message every %.3f s wall = %.1f s simulated",
        n,
        f"{'bedside ' if bedside else ''}replay {replay}"
        if replay
        else f"scenario {scenario or 'stable'}",
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
        for m in monitors:  # MLLP clients: let the last frames get their ACK
            flush = getattr(m.transport, "flush", None)
            if flush is not None:
                flush(min(5.0, ack_timeout * (retries + 1)))
        runner.close()
        flog.close()
    for m in monitors:
        s = m.stats
        typer.echo(
            f"{m.bed}: {s.cycles} cycles, {s.sent} sent, {s.silent} silent (faults), "
            f"{s.overruns} not taken by the line",
            err=True,
        )
        acks = getattr(m.transport, "stats", None)
        if acks is not None:
            typer.echo(
                f"{m.bed}: acked {acks.acked}, refused {acks.nacked}, resent {acks.resent}, "
                f"lost {acks.lost}, connects {acks.connects}",
                err=True,
            )
    typer.echo(f"faults injected: {sum(e.visible for e in flog.events)}", err=True)


def _table(path: Path) -> Path:
    """The canonical table's path, or a `fail` saying it is missing or a folder."""
    if not path.exists():
        raise fail(
            f"canonical table {path} not found (make one with `vigil convert physionet`, "
            "or pass --data PATH)",
            prefix=SIM,
        )
    if path.is_dir():
        raise fail(f"--data {path}: a folder; give the canonical Parquet file", prefix=SIM)
    return path


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"--mllp-connect {text!r}: expected HOST:PORT (e.g. 127.0.0.1:2575)", prefix=SIM)
    return host.strip("[]"), int(port)


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
    address: Annotated[str, typer.Argument(help="Serial device (/dev/pts/5) or tcp://host:port.")],
    baud: Baud = 115200,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Decode a monitor's line and print one line per message.

    Example: vigil sim watch /dev/pts/5 --count 10
    """
    from .watch import watch as _watch

    if address.startswith("tcp://"):
        _, _, port = address[len("tcp://") :].rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise fail(
                f"{address!r}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:6001)", prefix=SIM
            )
    try:
        counts = _watch(address, baud=baud, count=count, duration=duration)
    except (OSError, EOFError, ValueError) as e:
        raise fail(f"cannot watch {address}: {e}", prefix=SIM) from None
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()), err=True)


@app.command()
def stays(
    data: CanonicalTable = None,
    limit: Annotated[int, typer.Option(help="How many to list.", min=1)] = 20,
) -> None:
    """List stay ids of the canonical table (what --replay accepts).

    Example: vigil sim stays --limit 5
    """
    path = _table(data or default_data())
    try:
        for sid in stay_ids_in(path, limit):
            typer.echo(sid)
    except DataError as e:
        raise fail(e, prefix=SIM) from None
