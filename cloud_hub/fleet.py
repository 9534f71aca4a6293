"""The fleet registry as the hub sees it: one line per gateway.

Built by the ingest from each gateway's retained status and its last will
(`state`, agent and model version, channel, outbox backlog) plus the time of its
last message of any kind (`last_seen`). `vigil hub fleet` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from cloud_hub.store.models import Gateway
from cloud_hub.store.writer import utc


@dataclass(frozen=True)
class GatewayView:
    gw: str
    state: str  # online | offline | unknown (messages seen, no status yet)
    agent_version: str
    model: str | None  # "name@version" the gateway reports running
    channel: str
    outbox: int  # messages waiting in the gateway's outbox
    beds: int
    model_state: str | None  # last model update state (received, active, refused...)
    status_ts: datetime | None
    last_seen: datetime

    def as_json(self) -> dict:
        d = asdict(self)
        for k in ("status_ts", "last_seen"):
            d[k] = d[k].isoformat(timespec="milliseconds").replace("+00:00", "Z") if d[k] else None
        return d


def fleet(engine: Engine) -> list[GatewayView]:
    with engine.connect() as c:
        rows = c.execute(select(Gateway.__table__).order_by(Gateway.gw)).all()
    return [
        GatewayView(
            gw=r.gw,
            state=r.state,
            agent_version=r.agent_version,
            model=f"{r.model_name}@{r.model_version}" if r.model_name else None,
            channel=r.channel,
            outbox=r.outbox,
            beds=len(r.beds or []),
            model_state=(
                f"{r.model_state} {r.model_state_version}".strip() if r.model_state else None
            ),
            status_ts=utc(r.status_ts),
            last_seen=utc(r.last_seen),
        )
        for r in rows
    ]


def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "-"
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def render_table(gateways: list[GatewayView], now: datetime | None = None) -> str:
    """A plain-text table (fixed columns) for terminals and logs."""
    now = now or datetime.now(UTC)
    head = (
        "GATEWAY",
        "STATE",
        "AGENT",
        "MODEL",
        "CHANNEL",
        "OUTBOX",
        "BEDS",
        "UPDATE",
        "LAST SEEN",
    )
    rows = [
        (
            g.gw,
            g.state,
            g.agent_version or "-",
            g.model or "-",
            g.channel or "-",
            str(g.outbox),
            str(g.beds),
            g.model_state or "-",
            _ago(g.last_seen, now),
        )
        for g in gateways
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    lines = [
        "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
        for r in (head, *rows)
    ]
    online = sum(g.state == "online" for g in gateways)
    lines.append(f"{len(gateways)} gateways, {online} online")
    return "\n".join(lines)
