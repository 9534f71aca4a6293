"""No traceback reaches a user: every `vigil` command, given bad arguments, says in one
line what was wrong and which argument, and exits 2 (1 where a command documents it).

Runs the installed `vigil` as a user does (a subprocess per case) on real files: missing
ones, folders for files and files for folders, binary, empty and wrongly shaped JSON,
bad store URLs (SQLite and a real PostgreSQL), closed broker ports, out-of-range numbers,
unknown names. Every command of the tree (walked as `tests/test_cli_docs.py` walks it)
has at least one case, so a new command comes with its own. Runs as root here, so
"unreadable" is a folder where a file is expected, not chmod 000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import typer

from contracts.bundle import MAX_MODEL_BYTES
from contracts.paths import default_bundle_dir
from tests.support.net import free_port
from vigil_cli.main import app

VIGIL = str(Path(sys.executable).with_name("vigil"))
CLOSED = str(free_port())  # nothing listens there: a broker that is not running
NO_PG = f"postgresql+psycopg://postgres@127.0.0.1:5432/vigil_missing_{uuid.uuid4().hex[:8]}"

# (arguments, exit code, what the one line must name). {w} is the work folder below.
CASES: list[tuple[str, int, str]] = [
    # --- vigil hub: the store ----------------------------------------------------------
    ("hub serve --db notascheme://x", 2, "--db notascheme://x: not a database URL"),
    ("hub serve --tls-ca {w}/missing.crt", 2, "'--tls-ca'"),
    ("hub serve --tls-ca {w}/dir", 2, "'--tls-ca'"),
    ("hub serve --port 70000", 2, "mqtt_port = 70000"),
    ("hub serve --batch-size 0", 2, "batch_size = 0"),
    ("hub serve --log-format xml", 2, "--log-format 'xml'"),
    ("hub export --db nonsense --out {w}/x.parquet", 2, "--db nonsense: not a database URL"),
    ("hub export --db sqlite:///{w}/typo/hub.db --out {w}/x.parquet", 2, "no hub store there"),
    ("hub export --out {w}/x.csv", 2, "--out"),
    ("hub fleet --db sqlite:///{w}/typo/path/hub.db", 2, "--db sqlite:///{w}/typo/path/hub.db"),
    ("hub fleet --db sqlite:///{w}/dir", 2, "is a folder"),
    ("hub fleet --db sqlite:///{w}/bin.dat", 2, "file is not a database"),
    ("hub fleet --db " + NO_PG, 2, "does not exist"),
    ("hub fleet --db postgresql+psycopg://postgres@127.0.0.1:" + CLOSED + "/x", 2, "refused"),
    ("hub fleet --db postgresql+psycopg://postgres:s3cret@127.0.0.1:" + CLOSED + "/x", 2, "***"),
    ("hub labels import {w}/missing.csv --db sqlite:///{w}/hub.db", 2, "missing.csv"),
    ("hub labels import {w}/dir --db sqlite:///{w}/hub.db", 2, "{w}/dir"),
    ("hub labels import {w}/bin.dat --db sqlite:///{w}/hub.db", 2, "bin.dat"),
    ("hub labels import {w}/empty.txt --db sqlite:///{w}/hub.db", 2, "missing column"),
    ("hub retire --worker-id w1 --port " + CLOSED, 2, "--port " + CLOSED),
    # --- vigil hub: releases and the fleet's broker ------------------------------------
    ("hub releases --db nonsense", 2, "--db nonsense"),
    ("hub releases --db sqlite:///{w}/typo.db", 2, "no hub store there"),
    ("hub releases --ledger {w}/no-ledger", 2, "--ledger {w}/no-ledger"),
    ("hub releases --ledger {w}/bin.dat", 2, "'--ledger'"),
    ("hub targets --port " + CLOSED + " --ledger {w}/dir", 2, "127.0.0.1:" + CLOSED),
    ("hub targets --tls-ca {w}/missing.crt", 2, "'--tls-ca'"),
    ("hub rollout --channel stable --bundle {w}/dir --key {w}/missing.key", 2, "missing.key"),
    ("hub rollout --channel stable --bundle {w}/dir --key {w}/bin.dat", 2, "bin.dat"),
    ("hub rollout --channel stable --staged --bundle {w}/dir", 2, "--channel"),
    ("hub rollout --channel stable --bundle {w}/bin.dat --key {w}/keys/signing.key", 2, "bin.dat"),
    ("hub rollout vigil-sepsis --channel stable --key {w}/keys/signing.key", 2, "NAME@VERSION"),
    ("hub rollback --key {w}/missing.key", 2, "missing.key"),
    ("hub rollback --ledger {w}/bin.dat", 2, "'--ledger'"),
    ("hub calibrate --site icu-1 --alarm-budget 0", 2, "--alarm-budget must be > 0"),
    ("hub calibrate --site icu-1 --alarm-budget 1 --db sqlite:///{w}/typo.db", 2, "no hub store"),
    (
        "hub calibrate --site icu-1 --alarm-budget 1 --db sqlite:///{w}/hub.db --key {w}/keys/signing.key",
        2,
        "--site icu-1: no gateway",
    ),
    ("hub assign gw-1 --channel canary --port " + CLOSED, 2, "127.0.0.1:" + CLOSED),
    ("hub assign gw-1 --channel canary --port 70000", 2, "port = 70000"),
    ("hub assign gw-1 --channel canary --tls-cert {w}/dir", 2, "'--tls-cert'"),
    # --- vigil hub: identities and keys ------------------------------------------------
    ("hub ca init --pki {w}/bin.dat", 2, "'--pki'"),
    ("hub ca init --pki {w}/pki-new --days 0", 2, "at least 1 day"),
    ("hub ca server --pki {w}/no-pki", 2, "no CA in"),
    ("hub ca server --pki {w}/pki --ip not-an-ip", 2, "--ip 'not-an-ip'"),
    ("hub ca hub --pki {w}/no-pki", 2, "no CA in"),
    ("hub ca crl --pki {w}/no-pki", 2, "no CA in"),
    ("hub ca list --pki {w}/no-pki", 2, "no CA in {w}/no-pki"),
    ("hub enroll gw-1 --pki {w}/no-pki", 2, "no CA in"),
    ("hub enroll ../etc --pki {w}/pki", 2, "gateway id"),
    ("hub revoke gw-1 --pki {w}/no-pki", 2, "gw-1"),
    ("hub keys init --dir {w}/bin.dat", 2, "'--dir'"),
    ("hub keys init --dir {w}/keys", 2, "--name signing"),
    ("hub keys init --dir /proc/no/such", 2, "--dir /proc/no/such"),
    # --- vigil hub: training (the data is checked before TensorFlow starts) ------------
    ("hub train --data {w}/missing.parquet", 2, "missing.parquet"),
    ("hub train --data {w}/bin.dat", 2, "bin.dat"),
    ("hub train --arch nonsense", 2, "--arch"),
    ("hub train --epochs 0 --data {w}/bin.dat", 2, "--epochs"),
    ("hub retrain --data {w}/missing.parquet --key {w}/keys/signing.key --no-fleet", 2, "missing"),
    ("hub retrain --every soon --key {w}/keys/signing.key", 2, "'soon'"),
    ("hub retrain --key {w}/bin.dat", 2, "bin.dat"),
    # --- vigil convert ---------------------------------------------------------------
    ("convert verify {w}/bundle/model.tflite", 1, "is a file, not a bundle folder"),
    ("convert verify {w}/missing-bundle", 1, "does not exist"),
    ("convert verify {w}/bundle-list-sig", 1, "is a list, not a JSON object"),
    ("convert verify {w}/bundle-null-sig", 1, "is null, not a JSON object"),
    ("convert verify {w}/bundle-big", 1, "too_large"),  # the gateway's 8 MiB limit
    ("convert verify {w}/bundle --trusted {w}/bin.dat", 2, "--trusted {w}/bin.dat"),
    ("convert verify {w}/bundle --trusted {w}/list.json", 2, "--trusted {w}/list.json"),
    ("convert verify {w}/bundle --trusted {w}/missing.pub", 2, "--trusted {w}/missing.pub"),
    ("convert verify {w}/bundle --trusted {w}/dir", 2, "--trusted"),
    ("convert tflite --out {w}/o --keras {w}/missing.keras", 2, "--keras {w}/missing.keras"),
    ("convert tflite --out {w}/o --keras {w}/bin.dat", 2, "--keras {w}/bin.dat"),
    ("convert tflite --out {w}/o --model-uri nonsense", 2, "--model-uri nonsense"),
    ("convert tflite --out {w}/o --data {w}/dir", 2, "--data {w}/dir"),
    ("convert tflite --out {w}/o --model-uri models:/m@a --keras {w}/m.keras", 2, "--keras"),
    ("convert physionet {w}/missing.tar.gz -o {w}/p.parquet", 1, "does not exist"),
    ("convert physionet {w}/bin.dat -o {w}/p.parquet", 1, "bin.dat"),
    ("convert physionet {w}/dir -o {w}/p.parquet", 1, "no .psv stays"),
    ("convert physionet {w}/dir --limit 0", 2, "'--limit'"),
    ("convert mimic {w}/missing.tar.gz -o {w}/m.parquet", 1, "does not exist"),
    ("convert mimic {w}/bin.dat -o {w}/m.parquet", 1, "bin.dat"),
    ("convert mimic {w}/dir -o {w}/m.parquet", 1, "lacks CHARTEVENTS"),
    # --- vigil edge ------------------------------------------------------------------
    ("edge check-config {w}/missing.toml", 2, "missing.toml not found"),
    ("edge check-config {w}/dir", 2, "'config'"),
    ("edge check-config {w}/bin.dat", 2, "bin.dat is not valid TOML"),
    ("edge check-config {w}/empty.txt", 2, "gateway_id"),
    ("edge check-config {w}/list.json", 2, "list.json is not valid TOML"),
    ("edge run -c {w}/missing.toml --headless", 2, "missing.toml not found"),
    ("edge run -c {w}/dir --headless", 2, "'--config'"),
    ("edge pseudonymise-outcomes {w}/x.csv -c {w}/missing.toml -o {w}/o.csv", 2, "missing.toml"),
    ("edge decode {w}/missing.hl7", 1, "cannot read {w}/missing.hl7"),
    ("edge decode {w}/dir", 1, "cannot read {w}/dir"),
    ("edge decode {w}/empty.txt", 0, "no HL7 message"),
    ("edge decode {w}/bin.dat --tz Mars/Base", 2, "--tz 'Mars/Base'"),
    ("edge decode --driver intellivue {w}/missing.bin", 1, "cannot read {w}/missing.bin"),
    ("edge probe --driver intellivue --port {w}/nodev", 2, "--port {w}/nodev: no such device"),
    ("edge score {w}/missing.psv", 2, "missing.psv: no such file"),
    ("edge score {w}/empty.txt", 2, "empty.txt: empty file"),
    ("edge score {w}/dir", 2, "needs --out DIR"),
    # --- vigil sim ---------------------------------------------------------------------
    ("sim --tcp 70000 --duration 1s", 2, "'--tcp'"),
    ("sim --tcp 65535 --beds 2 --duration 1s", 2, "--tcp 65535"),
    ("sim --mllp-connect nonsense", 2, "--mllp-connect 'nonsense'"),
    ("sim --scenario nonsense", 2, "unknown scenario 'nonsense'"),
    ("sim --profile nonsense", 2, "--profile 'nonsense'"),
    ("sim --replay pn-p1 --data {w}/missing.parquet", 2, "{w}/missing.parquet not found"),
    ("sim --replay pn-p1 --data {w}/bin.dat", 2, "{w}/bin.dat"),
    ("sim --replay pn-p1 --data {w}/dir", 2, "--data {w}/dir"),
    ("sim --device {w}/missing-tty --duration 1s", 2, "{w}/missing-tty"),
    ("sim --beds 0", 2, "--beds"),
    ("sim --speed -1", 2, "--speed"),
    ("sim --fault nonsense", 2, "unknown fault 'nonsense'"),
    ("sim --start yesterday", 2, "--start 'yesterday'"),
    ("sim --fault-log {w}/dir --duration 1s", 2, "--fault-log {w}/dir"),
    ("sim --fault-log /proc/no/such --duration 1s", 2, "--fault-log /proc/no/such"),
    ("sim watch {w}/missing-tty", 2, "{w}/missing-tty"),
    ("sim watch tcp://127.0.0.1:" + CLOSED + " --duration 1", 2, "tcp://127.0.0.1:" + CLOSED),
    ("sim watch tcp://nonsense", 2, "tcp://HOST:PORT"),
    ("sim stays --data {w}/missing.parquet", 2, "{w}/missing.parquet"),
    ("sim stays --data {w}/dir", 2, "--data {w}/dir"),
    ("sim stays --data {w}/empty.txt", 2, "{w}/empty.txt"),
    ("sim stays --limit 0", 2, "'--limit'"),
    # --- vigil demo and the tree itself --------------------------------------------------
    ("demo --beds 0", 2, "'--beds'"),
    ("demo --speed 0.5", 2, "'--speed'"),
    ("demo --duration soon", 2, "'--duration'"),
    ("demo --no-such-option", 2, "--no-such-option"),
    ("hub no-such-command", 2, "'no-such-command'"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bad inputs on real files, and a few good ones (a store, a CA, keys) beside them."""
    w = tmp_path_factory.mktemp("bad-cli")
    (w / "bin.dat").write_bytes(b"\x00\x01\xff\xfe\x80 not text \x00")
    (w / "empty.txt").write_bytes(b"")
    (w / "list.json").write_text("[1, 2, 3]\n")
    (w / "dir").mkdir()
    (w / "x.csv").write_text("patient_id,onset_time\n")
    good = default_bundle_dir()
    shutil.copytree(good, w / "bundle")
    for name, sig in (("bundle-list-sig", "[1]"), ("bundle-null-sig", "null")):
        shutil.copytree(good, w / name)
        (w / name / "manifest.sig.json").write_text(sig)
    shutil.copytree(good, w / "bundle-big")
    with open(w / "bundle-big" / "model.tflite", "ab") as fh:
        fh.write(b"\0" * (MAX_MODEL_BYTES + 1))
    env = _env(w)
    for setup in (
        ["hub", "keys", "init", "--dir", str(w / "keys")],
        ["hub", "ca", "init", "--pki", str(w / "pki")],
    ):
        subprocess.run([VIGIL, *setup], env=env, check=True, capture_output=True, timeout=60)
    from cloud_hub.store import migrate, open_engine

    migrate(open_engine(f"sqlite:///{w}/hub.db"))
    return w


