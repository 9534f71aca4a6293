"""`vigil hub` ingest commands: clear errors for bad input (real SQLite stores)."""

from __future__ import annotations

from typer.testing import CliRunner

from vigil_cli.main import app

runner = CliRunner()


def test_serve_refuses_an_invalid_setting_naming_it(tmp_path):
    res = runner.invoke(
        app, ["hub", "serve", "--batch-size", "5000", "--db", f"sqlite:///{tmp_path}/h.db"]
    )
    assert res.exit_code == 2
    assert "receive_maximum (1000) must be >= batch_size (5000)" in res.output


def test_export_wants_a_parquet_path(tmp_path):
    res = runner.invoke(
        app,
        ["hub", "export", "--out", str(tmp_path / "x.csv"), "--db", f"sqlite:///{tmp_path}/h.db"],
    )
    assert res.exit_code == 2 and "expected a .parquet file" in res.output


def test_fleet_of_a_new_store_is_empty_and_an_unreachable_store_is_named(tmp_path):
    # a read-only command never creates a store: a mistyped path is named, exit 2
    res = runner.invoke(app, ["hub", "fleet", "--db", f"sqlite:///{tmp_path}/h.db"])
    assert res.exit_code == 2 and "no hub store there" in res.output
    assert not (tmp_path / "h.db").exists()
    from cloud_hub.store import migrate, open_engine

    migrate(open_engine(f"sqlite:///{tmp_path}/h.db"))  # what `vigil hub serve` does first
    res = runner.invoke(app, ["hub", "fleet", "--db", f"sqlite:///{tmp_path}/h.db"])
    assert res.exit_code == 0 and "0 gateways, 0 online" in res.output
    bad = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    res = runner.invoke(app, ["hub", "fleet", "--db", bad])
    assert res.exit_code == 2 and "cannot migrate the hub store" in res.output


def test_labels_import_of_a_missing_file_is_an_error_not_a_crash(tmp_path):
    res = runner.invoke(
        app,
        [
            "hub",
            "labels",
            "import",
            str(tmp_path / "nope.csv"),
            "--db",
            f"sqlite:///{tmp_path}/h.db",
        ],
    )
    assert res.exit_code == 2 and "cannot read" in res.output
