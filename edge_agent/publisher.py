"""The gateway's MQTT client (paho-mqtt 2, MQTT 5): outbox-first publishing, subscriptions.

Lifecycle in one place: connect (the client from contracts/broker.py, TLS when
configured) with a retained `offline` Status as last will, reconnect with backoff, on
every (re)connect publish the retained `online` Status and subscribe again to the
gateway's `cmd` topic and to `vigil/v1/models/{channel}`.

Delivery: `publish()` only writes the message to the store's outbox. A sender thread
hands outbox rows to paho in id order while connected (at most `max_inflight` at
once) and deletes a row only when its PUBACK arrived (on_publish, mid -> row id).
Across a reconnect paho re-sends its own unacknowledged messages first, in order,
and the sender waits for them before handing over newer rows, so order holds; after
a process restart the sender starts again from the oldest row. A broker outage of any
length therefore loses nothing (at-least-once; the hub de-duplicates by event_id).
A PUBACK with an error reason (e.g. not authorised) moves the row to
`outbox_rejected` with the reason: set aside and counted, never retried forever.

A PUBACK only means the broker took the message; a broker killed before it handed
it on (or that lost the hub's subscriptions) loses it. So acknowledged rows are
kept (`outbox_sent`, `mqtt.sent_retention_hours`, pruned by the sender thread in
bounded batches) and `resend(since)` (the hub's `resend` command) queues them again.

Incoming payloads are untrusted: parsed with `contracts.messages.parse_message`,
stored in the inbox either way, counted, and valid ones handed to the hooks
`on_command(Command)` / `on_release(ModelRelease)` (model updates: edge_agent/model_hook.py).
Nothing a payload holds (deep nesting, wrong types, NaN, non-UTF-8, a valid schema
with a bad signature) or a hook does can end paho's network thread: every error is
caught in `_on_message`, counted (`invalid` with the refusal kind, `handler_errors`,
`inbox_errors`), logged in one line without the payload, and the loop goes on acking
the outbox. A retained poison message is refused once per delivery, so it cannot
stall the gateway on every start. paho's `suppress_exceptions` is on as a second
net, and the gateway's supervisor (edge_agent/supervisor.py) restarts the network
thread (`restart_network`) and the sender/status threads (`spawn`) if one dies anyway.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts import topics
from contracts.broker import connect_async, make_client
from contracts.messages import (
    Command,
    MessageError,
    ModelRelease,
    Status,
    TimeWindow,
    clean_text,
    parse_message,
)
from contracts.timeutil import utc_now

from .config import EdgeSettings
from .state import GatewayState
from .store import Store

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        settings: EdgeSettings,
        store: Store,
        state: GatewayState,
        status: Callable[[str], Status],
        *,
        on_command: Callable[[Command], None] | None = None,
        on_release: Callable[[ModelRelease], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        # Incoming commands and releases: `ts` within the window of the gateway's clock.
        self.clock = clock
        self.window = TimeWindow(
            max_age=timedelta(seconds=settings.max_message_age_seconds),
            max_ahead=timedelta(seconds=settings.max_message_ahead_seconds),
        )
        self.store = store
        self.state = state
        self._status = status  # builds the current Status for "online" / "offline"
        self.on_command = on_command
        self.on_release = on_release
        gw = settings.gateway_id
        self.topic_status = topics.status(gw)
        self.topic_cmd = topics.cmd(gw)
        self.topic_models = topics.models(settings.channel)
        # The channel's shadow candidates (edge_agent/shadow.py sets it when attached).
        self.topic_shadow: str | None = None
        m = settings.mqtt
        c = make_client(m, client_id=settings.client_id)
        c.max_inflight_messages_set(m.max_inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(m.reconnect_min_seconds, m.reconnect_max_seconds)
        c.will_set(self.topic_status, status("offline").to_json(), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.suppress_exceptions = True  # a callback's error is logged, never ends the loop
        self.client = c
        # How the sender/status threads are started; the gateway's supervisor
        # replaces it with one that restarts a thread that dies.
        self.spawn: Callable[[str, Callable[[], None]], threading.Thread] = _plain_thread
        self._connected = threading.Event()
        # Set when the broker acknowledged (SUBACK) the cmd and models subscriptions of
        # the current connection, cleared when it drops: a readiness signal for whoever
        # sends this gateway a non-retained command (tests, tools).
        self.subscribed = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: queue.Queue[tuple[int, int, str]] = queue.Queue()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id (sender thread only)
        self._last_id = 0
        self._drain_first = False  # after a reconnect: paho re-sends its in-flight first
        self._next_prune = 0.0  # monotonic time of the next outbox_sent prune
        self._sender: threading.Thread | None = None
        self._status_thread: threading.Thread | None = None
        self.counters = {
            "published": 0,
            "acked": 0,
            "rejected": 0,
            "received": 0,
            "invalid": 0,
            "resent": 0,
            "pruned": 0,
            "handler_errors": 0,
            "inbox_errors": 0,
        }
        self.refusals: dict[str, int] = {}  # refusal kind -> count (invalid, by why)

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        m = self.settings.mqtt
        props = None
        if m.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        # 3.1.1: a clean session is the client's default
        connect_async(self.client, m, clean_start=True, properties=props)
        self.client.loop_start()
        self._sender = self.spawn("vigil-outbox", self._send_loop)
        self._status_thread = self.spawn("vigil-status", self._status_loop)
        self.state.set_outbox(self.store.outbox_size())

    def network_alive(self) -> bool:
        """paho's network thread is running (or the publisher is stopping)."""
        t = getattr(self.client, "_thread", None)
        return self._stop.is_set() or (t is not None and t.is_alive())

    def restart_network(self) -> None:
        """Start paho's network thread again after it died (the supervisor calls it)."""
        if self._stop.is_set():
            return
        t = getattr(self.client, "_thread", None)
        if t is not None and not t.is_alive():
            self.client._thread = None  # paho refuses loop_start while it holds a dead thread
        self.client.loop_start()
        self.state.event("connection", "MQTT network thread restarted")

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what the broker can take within `timeout`, publish `offline`, disconnect."""
        deadline = time.monotonic() + timeout
        while self.connected and self.store.outbox_size() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._sender:
            self._sender.join(5)
        if self.connected:
            info = self.client.publish(
                self.topic_status, self._status("offline").to_json(), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Write to the outbox (durable) and wake the sender; returns the outbox row id."""
        row = self.store.enqueue(topic, payload, qos=1, retain=retain)
        self._wake.set()
        return row

    def resend(self, since: datetime) -> int:
        """Queue again the acknowledged messages of this gateway's topics enqueued at or
        after `since`, in their original order; returns how many."""
        n = self.store.requeue_since(since, f"{topics.PREFIX}/gw/{self.settings.gateway_id}/")
        self.counters["resent"] += n
        self._wake.set()
        return n

    def prune(self, now: datetime | None = None, limit: int = 5000) -> int:
        """Drop one bounded batch of acknowledged messages older than the retention."""
        keep = timedelta(hours=self.settings.mqtt.sent_retention_hours)
        n = self.store.prune_sent((now or utc_now()) - keep, limit)
        self.counters["pruned"] += n
        return n

    def wait_idle(self, timeout: float) -> bool:
        """True once the outbox is empty (everything acknowledged) within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.outbox_size() == 0:
                return True
            time.sleep(0.02)
        return False

    # --- paho callbacks (network thread: keep them short, never take our locks) ---
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        log.info("connected to %s:%s", self.settings.mqtt.host, self.settings.mqtt.port)
        client.publish(self.topic_status, self._status("online").to_json(), qos=1, retain=True)
        subs = [(self.topic_cmd, 1), (self.topic_models, 1)]
        client.subscribe(subs + ([(self.topic_shadow, 1)] if self.topic_shadow else []))
        self._drain_first = True
        self._connected.set()
        self.state.set_broker(True)
        self.state.event("connection", "broker connected")
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.warning("broker connection lost: %s (buffering in the outbox)", reason_code)
            self.state.event("connection", f"broker connection lost: {reason_code}")
        self._connected.clear()
        self.subscribed.clear()
        self.state.set_broker(False)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        failed = bool(getattr(reason_code, "is_failure", False))
        self._acks.put((mid, 1 if failed else 0, str(reason_code)))
        self._wake.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        bad = [str(r) for r in reason_codes if r.is_failure]
        if bad:
            log.warning("subscription refused by the broker: %s", bad)
        else:
            self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """paho's network thread: whatever the payload, count it, never raise."""
        self.counters["received"] += 1
        try:
            topic = msg.topic
        except Exception:  # a topic that is not UTF-8
            topic = "<undecodable topic>"
        try:
            parsed = parse_message(
                msg.payload, gateway_only=False, now=self.clock(), window=self.window
            )
            if topic == self.topic_cmd and not isinstance(parsed, Command):
                raise MessageError("topic_mismatch", f"{parsed.schema_} is not a command")
            if topic == self.topic_models and not isinstance(parsed, ModelRelease):
                raise MessageError("topic_mismatch", f"{parsed.schema_} is not a model release")
            if not isinstance(parsed, (Command, ModelRelease)):
                raise MessageError("topic_mismatch", f"{parsed.schema_} is not for a gateway")
        except MessageError as e:
            self._refuse(topic, msg.payload, e.kind, e.reason)
            return
        except Exception as e:  # RecursionError, MemoryError, a validator bug: still refused
            self._refuse(topic, msg.payload, "malformed", f"unparseable: {type(e).__name__}")
            return
        self._inbox(topic, msg.payload, True)
        hook = self.on_command if isinstance(parsed, Command) else self.on_release
        log.info("received %s on %s", parsed.schema_, topic)
        if hook is not None:
            try:
                hook(parsed)
            except Exception as e:  # a handler bug must not kill the network thread
                self.counters["handler_errors"] += 1
                self.state.count("mqtt_handler_errors")
                log.error(
                    "handler for %s on %s failed: %s",
                    parsed.schema_,
                    topic,
                    type(e).__name__,
                    exc_info=True,
                )

    def _refuse(self, topic: str, payload: bytes, kind: str, reason: str) -> None:
        """Count, log one line (the reason, never the payload) and set the payload aside."""
        self.counters["invalid"] += 1
        self.refusals[kind] = self.refusals.get(kind, 0) + 1
        self.state.count("mqtt_invalid")
        self.state.count(f"mqtt_invalid_{kind}")
        log.warning("invalid message on %s (%d bytes): %s", topic, len(payload), reason[:200])
        self._inbox(topic, payload, False, reason[:500])

    def _inbox(self, topic: str, payload: bytes, valid: bool, reason: str = "") -> None:
        try:
            self.store.add_inbox(topic, payload, valid, reason)
        except Exception as e:  # a full disk must not end the network loop
            self.counters["inbox_errors"] += 1
            self.state.count("mqtt_inbox_errors")
            log.error("inbox write failed for %s: %s", topic, type(e).__name__)

    # --- sender thread -----------------------------------------------------------
    def _take_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid, failed, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            row = self._inflight.pop(mid, None)
            if row is None:  # status publishes go around the outbox
                continue
            if failed:
                self.counters["rejected"] += 1
                self.state.count("mqtt_rejected")
                log.error("broker refused outbox row %d: %s (set aside)", row, reason)
                self.store.reject(row, reason)
            else:
                done.append(row)
        if done:
            self.store.acked(done)
            self.counters["acked"] += len(done)

    def _send_loop(self) -> None:
        limit = self.settings.mqtt.max_inflight
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._take_acks()
                if self._connected.is_set():
                    if self._drain_first and self._inflight:
                        pass  # paho is re-sending the previous connection's messages
                    else:
                        self._drain_first = False
                        self._send_some(limit)
                self.state.set_outbox(self.store.outbox_size())
                if time.monotonic() >= self._next_prune:
                    # A full batch: more is due, come back soon; else once a minute.
                    full = self.prune() >= 5000
                    self._next_prune = time.monotonic() + (1.0 if full else 60.0)
            except Exception:  # the store or client failing must not end delivery
                log.exception("outbox sender error; retrying")
                time.sleep(0.5)

    def _send_some(self, limit: int) -> None:
        room = limit - len(self._inflight)
        if room <= 0:
            return
        for row in self.store.pending(self._last_id, room):
            info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                log.warning("publish of row %d failed: %s", row.id, mqtt.error_string(info.rc))
                return
            # NO_CONN: paho keeps the message queued and sends it on reconnect.
            self._inflight[info.mid] = row.id
            self._last_id = row.id
            self.counters["published"] += 1

    def _status_loop(self) -> None:
        while not self._stop.wait(self.settings.mqtt.status_interval_seconds):
            if self.connected:
                self.client.publish(
                    self.topic_status, self._status("online").to_json(), qos=1, retain=True
                )


