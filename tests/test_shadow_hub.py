"""Shadow summaries in the hub store (issue 13): a real hub worker on a real Mosquitto
stores `vigil.shadow/1` in `shadow_summaries` on SQLite and PostgreSQL (migration 0006),
exactly once, and dead-letters bad ones with the reason; the gate reads them back.
The CLI's bad arguments for --gate shadow are refused in one line."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cloud_hub.cli import app as hub_app
from cloud_hub.ingest import HubWorker
from cloud_hub.rollout.gate import shadow_gate
from cloud_hub.settings import HubSettings
from cloud_hub.store.models import DeadLetter, ShadowSummaryEvent
from contracts import topics
from contracts.messages import ModelSummary, ShadowSummary, cohen_kappa
from contracts.paths import default_bundle_dir
from contracts.timeutil import utc_now
from tests.support.broker import needs_mosquitto
from tests.support.hub import Publisher
from tests.support.waiting import wait_until


def count(engine, model) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(model)).scalar_one()


def tally(version: str, steps: int, alarm_steps: int, threshold: float = 0.5) -> ModelSummary:
    hist = [0] * 10
    hist[3] = steps
    return ModelSummary(
        name="vigil-sepsis",
        version=version,
        threshold=threshold,
        steps=steps,
        scored=steps,
        histogram=hist,
        alarm_steps=alarm_steps,
        raised=1 if alarm_steps else 0,
    )


def summary(gw: str, active_alarm: int, shadow_alarm: int, steps: int = 48) -> ShadowSummary:
    now = utc_now()
    both = min(active_alarm, shadow_alarm)
    return ShadowSummary(
        gw=gw,
        channel="stable",
        trigger="periodic",
        state="running",
        period_start=now - timedelta(hours=steps),
        period_end=now,
        step_seconds=3600,
        active=tally("2", steps, active_alarm),
        shadow=tally("9", steps, shadow_alarm, 0.1),
        both=both,
        only_active=active_alarm - both,
        only_shadow=shadow_alarm - both,
        neither=steps - max(active_alarm, shadow_alarm),
    )


@needs_mosquitto
def test_shadow_summaries_are_stored_once_and_bad_ones_dead_lettered(broker, engine):
    hub = HubWorker(
        HubSettings(
            mqtt_port=broker.port,
            worker_id=f"t-{uuid.uuid4().hex[:8]}",
            batch_ms=20,
            share_group=f"g{uuid.uuid4().hex[:6]}",
        ),
        engine,
    ).start(migrate_store=False)
    assert hub.wait_ready(), "hub worker did not subscribe"
    a, b = summary("gw-a", 2, 10), summary("gw-b", 1, 4)
    data = json.loads(a.to_json())
    bad = [
        (topics.shadow("gw-a"), {**data, "event_id": str(uuid.uuid4()), "neither": 10_000}),
        (
            topics.shadow("gw-a"),
            {**data, "shadow": {**data["shadow"], "histogram": [1] * 10}},
        ),
        (topics.shadow("gw-b"), {**data, "event_id": str(uuid.uuid4())}),  # gw-a's payload
        (topics.shadow("gw-a"), {**data, "state": "dropped", "reason": ""}),
    ]
    pub = Publisher(broker.port)
    try:
        pub.send_many(
            [(topics.shadow("gw-a"), a.to_json()), (topics.shadow("gw-b"), b.to_json())]
            + [(t, json.dumps(p).encode()) for t, p in bad]
            + [(topics.shadow("gw-a"), a.to_json())]  # delivered twice: stored once
        )
        wait_until(lambda: count(engine, DeadLetter) == 4, what="dead letters")
        wait_until(lambda: count(engine, ShadowSummaryEvent) == 2, what="summaries stored")
        with engine.connect() as c:
            reasons = [r.reason for r in c.execute(select(DeadLetter.__table__)).all()]
            stored = c.execute(select(ShadowSummaryEvent.__table__)).all()
        assert "agreement counts more steps than the shadow model saw" in reasons[0]
        assert "histogram must sum to scored" in reasons[1]
        assert reasons[2] == "payload gw 'gw-a' != topic gw 'gw-b'"
        assert "a dropped shadow summary needs a reason" in reasons[3]
        assert {(r.gw, r.shadow_version, r.only_shadow) for r in stored} == {
            ("gw-a", "9", 8),
            ("gw-b", "9", 3),
        }
    finally:
        pub.close()
        hub.stop(drain_seconds=1, retire=True)

    decision = shadow_gate(engine, "stable", "vigil-sepsis", "9", budget=3.0)
    # Pooled over both gateways: 14 shadow alarm-hours in 96 patient-hours (4 days).
    assert [round(g.burden, 2) for g in decision.gateways] == [5.0, 2.0]
    assert decision.site.burden == pytest.approx(3.5)
    assert decision.reasons == [
        "shadow burden 3.5 alarm-hours/patient-day > budget 3 at gw-a",
    ]
    kappa = cohen_kappa(3, 0, 11, 82)
    assert f"kappa {kappa:.2f}" in "\n".join(decision.lines())
    assert shadow_gate(engine, "stable", "vigil-sepsis", "9", budget=4.0).passed
    refused = shadow_gate(engine, "stable", "vigil-sepsis", "9", budget=4.0, min_patient_days=5)
    assert refused.reasons == ["only 4.00 patient-days observed at stable < --min-patient-days 5"]
    nothing = shadow_gate(engine, "canary", "vigil-sepsis", "9", budget=4.0)
    assert nothing.reasons[0].startswith("no shadow evidence for vigil-sepsis 9 on channel canary")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gate", "canary", "--alarm-budget", "1"], "--gate 'canary': the only gate is 'shadow'"),
        (["--gate", "shadow"], "--gate shadow needs --alarm-budget"),
        (["--alarm-budget", "1"], "--alarm-budget belongs to --gate shadow"),
        (["--gate", "shadow", "--alarm-budget", "0"], "--alarm-budget 0: must be above 0"),
        (["--gate", "shadow", "--alarm-budget", "1", "--shadow"], "not with --staged or --shadow"),
    ],
)
def test_gate_arguments_are_refused_in_one_line(args, message, tmp_path):
    result = CliRunner().invoke(
        hub_app,
        ["rollout", "--bundle", str(default_bundle_dir()), "--channel", "stable", *args],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