def _env(w: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIGIL_", "MLFLOW_")) and k != "PYTEST_CURRENT_TEST"
    }
    return env | {"VIGIL_HOME": str(w / "home"), "VIGIL_LOG_LEVEL": "WARNING"}


def _vigil(w: Path, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = subprocess.run(
        [VIGIL, *args],
        env=env or _env(w),
        cwd=w,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return r.returncode, r.stdout, r.stderr


def _id(case: tuple[str, int, str]) -> str:
    return case[0].replace("{w}/", "")[:70]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_arguments_get_one_line_naming_them(work: Path, case: tuple[str, int, str]) -> None:
    args, code, names = case
    argv = [a.replace("{w}", str(work)) for a in args.split()]
    rc, out, err = _vigil(work, argv)
    assert "Traceback" not in out + err, err
    assert "s3cret" not in out + err  # a password in a store URL is masked
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, (rc, out, err)
    if code == 1 and args.startswith("convert verify") and "--trusted" not in args:
        lines = [ln for ln in out.splitlines() if ln.startswith("FAILED")]  # documented
    assert len(lines) == 1, lines
    assert names.replace("{w}", str(work)) in lines[0], lines[0]
    assert "unexpected" not in lines[0]  # an expected error, not the bug line


def test_read_only_commands_create_no_store(work: Path) -> None:
    for args in (
        ["hub", "fleet", "--db", f"sqlite:///{work}/new/hub.db"],
        ["hub", "export", "--db", f"sqlite:///{work}/new/hub.db", "--out", f"{work}/e.parquet"],
        ["hub", "releases", "--db", f"sqlite:///{work}/new/hub.db"],
    ):
        assert _vigil(work, args)[0] == 2
    assert not (work / "new").exists()
    rc, out, _ = _vigil(work, ["hub", "fleet", "--db", f"sqlite:///{work}/hub.db"])
    assert rc == 0 and "0 gateways" in out  # an existing store reads as before


def test_every_command_has_a_bad_argument_case() -> None:
    root = typer.main.get_command(app)

    def walk(cmd: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        subs = getattr(cmd, "commands", None)
        own = [path] if subs is None or getattr(cmd, "invoke_without_command", False) else []
        return own + [p for n, s in (subs or {}).items() for p in walk(s, (*path, n))]

    covered = {tuple(a.split()[: len(p)]) for a, _, _ in CASES for p in walk(root) if p}
    missing = [" ".join(p) for p in walk(root) if p and p not in covered]
    assert not missing, f"commands without a bad-argument case: {missing}"


UNEXPECTED = textwrap.dedent(
    """
    import sys
    from vigil_cli import main
    from vigil_cli.main import app, run

    @app.command("boom")
    def boom() -> None:
        '''A command with a bug.'''
        raise KeyError("a bug")

    main._guard(app)
    sys.exit(run(["boom"]))
    """
)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(work: Path) -> None:
    env = _env(work)
    r = subprocess.run([sys.executable, "-c", UNEXPECTED], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "unexpected KeyError in `vigil boom`" in line and "VIGIL_DEBUG=1" in line
    r = subprocess.run(
        [sys.executable, "-c", UNEXPECTED],
        env=env | {"VIGIL_DEBUG": "1"},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "KeyError" in r.stderr


def test_an_env_given_value_is_named_by_its_variable(work: Path) -> None:
    env = _env(work) | {"VIGIL_HUB_DB_URL": "nonsense"}
    rc, _, err = _vigil(work, ["hub", "export", "--out", f"{work}/e.parquet"], env)
    assert rc == 2 and err.startswith("error: $VIGIL_HUB_DB_URL nonsense:"), err


def test_json_of_the_wrong_shape_in_a_ledger_is_one_line(work: Path) -> None:
    led = work / "ledger-bad" / "stable"
    led.mkdir(parents=True)
    (led / "0000000000001.json").write_text(json.dumps([1, 2]))
    rc, out, err = _vigil(work, ["hub", "releases", "--ledger", str(work / "ledger-bad")])
    assert "Traceback" not in out + err
    assert rc in (0, 2) and len(err.strip().splitlines()) <= 1, err