def _plain_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def status_payload(
    settings: EdgeSettings,
    state: GatewayState,
    *,
    failed_threads: Callable[[], list[str]] | None = None,
    **extra: Any,
) -> Callable[[str], Status]:
    """A Status factory over the gateway's state (used for online, offline and the will).

    `failed_threads`: the names of the threads the supervisor gave up (asked at every
    status; the counters `thread_restarts`/`threads_failed` come from the state)."""
    from contracts.messages import BedSummary, ModelRef

    def build(which: str) -> Status:
        snap = state.snapshot()
        model = (
            ModelRef(name=snap.model_name, version=snap.model_version) if snap.model_name else None
        )
        return Status(
            gw=settings.gateway_id,
            state=which,  # type: ignore[arg-type]
            model=model,
            channel=settings.channel,
            beds=[BedSummary(bed=b.bed, stay=b.stay or "-", link=b.link) for b in snap.beds],  # type: ignore[arg-type]
            outbox=snap.outbox,
            storage=snap.storage,  # type: ignore[arg-type]
            storage_kept=snap.counters.get("storage_kept_now", 0),
            storage_dropped=snap.counters.get("storage_dropped", 0),
            thread_restarts=snap.counters.get("thread_restarts", 0),
            threads_failed=snap.counters.get("threads_failed", 0),
            failed_threads=_failed(failed_threads),
            **extra,
        )

    return build


def _failed(names: Callable[[], list[str]] | None) -> list[str]:
    """The failed threads' names, bounded as the contract says (never raises: a status
    must go out whatever the supervisor's state)."""
    if names is None:
        return []
    try:
        return [clean_text(str(n), 64) for n in names()][:16]
    except Exception:  # noqa: BLE001 - the status goes out anyway
        log.exception("failed thread names unavailable")
        return []
