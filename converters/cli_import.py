"""`vigil convert physionet|mimic`: import a dataset into the canonical hourly table.

Prints a summary (stays, rows, positive stays, skipped, fingerprint) and the first
problems found in the input; exits 1 when the source is missing or unreadable.
pandas/pyarrow are imported inside the commands so `vigil --help` stays fast.
`converters.cli` adds these commands to `vigil convert`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.cli import fail
from contracts.paths import mimic_demo_archive, physionet_archive, work_dir

if TYPE_CHECKING:
    from converters.canonical_io import ImportReport

SHOW_PROBLEMS = 20

app = typer.Typer()

OutFile = Annotated[Path | None, typer.Option("--out", "-o", help="Parquet file to write.")]
ReportFile = Annotated[Path | None, typer.Option("--report", help="Write the full report as JSON.")]


def default_out(dataset: str) -> Path:
    return work_dir() / "canonical" / f"{dataset}.parquet"


def _print_report(report: ImportReport, report_json: Path | None) -> None:
    typer.echo(report.summary())
    n = len(report.problems)
    if n:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.problem_counts.items()))
        typer.echo(f"problems: {n} ({counts})")
        for p in report.problems[:SHOW_PROBLEMS]:
            typer.echo(f"  {p}")
        if n > SHOW_PROBLEMS:
            typer.echo(
                f"  ... and {n - SHOW_PROBLEMS} more"
                + ("" if report_json else " (--report FILE writes them all as JSON)")
            )
    else:
        typer.echo("problems: none")
    if report_json:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(report.to_json())
        typer.echo(f"report: {report_json}")


@app.command("physionet")
def physionet(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="training_setA.tar.gz, a folder of .psv files or one .psv "
            "(default: the shared PhysioNet 2019 archive).",
        ),
    ] = None,
    out: OutFile = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N stays.")
    ] = None,
    stays: Annotated[
        list[str] | None,
        typer.Option("--stay", help="Only these stays (pn-p000001 or p000001); repeatable."),
    ] = None,
    report_json: ReportFile = None,
) -> None:
    """Import PhysioNet/CinC 2019 stays into the canonical hourly table.

    Example: vigil convert physionet training_setA.tar.gz --limit 500 -o physionet2019.parquet
    """
    from converters.physionet import SourceError, import_physionet

    src = source or physionet_archive()
    dst = out or default_out("physionet2019")
    try:
        report = import_physionet(src, dst, limit=limit, stays=stays or None)
    except (SourceError, OSError) as e:
        raise fail(e, 1) from e
    _print_report(report, report_json)


@app.command("mimic")
def mimic(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="MIMIC-III CSVs: the demo tar.gz or a folder with CHARTEVENTS, ICUSTAYS, "
            "PATIENTS, ADMISSIONS (default: the shared MIMIC-III demo).",
        ),
    ] = None,
    out: OutFile = None,
    report_json: ReportFile = None,
) -> None:
    """Import MIMIC-III ICU stays (vitals from CHARTEVENTS) into the canonical table.

    Example: vigil convert mimic mimic3demo.tar.gz --out mimic3.parquet --report problems.json
    """
    try:
        from converters.mimic import SourceError, import_mimic
    except ModuleNotFoundError as e:
        raise fail(f"the MIMIC-III importer is not available ({e})") from e

    src = source or mimic_demo_archive()
    dst = out or default_out("mimic3")
    try:
        report = import_mimic(src, dst)
    except (SourceError, OSError) as e:
        raise fail(e, 1) from e
    _print_report(report, report_json)
