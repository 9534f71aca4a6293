"""`ingest.classify`: every payload on every topic is either accepted as a contract
message matching its topic, or rejected with a reason kind and a reason (pure logic,
property-based: the ingest must never raise on untrusted input)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_hub.classify import classify
from cloud_hub.store import Accepted, Rejected
from contracts import topics
from tests.support.hub import feedback, risk, status, topic_of, vitals

NOW = datetime(2026, 3, 1, tzinfo=UTC)
KINDS = {"malformed", "oversized", "schema", "stale_or_future", "topic_mismatch", "unknown_topic"}
TOPICS = st.one_of(
    st.sampled_from(
        [
            topics.vitals("gw1", "b1"),
            topics.risk("gw1", "b1"),
            topics.alarm("gw1", "b1"),
            topics.status("gw1"),
            topics.model_state("gw1"),
            topics.cmd("gw1"),
            "vigil/v1/models/stable",
            "other/topic",
        ]
    ),
    st.text(max_size=80),
)
GOOD = [vitals(), risk(), feedback("false_alarm"), status()]


def json_like() -> st.SearchStrategy[bytes]:
    """Mutations of valid payloads: the inputs that get furthest into validation."""
    good = st.sampled_from([m.to_json() for m in GOOD])
    return st.one_of(
        st.binary(max_size=400),
        good,
        st.tuples(good, st.integers(0, 300), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
        ),
    )


@settings(max_examples=400, deadline=None)
@given(topic=TOPICS, payload=json_like())
def test_classify_never_raises_and_always_says_why(topic, payload):
    out = classify(topic, payload, NOW)
    if isinstance(out, Accepted):
        where = topics.parse(topic)
        assert where is not None and out.message.gw == where["gw"]
        assert getattr(out.message, "bed", None) == where["bed"]
    else:
        assert isinstance(out, Rejected) and out.reason_kind in KINDS and out.reason
        assert out.payload == payload


def test_each_good_message_is_accepted_on_its_own_topic_only():
    for m in GOOD:
        assert isinstance(classify(topic_of(m), m.to_json(), NOW), Accepted)
        others = [topic_of(o) for o in GOOD if type(o) is not type(m)]
        for t in others:
            r = classify(t, m.to_json(), NOW)
            assert isinstance(r, Rejected) and r.reason_kind == "topic_mismatch"


def test_an_invalid_utf8_topic_and_the_size_limit_are_reasons_not_crashes():
    assert classify(None, b"{}", NOW).reason_kind == "unknown_topic"
    big = vitals().to_json() + b" " * 2000
    r = classify(topics.vitals("gw1", "b1"), big, NOW, max_bytes=1024)
    assert r.reason_kind == "oversized" and "limit 1024" in r.reason
