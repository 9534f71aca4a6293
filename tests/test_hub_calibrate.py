"""`vigil hub calibrate` (issue 13): a site whose patients differ gets its own threshold
from its own unlabelled history, published as a signed release its gateway activates.

The site: set A stays of older patients (age >= 60) with HR + 12 /min and Resp + 4 /min
(sicker, or a ward that charts differently), stored as a real gateway's vitals summaries
(one per closed hour) in a real SQLite hub store, for two gateways on channel
`icu-north`; a third gateway on another channel holds calm stays that must not count.
The committed model at its shipped threshold alarms over the budget there; after
calibration the gateway's own path (`vigil edge score`'s Scorer with the activated
bundle, its alarm machine) measures a burden within the budget. Real LiteRT, real
MLflow (a SQLite store under tmp), a real Mosquitto and a real `ModelUpdater`.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from contracts.bundle import load_trusted_keys
from contracts.messages import Status, Vitals
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from contracts.vitals import BY_NAME, VITAL_NAMES
from edge_agent.model_update import ModelUpdater
from edge_agent.score_file import STATIC, iter_items, make_scorer, stays_of
from tests.support.broker import Mosquitto, needs_mosquitto
from tests.support.data import needs_physionet, physionet
from tests.support.hub import T0
from tests.support.rollout import GatewayClient
from tests.support.waiting import wait_until

pytestmark = [needs_physionet, needs_mosquitto]

VIGIL = str(Path(sys.executable).with_name("vigil"))
SITE = "icu-north"
BUDGET = 1.0
SHIFT = {"HR": 12.0, "Resp": 4.0}


def shifted(stay):
    """The stay as the site sees it: HR and Resp raised (clipped to the plausible range)."""
    v = stay.vitals.copy()
    for name, d in SHIFT.items():
        j = VITAL_NAMES.index(name)
        v[:, j] = np.minimum(v[:, j] + d, BY_NAME[name].high)
    return replace(stay, vitals=v, label=None)


@pytest.fixture(scope="module")
def site_stays():
    stays = [s for it in itertools.islice(iter_items(physionet()), 700) for s in stays_of(it)]
    old = [s for s in stays if np.nanmax(s.static[:, STATIC.index("Age")]) >= 60]
    return [shifted(s) for s in old[:220]], stays[-40:]


def summaries(gw: str, stay) -> list[Vitals]:
    """One `vigil.vitals/1` per closed hour, as the gateway sends it (plausible values)."""
    out = []
    for i, t in enumerate(stay.iculos):
        values = {}
        for j, n in enumerate(VITAL_NAMES):
            x = stay.vitals[i, j]
            ok = np.isfinite(x) and BY_NAME[n].low <= x <= BY_NAME[n].high
            values[n] = float(x) if ok else None
        static = {s: float(stay.static[i, k]) for k, s in enumerate(STATIC)}
        out.append(
            Vitals(
                gw=gw,
                bed="b1",
                stay=stay.name.removesuffix(".psv"),
                step_start=T0 + timedelta(hours=float(t)),
                step_seconds=3600,
                iculos_hours=float(t),
                values=values,
                readings=1,
                static={k: (v if np.isfinite(v) else None) for k, v in static.items()},
            )
        )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, site_stays):
    from cloud_hub.store import Accepted, migrate, open_engine, write_batch
    from contracts.bundle import generate_key

    root = tmp_path_factory.mktemp("calibrate")
    key, pub, _ = generate_key(root / "keys")
    url = f"sqlite:///{root / 'hub.db'}"
    engine = open_engine(url)
    migrate(engine)
    site, calm = site_stays
    msgs: list = [
        Status(gw=gw, state="online", agent_version="t", channel=ch)
        for gw, ch in (("gw-a", SITE), ("gw-b", SITE), ("gw-c", "stable"), ("gw-d", "icu-empty"))
    ]
    for i, s in enumerate(site):
        msgs += summaries("gw-a" if i % 2 else "gw-b", s)
    for s in calm:
        msgs += summaries("gw-c", s)
    for k in range(0, len(msgs), 2000):
        write_batch(engine, [Accepted(m, T0) for m in msgs[k : k + 2000]])
    engine.dispose()
    with Mosquitto(root / "broker") as broker:
        yield {"root": root, "db": url, "key": key, "pub": pub, "broker": broker, "site": site}


def vigil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=300)


def burden(bundle: Path, trusted: list[Path], stays) -> float:
    """Alarm-hours per patient-day the gateway's own path raises on `stays`."""
    scorer = make_scorer([bundle], trusted)
    alarm = hours = 0
    for s in stays:
        scored = scorer.score(s)
        alarm += sum(h.alarm_level in ("alarm", "escalated") for h in scored.hours)
        hours += len(scored.hours)
    return alarm / (hours / 24)


