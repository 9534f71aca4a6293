"""Shadow candidates on the real gateway without a broker (issue 13): what is refused and
why, what survives a restart, and a failing shadow model dropped while the active one
goes on. Releases are signed with a test key (tests/support/rollout.py); the gateway's
outbox holds what it would send the hub."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contracts import topics
from contracts.bundle import MANIFEST
from contracts.messages import ShadowSummary, parse_message
from contracts.paths import default_trusted_keys_dir
from edge_agent.gateway import Gateway
from edge_agent.model_hook import attach_updater
from edge_agent.shadow import attach_shadow
from tests.support.edge import edge_settings
from tests.support.rollout import make_key, release
from tests.support.storage import septic_frames
from tests.support.waiting import wait_until

GW = "gw-shadow-local"


def shadow_stamp(m: dict) -> None:
    m["release"]["mode"] = "shadow"


def boot(tmp_path: Path, pub: Path):
    s = edge_settings(
        tmp_path,
        gateway_id=GW,
        beds=("bed-1", "bed-2"),
        trusted_keys=[default_trusted_keys_dir(), pub],
    )
    gw = Gateway(s)
    updater = attach_updater(gw)
    return gw, updater, attach_shadow(gw, updater)


def sent_summaries(gw: Gateway) -> list[ShadowSummary]:
    """The shadow summaries waiting in the gateway's outbox, oldest first."""
    return [
        parse_message(r["payload"])
        for r in gw.store.rows("outbox")
        if r["topic"] == topics.shadow(GW)
    ]


@pytest.fixture
def keyed(tmp_path):
    private, pub = make_key(tmp_path / "keys")
    return private, pub


def test_shadow_releases_are_checked_like_active_ones(tmp_path, keyed):
    private, pub = keyed
    gw, updater, runner = boot(tmp_path, pub)
    try:
        active = gw.model.version
        # The active path never activates a shadow release, even sent on its topic.
        assert updater.handle_release(release(private, seq=10, edit=shadow_stamp)) is None
        assert gw.model.version == active
        # Removing the claim after signing breaks the signature: refused as active too.
        stripped = release(private, seq=11, version="8", edit=shadow_stamp)
        del stripped.manifest["release"]["mode"]
        state = updater.handle_release(stripped)
        assert state.state == "refused" and state.reason.startswith("bad_signature")
        assert gw.model.version == active

        ok = runner.handle_release(release(private, seq=20, version="9", edit=shadow_stamp))
        assert ok is not None and runner.loaded.manifest.version == "9"
        assert gw.model.version == active  # the nurse's model is untouched
        frames = septic_frames(150)
        for i in range(150):
            for bed, fs in frames.items():
                gw.process_bytes(bed, fs[i])
        assert runner.drain(10) and runner.counters["steps"] > 0

        cases = {
            "replayed": release(private, seq=15, version="10", edit=shadow_stamp),
            "incompatible": release(
                private,
                seq=30,
                version="11",
                edit=lambda m: (shadow_stamp(m), m["preprocessing"]["window"].update(steps=6)),
            ),
            "wrong_size": release(
                private, seq=31, version="12", edit=shadow_stamp, model=b"x" * 2000, fix_hash=False
            ),
            "unknown_key": release(
                make_key(tmp_path / "other")[0], seq=32, version="13", edit=shadow_stamp
            ),
        }
        for reason, rel in cases.items():
            assert runner.handle_release(rel) is None
            last = sent_summaries(gw)[-1]
            assert (last.state, last.candidate.version) == ("refused", rel.manifest["version"])
            assert last.reason.startswith(reason), (reason, last.reason)
        assert runner.loaded.manifest.version == "9" and gw.model.version == active
        assert runner.counters["refused"] == len(cases)
        # The refusals carried no tallies: the running candidate's period is its own.
        assert all(m.shadow is None and m.active is None for m in sent_summaries(gw))
        running = runner.report("on_demand")
        assert running.shadow.version == "9" and running.state == "running"
        assert running.shadow.steps == runner.counters["steps"] == len(gw.store.rows("steps"))
        events = [e.text for e in gw.state.snapshot().events if e.kind == "model"]
        assert any("shadow model vigil-sepsis 13 refused: unknown_key" in t for t in events)
    finally:
        gw._stop.set()  # the gateway's threads end with it
        gw.store.close()

    # A restart runs the kept candidate again, verified from disk.
    gw, updater, runner = boot(tmp_path, pub)
    try:
        assert runner.loaded is not None and runner.loaded.manifest.version == "9"
        assert runner.loaded.source == "shadow"
    finally:
        gw._stop.set()  # the gateway's threads end with it
        gw.store.close()

    # A candidate tampered with on disk is dropped at boot, the active model is not.
    manifest = updater.store.pointer("shadow") / MANIFEST
    manifest.write_text(manifest.read_text().replace('"9"', '"99"'))
    gw, updater, runner = boot(tmp_path, pub)
    try:
        assert runner.loaded is None and updater.store.pointer("shadow") is None
        assert gw.model is not None
        assert any(
            "shadow bundle dropped at boot: bad_signature" in e.text
            for e in gw.state.snapshot().events
        )
    finally:
        gw._stop.set()  # the gateway's threads end with it
        gw.store.close()


