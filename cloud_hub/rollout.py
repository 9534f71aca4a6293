"""Rolling signed bundles out to the fleet over MQTT: release, assign, stage, roll back.

A release is a bundle (manifest + model) stamped and signed for publication: the hub
adds `release = {"seq", "issued_at", "rollback"}` to the manifest (seq: milliseconds
since the epoch, so it only grows) and signs the whole manifest with its
`KeyProvider`, then publishes a `ModelRelease` retained on `vigil/v1/models/{channel}`
(QoS 1, waiting for the broker's PUBACK). Gateways refuse a seq they have already
passed (a replayed message), so a rollback is a new release of the older model with
`rollback: true` (edge_agent/model_update.py).

- `assign`: a `join_channel` command on a gateway's `cmd` topic.
- `staged_rollout`: canary first; waits for every canary gateway (online, channel
  canary in its retained status) to report the new version active on
  `vigil/v1/gw/+/model`; any refusal or silence past the deadline halts the rollout
  (stable is not touched) and the report lists each gateway with its reason.
- `rollback`: republishes the model that was current before on the channel.
- The ledger remembers what was published where, for rollbacks and for the target
  column of `fleet_targets`: `StoreLedger`, the hub store's `channel_releases` table
  (the default: shared by every hub replica and kept with the rest of the hub's
  data), or `Ledger`, a folder of release files per channel (`--ledger PATH`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.exc import SQLAlchemyError

from contracts import topics
from contracts.bundle import (
    MANIFEST,
    MODEL,
    BundleError,
    Manifest,
    key_id,
    load_trusted_keys,
    verify_parts,
)
from contracts.messages import (
    Command,
    MessageError,
    ModelRelease,
    ModelState,
    Status,
    parse_message,
)
from contracts.paths import default_trusted_keys_dir, work_dir
from contracts.timeutil import iso_ms, iso_s, parse_iso, utc_now

from .keys import KeyProvider

if TYPE_CHECKING:
    from sqlalchemy import Engine

HUB_ID = "hub"
RELEASE_KEY = "release"  # read by edge_agent.model_update (same name, kept in step)

Echo = Callable[[str], None]


class RolloutError(RuntimeError):
    """A rollout step that cannot be done; the message says what and what to do."""


# --- releases ----------------------------------------------------------------------------
def read_bundle_folder(folder: Path) -> tuple[dict[str, Any], bytes]:
    folder = Path(folder)
    try:
        return json.loads((folder / MANIFEST).read_text()), (folder / MODEL).read_bytes()
    except FileNotFoundError as e:
        raise RolloutError(f"{folder} is not a bundle: missing {Path(e.filename).name}") from None


def next_seq(after: int = 0) -> int:
    """Milliseconds since the epoch, strictly above `after` (the ledger's last)."""
    return max(int(time.time() * 1000), after + 1)


def make_release(
    manifest: dict[str, Any],
    model: bytes,
    channel: str,
    provider: KeyProvider,
    *,
    seq: int,
    rollback: bool = False,
    check: bool = True,
) -> ModelRelease:
    """Stamp, sign and (unless `check` is False) verify a release as a gateway would."""
    m = dict(manifest)
    m[RELEASE_KEY] = {
        "seq": seq,
        "issued_at": iso_ms(utc_now()),
        "rollback": rollback,
    }
    signature = provider.sign_manifest(m)
    if check:
        pub = provider.public_key()
        try:
            parsed = verify_parts(m, signature, model, {key_id(pub): pub})
            _check_runs(parsed, model)
        except BundleError as e:
            raise RolloutError(f"the bundle would be refused by gateways: {e}") from None
    return ModelRelease(
        gw=HUB_ID,
        channel=topics.check_id("channel", channel),
        manifest=m,
        signature=signature,
        model_b64=base64.b64encode(model).decode(),
    )


def _check_runs(manifest: Manifest, model: bytes) -> None:
    """Load in LiteRT and run the golden windows: never ship what the edge would refuse."""
    from model_runtime.litert import LiteRTError, RiskModel
    from model_runtime.verify import check_model

    try:
        runner = RiskModel(model)
    except LiteRTError as e:
        raise BundleError("model_load", str(e)) from None
    check_model(manifest, runner)


# --- ledger ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    channel: str
    name: str
    version: str
    sha256: str
    key_id: str
    rollback: bool
    path: Path | None  # the release file (Ledger); None in the store (StoreLedger)
    payload: bytes | None = None  # the release JSON (StoreLedger)
    issued_at: datetime | None = None  # when the hub stamped it

    def release(self) -> ModelRelease:
        if self.payload is not None:
            return ModelRelease.model_validate_json(self.payload)
        if self.path is None:
            raise RolloutError(f"release {self.channel}/{self.seq} has no stored payload")
        return ModelRelease.model_validate_json(self.path.read_bytes())


class _LedgerQueries:
    """What both ledgers answer from `history(channel)`."""

    def history(self, channel: str) -> list[LedgerEntry]:
        raise NotImplementedError

    def channels(self) -> list[str]:
        raise NotImplementedError

    def current(self, channel: str) -> LedgerEntry | None:
        h = self.history(channel)
        return h[-1] if h else None

    def rollback_target(self, channel: str) -> LedgerEntry:
        """The release that was current before the current model on `channel`."""
        h = self.history(channel)
        if not h:
            raise RolloutError(f"nothing was ever published on channel {channel!r}")
        current = h[-1]
        ident = (current.name, current.version, current.sha256)
        for e in reversed(h[:-1]):
            if (e.name, e.version, e.sha256) != ident:
                return e
        raise RolloutError(
            f"channel {channel!r} has had only {current.name} {current.version}: "
            "no previous model to roll back to"
        )


class StoreLedger(_LedgerQueries):
    """The ledger in the hub store (`channel_releases`), SQLite or PostgreSQL.

    The ingest workers also record every release they see on the broker in the same
    table, idempotently by (channel, seq), so it holds what any hub host published.
    """

    def __init__(self, engine: Engine | str | None = None) -> None:
        from cloud_hub.store import migrate, open_engine

        if engine is None or isinstance(engine, str):
            engine = open_engine(engine)
            migrate(engine)
        self.engine = engine

    def record(self, release: ModelRelease) -> LedgerEntry:
        from cloud_hub.ingest import classify_release
        from cloud_hub.store import Rejected, write_batch

        payload = release.to_json()
        seen = classify_release(topics.models(release.channel), payload, utc_now())
        if seen is None or isinstance(seen, Rejected):
            reason = seen.reason if seen is not None else "empty"
            raise RolloutError(f"not a release the ledger can keep: {reason}")
        try:
            write_batch(self.engine, [], [], [seen])
        except SQLAlchemyError as e:
            raise RolloutError(
                f"release {seen.seq} on {seen.channel!r} is published, but the ledger in "
                f"{self.engine.url.render_as_string()} could not record it "
                f"({str(e).splitlines()[0]}); a running `vigil hub serve` records it "
                "from the broker"
            ) from None
        return self._entry(seen.row())

    @staticmethod
    def _entry(r: Any) -> LedgerEntry:
        g = r.get if isinstance(r, dict) else r._mapping.get
        return LedgerEntry(
            seq=int(g("seq")),
            channel=g("channel"),
            name=g("name"),
            version=g("version"),
            sha256=g("sha256"),
            key_id=g("key_id"),
            rollback=bool(g("rollback")),
            path=None,
            payload=g("payload"),
            issued_at=g("issued_at"),
        )

    def history(self, channel: str) -> list[LedgerEntry]:
        from sqlalchemy import select

        from cloud_hub.store.models import ChannelRelease

        t = ChannelRelease.__table__
        try:
            with self.engine.connect() as c:
                q = select(t).where(t.c.channel == channel).order_by(t.c.seq)
                rows = c.execute(q).all()
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None
        return [self._entry(r) for r in rows]

    def channels(self) -> list[str]:
        from sqlalchemy import select

        from cloud_hub.store.models import ChannelRelease

        try:
            with self.engine.connect() as c:
                q = select(ChannelRelease.channel).distinct().order_by(ChannelRelease.channel)
                return [ch for (ch,) in c.execute(q)]
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None

    def _unreadable(self, e: Exception) -> RolloutError:
        where = self.engine.url.render_as_string()
        return RolloutError(f"release ledger in {where} unreadable: {str(e).splitlines()[0]}")

    def last_seq(self) -> int:
        from sqlalchemy import func, select

        from cloud_hub.store.models import ChannelRelease

        try:
            with self.engine.connect() as c:
                return int(c.execute(select(func.max(ChannelRelease.seq))).scalar() or 0)
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None


class Ledger(_LedgerQueries):
    """What was published on each channel: `<root>/<channel>/<seq>.json` (the release)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else work_dir() / "rollout"

    def record(self, release: ModelRelease) -> LedgerEntry:
        folder = self.root / release.channel
        folder.mkdir(parents=True, exist_ok=True)
        seq = release.manifest[RELEASE_KEY]["seq"]
        path = folder / f"{seq:013d}.json"
        tmp = path.with_suffix(".json.new")
        with open(tmp, "wb") as fh:
            fh.write(release.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return self._entry(path, release)

    def _entry(self, path: Path, r: ModelRelease) -> LedgerEntry:
        stamp = r.manifest.get(RELEASE_KEY, {})
        return LedgerEntry(
            seq=int(stamp.get("seq", 0)),
            channel=r.channel,
            name=str(r.manifest.get("name")),
            version=str(r.manifest.get("version")),
            sha256=str(r.manifest.get("sha256")),
            key_id=str(r.signature.get("key_id")),
            rollback=bool(stamp.get("rollback")),
            path=path,
            issued_at=_iso(stamp.get("issued_at")),
        )

    def channels(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.json")))

    def history(self, channel: str) -> list[LedgerEntry]:
        folder = self.root / channel
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            out.append(self._entry(p, ModelRelease.model_validate_json(p.read_bytes())))
        return out

    def last_seq(self) -> int:
        seqs = [int(p.stem) for p in self.root.glob("*/*.json")] if self.root.is_dir() else []
        return max(seqs, default=0)


def _iso(text: object) -> datetime | None:
    try:
        return parse_iso(str(text)) if text else None
    except ValueError:
        return None


def _utc_text(t: datetime | None) -> str | None:
    """UTC ISO text; a naive time (read back from SQLite) was stored as UTC."""
    return iso_s(t) if t else None


def render_releases(ledger: Ledger | StoreLedger, channel: str | None = None) -> list[dict]:
    """Every release of `channel` (or of every channel), oldest first, as rows."""
    rows = []
    for ch in [channel] if channel else ledger.channels():
        h = ledger.history(ch)
        for e in h:
            rows.append(
                {
                    "channel": ch,
                    "seq": e.seq,
                    "issued_at": _utc_text(e.issued_at),
                    "model": f"{e.name}@{e.version}",
                    "sha256": e.sha256,
                    "key_id": e.key_id,
                    "rollback": e.rollback,
                    "current": e is h[-1],
                }
            )
    return rows


# --- MQTT --------------------------------------------------------------------------------
@dataclass
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_id: str | None = None


def connect(b: BrokerSettings, timeout: float = 10.0) -> mqtt.Client:
    """A connected MQTT 5 client (network loop running); RolloutError when it cannot."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=b.client_id or f"vigil-rollout-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    if b.tls_ca or b.tls_cert:
        c.tls_set(
            ca_certs=str(b.tls_ca) if b.tls_ca else None,
            certfile=str(b.tls_cert) if b.tls_cert else None,
            keyfile=str(b.tls_key) if b.tls_key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    ready = threading.Event()
    failure: list[str] = []

    def on_connect(client, userdata, flags, rc, props) -> None:  # noqa: ANN001
        if rc.is_failure:
            failure.append(str(rc))
        ready.set()

    c.on_connect = on_connect
    c.max_queued_messages_set(0)
    try:
        c.connect(b.host, b.port, keepalive=30)
    except OSError as e:
        raise RolloutError(f"cannot reach the broker at {b.host}:{b.port}: {e}") from None
    c.loop_start()
    if not ready.wait(timeout) or failure:
        c.loop_stop()
        raise RolloutError(
            f"broker {b.host}:{b.port} did not accept the connection: {failure or 'timeout'}"
        )
    return c


def publish_and_wait(
    client: mqtt.Client, topic: str, payload: bytes, *, retain: bool, timeout: float = 30.0
) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise RolloutError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
    info.wait_for_publish(timeout)
    if not info.is_published():
        raise RolloutError(f"the broker did not acknowledge {topic} within {timeout:g} s")
    rc = getattr(info, "reason_code", None)  # MQTT 5 PUBACK reason (e.g. not authorised)
    if rc is not None and getattr(rc, "is_failure", False):
        raise RolloutError(f"the broker refused {topic}: {rc}")


def publish_release(
    client: mqtt.Client, release: ModelRelease, ledger: Ledger | StoreLedger
) -> LedgerEntry:
    """Publish retained on the channel topic, then record it (only once the broker has it)."""
    publish_and_wait(client, topics.models(release.channel), release.to_json(), retain=True)
    return ledger.record(release)


def assign(client: mqtt.Client, gw: str, channel: str) -> Command:
    """Tell gateway `gw` to follow `channel` (it remembers it across restarts)."""
    cmd = Command(
        gw=HUB_ID,
        command="join_channel",
        channel=topics.check_id("channel", channel),
    )
    publish_and_wait(client, topics.cmd(gw), cmd.to_json(), retain=False)
    return cmd


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

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
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


def rollback(
    client: mqtt.Client,
    channel: str,
    provider: KeyProvider,
    ledger: Ledger | StoreLedger,
    trusted: dict[str, Any] | None = None,
) -> LedgerEntry:
    """Republish the model that was current before the current one, as a rollback release.

    The old release is re-signed with the hub's key, so first it must verify as it
    was published, against a key the hub trusts (`trusted`; default: the hub's own
    key and the shipped trusted keys, i.e. also keys rotated out): the ledger also
    records what the ingest saw on the broker, and a rollback must never launder a
    release nobody trusted into a signed one.
    """
    target = ledger.rollback_target(channel)
    old = target.release()
    if trusted is None:
        pub = provider.public_key()
        trusted = load_trusted_keys([default_trusted_keys_dir()]) | {key_id(pub): pub}
    try:
        verify_parts(old.manifest, old.signature, base64.b64decode(old.model_b64), trusted)
    except (BundleError, ValueError) as e:
        raise RolloutError(
            f"release {target.seq} ({target.name} {target.version}) on {channel!r} does not "
            f"verify with the hub's trusted keys, not rolling back to it: {e}"
        ) from None
    manifest = {k: v for k, v in old.manifest.items() if k != RELEASE_KEY}
    release = make_release(
        manifest,
        base64.b64decode(old.model_b64),
        channel,
        provider,
        seq=next_seq(ledger.last_seq()),
        rollback=True,
    )
    return publish_release(client, release, ledger)


# --- fleet view -------------------------------------------------------------------------
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
