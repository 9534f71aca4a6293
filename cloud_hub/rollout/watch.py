"""A staged rollout: canary first, on to stable only when every canary gateway runs it.

`FleetWatch` keeps every gateway's retained status and model states
(`vigil/v1/gw/+/status`, `vigil/v1/gw/+/model`) current from MQTT;
`staged_rollout` publishes on each channel in turn and waits for the online
gateways of that channel (`wait_for_version`). Any refusal, or silence past the
deadline, halts the rollout (stable is not touched) and the report lists each
gateway with its reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from cloud_hub.keys import KeyProvider
from contracts import topics
from contracts.messages import MessageError, ModelState, Status, parse_message

from .release import make_release, next_seq, publish_release

if TYPE_CHECKING:
    from .ledger import Ledger, StoreLedger

Echo = Callable[[str], None]


@dataclass
class GatewaySeen:
    gw: str
    status: Status | None = None
    # (arrival on the hub's monotonic clock, state): gateway clocks may be off.
    states: list[tuple[float, ModelState]] = field(default_factory=list)

    @property
    def channel(self) -> str | None:
        return self.status.channel if self.status else None

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.state == "online"

    @property
    def active(self) -> str | None:
        if self.status and self.status.model:
            return f"{self.status.model.name}@{self.status.model.version}"
        return None


class FleetWatch:
    """Retained statuses and model states of every gateway, kept current from MQTT."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.gateways: dict[str, GatewaySeen] = {}
        self.invalid = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        client.message_callback_add(f"{topics.PREFIX}/gw/+/status", self._on_message)
        client.message_callback_add(f"{topics.PREFIX}/gw/+/model", self._on_message)
        client.subscribe([(f"{topics.PREFIX}/gw/+/status", 1), (f"{topics.PREFIX}/gw/+/model", 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        where = topics.parse(msg.topic)
        try:
            parsed = parse_message(msg.payload)
        except MessageError:
            self.invalid += 1  # counted; a broken gateway message must not stop a rollout
            return
        if where is None or parsed.gw != where["gw"]:
            self.invalid += 1
            return
        with self._changed:
            seen = self.gateways.setdefault(parsed.gw, GatewaySeen(parsed.gw))
            if isinstance(parsed, Status):
                seen.status = parsed
            elif isinstance(parsed, ModelState):
                seen.states.append((time.monotonic(), parsed))
            self._changed.notify_all()

    def settle(self, seconds: float = 0.5) -> None:
        """Let the retained messages arrive (they come right after subscribing)."""
        time.sleep(seconds)

    def snapshot(self) -> dict[str, GatewaySeen]:
        with self._lock:
            return {
                k: GatewaySeen(v.gw, v.status, list(v.states)) for k, v in self.gateways.items()
            }

    def on_channel(self, channel: str) -> list[str]:
        return sorted(g.gw for g in self.snapshot().values() if g.online and g.channel == channel)

    def wait(self, until: Callable[[dict[str, GatewaySeen]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                view = {
                    k: GatewaySeen(v.gw, v.status, list(v.states)) for k, v in self.gateways.items()
                }
                if until(view):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))


@dataclass
class StageResult:
    channel: str
    gateways: list[str]
    active: list[str]
    refused: dict[str, str]  # gw -> reason
    silent: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.refused and not self.silent and bool(self.active)

    def lines(self) -> list[str]:
        out = [
            f"{self.channel}: {len(self.active)}/{len(self.gateways)} active "
            f"in {self.seconds:.1f} s"
        ]
        out += [f"  {gw}: refused: {why}" for gw, why in sorted(self.refused.items())]
        out += [f"  {gw}: no answer" for gw in self.silent]
        return out


def wait_for_version(
    watch: FleetWatch,
    gateways: list[str],
    name: str,
    version: str,
    since: float,
    timeout: float,
    channel: str,
) -> StageResult:
    """Until every gateway in `gateways` reports `name@version` active (or refuses it)."""
    t0 = time.monotonic()

    def outcome(view: dict[str, GatewaySeen]) -> tuple[list[str], dict[str, str]]:
        active, refused = [], {}
        for gw in gateways:
            for arrived, st in reversed(view.get(gw, GatewaySeen(gw)).states):
                if arrived < since or (st.name, st.version) != (name, version):
                    continue
                if st.state in ("active", "rolled_back"):
                    active.append(gw)
                elif st.state == "refused":
                    refused[gw] = st.reason
                else:
                    continue
                break
        return active, refused

    def done(view: dict[str, GatewaySeen]) -> bool:
        active, refused = outcome(view)
        return len(active) + len(refused) == len(gateways)

    watch.wait(done, timeout)
    active, refused = outcome(watch.snapshot())
    silent = [gw for gw in gateways if gw not in active and gw not in refused]
    return StageResult(channel, gateways, sorted(active), refused, silent, time.monotonic() - t0)


@dataclass
class RolloutReport:
    name: str
    version: str
    stages: list[StageResult]
    halted: bool
    reason: str = ""

    def lines(self) -> list[str]:
        out = [f"rollout {self.name} {self.version}"]
        for s in self.stages:
            out += s.lines()
        out.append(f"HALTED: {self.reason}" if self.halted else "done")
        return out


def staged_rollout(
    client: mqtt.Client,
    manifest: dict[str, Any],
    model: bytes,
    provider: KeyProvider,
    ledger: Ledger | StoreLedger,
    *,
    channels: tuple[str, ...] = ("canary", "stable"),
    stage_timeout: float = 120.0,
    min_gateways: int = 1,
    echo: Echo = print,
    watch: FleetWatch | None = None,
) -> RolloutReport:
    """Publish on each channel in turn; go on only when the stage's gateways all run it.

    The last channel (stable) is published without waiting for more than a report;
    every earlier stage must have at least `min_gateways` online gateways, all of
    which must report the version active before `stage_timeout`.
    """
    watch = watch or FleetWatch(client)
    watch.settle()
    name, version = str(manifest.get("name")), str(manifest.get("version"))
    stages: list[StageResult] = []
    for i, channel in enumerate(channels):
        gateways = watch.on_channel(channel)
        last = i == len(channels) - 1
        if not last and len(gateways) < min_gateways:
            return RolloutReport(
                name,
                version,
                stages,
                True,
                f"channel {channel} has {len(gateways)} online gateway(s), "
                f"need {min_gateways}: assign some with `vigil hub assign GW --channel {channel}`",
            )
        since = time.monotonic()
        release = make_release(manifest, model, channel, provider, seq=next_seq(ledger.last_seq()))
        publish_release(client, release, ledger)
        echo(f"published {name} {version} on {channel} ({len(gateways)} gateway(s) online)")
        result = wait_for_version(watch, gateways, name, version, since, stage_timeout, channel)
        stages.append(result)
        for line in result.lines():
            echo(line)
        if not last and not result.ok:
            why = "; ".join(
                [f"{gw} refused ({r})" for gw, r in sorted(result.refused.items())]
                + [f"{gw} did not answer in {stage_timeout:g} s" for gw in result.silent]
            )
            return RolloutReport(name, version, stages, True, f"{channel} stage failed: {why}")
    return RolloutReport(name, version, stages, False)
