"""The hub store on REAL SQLite and REAL PostgreSQL (every test runs on both)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select

from cloud_hub.store import Accepted, Rejected, migrate, write_batch
from cloud_hub.store.db import head_revision
from cloud_hub.store.models import (
    AlarmEvent,
    Base,
    DeadLetter,
    Gateway,
    OutcomeLabel,
    RiskEvent,
    Stay,
    VitalsSummary,
)
from tests.support.hub import feedback, postgres_database, risk, status, vitals

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def count(engine, model, *where) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def acc(m, at=NOW, retained=False) -> Accepted:
    return Accepted(m, at, retained)


def test_migrations_create_every_table_and_rerun_is_a_no_op(engine):
    assert migrate(engine) == head_revision() == "0006"
    names = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= names and "alembic_version" in names
    uniques = {
        tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("vitals_summaries")
    }
    assert ("event_id",) in uniques


def test_migrated_schema_matches_the_models(engine):
    """The tables the migrations build are the ones the ORM models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []


def test_a_message_written_twice_is_stored_once(engine):
    v, r = vitals(), risk()
    first = write_batch(engine, [acc(v), acc(r), acc(v)])  # twice within one batch, too
    second = write_batch(engine, [acc(r), acc(v)])
    assert first.stored == {"vitals": 1, "risk": 1}
    assert first.duplicates["vitals"] == 1
    assert sum(second.stored.values()) == 0 and second.duplicates == {"vitals": 1, "risk": 1}
    assert count(engine, VitalsSummary) == 1 and count(engine, RiskEvent) == 1
    with engine.connect() as c:
        stay = c.execute(select(Stay.__table__)).one()
    assert (stay.stay, stay.gw, stay.bed) == ("s1", "gw1", "b1")


def test_registry_follows_status_then_last_will_and_ignores_redelivery(engine):
    online = status(gw="gwA", outbox=7)
    will = status(gw="gwA", state="offline")  # composed at connect: older than `online`
    will = will.model_copy(update={"ts": online.ts - timedelta(seconds=5)})
    write_batch(engine, [acc(online, NOW)])
    write_batch(engine, [acc(will, NOW + timedelta(seconds=30))])
    write_batch(engine, [acc(online, NOW + timedelta(seconds=60), retained=True)])  # redelivered
    write_batch(engine, [acc(vitals(gw="gwA"), NOW + timedelta(seconds=90))])
    with engine.connect() as c:
        g = c.execute(select(Gateway.__table__)).one()
    assert g.state == "offline" and g.outbox == 7  # as last reported online
    assert (g.agent_version, g.model_name, g.model_version) == ("0.1.0", "vigil-gru", "3")
    last_seen = g.last_seen if g.last_seen.tzinfo else g.last_seen.replace(tzinfo=UTC)
    assert last_seen == NOW + timedelta(seconds=90)


def test_nurse_feedback_becomes_one_label(engine):
    fb = feedback("false_alarm")
    write_batch(engine, [acc(fb)])
    write_batch(engine, [acc(fb)])
    write_batch(engine, [acc(feedback("deteriorating"))])
    assert count(engine, AlarmEvent) == 2
    with engine.connect() as c:
        kinds = sorted(c.execute(select(OutcomeLabel.kind)).scalars())
    assert kinds == ["deteriorating", "false_alarm"]


def test_dead_letters_keep_payload_reason_size_and_digest(engine):
    big = b"x" * 100_000
    write_batch(
        engine,
        [acc(vitals())],
        [
            Rejected("vigil/v1/gw/g/bed/b/vitals", big, "oversized", "too big", NOW, "g"),
            Rejected("vigil/v1/gw/g/status", b"\x00\xff", "malformed", "not JSON", NOW, "g"),
        ],
    )
    with engine.connect() as c:
        rows = c.execute(select(DeadLetter.__table__).order_by(DeadLetter.id)).all()
    assert [r.reason_kind for r in rows] == ["oversized", "malformed"]
    assert rows[0].size == 100_000 and rows[0].truncated and len(rows[0].payload) == 65536
    assert rows[0].sha256 == hashlib.sha256(big).hexdigest()
    assert rows[1].payload == b"\x00\xff" and not rows[1].truncated
    assert count(engine, VitalsSummary) == 1


def test_a_row_the_store_refuses_never_blocks_or_loses_the_batch(engine):
    # PostgreSQL refuses NUL characters in text; SQLite stores them. Either way every
    # message ends up stored or dead-lettered, and the rest of the batch is stored.
    odd = feedback("deteriorating").model_copy(update={"note": "a\x00b"})
    good = [vitals(hour=h) for h in range(5)]
    res = write_batch(engine, [acc(m) for m in good] + [acc(odd)])
    assert count(engine, VitalsSummary) == 5
    stored_alarm = count(engine, AlarmEvent)
    dead = count(engine, DeadLetter, DeadLetter.reason_kind == "store_error")
    assert stored_alarm + dead == 1
    assert (dead == 1) == (engine.dialect.name == "postgresql")
    assert res.stored["vitals"] == 5


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_workers_starting_together_on_a_fresh_store_migrate_once(dialect, tmp_path):
    import contextlib
    import threading

    from cloud_hub.store import open_engine

    ctx = (
        contextlib.nullcontext(f"sqlite:///{tmp_path}/fresh.db")
        if dialect == "sqlite"
        else postgres_database("vigil_hub_fresh")
    )
    with ctx as url:
        engines = [open_engine(url) for _ in range(3)]
        results, errors = [], []

        def run(e) -> None:
            try:
                results.append(migrate(e))
            except Exception as ex:  # collected: the assertion below names it
                errors.append(ex)

        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for e in engines:
            e.dispose()
        assert errors == [] and results == [head_revision()] * 3


def test_model_update_states_reach_the_fleet_registry(engine):
    from cloud_hub.fleet import fleet, render_table
    from contracts.messages import ModelRef, ModelState

    write_batch(engine, [acc(status(gw="gwM"))])
    refused = ModelState(
        gw="gwM",
        state="refused",
        name="vigil-gru",
        version="5",
        reason="signature: unknown key",
        active=ModelRef(name="vigil-gru", version="3"),
    )
    write_batch(engine, [acc(refused, NOW + timedelta(seconds=1))])
    write_batch(engine, [acc(refused, NOW + timedelta(seconds=2))])  # redelivered
    with engine.connect() as c:
        from cloud_hub.store.models import ModelStateEvent

        assert c.execute(select(func.count()).select_from(ModelStateEvent)).scalar_one() == 1
    (g,) = fleet(engine)
    assert g.model_state == "refused 5" and g.model == "vigil-gru@3"
    text = render_table([g], now=NOW + timedelta(minutes=3))
    # last seen: the redelivery at NOW + 2 s, 2 min 58 s before `now`
    assert "refused 5" in text and "2m ago" in text and "1 gateway, 1 online" in text
