"""Structured hub logs: key=value text and one JSON object per line (pure logic)."""

from __future__ import annotations

import json
import logging

from cloud_hub.hub_logging import JsonFormatter, log_event


def test_log_event_writes_fields_as_text_and_as_json(caplog):
    log = logging.getLogger("test.hub")
    with caplog.at_level(logging.INFO, logger="test.hub"):
        log_event(
            log,
            "dead_letter",
            logging.WARNING,
            topic="vigil/v1/gw/g/status",
            reason="not JSON: x",
            size=4,
        )
    rec = caplog.records[-1]
    assert rec.getMessage() == (
        'event=dead_letter topic=vigil/v1/gw/g/status reason="not JSON: x" size=4'
    )
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "WARNING" and out["event"] == "dead_letter"
    assert out["size"] == 4 and out["reason"] == "not JSON: x"
    assert out["ts"].endswith("+00:00")
