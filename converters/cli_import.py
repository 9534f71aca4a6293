"""`vigil convert physionet|mimic`: import a dataset into the canonical hourly table.

Prints a summary (stays, rows, positive stays, skipped, fingerprint) and the first
problems found in the input; exits non-zero when the source is missing or unreadable.
pandas/pyarrow are imported inside the commands so `vigil --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from contracts.paths import mimic_demo_archive, physionet_archive, work_dir

SHOW_PROBLEMS = 20


def default_out(dataset: str) -> Path:
    return work_dir() / "canonical" / f"{dataset}.parquet"


def _print_report(report, report_json: Path | None) -> None:  # noqa: ANN001 - ImportReport
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


def register(app: typer.Typer) -> None:
    @app.command("physionet")
    def physionet(
        source: Path = typer.Argument(
            None,
            help="training_setA.tar.gz, a folder of .psv files or one .psv "
            "(default: the shared PhysioNet 2019 archive).",
        ),
        out: Path = typer.Option(None, "--out", "-o", help="Parquet file to write."),
        limit: int = typer.Option(None, "--limit", min=1, help="Only the first N stays."),
        stays: list[str] = typer.Option(
            None, "--stay", help="Only these stays (pn-p000001 or p000001); repeatable."
        ),
        report_json: Path = typer.Option(None, "--report", help="Write the full report as JSON."),
    ) -> None:
        """Import PhysioNet/CinC 2019 stays into the canonical hourly table."""
        from converters.physionet import SourceError, import_physionet

        src = source or physionet_archive()
        dst = out or default_out("physionet2019")
        try:
            report = import_physionet(src, dst, limit=limit, stays=stays or None)
        except (SourceError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        _print_report(report, report_json)

    @app.command("mimic")
    def mimic(
        source: Path = typer.Argument(
            None,
            help="MIMIC-III CSVs: the demo tar.gz or a folder with CHARTEVENTS, ICUSTAYS, "
            "PATIENTS, ADMISSIONS (default: the shared MIMIC-III demo).",
        ),
        out: Path = typer.Option(None, "--out", "-o", help="Parquet file to write."),
        report_json: Path = typer.Option(None, "--report", help="Write the full report as JSON."),
    ) -> None:
        """Import MIMIC-III ICU stays (vitals from CHARTEVENTS) into the canonical table."""
        try:
            from converters.mimic import SourceError, import_mimic
        except ModuleNotFoundError as e:
            typer.echo(f"error: the MIMIC-III importer is not available ({e})", err=True)
            raise typer.Exit(2) from e

        src = source or mimic_demo_archive()
        dst = out or default_out("mimic3")
        try:
            report = import_mimic(src, dst)
        except (SourceError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        _print_report(report, report_json)
