"""`vigil edge`: run the bedside gateway, check its configuration."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.cli import fail

if TYPE_CHECKING:
    from types import FrameType

    from edge_agent.config import EdgeSettings
    from edge_agent.pcd01 import AdtEvent

app = typer.Typer(no_args_is_help=True, help="Bedside gateway: monitor line -> risk -> MQTT.")

GatewayConfig = Annotated[
    Path,
    typer.Option("--config", "-c", help="the gateway's TOML file", dir_okay=False),
]


def _load(config: Path) -> EdgeSettings:
    from edge_agent.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as e:
        raise fail(e) from None


@app.command("check-config")
def check_config(
    config: Annotated[Path, typer.Argument(help="gateway TOML file", dir_okay=False)],
) -> None:
    """Validate a gateway config (file + VIGIL_EDGE__* env); print what it resolves to.

    Example: vigil edge check-config /etc/vigil/gateway.toml
    """
    s = _load(config)
    typer.echo(
        f"ok: gateway {s.gateway_id}, {len(s.beds)} bed(s), broker {s.mqtt.host}:{s.mqtt.port}"
    )
    for b in s.beds:
        typer.echo(f"  bed {b.id}: {b.source.type} {b.source.model_dump(exclude={'type'})}")
    typer.echo(f"  store {s.store_path}; bundles {[str(p) for p in s.bundle_dirs]}")


@app.command("run")
def run(
    config: GatewayConfig,
    headless: Annotated[bool, typer.Option("--headless", help="no terminal UI, logs only")] = False,
    json_logs: Annotated[
        bool | None, typer.Option("--json-logs/--text-logs", help="override log_json")
    ] = None,
) -> None:
    """Run every configured bed until interrupted (SIGINT/SIGTERM).

    Example: vigil edge run -c /etc/vigil/gateway.toml --headless --json-logs
    """
    from edge_agent.gateway import Gateway
    from edge_agent.logs import setup_logging

    s = _load(config)
    setup_logging(s.log_level, s.log_json if json_logs is None else json_logs)
    gw = Gateway(s)
    from edge_agent.model_hook import attach_updater
    from edge_agent.shadow import attach_shadow

    # model updates from the hub (bundles in <store folder>/bundles), and shadow candidates
    attach_shadow(gw, attach_updater(gw))
    gw.start()

    def _stop(signum: int, frame: FrameType | None) -> None:
        gw._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        if headless:
            gw.wait()
        else:
            try:
                from edge_agent.ui.app import run_ui
            except ImportError as e:
                typer.echo(f"terminal UI unavailable ({e}); running headless", err=True)
                gw.wait()
            else:
                run_ui(gw)
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()


@app.command("pseudonymise-outcomes")
def pseudonymise_outcomes_cmd(
    csv_path: Annotated[Path, typer.Argument(help="CSV: patient_id, [icu_admit,] onset_time")],
    config: GatewayConfig,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write: stay_id, onset_time")],
) -> None:
    """Map the hospital's outcome records to the gateway's stay ids, for the hub.

    Runs where the site secret is (the gateway, or hospital IT with the same
    config). The output holds only pseudonymous stay ids and onset times: take it to
    `vigil hub labels import`. Bad rows are listed by row number (header = row 1),
    the others written; the exit code is then 1.

    Example: vigil edge pseudonymise-outcomes outcomes.csv -c gateway.toml -o outcomes-pseudo.csv
    """
    from edge_agent.privacy import (
        OutcomeFileError,
        SecretError,
        existing_secret,
        pseudonymise_outcomes,
        write_outcomes,
    )

    s = _load(config)
    priv = s.privacy
    try:
        secret = existing_secret(
            priv.stay_secret.get_secret_value() if priv.stay_secret else None,
            priv.stay_secret_file,
            s.store_path.parent,
        )
        text = csv_path.read_text(encoding="utf-8-sig")
        rows, errors = pseudonymise_outcomes(secret, text)
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"cannot read {csv_path}: {e.__class__.__name__}: {e}") from None
    except (SecretError, OutcomeFileError) as e:
        raise fail(f"{csv_path}: {e}") from None
    for line in errors:
        typer.echo(f"{csv_path}: {line}", err=True)
    write_outcomes(rows, out)
    typer.echo(f"wrote {len(rows)} outcome(s) to {out}; {len(errors)} bad row(s)")
    if errors:
        raise typer.Exit(1)


@app.command("score")
def score(
    file: Annotated[
        Path, typer.Argument(help="a stay (.psv, .csv, .parquet), a folder or .tar.gz")
    ],
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="bundle folder (default: the gateway's)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per hour")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG: vitals, risk, threshold, alarms")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for challenge-format prediction files")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="gateway TOML: its bundles, keys, alarms", dir_okay=False
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=0, help="processes for many stays (0: CPUs)")
    ] = 0,
) -> None:
    """Score a patient file hour by hour as the gateway would (its windows, bundle, NEWS2, alarms).

    FILE holds a stay as hourly rows: PhysioNet/CinC 2019 PSV, CSV with the catalogue's
    column names (ICULOS and the vitals required; Age, Gender, HospAdmTime used when
    present) or the canonical Parquet (needs pyarrow). Prints per hour the vitals, risk,
    threshold, NEWS2 and alarm level with the model version; --json prints one object
    per hour. A folder or .tar.gz of stays with --out DIR writes one
    `PredictedProbability|PredictedLabel` file per stay (PhysioNet/CinC 2019 format,
    same file name; hours not scored for insufficient data: 0|0); bad stays are
    reported, skipped and counted. Details: edge_agent/score_file.py.

    Example: vigil edge score p000009.psv --plot p000009.png
    """
    from edge_agent.score_file import (
        ScoreError,
        dumps,
        hour_json,
        is_many,
        make_scorer,
        plot_stay,
        read_stays,
        score_many,
        table_lines,
        write_challenge,
    )

    if config is not None:
        s = _load(config)
        dirs, keys, alarms = s.bundle_dirs, s.trusted_keys, s.alarms
    else:
        from contracts.paths import default_bundle_dir, default_trusted_keys_dir

        dirs, keys, alarms = [default_bundle_dir()], [default_trusted_keys_dir()], None
    if bundle is not None:
        dirs = [bundle]
    try:
        if not file.exists():
            raise ScoreError(f"{file}: no such file or folder")
        if is_many(file):
            if out is None:
                raise ScoreError(f"{file}: a folder or archive of stays needs --out DIR")
            make_scorer(dirs, keys, alarms)  # a bad bundle fails once, here

            def skipped(why: str) -> None:
                typer.echo(f"skipped: {why}", err=True)

            summary = score_many(file, out, dirs, keys, alarms, jobs or None, on_skip=skipped)
            typer.echo(
                f"scored {summary.stays} stay(s), {summary.rows} row(s) -> {out}; "
                f"skipped {len(summary.skipped)}"
            )
            if summary.stays == 0:
                raise ScoreError(f"{file}: no stay could be scored")
            return
        stays = read_stays(file)  # bad input first: one line, before the bundle loads
        scorer = make_scorer(dirs, keys, alarms)
        for stay in stays:
            scored = scorer.score(stay)
            for line in (
                (dumps(hour_json(scored, h)) for h in scored.hours)
                if as_json
                else table_lines(scored)
            ):
                typer.echo(line)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                write_challenge(scored, out)
            if plot is not None:
                plot_stay(scored, plot)
    except ScoreError as e:
        raise fail(e) from None


@app.command("decode")
def decode(
    files: Annotated[list[Path], typer.Argument(help="files of HL7 messages (raw or MLLP-framed)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per message")] = False,
    tz: Annotated[
        str, typer.Option("--tz", help="time zone of times without an offset (IANA name)")
    ] = "UTC",
    driver: Annotated[
        str,
        typer.Option(
            "--driver",
            help="hl7 (IHE PCD-01 messages) or intellivue (a Philips MIB/RS-232 recording)",
        ),
    ] = "hl7",
) -> None:
    """Show what the gateway understands from a monitor's HL7 (IHE PCD-01) messages.

    Reads each file (several messages each, raw or MLLP-framed, CR, LF or CRLF segment
    ends) and prints, per message, the vitals it would use in catalogue units, every
    OBX it sets aside with the reason, and the ACK it would send. Patient fields are
    never printed. With --json: one object per line, `{"file", "control_id",
    "accepted", "vitals", "times", "ignored": [{"segment", "code", "reason"}], "ack"}`.
    Exit 1 when a file cannot be read.

    With --driver intellivue: FILE is a recorded monitor -> host byte stream of a Philips
    IntelliVue's MIB/RS-232 port (Data Export protocol); every decoded message is printed,
    each poll result with its numerics (MDC code, value, unit, validity state); --json
    prints one object per poll result, `{"vitals": {valid values in catalogue units},
    "states": {the rest}, ...}`. Frames with a bad check sequence are counted and
    reported, never decoded (edge_agent/intellivue/tools.py).

    Example: vigil edge decode monitor-capture.hl7 --json --tz Europe/Berlin
    """
    if driver == "intellivue":
        from edge_agent.intellivue.tools import run_decode

        bad = run_decode(files, as_json, typer.echo)
        if bad:
            raise typer.Exit(1) if len(files) == 1 else fail(f"{bad} file(s) could not be read", 1)
        return
    if driver != "hl7":
        raise fail(f"--driver {driver!r}: not a driver (hl7, intellivue)")
    import json
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from contracts.timeutil import iso_ms
    from contracts.vitals import BY_NAME
    from edge_agent.pcd01 import AdtEvent, MessageError, build_ack, parse_any, split_messages

    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"--tz {tz!r}: not a time zone name (e.g. UTC, Europe/Berlin)") from None
    unreadable = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            typer.echo(f"error: cannot read {path}: {e.strerror or e}", err=True)
            unreadable += 1
            continue
        if not data.strip(b"\x0b\x1c\r\n\t "):
            typer.echo(f"{path}: no HL7 message (the file is empty)", err=True)
        for n, body in enumerate(split_messages(data), 1):
            try:
                m = parse_any(body, tz=zone)
            except MessageError as e:
                ack = build_ack(body, e.ack_code, error=e).decode("ascii")
                row = {
                    "file": str(path),
                    "control_id": _control_id(body),
                    "accepted": False,
                    "vitals": {},
                    "times": {},
                    "ignored": [],
                    "ack": ack,
                    "error": {"reason": e.reason, "detail": e.detail},
                }
                if as_json:
                    typer.echo(json.dumps(row, ensure_ascii=False))
                else:
                    typer.echo(
                        f"{path} message {n}: NOT USED ({e.ack_code}) {e.reason}: {e.detail}"
                    )
                    typer.echo(f"  ACK: {ack.strip().replace(chr(13), '  ')}\n")
                continue
            ack = build_ack(body, "AA").decode("ascii")
            if isinstance(m, AdtEvent):  # an admission message: what the gateway reads of it
                _echo_adt(path, n, m, ack, as_json)
                continue
            vitals = {
                o.vital: None if o.value is None else round(o.value, 3) for o in m.observations
            }
            ignored = [
                {"segment": a.segment, "code": a.code, "reason": a.reason} for a in m.set_aside
            ]
            if as_json:
                row = {
                    "file": str(path),
                    "control_id": m.control_id,
                    "accepted": True,
                    "vitals": vitals,
                    "times": {o.vital: iso_ms(o.obs_time) for o in m.observations},
                    "ignored": ignored,
                    "ack": ack,
                }
                typer.echo(json.dumps(row, ensure_ascii=False))
                continue
            typer.echo(
                f"{path} message {n}: {m.message_type} v{m.version} control id {m.control_id}"
                f" from {m.sending_app or '-'}/{m.sending_facility or '-'}"
                f" bed {m.bed_label or '-'}: {len(vitals)} vital(s), {len(ignored)} set aside"
            )
            if m.observations:
                typer.echo(
                    f"  {'vital':<6} {'value':>9} {'unit':<7} {'source':<9} {'time (UTC)':<24} code"
                )
            for o in m.observations:
                value = "n/a" if o.value is None else f"{o.value:.4g}"
                unit = BY_NAME[o.vital].unit
                typer.echo(
                    f"  {o.vital:<6} {value:>9} {unit:<7} {o.source:<9} {iso_ms(o.obs_time):<24} {o.code}"
                )
            for a in m.set_aside:
                extra = f" ({a.detail})" if a.detail else ""
                typer.echo(f"  set aside {a.segment:<7} {a.code or '-'}: {a.reason}{extra}")
            typer.echo(f"  ACK: {ack.strip().replace(chr(13), '  ')}\n")
    if unreadable:  # each was named above; a total only for several files
        raise (
            typer.Exit(1) if len(files) == 1 else fail(f"{unreadable} file(s) could not be read", 1)
        )


@app.command("probe")
def probe(
    driver: Annotated[str, typer.Option("--driver", help="the monitor's protocol: intellivue")],
    port: Annotated[
        str | None, typer.Option("--port", help="serial device of the monitor's MIB port")
    ] = None,
    udp: Annotated[
        str | None, typer.Option("--udp", help="HOST[:PORT] of the monitor's LAN Data Export")
    ] = None,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="how long to listen once associated")
    ] = 5.0,
    baud: Annotated[int, typer.Option("--baud", help="serial speed (MIB: 115200)")] = 115200,
) -> None:
    """Connect to a bedside monitor, print its identity and numerics, and exit.

    The first thing to run at a bed: associates with the monitor (Philips IntelliVue Data
    Export over the MIB/RS-232 port, or UDP on the LAN), prints who answered (model,
    bed label, clock) and every poll result for --seconds (values in catalogue units and
    the numerics withheld with their state), then releases the association. Listen-only:
    it changes no monitor setting. Exit 1 when no monitor answered.

    Example: vigil edge probe --driver intellivue --port /dev/ttyUSB0 --seconds 5
    """
    if driver != "intellivue":
        raise fail(f"--driver {driver!r}: not a driver that probes (intellivue)")
    if (port is None) == (udp is None):
        raise fail("give the monitor's --port DEVICE or --udp HOST (one of them)")
    if port is not None and not Path(port).exists():
        raise fail(f"--port {port}: no such device")
    from contracts.timeutil import iso_ms
    from edge_agent.decoder import Reading
    from edge_agent.intellivue.tools import identity_text
    from edge_agent.intellivue.tools import probe as run_probe

    def show(r: Reading) -> None:
        values = ", ".join(f"{k} {v:g}" for k, v in r.values.items() if v is not None)
        withheld = ", ".join(f"{k} ({v})" for k, v in r.quality.items())
        typer.echo(
            f"{iso_ms(r.obs_time)}  {values or 'no valid numeric'}"
            + (f"  withheld: {withheld}" if withheld else "")
        )

    where = port or f"udp {udp}"
    got = run_probe(
        port=port,
        udp=udp,
        seconds=seconds,
        baud=baud,
        on_reading=show,
        on_identity=lambda m: typer.echo(f"monitor on {where}: {identity_text(m)}"),
    )
    s = got.session
    if not got.readings:
        raise fail(
            f"no IntelliVue answered on {where} within {seconds:g} s (check the cable, "
            f"{baud} baud 8N1, and that the monitor's port is set to Data Export)",
            1,
        )
    frames = got.frames.stats if got.frames else None
    typer.echo(
        f"{len(got.readings)} poll result(s); associations {s.stats.associations}; "
        f"bad frames {frames.frames_bad if frames else 0}; released: {s.state == 'stopped'}"
    )


def _echo_adt(path: Path, n: int, m: AdtEvent, ack: str, as_json: bool) -> None:
    """One ADT message as `decode` shows it: event, location, admission (never PID-3)."""
    import json

    from contracts.timeutil import iso_ms

    adt = {
        "event": m.event,
        "location": m.location,
        "bed_label": m.bed_label,
        "prior_location": m.prior_location,
        "event_time": iso_ms(m.event_time),
        "admit_time": iso_ms(m.admit_time) if m.admit_time else None,
        "discharge_time": iso_ms(m.discharge_time) if m.discharge_time else None,
        "age": m.age,
        "sex": m.sex,
    }
    ignored = [{"segment": a.segment, "code": a.code, "reason": a.reason} for a in m.set_aside]
    if as_json:
        row = {
            "file": str(path),
            "control_id": m.control_id,
            "accepted": True,
            "vitals": {},
            "times": {},
            "adt": adt,
            "ignored": ignored,
            "ack": ack,
        }
        typer.echo(json.dumps(row, ensure_ascii=False))
        return
    typer.echo(
        f"{path} message {n}: {m.message_type} v{m.version} control id {m.control_id}:"
        f" {m.event} at {adt['event_time']}, location {m.location or '-'}"
        + (f" (from {m.prior_location})" if m.prior_location else "")
        + (f", admitted {adt['admit_time']}" if m.admit_time else "")
    )
    for a in m.set_aside:
        typer.echo(f"  set aside {a.segment:<7} {a.code or '-'}: {a.reason}")
    typer.echo(f"  ACK: {ack.strip().replace(chr(13), '  ')}\n")


def _control_id(body: bytes) -> str:
    """MSH-10 of a message the parser refused, for the decode report ("" if none)."""
    import hl7

    try:
        first = body.split(b"\r", 1)[0].decode("latin-1")
        return (
            str(hl7.parse(first).segment("MSH").extract_field(1, 10)) if first[:3] == "MSH" else ""
        )
    except Exception:
        return ""
