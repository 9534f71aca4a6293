"""The fleet registry as the hub sees it: one line per gateway.

Built by the ingest from each gateway's retained status and its last will
(`state`, agent and model version, channel, outbox backlog) plus the time of its
last message of any kind (`last_seen`), and from the retained model release of each
channel (`channel_releases`): a gateway's `target` is the newest release on its
channel, and it is in step when the model it runs is that target. Gateway faults
come with the status too: its store failing (`storage`, writes kept in memory and
dropped) and threads its supervisor gave up (`threads_failed`, `failed_threads`),
shown in a FAULTS column and as `faults` in `--json`. `vigil hub fleet` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from cloud_hub.store.models import ChannelRelease, Gateway
from contracts.timeutil import naive_as_utc, utc_now


@dataclass(frozen=True)
class GatewayView:
    gw: str
    state: str  # online | offline | unknown (messages seen, no status yet)
    agent_version: str
    model: str | None  # "name@version" the gateway reports running
    channel: str
    target: str | None  # "name@version" of the newest release on its channel
    outbox: int  # messages waiting in the gateway's outbox
    beds: int
    model_state: str | None  # last model update state (received, active, refused...)
    status_ts: datetime | None
    last_seen: datetime
    # Gateway faults from its last status (cloud_hub/store/models.py Gateway).
    storage: str = "ok"  # ok | full | io_error | read_only | locked | unavailable | corrupt
    storage_kept: int = 0
    storage_dropped: int = 0
    thread_restarts: int = 0
    threads_failed: int = 0
    failed_threads: tuple[str, ...] = ()

    @property
    def in_step(self) -> bool:
        return self.target is not None and self.target == self.model

    @property
    def faults(self) -> list[str]:
        """What is wrong on the gateway, one short phrase each (empty: nothing)."""
        out = []
        if self.storage != "ok":
            out.append(f"storage {self.storage}")
        if self.storage_dropped:
            out.append(f"{self.storage_dropped} writes dropped")
        if self.threads_failed:
            names = ",".join(self.failed_threads) or "?"
            out.append(f"{self.threads_failed} threads failed ({names})")
        return out

    def as_json(self) -> dict:
        d = asdict(self) | {"in_step": self.in_step, "faults": self.faults}
        d["failed_threads"] = list(self.failed_threads)
        for k in ("status_ts", "last_seen"):
            d[k] = d[k].isoformat(timespec="milliseconds").replace("+00:00", "Z") if d[k] else None
        return d


def fleet(engine: Engine) -> list[GatewayView]:
    rel = ChannelRelease.__table__
    newest = (
        select(rel.c.channel, func.max(rel.c.seq).label("seq")).group_by(rel.c.channel).subquery()
    )
    current = select(rel.c.channel, rel.c.name, rel.c.version).join(
        newest, (rel.c.channel == newest.c.channel) & (rel.c.seq == newest.c.seq)
    )
    with engine.connect() as c:
        rows = c.execute(select(Gateway.__table__).order_by(Gateway.gw)).all()
        targets = {r.channel: f"{r.name}@{r.version}" for r in c.execute(current)}
    return [
        GatewayView(
            gw=r.gw,
            state=r.state,
            agent_version=r.agent_version,
            model=f"{r.model_name}@{r.model_version}" if r.model_name else None,
            channel=r.channel,
            target=targets.get(r.channel or "stable"),
            outbox=r.outbox,
            beds=len(r.beds or []),
            model_state=(
                f"{r.model_state} {r.model_state_version}".strip() if r.model_state else None
            ),
            status_ts=naive_as_utc(r.status_ts),
            last_seen=naive_as_utc(r.last_seen),
            storage=r.storage or "ok",
            storage_kept=r.storage_kept or 0,
            storage_dropped=r.storage_dropped or 0,
            thread_restarts=r.thread_restarts or 0,
            threads_failed=r.threads_failed or 0,
            failed_threads=tuple(r.failed_threads or ()),
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
    now = now or utc_now()
    head = (
        "GATEWAY",
        "STATE",
        "AGENT",
        "MODEL",
        "CHANNEL",
        "TARGET",
        "OUTBOX",
        "BEDS",
        "UPDATE",
        "LAST SEEN",
        "FAULTS",
    )
    rows = [
        (
            g.gw,
            g.state,
            g.agent_version or "-",
            g.model or "-",
            g.channel or "-",
            (g.target + (" ok" if g.in_step else " BEHIND")) if g.target else "-",
            str(g.outbox),
            str(g.beds),
            g.model_state or "-",
            _ago(g.last_seen, now),
            "; ".join(g.faults).upper() if g.faults else "-",
        )
        for g in gateways
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    lines = [
        "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
        for r in (head, *rows)
    ]
    online = sum(g.state == "online" for g in gateways)
    behind = sum(1 for g in gateways if g.target and not g.in_step)
    noun = "gateway" if len(gateways) == 1 else "gateways"
    faulty = sum(1 for g in gateways if g.faults)
    lines.append(
        f"{len(gateways)} {noun}, {online} online, {behind} not on their target"
        + (f", {faulty} with faults" if faulty else "")
    )
    return "\n".join(lines)
