"""Structured logs for the hub: one event per line, `event=... key=value` or JSON.

`log_event(log, "dead_letter", topic=..., reason=...)` writes the fields both in
the message (readable with plain logging) and as `record.fields`, which the JSON
formatter (`vigil hub serve --log-format json`) emits as keys.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from contracts.timeutil import iso_ms_offset


def _fmt(v: Any) -> str:
    s = str(v)
    return json.dumps(s) if (" " in s or "=" in s or not s) else s


def log_event(log: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not log.isEnabledFor(level):
        return
    text = " ".join([f"event={event}", *(f"{k}={_fmt(v)}" for k, v in fields.items())])
    log.log(level, text, extra={"fields": {"event": event, **fields}})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_ms_offset(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(
                {
                    k: v if isinstance(v, int | float | bool) or v is None else str(v)
                    for k, v in fields.items()
                }
            )
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def use_json_logs(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
