"""`vigil hub serve`: gateway telemetry from MQTT into the hub store, exactly once.

Life of a message:
1. paho-mqtt (MQTT 5) receives it on a shared subscription (`$share/hub/...`), so
   several workers split the load; `on_message` only queues it (no I/O there).
2. The writer thread takes up to `batch_size` messages or `batch_ms` worth, checks
   each (`cloud_hub.classify`: size, JSON, contract model, topic gw/bed == payload gw/bed),
   and writes the batch in ONE transaction: good messages idempotently by
   event_id, bad ones as dead letters with the reason.
3. Only after the commit are the messages acknowledged to the broker (manual acks).
   A crash before the commit leaves them unacknowledged in the broker's persistent
   session (clean start false, session expiry), which redelivers them; a crash
   between commit and ack redelivers messages already stored, which the event_id
   turns into counted duplicates. Nothing is acknowledged that is not stored.

A store outage stops the acks (the broker holds the messages) and the batch is
retried with backoff; a broker outage is retried by paho with backoff, and the
subscriptions are made again on every connect.

Poison never stalls the stream (issue 18): `classify` never raises (every refusal is a
dead letter with its reason); `write_batch` tells transient store errors (retried,
nothing acked, `vigil_hub_store_ok` 0 and the backoff in
`vigil_hub_store_retry_delay_seconds`) from permanent ones (one row's fault: stored one
by one, the bad row dead-lettered) by exception type; anything else a batch raises is
counted (`vigil_hub_internal_errors_total`) and the batch is handled one message at a
time, a message that still fails being dead-lettered (`internal_error`). The writer
thread catches everything; a supervisor thread restarts it if it dies anyway, puts
back the batch it held, and counts it (`vigil_hub_writer_restarts_total`,
`vigil_hub_writer_alive`).

A SQLite store file deleted or replaced while the hub runs (`StoreWatch`: its inode,
checked before each batch and after each commit, before the acks) is never written
into blindly: the batch in hand is not acknowledged, the store is reopened at its path
(a stale -wal set aside, migrated), and every gateway the worker knows is asked to
`resend`: since its last message in the reopened store minus the margin, or since
2000 (all it still keeps) if the reopened store does not know it. The batch is then
written into the reopened store and acknowledged (`vigil_hub_store_lost_total`).

Replay after a connection loss: a broker that dies (SIGKILL: no final save) or that
restores a session without its `$share` subscriptions (Mosquitto 2.0.11 does that)
has acknowledged gateway messages that then reach no hub. The gateways keep what the
broker acknowledged (edge_agent/store.py `outbox_sent`), so on every reconnect after
a loss, and on a first connect that finds no session, the hub sends each gateway it
knows a `resend` command (QoS 1) with `since` = the last time it stored anything
from that gateway minus `resend_margin_seconds` (clock skew, messages in flight).
Every reconnect, and every start of a worker, not only `session_present == False`:
the broker above reports the session present while its shared subscriptions are
gone, and a session kept across a long hub outage may have overflowed its queue.
The replayed messages carry their event_ids, so what the hub already had is counted
as duplicates, not stored.
Several workers noticing the same loss ask each gateway once: before sending, a worker
claims the request in the gateway's registry row (`resend_since`, `resend_at`), and
skips it if another worker has already asked since the loss, from as early a `since`.

Model releases: each worker also reads the retained release of every channel
(`vigil/v1/models/+`, a plain subscription) into `channel_releases`, the fleet
view's per-gateway target.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine, or_, select, update

from cloud_hub.classify import classify, classify_release
from cloud_hub.hub_logging import log_event
from cloud_hub.hub_metrics import IngestMetrics
from cloud_hub.settings import HubSettings
from cloud_hub.store import (
    Accepted,
    Rejected,
    ReleaseSeen,
    StoreLost,
    StoreWatch,
    migrate,
    open_engine,
    write_batch,
)
from cloud_hub.store.models import Gateway
from cloud_hub.store.writer import BatchResult, error_line, is_transient, write_dead_letters
from contracts import topics
from contracts.broker import connect_async, make_client
from contracts.messages import EARLIEST, Command, TimeWindow, clean_text
from contracts.timeutil import utc_now

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("cloud_hub.ingest")


@dataclass(frozen=True)
class Incoming:
    topic: str | None  # None: not valid UTF-8
    raw_topic: bytes
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int  # which connection it arrived on (acks go back on that one only)
    received_at: datetime


class HubWorker:
    """One ingest worker: an MQTT session, a queue and a writer thread."""

    def __init__(self, settings: HubSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or open_engine(settings.db_url)
        self.metrics = IngestMetrics(settings.worker_id)
        self._q: queue.Queue[Incoming] = queue.Queue()
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._busy = threading.Event()  # the writer holds a batch not yet acked
        self._writer: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._inflight: list[Incoming] | None = None  # the writer's batch, until acked
        self._watch: StoreWatch | None = None
        self._window = TimeWindow(
            max_age=timedelta(seconds=settings.max_message_age_seconds),
            max_ahead=timedelta(seconds=settings.max_message_ahead_seconds),
        )
        self._client: mqtt.Client | None = None
        self._http = None
        self._stopped = False
        self.totals = {"received": 0, "stored": 0, "duplicates": 0, "dead": 0}
        # gw -> when we last stored anything from it (hub clock); from the registry at
        # start, then kept by the writer thread.
        self._last_seen: dict[str, datetime] = {}
        # gw -> since, for the resend commands due after the next subscribe (a loss).
        self._resend_due: dict[str, datetime] | None = None
        self._resend_lock = threading.Lock()
        self._loss_at = utc_now()  # when the planned resends' loss was noticed
        self.resends_sent = 0

    # -- lifecycle ------------------------------------------------------------------
    def start(self, migrate_store: bool = True) -> HubWorker:
        s = self.settings
        if migrate_store:
            migrate(self.engine)
        self._watch = StoreWatch(self.engine)
        self._load_last_seen()
        if s.metrics_port:
            self._http = self.metrics.serve(s.metrics_port, s.metrics_addr)
        self.metrics.store_ok.set(1)
        self._start_writer()
        self._supervisor = threading.Thread(
            target=self._supervise, name="hub-supervisor", daemon=True
        )
        self._supervisor.start()
        v5 = s.mqtt_protocol == "5"
        broker = s.broker()
        # 3.1.1: a persistent session (clean_session False)
        c = make_client(broker, clean_session=None if v5 else False, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = self._on_connect_fail
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry
            props.ReceiveMaximum = s.receive_maximum
        else:
            c.max_inflight_messages_set(s.receive_maximum)
        connect_async(c, broker, clean_start=False, properties=props)
        c.loop_start()
        self._client = c
        log_event(
            log,
            "hub_start",
            worker=s.worker_id,
            broker=f"{s.mqtt_host}:{s.mqtt_port}",
            store=self.engine.url.render_as_string(),
            metrics_port=s.metrics_port,
        )
        return self

    def _load_last_seen(self) -> None:
        # Read before connecting: nothing of the new connection is in it yet.
        with self.engine.connect() as c:
            for gw, t in c.execute(select(Gateway.gw, Gateway.last_seen)):
                self._last_seen[gw] = t if t.tzinfo else t.replace(tzinfo=UTC)

    def _plan_resend(self) -> None:
        """Note, for every known gateway, from when it must resend (earliest wins)."""
        margin = self.settings.resend_margin_seconds
        due = {gw: t - timedelta(seconds=margin) for gw, t in list(self._last_seen.items())}
        with self._resend_lock:
            self._loss_at = utc_now()
            if self._resend_due is not None:
                for gw, t in self._resend_due.items():
                    due[gw] = min(t, due.get(gw, t))
            self._resend_due = due or None

    def _send_resends(self, client: mqtt.Client) -> None:
        """Publish the planned `resend` commands (QoS 1; paho re-sends them if needed)."""
        with self._resend_lock:
            due, self._resend_due = self._resend_due, None
            loss_at = self._loss_at
        for gw, since in sorted((due or {}).items()):
            if not self._claim_resend(gw, since, loss_at):
                log_event(log, "resend_already_requested", gw=gw, since=since.isoformat())
                continue
            try:
                cmd = Command(gw="hub", command="resend", since=since)
                info = client.publish(topics.cmd(gw), cmd.to_json(), qos=1)
            except ValueError as e:  # a registry name that is not a valid topic level
                log_event(log, "resend_skipped", logging.WARNING, gw=gw, reason=str(e))
                continue
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # Not sent on this connection: plan it again for the next one.
                with self._resend_lock:
                    d = self._resend_due or {}
                    d[gw] = min(since, d.get(gw, since))
                    self._resend_due = d
                continue
            self.resends_sent += 1
            log_event(log, "resend_requested", gw=gw, since=since.isoformat())

    def _claim_resend(self, gw: str, since: datetime, loss_at: datetime) -> bool:
        """True if this worker should send the resend (decided atomically in the store).

        Not if another worker has asked the same gateway since our loss (`loss_at`)
        from a `since` at or before ours: that replay already covers what we lost
        (N workers losing the broker together send one command per gateway, not N).
        A store that cannot be reached does not stop the command: a duplicate replay
        is harmless, a missing one is not.
        """
        g = Gateway.__table__
        stmt = (
            update(g)
            .where(
                g.c.gw == gw,
                or_(g.c.resend_at.is_(None), g.c.resend_at < loss_at, g.c.resend_since > since),
            )
            .values(resend_since=since, resend_at=utc_now())
        )
        try:
            with self.engine.begin() as c:
                if c.execute(stmt).rowcount == 1:
                    return True
                # No row at all (a store reopened after it was lost): nobody has asked.
                return c.execute(select(g.c.gw).where(g.c.gw == gw)).first() is None
        except Exception as e:  # noqa: BLE001 - any store error: send anyway
            log_event(log, "resend_claim_failed", logging.WARNING, gw=gw, error=str(e)[:200])
            return True

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once connected and subscribed."""
        return self._subscribed.wait(timeout)

    def wait_idle(self, quiet: float = 0.5, timeout: float = 30.0) -> bool:
        """True once nothing has arrived for `quiet` seconds and everything is committed."""
        deadline = time.monotonic() + timeout
        last = (-1, time.monotonic())
        while time.monotonic() < deadline:
            n = self.totals["received"] + self._q.qsize()
            if n != last[0] or not self._q.empty() or self._busy.is_set():
                last = (n, time.monotonic())
            elif time.monotonic() - last[1] >= quiet:
                return True
            time.sleep(0.02)
        return False

    def stop(self, drain_seconds: float = 5.0, retire: bool = False) -> None:
        """Commit and acknowledge what was received, then leave.

        By default the broker keeps this worker's session, and keeps queueing its
        share of the shared subscription for it until it comes back (Mosquitto
        does). `retire=True` is for a worker that will not come back: it leaves the
        group, takes in what is still queued for it, and ends its session.
        """
        if self._stopped:
            return
        self._stopped = True
        c = self._client
        if retire and c is not None and self._connected.is_set():
            c.unsubscribe([f for f, _ in self._subscriptions()])
            self.wait_idle(quiet=0.5, timeout=max(drain_seconds, 1.0))
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and (not self._q.empty() or self._busy.is_set()):
            time.sleep(0.01)
        if c is not None:
            props = None
            if retire and self.settings.mqtt_protocol == "5":
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0
            c.disconnect(properties=props)
            c.loop_stop()
            if retire:
                log_event(log, "retired", worker=self.settings.worker_id)
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=drain_seconds + 5)
        if self._http is not None:
            self._http[0].shutdown()
        log_event(log, "hub_stop", worker=self.settings.worker_id, **self.totals)

    # -- MQTT callbacks (paho's network thread: queue only, no I/O) ---------------
    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log_event(log, "connect_refused", logging.ERROR, reason=str(reason_code))
            return
        self._generation += 1
        if self._generation == 1:
            # A first connect (this process starts): whether or not the broker kept
            # our session, it may have dropped part of what it queued for us while we
            # were away (a full queue: max_queued_messages; a restart from an older
            # save), and it cannot tell us. Ask the known gateways again: what we
            # already have comes back as counted duplicates, nothing is stored twice.
            self._plan_resend()
        self._connected.set()
        self.metrics.connected.set(1)
        log_event(
            log,
            "connected",
            worker=self.settings.worker_id,
            session_present=flags.session_present,
            generation=self._generation,
        )
        client.subscribe(self._subscriptions())

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions | int]]:
        """What to subscribe to, on every connect (idempotent)."""
        if self.settings.mqtt_protocol != "5":
            # MQTT 3.1.1: plain filters (one worker), retained messages on every
            # subscribe (stored once by event_id / (channel, seq)).
            return [(f, 1) for f in (*topics.GATEWAY_FILTERS, topics.MODELS_FILTER)]
        # Retain handling 1: retained statuses only for a new subscription, not again
        # on each reconnect.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        subs: list[tuple[str, SubscribeOptions | int]] = [
            (topics.shared(f, self.settings.share_group), opts) for f in topics.GATEWAY_FILTERS
        ]
        # Each channel's retained release, on every connect (a small, idempotent row):
        # what the fleet view shows as the gateways' target.
        subs.append(
            (
                topics.MODELS_FILTER,
                SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE),
            )
        )
        return subs

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho retries with backoff (1 s doubling to 30 s); say so, once per attempt.
        s = self.settings
        log_event(log, "connect_failed", logging.WARNING, broker=f"{s.mqtt_host}:{s.mqtt_port}")

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reason_codes: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log_event(log, "subscribe_refused", logging.ERROR, reasons=",".join(bad))
            return
        log_event(
            log, "subscribed", worker=self.settings.worker_id, group=self.settings.share_group
        )
        self._subscribed.set()
        if self._resend_due is not None:
            # After the SUBACK: what the gateways resend now reaches a subscription.
            # Off the network thread (the publishes take paho's locks, fine elsewhere).
            threading.Thread(
                target=self._send_resends, args=(_client,), name="hub-resend", daemon=True
            ).start()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            self._plan_resend()  # memory only: safe on the network thread
        self._connected.clear()
        self.metrics.connected.set(0)
        level = logging.INFO if self._stop.is_set() or reason_code == 0 else logging.WARNING
        log_event(log, "disconnected", level, reason=str(reason_code))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, m: mqtt.MQTTMessage) -> None:
        try:
            topic: str | None = m.topic
        except UnicodeDecodeError:
            topic = None
        self._q.put(
            Incoming(
                topic,
                m._topic,
                m.payload,
                m.mid,
                m.qos,
                bool(m.retain),
                self._generation,
                utc_now(),
            )
        )

    # -- writer thread ----------------------------------------------------------------
    def _collect(self) -> list[Incoming]:
        try:
            first = self._q.get(timeout=0.1)
        except queue.Empty:
            return []
        self._busy.set()
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_ms / 1000
        while len(batch) < self.settings.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._q.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="hub-writer", daemon=True)
        self._writer.start()
        self.metrics.writer_alive.set(1)

    def _supervise(self) -> None:
        """Restart the writer thread if it dies anyway (it catches every Exception; this
        is for the rest): put back the batch it held, count it, say it."""
        while not self._stop.wait(0.5):
            w = self._writer
            if w is None or w.is_alive() or self._stop.is_set():
                continue
            self.metrics.writer_alive.set(0)
            held, self._inflight = self._inflight, None
            for inc in held or []:
                self._q.put(inc)
            self._busy.clear()
            self.metrics.writer_restarts.inc()
            log_event(log, "writer_died", logging.ERROR, requeued=len(held or []))
            self._start_writer()

    def _write_loop(self) -> None:
        while not (self._stop.is_set() and self._q.empty()):
            batch = self._collect()
            if not batch:
                continue
            self._inflight = batch
            try:
                self._commit(batch)
            except Exception as e:  # noqa: BLE001 - never let a batch end the thread
                self.metrics.internal_errors.inc()
                log_event(
                    log, "batch_failed", logging.ERROR, error=type(e).__name__, size=len(batch)
                )
                log.debug("batch_failed", exc_info=True)
                self._commit_each(batch)
            # Not in a `finally`: a thread dying of a BaseException leaves its batch in
            # `_inflight` for the supervisor to put back.
            self._inflight = None
            self._busy.clear()

    def _commit_each(self, batch: list[Incoming]) -> None:
        """A batch that failed outside the store: one message at a time, and one that
        fails again is dead-lettered (`internal_error`) and acknowledged."""
        for inc in batch:
            try:
                self._commit([inc])
                continue
            except Exception as e:  # noqa: BLE001
                error = type(e).__name__
            rej = Rejected(
                inc.topic or "",
                inc.payload,
                "internal_error",
                f"the hub failed on this message ({error})",
                inc.received_at,
            )
            log_event(
                log,
                "dead_letter",
                logging.WARNING,
                topic=rej.topic,
                reason_kind="internal_error",
                reason=rej.reason,
                size=len(inc.payload),
            )
            res = self._store(lambda rej=rej: write_dead_letters(self.engine, [rej]))
            if res is None:
                return  # shutting down: unacked, the broker redelivers it
            self.metrics.dead_lettered.labels(reason="internal_error").inc()
            self._ack([inc])

    def _store(self, write: Callable[[], BatchResult]) -> BatchResult | None:
        """`write()` until it works; None if the worker stops first (nothing acked).

        Transient errors (`is_transient`) and a lost SQLite file are retried with
        backoff (1/2 s doubling to 30 s); anything else is raised to the caller.
        """
        m, delay = self.metrics, 0.5
        while True:
            t0 = time.perf_counter()
            try:
                if self._watch is not None:
                    self._watch.check()  # not into a deleted file
                res = write()
                if self._watch is not None:
                    self._watch.check()  # committed where the path leads, or no ack
                m.batch_seconds.observe(time.perf_counter() - t0)
                m.store_ok.set(1)
                m.store_retry_seconds.set(0)
                return res
            except StoreLost as e:
                m.store_lost.inc()
                m.store_ok.set(0)
                log_event(log, "store_lost", logging.ERROR, reason=str(e))
                try:
                    self._reopen_store()
                    continue
                except Exception as e2:  # noqa: BLE001 - retried below
                    log_event(log, "store_reopen_failed", logging.ERROR, error=error_line(e2))
            except Exception as e:
                if not is_transient(e):
                    raise
                m.store_errors.inc()
                m.store_ok.set(0)
                m.store_retry_seconds.set(delay)
                log_event(
                    log,
                    "store_retry",
                    logging.ERROR,
                    error=error_line(e),
                    transient=True,
                    retry_in=delay,
                )
                if self.engine.dialect.name == "sqlite":
                    self.engine.dispose()  # the next try opens the file afresh
            if self._stop.wait(delay):
                # Shutting down with a store that refuses: nothing is acked, so the
                # broker redelivers this batch to the next worker that starts.
                log_event(log, "batch_abandoned", logging.ERROR)
                return None
            delay = min(delay * 2, 30)

    def _reopen_store(self) -> None:
        """After the SQLite file vanished or was replaced: open what is at the path now
        (a new file if none, migrated) and ask every known gateway to resend what that
        store lacks."""
        self.engine.dispose()  # the old file's connections (their WAL is checkpointed)
        moved = self._watch.set_aside_stale_wal() if self._watch else []
        migrate(self.engine)
        if self._watch is not None:
            self._watch.reset()
        with self.engine.connect() as c:
            in_store = {
                gw: t if t.tzinfo else t.replace(tzinfo=UTC)
                for gw, t in c.execute(select(Gateway.gw, Gateway.last_seen))
            }
        margin = timedelta(seconds=self.settings.resend_margin_seconds)
        known = dict(self._last_seen)
        due = {
            gw: in_store[gw] - margin if gw in in_store else EARLIEST for gw in {*known, *in_store}
        }
        self._last_seen = {**known, **in_store}
        with self._resend_lock:
            self._loss_at = utc_now()
            cur = self._resend_due or {}
            for gw, t in due.items():
                cur[gw] = min(t, cur.get(gw, t))
            self._resend_due = cur or None
        log_event(
            log,
            "store_reopened",
            logging.WARNING,
            store=self.engine.url.render_as_string(),
            gateways=len(due),
            set_aside=",".join(str(p) for p in moved) or "-",
        )
        c = self._client
        if c is not None and self._connected.is_set() and self._subscribed.is_set():
            threading.Thread(
                target=self._send_resends, args=(c,), name="hub-resend", daemon=True
            ).start()

    def _commit(self, batch: list[Incoming]) -> None:
        s, m = self.settings, self.metrics
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        releases: list[ReleaseSeen] = []
        for inc in batch:
            if inc.topic and topics.parse_models(inc.topic) is not None:
                m.messages_in.labels(kind="release").inc()
                rel = classify_release(inc.topic, inc.payload, inc.received_at)
                if isinstance(rel, ReleaseSeen):
                    releases.append(rel)
                elif isinstance(rel, Rejected):
                    rejected.append(rel)
                continue
            item = classify(
                inc.topic, inc.payload, inc.received_at, inc.retain, s.max_payload, self._window
            )
            kind = where["kind"] if inc.topic and (where := topics.parse(inc.topic)) else "unknown"
            m.messages_in.labels(kind=kind).inc()
            (accepted if isinstance(item, Accepted) else rejected).append(item)
        for r in rejected:
            log_event(
                log,
                "dead_letter",
                logging.WARNING,
                topic=clean_text(r.topic, 200),
                reason_kind=r.reason_kind,
                reason=r.reason,
                size=len(r.payload),
            )
        res = self._store(lambda: write_batch(self.engine, accepted, rejected, releases))
        if res is None:
            log_event(log, "batch_abandoned", logging.ERROR, size=len(batch))
            return
        m.batch_size.observe(len(batch))
        self._ack(batch)
        now = utc_now()
        for a in accepted:
            if a.retained:  # a retained status is as old as it is: not lag
                continue
            ts = a.message.ts if a.message.ts.tzinfo else a.message.ts.replace(tzinfo=UTC)
            m.ingest_lag.observe(max(0.0, (now - ts).total_seconds()))
        for k, n in res.stored.items():
            m.stored.labels(kind=k).inc(n)
        for k, n in res.duplicates.items():
            if n:
                m.duplicates.labels(kind=k).inc(n)
        for k, n in res.dead.items():
            m.dead_lettered.labels(reason=k).inc(n)
        for gw, t in res.last_seen.items():
            m.gateway_last_seen.labels(gw=gw).set(t.timestamp())
            if gw not in self._last_seen or t > self._last_seen[gw]:
                self._last_seen[gw] = t
        m.queue_depth.set(self._q.qsize())
        t = self.totals  # replaced whole, so readers never see half an update
        self.totals = {
            "received": t["received"] + len(batch),
            "stored": t["stored"] + sum(res.stored.values()),
            "duplicates": t["duplicates"] + sum(res.duplicates.values()),
            "dead": t["dead"] + sum(res.dead.values()),
        }
        log.debug(
            "event=batch size=%d stored=%d duplicates=%d dead=%d",
            len(batch),
            sum(res.stored.values()),
            sum(res.duplicates.values()),
            sum(res.dead.values()),
        )

    def _ack(self, batch: list[Incoming]) -> None:
        """Acknowledge, in arrival order, the messages of the current connection.

        Messages from an earlier connection are redelivered by the broker anyway
        (and recognised as duplicates); acking their old packet ids on a new
        connection could acknowledge a different message.
        """
        c, gen = self._client, self._generation
        if c is None:
            return
        for inc in batch:
            if inc.qos > 0 and inc.generation == gen and self._connected.is_set():
                c.ack(inc.mid, inc.qos)


def serve(settings: HubSettings) -> None:
    """Run one worker until SIGINT/SIGTERM."""
    worker = HubWorker(settings).start()
    done = threading.Event()

    def _bye(signum: int, _frame: FrameType | None) -> None:
        log_event(log, "signal", signal=signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGINT, _bye)
    signal.signal(signal.SIGTERM, _bye)
    done.wait()
    worker.stop()