def test_a_failing_shadow_model_is_dropped_and_reported_while_the_active_goes_on(tmp_path, keyed):
    private, pub = keyed
    gw, updater, runner = boot(tmp_path, pub)
    frames = septic_frames(400)
    try:
        runner.handle_release(release(private, seq=20, version="9", edit=shadow_stamp))
        loaded = runner.loaded
        for i in range(200):
            for bed, fs in frames.items():
                gw.process_bytes(bed, fs[i])
        assert runner.drain(10) and runner.counters["steps"] > 0

        def broken(window: object, static: object) -> float:
            raise RuntimeError("tensor arena exhausted")

        loaded.model.score = broken  # what a LiteRT failure at invoke looks like
        before = len(gw.store.rows("risk"))
        for i in range(200, 400):
            for bed, fs in frames.items():
                gw.process_bytes(bed, fs[i])
        assert runner.drain(10)
        assert runner.loaded is None and updater.store.pointer("shadow") is None
        assert len(gw.store.rows("risk")) > before  # the active model scored on
        dropped = [m for m in sent_summaries(gw) if m.state == "dropped"]
        assert len(dropped) == 1
        msg = dropped[0]
        assert msg.reason == "scoring failed: RuntimeError: tensor arena exhausted"
        assert msg.candidate.version == "9" and msg.shadow is not None
        assert msg.shadow.steps == msg.active.steps > 0  # what it saw before it failed
        assert runner.counters["dropped"] == 1
    finally:
        gw._stop.set()  # the gateway's threads end with it
        gw.store.close()


def test_summaries_go_out_every_report_period_while_a_shadow_model_runs(tmp_path, keyed):
    from edge_agent.config import ShadowConfig

    private, pub = keyed
    s = edge_settings(
        tmp_path,
        gateway_id=GW,
        beds=("bed-1", "bed-2"),
        trusted_keys=[default_trusted_keys_dir(), pub],
        shadow=ShadowConfig(report_minutes=0.01),  # every 0.6 s
    )
    gw = Gateway(s)
    runner = attach_shadow(gw, attach_updater(gw))
    frames = septic_frames(300)
    try:
        time.sleep(1.5)  # periods pass: without a shadow model nothing is sent
        assert sent_summaries(gw) == []
        runner.handle_release(release(private, seq=20, version="9", edit=shadow_stamp))
        for i in range(300):
            for bed, fs in frames.items():
                gw.process_bytes(bed, fs[i])
        assert runner.drain(10)
        assert wait_until(
            lambda: sum(m.shadow.steps for m in sent_summaries(gw)) == runner.counters["steps"],
            what="every scored step reported",
        )
        sent = sent_summaries(gw)
        assert {m.trigger for m in sent} == {"periodic"} and all(m.state == "running" for m in sent)
        assert runner.counters["steps"] == len(gw.store.rows("steps"))
        assert all(a.period_end <= b.period_start for a, b in zip(sent, sent[1:], strict=False))
        assert gw.state.snapshot().counters["shadow_reports"] >= len(sent)
    finally:
        gw._stop.set()
        gw.store.close()


def test_a_promoted_candidate_stops_running_in_shadow(tmp_path, keyed):
    private, pub = keyed
    gw, updater, runner = boot(tmp_path, pub)
    frames = septic_frames(200)
    try:
        runner.handle_release(release(private, seq=20, version="9", edit=shadow_stamp))
        assert updater.handle_release(release(private, seq=30, version="9")).state == "active"
        assert gw.model.version == "9" and runner.loaded is not None
        for i in range(200):
            for bed, fs in frames.items():
                gw.process_bytes(bed, fs[i])
        assert runner.drain(10)
        assert runner.loaded is None and updater.store.pointer("shadow") is None
        (last,) = sent_summaries(gw)
        assert (last.state, last.reason) == (
            "dropped",
            "promoted: vigil-sepsis 9 is now the active model",
        )
        assert updater.current().manifest.version == "9"  # the active bundle stays
    finally:
        gw._stop.set()  # the gateway's threads end with it
        gw.store.close()