def test_calibrate_moves_the_site_threshold_to_its_budget_and_the_gateway_activates_it(world):
    import mlflow

    root, site = world["root"], world["site"]
    shipped = burden(default_bundle_dir(), [default_trusted_keys_dir()], site)
    assert shipped > BUDGET  # the shipped threshold breaks this site's budget

    trusted = load_trusted_keys([default_trusted_keys_dir(), world["pub"]])
    updater = ModelUpdater(root / "gw-a", trusted, gw="gw-a", channel=SITE)
    updater.boot()
    base_version = updater.current().manifest.version
    gw = GatewayClient(updater, "127.0.0.1", world["broker"].port).start()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    try:
        r = vigil(
            "hub", "calibrate", "--site", SITE, "--alarm-budget", str(BUDGET),
            "--db", world["db"], "--bundle", str(default_bundle_dir()),
            "--key", str(world["key"]), "--port", str(world["broker"].port),
            "--tracking-uri", uri,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        print(r.stdout)  # the site's figures, shown with `pytest -rP`
        assert f"site {SITE}: {len(site)} stays" in r.stdout
        assert f"published vigil-sepsis {base_version}-cal-{SITE}-" in r.stdout
        wait_until(
            lambda: updater.current().manifest.version != base_version, 30, "the calibrated model"
        )
    finally:
        gw.stop()

    active = updater.current()
    m = active.manifest
    default = json.loads((default_bundle_dir() / "manifest.json").read_text())
    assert m.sha256 == default["sha256"]  # same model, only the operating point moved
    assert m.threshold.value > default["threshold"]["value"]
    assert m.alarm_budget == BUDGET and m.operating_curve is not None
    assert not m.operating_curve.labelled and m.operating_curve.stays == len(site)
    cal = m.calibration
    assert cal.site == SITE and cal.gateways == ["gw-a", "gw-b"] and cal.stays == len(site)
    assert cal.base_threshold == default["threshold"]["value"]
    # What the gateway now raises at this site, measured on its own path: within budget,
    # and what the manifest promised.
    measured = burden(active.folder, [world["pub"]], site)
    assert measured <= BUDGET
    assert measured == pytest.approx(cal.expected_alarm_hours_per_patient_day, rel=0.10)

    run = mlflow.MlflowClient(tracking_uri=uri).get_run(cal.mlflow_run_id)
    assert run.data.metrics["stays"] == len(site)
    assert run.data.metrics["expected_alarm_hours_per_patient_day"] <= BUDGET
    assert run.data.metrics["base_alarm_hours_per_patient_day"] == pytest.approx(shipped, rel=0.1)
    assert run.data.tags["release"].startswith(f"{SITE}/")
    files = {f.path for f in mlflow.MlflowClient(uri).list_artifacts(cal.mlflow_run_id)}
    assert {"score_distribution.json", "operating_curve.json", "plots"} <= files


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--site", "icu-south"], "--site icu-south: no gateway follows channel 'icu-south'"),
        (["--site", "icu-empty"], "--site icu-empty: its gateways (gw-d) sent no vital-sign"),
        (["--site", SITE, "--alarm-budget", "0"], "--alarm-budget must be > 0"),
        (["--site", SITE, "--alarm-budget", "-1"], "--alarm-budget must be > 0"),
    ],
)
def test_bad_calibrations_are_one_line_errors(world, args, line):
    full = ["hub", "calibrate", "--alarm-budget", "1", *args]
    full += ["--db", world["db"], "--bundle", str(default_bundle_dir()), "--key", str(world["key"])]
    full += ["--tracking-uri", f"sqlite:///{world['root'] / 'mlflow-bad.db'}"]
    r = vigil(*full)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert line in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in r.stderr
