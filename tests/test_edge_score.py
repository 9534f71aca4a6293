"""`vigil edge score`: a patient file scored as the gateway would (issue 15).

Real parts only: the committed signed bundle in the real LiteRT interpreter, real
PhysioNet/CinC 2019 stays (tests/samples/physionet/, and set A itself where the test
says so: skipped without it, tests/support/data.py), the installed `vigil` run as a
user runs it, and for the key claim a real gateway fed the same stay by the simulated
monitor over a pty with a real Mosquitto.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from contracts.paths import PROJECT_ROOT
from edge_agent.score_file import CHALLENGE_HEADER, make_scorer, read_stays
from tests.support.edge import physionet_stay, write_canonical

VIGIL = str(Path(sys.executable).with_name("vigil"))
SAMPLES = PROJECT_ROOT / "tests" / "samples" / "physionet"
SEPTIC = "p015180"  # SepsisLabel from ICULOS 40: the model alarms hours before
SMALL = ("p000010.psv", "p000012.psv", "p000015.psv")
GW = "ward-score"


def vigil(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [VIGIL, "edge", "score", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


def json_hours(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def the_error(p: subprocess.CompletedProcess[str]) -> str:
    """The one error line (LiteRT/log lines on stderr aside), exit code 2."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return errors[0]


# --- the key claim: the same risks as the gateway fed the stay by the simulator --------


@pytest.mark.slow
def test_a_real_stay_scores_as_the_gateway_fed_it_by_the_simulator(broker, tmp_path):
    """Set A's p015180 through `vigil edge score` and through a real gateway (a simulated
    monitor replaying the stay over a pty, HL7 decoder, windows, LiteRT, store): the
    same hours, the same insufficient-data hours and the same risks hour for hour.

    The monitor sends what a monitor can: no HospAdmTime (PCD-01 has no field for it),
    Age as whole years (PID-7), values at display resolution, with beat-to-beat noise
    off so an hour's median is its charted value. The file scored is that same stay as
    the monitor carries it (HospAdmTime empty, Age in whole years): what differs is then
    only the path, file rows vs HL7 readings. Measured: equal up to the 5 decimals
    --json prints (the full HospAdmTime and fractional Age would move risks by up to 0.04
    on this stay, which is why the file is given as the monitor carries it)."""
    from edge_agent.config import load_config
    from edge_agent.gateway import Gateway
    from firmware_sim.monitor import Monitor, MonitorRunner
    from firmware_sim.physiology import BeatNoise, load_replay
    from firmware_sim.transports import PtyTransport

    arr = physionet_stay(SEPTIC)  # from the shared archive (skipped without it)
    table = write_canonical(tmp_path / "stay.parquet", {"pn-" + SEPTIC: arr})
    (source,) = load_replay(table, ["pn-" + SEPTIC], seed=3)
    source._noise = BeatNoise(np.random.default_rng(3), scale=0.0)  # the charted values
    transport = PtyTransport(flow_control=2.0)
    monitor = Monitor("bed-1", source, transport, speed=120 * 150, max_rate=150, seed=3)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{tmp_path / "gw.sqlite"}"\n'
        f'[[beds]]\nid = "bed-1"\nsource = {{ type = "serial", port = "{transport.address}" }}\n'
        f"[mqtt]\nport = {broker.port}\n"
    )
    gw = Gateway(load_config(cfg))
    gw.start()
    runner = MonitorRunner([monitor])
    n_steps = len(arr) - 1  # the last hour closes only when a later reading comes
    try:
        deadline = time.monotonic() + 10
        while gw.beds["bed-1"].line is None or gw.beds["bed-1"].line.state != "up":
            assert time.monotonic() < deadline, "gateway did not open the pty"
            time.sleep(0.05)
        runner.start()
        runner.join(60)
        deadline = time.monotonic() + 30
        while len(gw.store.rows("risk")) < n_steps:
            assert time.monotonic() < deadline, len(gw.store.rows("risk"))
            time.sleep(0.1)
        rows = gw.store.rows("risk")
    finally:
        runner.close()
        gw.stop()
    gateway = {}
    for r in rows:
        end = datetime.fromisoformat(r["window_end"].replace("Z", "+00:00"))
        hour = round((end - monitor.icu_admit) / timedelta(hours=1)) - 1
        gateway[hour] = (r["risk"], bool(r["insufficient"]), r["version"])

    # The file: the same stay as the monitor carries it.
    text = (SAMPLES / f"{SEPTIC}.psv").read_text().splitlines()
    head = text[0].split("|")
    age, hosp = head.index("Age"), head.index("HospAdmTime")
    lines = [text[0]]
    for ln in text[1:]:
        cells = ln.split("|")
        cells[age] = str(int(float(cells[age])))
        cells[hosp] = "NaN"
        lines.append("|".join(cells))
    path = tmp_path / f"{SEPTIC}.psv"
    path.write_text("\n".join(lines) + "\n")
    hours = {h["iculos"]: h for h in json_hours(vigil(path, "--json").stdout)}

    assert len(hours) == len(arr) and len(gateway) == n_steps
    assert set(gateway) <= set(hours)
    diffs = []
    for k, (risk, insufficient, version) in sorted(gateway.items()):
        h = hours[k]
        assert h["insufficient_data"] == insufficient, k
        assert h["model"]["version"] == version
        if risk is None:
            assert h["risk"] is None, k
            continue
        diffs.append(abs(h["risk"] - risk))
    assert diffs and max(diffs) < 1e-4, f"max |risk diff| {max(diffs):.4f}: {diffs}"


