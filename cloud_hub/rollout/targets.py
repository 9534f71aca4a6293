"""The fleet against its releases: each gateway's channel, target and active model.

A gateway's target is the release currently published on its channel (from the
ledger); it is in step when the model it reports running is that target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ledger import Ledger, LedgerEntry, StoreLedger
    from .watch import FleetWatch


@dataclass(frozen=True)
class TargetView:
    gw: str
    state: str
    channel: str
    target: str | None  # name@version currently published on the gateway's channel
    active: str | None  # what the gateway reports running
    update: str | None  # last model state (and reason when refused)

    @property
    def in_step(self) -> bool:
        return self.target is not None and self.target == self.active


def fleet_targets(watch: FleetWatch, ledger: Ledger | StoreLedger) -> list[TargetView]:
    out = []
    current: dict[str, LedgerEntry | None] = {}
    for gw, seen in sorted(watch.snapshot().items()):
        ch = seen.channel or "stable"
        if ch not in current:
            current[ch] = ledger.current(ch)
        cur = current[ch]
        last = seen.states[-1][1] if seen.states else None
        update = None
        if last is not None:
            update = f"{last.state} {last.version}" + (f" ({last.reason})" if last.reason else "")
        out.append(
            TargetView(
                gw=gw,
                state=seen.status.state if seen.status else "unknown",
                channel=ch,
                target=f"{cur.name}@{cur.version}" if cur else None,
                active=seen.active,
                update=update,
            )
        )
    return out


def render_targets(rows: list[TargetView]) -> str:
    head = ("GATEWAY", "STATE", "CHANNEL", "TARGET", "ACTIVE", "", "LAST UPDATE")
    body = [
        (
            r.gw,
            r.state,
            r.channel,
            r.target or "-",
            r.active or "-",
            "ok" if r.in_step else ("-" if r.target is None else "BEHIND"),
            (r.update or "-")[:80],
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = [
        "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *body)
    ]
    behind = sum(1 for r in rows if r.target and not r.in_step)
    lines.append(f"{len(rows)} gateways, {behind} not on their channel's target")
    return "\n".join(lines)