# --- one stay: table, --json, --plot, the file formats ---------------------------------


def sample_rows(name: str) -> tuple[list[str], np.ndarray]:
    text = (SAMPLES / name).read_text().splitlines()
    head = text[0].split("|")
    return head, np.array([[float(x) for x in ln.split("|")] for ln in text[1:]])


def test_json_gives_every_hour_with_the_model_version_and_the_gateway_alarm_rules():
    head, rows = sample_rows(f"{SEPTIC}.psv")
    hours = json_hours(vigil(SAMPLES / f"{SEPTIC}.psv", "--json").stdout)
    man = json.loads((PROJECT_ROOT / "models" / "default" / "manifest.json").read_text())
    assert [h["iculos"] for h in hours] == [int(x) for x in rows[:, head.index("ICULOS")]]
    above = 0
    for h, row in zip(hours, rows, strict=True):
        assert h["model"] == {"name": man["name"], "version": man["version"]}
        assert h["threshold"] == pytest.approx(man["threshold"]["value"], abs=1e-5)
        # one reading per hour: the gateway's hourly median is the charted value
        for name, value in h["vitals"].items():
            x = row[head.index(name)]
            assert (value is None and np.isnan(x)) or value == pytest.approx(x, abs=1e-3)
        assert (h["risk"] is None) == h["insufficient_data"]
        assert h["news2"]["assumed"]  # no oxygen/ACVPU in a file: said so, not hidden
        # the alarm machine as the gateway runs it: raised after 2 hours at/over threshold
        if h["risk"] is not None:
            above = above + 1 if h["risk"] >= h["threshold"] else 0
        if "raised" in h["alarm_events"]:
            assert above >= 2
    levels = [h["alarm_level"] for h in hours]
    assert "alarm" in levels or "escalated" in levels
    label = rows[:, head.index("SepsisLabel")]
    first_alarm = next(h["iculos"] for h in hours if "raised" in h["alarm_events"])
    onset = rows[int(np.argmax(label > 0)), head.index("ICULOS")] + 6
    assert first_alarm < onset


def test_the_table_shows_each_hour_with_risk_threshold_news2_alarm_and_version():
    out = vigil(SAMPLES / f"{SEPTIC}.psv").stdout.splitlines()
    head, rows = sample_rows(f"{SEPTIC}.psv")
    man = json.loads((PROJECT_ROOT / "models" / "default" / "manifest.json").read_text())
    assert out[0] == f"stay {SEPTIC}.psv: {len(rows)} hour(s), model {man['name']} {man['version']}"
    assert out[1].split() == [
        "ICULOS", "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp",
        "risk", "thresh", "NEWS2", "band", "alarm", "version",
    ]  # fmt: skip
    body = out[2:]
    assert len(body) == len(rows)
    for line, row in zip(body, rows, strict=True):
        cells = line.split()
        assert int(cells[0]) == int(row[head.index("ICULOS")])
        assert cells[13] == man["version"]  # every risk with its model version
    assert any("[raised]" in line for line in body)


def test_plot_writes_a_png_of_the_stay(tmp_path):
    png = tmp_path / "stay.png"
    vigil(SAMPLES / f"{SEPTIC}.psv", "--plot", png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_csv_with_catalogue_names_and_canonical_parquet_score_as_the_psv(tmp_path):
    psv = json_hours(vigil(SAMPLES / f"{SEPTIC}.psv", "--json").stdout)
    csv = tmp_path / "stay.csv"
    text = (SAMPLES / f"{SEPTIC}.psv").read_text()
    csv.write_text(text.replace("|", ",").replace("NaN", ""))  # empty cells: missing
    from_csv = json_hours(vigil(csv, "--json").stdout)
    head, rows = sample_rows(f"{SEPTIC}.psv")
    arr = np.genfromtxt(SAMPLES / f"{SEPTIC}.psv", delimiter="|", names=True)
    table = write_canonical(tmp_path / "stays.parquet", {"pn-a": arr, "pn-b": arr[:10]})
    from_parquet = json_hours(vigil(table, "--json").stdout)
    assert [h["stay"] for h in from_parquet] == ["pn-a"] * len(rows) + ["pn-b"] * 10
    for other in (from_csv, from_parquet[: len(rows)]):
        assert [(h["iculos"], h["risk"], h["alarm_level"]) for h in other] == [
            (h["iculos"], h["risk"], h["alarm_level"]) for h in psv
        ]


def test_config_alarm_settings_and_bundle_are_the_gateway_s(tmp_path):
    """--config: the gateway's own alarm settings (min_steps 1 raises an hour earlier);
    --bundle: a folder that does not verify is refused with the reason."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'gateway_id = "gw-a"\n[[beds]]\nid = "b1"\n'
        'source = { type = "tcp", host = "127.0.0.1", port = 1 }\n'
        "[alarms]\nmin_steps = 1\n"
    )
    default = json_hours(vigil(SAMPLES / f"{SEPTIC}.psv", "--json").stdout)
    eager = json_hours(vigil(SAMPLES / f"{SEPTIC}.psv", "--json", "--config", cfg).stdout)

    def first(hours: list[dict]) -> int:
        return next(h["iculos"] for h in hours if "raised" in h["alarm_events"])

    assert first(eager) == first(default) - 1
    assert [h["risk"] for h in eager] == [h["risk"] for h in default]
    bad = tmp_path / "bundle"
    shutil.copytree(PROJECT_ROOT / "models" / "default", bad)
    (bad / "model.tflite").write_bytes((bad / "model.tflite").read_bytes()[:-1] + b"\0")
    line = the_error(vigil(SAMPLES / f"{SEPTIC}.psv", "--bundle", bad, check=False))
    assert "no verified model bundle" in line and "sha256" in line.lower()


# --- many stays: challenge-format files ---------------------------------------------------


def challenge(path: Path) -> np.ndarray:
    """A prediction file read as the challenge's scorer reads it (header, then p|label)."""
    lines = path.read_text().splitlines()
    assert lines[0] == CHALLENGE_HEADER
    return np.loadtxt(path, delimiter="|", skiprows=1, ndmin=2)


def test_a_folder_gives_one_challenge_file_per_stay_and_skips_a_bad_one(tmp_path):
    stays = tmp_path / "stays"
    stays.mkdir()
    for name in SMALL:
        shutil.copy(SAMPLES / name, stays / name)
    shutil.copy(SAMPLES / f"{SEPTIC}.psv", stays / f"{SEPTIC}.psv")
    (stays / "p999999.psv").write_text("")  # empty: reported, skipped, counted
    out = tmp_path / "out"
    p = vigil(stays, "--out", out)
    assert "skipped 1" in p.stdout and "scored 4 stay(s)" in p.stdout
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("skipped:")] == [
        f"skipped: {stays / 'p999999.psv'}: empty file (no header, no rows)"
    ]
    assert sorted(f.name for f in out.iterdir()) == sorted([*SMALL, f"{SEPTIC}.psv"])
    scorer = make_scorer([PROJECT_ROOT / "models" / "default"], [PROJECT_ROOT / "models" / "trusted_keys"])  # fmt: skip
    for f in out.iterdir():
        got = challenge(f)
        head, rows = sample_rows(f.name)
        assert got.shape == (len(rows), 2)  # one row per input row
        hours = json_hours(vigil(SAMPLES / f.name, "--json").stdout)
        for (prob, label), h in zip(got, hours, strict=True):
            if h["risk"] is None:  # not scored (insufficient data): 0 and 0
                assert (prob, label) == (0, 0)
            else:
                assert prob == pytest.approx(h["risk"], abs=1e-5)
                assert label == int(h["risk"] >= scorer.params.threshold)
        # what the official scorer warns about: a positive no likelier than a negative
        pos, neg = got[got[:, 1] == 1, 0], got[got[:, 1] == 0, 0]
        assert not (pos.size and neg.size) or pos.min() > neg.max()
    assert any(challenge(out / n)[:, 0].min() == 0 for n in SMALL)  # early hours: 0|0


def test_one_file_with_out_and_an_out_folder_inside_the_stays(tmp_path):
    stays = tmp_path / "stays"
    stays.mkdir()
    shutil.copy(SAMPLES / SMALL[0], stays / SMALL[0])
    vigil(stays / SMALL[0], "--out", tmp_path / "one")
    assert [f.name for f in (tmp_path / "one").iterdir()] == [SMALL[0]]
    # the predictions written into the stays' own folder are not read back as stays
    p = vigil(stays, "--out", stays / "preds")
    assert "scored 1 stay(s)" in p.stdout and "skipped 0" in p.stdout
    p = vigil(stays, "--out", stays / "preds")
    assert "scored 1 stay(s)" in p.stdout and "skipped 0" in p.stdout
    assert (stays / "preds" / SMALL[0]).read_text() == (tmp_path / "one" / SMALL[0]).read_text()


def test_a_tar_gz_gives_the_same_files_and_an_unreadable_member_is_reported(tmp_path):
    stays = tmp_path / "stays"
    stays.mkdir()
    for name in SMALL:
        shutil.copy(SAMPLES / name, stays / name)
    archive = tmp_path / "stays.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in SMALL:
            tf.add(stays / name, arcname=f"site/{name}")
    vigil(stays, "--out", tmp_path / "from-folder")
    p = vigil(archive, "--out", tmp_path / "from-tar")
    assert "scored 3 stay(s)" in p.stdout and "skipped 0" in p.stdout
    for name in SMALL:
        assert (tmp_path / "from-tar" / name).read_text() == (
            tmp_path / "from-folder" / name
        ).read_text()
    # cut inside the last member: the first two are scored, the rest reported
    plain = tmp_path / "stays.tar"
    with tarfile.open(archive) as src, tarfile.open(plain, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
    with tarfile.open(plain) as tf:
        last = tf.getmembers()[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(plain.read_bytes()[: last.offset_data + 10])
    p = vigil(cut, "--out", tmp_path / "from-cut")
    assert "scored 2 stay(s)" in p.stdout and "skipped 1" in p.stdout
    assert "unreadable tar member" in p.stderr
    assert sorted(f.name for f in (tmp_path / "from-cut").iterdir()) == list(SMALL[:2])


# --- errors: one line naming what was wrong ----------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def psv_with(tmp_path: Path, change) -> Path:
    head, rows = sample_rows(f"{SEPTIC}.psv")
    rows = change(head, rows.copy())
    lines = ["|".join(head)] + ["|".join(f"{x:g}" if np.isfinite(x) else "NaN" for x in r) for r in rows]  # fmt: skip
    return write(tmp_path / "stay.psv", "\n".join(lines) + "\n")


def fahrenheit(head, rows):
    t = head.index("Temp")
    rows[:, t] = rows[:, t] * 9 / 5 + 32
    return rows


def fraction(head, rows):
    s = head.index("O2Sat")
    rows[:, s] = rows[:, s] / 100
    return rows


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.psv", "missing.psv: no such file"),
        (lambda d: write(d / "empty.psv", ""), "empty.psv: empty file (no header, no rows)"),
        (lambda d: write(d / "head.psv", "HR|O2Sat\n"), "head.psv: no rows (only a header)"),
        (
            lambda d: write(d / "cols.psv", "HR|O2Sat|Temp|SBP|DBP|ICULOS\n80|97|37|120|70|1\n"),
            "cols.psv: missing required column(s) MAP, Resp;",
        ),
        (
            lambda d: write(d / "comma.psv", "HR,O2Sat,Temp,SBP,MAP,DBP,Resp,ICULOS\n1,2,3,4,5,6,7,1\n"),
            "(is it comma-separated?)",
        ),
        (
            lambda d: write(d / "word.csv", "HR,O2Sat,Temp,SBP,MAP,DBP,Resp,ICULOS\n80,97,hot,1,2,3,4,1\n"),
            "word.csv: row 2 column Temp: 'hot' is not a number",
        ),
        (lambda d: psv_with(d, fahrenheit), "wrong unit: Temp values (median 9"),
        (lambda d: psv_with(d, fahrenheit), "look like °F; the catalogue unit is Cel"),
        (lambda d: psv_with(d, fraction), "look like fraction; the catalogue unit is %"),
        (lambda d: d, "a folder or archive of stays needs --out DIR"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_what_was_wrong(tmp_path, make, expected):
    line = the_error(vigil(make(tmp_path), check=False))
    assert expected in line, line


def test_parquet_without_pyarrow_says_to_install_it(tmp_path):
    arr = np.genfromtxt(SAMPLES / f"{SEPTIC}.psv", delimiter="|", names=True)
    table = write_canonical(tmp_path / "stays.parquet", {"pn-a": arr})
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from vigil_cli.main import main; sys.argv = ['vigil'] + sys.argv[1:]; main()"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "edge", "score", str(table)], capture_output=True, text=True
    )
    assert "needs pyarrow" in the_error(p) and "pip install pyarrow" in p.stderr


def test_plot_without_matplotlib_says_to_install_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from vigil_cli.main import main; sys.argv = ['vigil'] + sys.argv[1:]; main()"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "edge", "score", str(SAMPLES / f"{SEPTIC}.psv"), "--plot",
         str(tmp_path / "x.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "--plot needs matplotlib" in the_error(p) and "vigil[plot]" in p.stderr
    assert not (tmp_path / "x.png").exists()


def test_read_stays_keeps_file_order_and_labels():
    (stay,) = read_stays(SAMPLES / f"{SEPTIC}.psv")
    head, rows = sample_rows(f"{SEPTIC}.psv")
    np.testing.assert_array_equal(stay.iculos, rows[:, head.index("ICULOS")])
    np.testing.assert_array_equal(stay.label, rows[:, head.index("SepsisLabel")])
