"""Wire a `ModelUpdater` into the running gateway (edge_agent/gateway.py), from outside.

`attach_updater(gateway)` uses only the gateway's public extension points:

- `gateway.release_hooks`: each `ModelRelease` is queued to one worker thread, so
  verification and LiteRT loading never hold up the MQTT network loop;
- `gateway.publisher.on_command`: chained; `join_channel` is remembered by the
  updater, the publisher unsubscribes from the old channel's topic, subscribes to
  the new one and republishes its status (the status carries the channel);
- on activation the `RiskModel` built while verifying (before the swap) is handed to
  `gateway.activate_model` (the switch: under every bed lock, the model, the beds'
  window spec and alarm thresholds change together between two steps, and the
  gateway state, which the nurse terminal shows, gets the new name and version), so
  scoring never waits for a load and no step mixes two models;
- model states go out retained on `vigil/v1/gw/{gw}/model` through the outbox.

Bundles live in `<store folder>/bundles` unless `bundle_root` is given; the shipped
default is the first of `settings.bundle_dirs`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from contracts import topics
from contracts.bundle import BundleError
from contracts.messages import Command, ModelRelease, ModelState

from .model_update import LoadedBundle, ModelUpdater

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger(__name__)


def attach_updater(gateway: Gateway, bundle_root: Path | None = None) -> ModelUpdater | None:
    """Create the updater, boot it (the active bundle replaces the one loaded at start),
    and hook it into the gateway's releases and commands. Call before `gateway.start()`.

    Returns None (and logs why) when no trusted key is configured."""
    s = gateway.settings
    root = bundle_root or Path(s.store_path).parent / "bundles"
    pub = gateway.publisher

    def publish_state(st: ModelState) -> None:
        pub.publish(topics.model_state(s.gateway_id), st.to_json(), retain=True)
        text = f"model {st.name} {st.version}: {st.state}" + (
            f" ({st.reason})" if st.reason else ""
        )
        gateway.state.event("model", text)

    def on_activate(loaded: LoadedBundle) -> None:
        model = loaded.model  # built and proven while verifying, before the swap
        activate = getattr(gateway, "activate_model", None)
        if activate is not None:
            # The gateway's own switch: under every bed lock, model + windows' spec +
            # alarm thresholds together, between two steps.
            activate(model)
            return
        gateway.model = model
        for bed in gateway.beds.values():
            bed.alarm.params = dataclasses.replace(bed.alarm.params, threshold=model.threshold)
        gateway.state.set_model(model.name, model.version)

    try:
        updater = ModelUpdater(
            root,
            [p for p in s.trusted_keys if Path(p).exists()],
            gw=s.gateway_id,
            publish_state=publish_state,
            on_activate=on_activate,
            default_bundle=Path(s.bundle_dirs[0]) if s.bundle_dirs else None,
            channel=s.channel,
            clock=gateway.clock,
            future_margin_seconds=s.max_message_ahead_seconds,
        )
    except (ValueError, OSError) as e:  # no trusted keys: no bundle could ever be accepted
        log.error("model updates disabled: %s", e)
        gateway.state.event("model", f"model updates disabled: {e}")
        return None

    def mirror() -> None:  # the updater's counters in the status: model_refused, ...
        for k, v in updater.counters.items():
            gateway.state.set_counter(f"model_{k}", v)

    if updater.channel != s.channel:  # joined another channel before a restart
        _switch(gateway, s.channel, updater.channel)
    try:
        updater.boot()
    except BundleError as e:
        # Nothing verifies: the gateway keeps what it started with (NEWS2 only when
        # that is no model) and a good release can still install one.
        log.error("no verified bundle at boot: %s", e)
        gateway.state.event("model", f"no verified bundle: {e.reason}")
    except Exception as e:  # whatever the bundle files hold, the gateway runs
        log.exception("model bundle boot failed")
        gateway.state.event("model", f"no verified bundle: internal: {type(e).__name__}")
    mirror()

    jobs: queue.Queue[ModelRelease | None] = queue.Queue(maxsize=8)

    def work() -> None:
        stop = getattr(gateway, "_stop", None)
        while stop is None or not stop.is_set():  # ends with the gateway (gateway.stop)
            try:
                release = jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if release is None:
                return
            if release.channel != updater.channel:
                log.warning(
                    "release for channel %s ignored (on %s)",
                    release.channel[:64],
                    updater.channel,
                )
                continue
            try:
                updater.handle_release(release)
            except Exception:  # never let one release end model updates for good
                log.exception("model update failed")
            mirror()

    spawn = getattr(getattr(gateway, "supervisor", None), "spawn", None)
    if spawn is not None:  # restarted (and reported) if it dies anyway
        spawn("vigil-model-update", work)
    else:
        threading.Thread(target=work, name="vigil-model-update", daemon=True).start()

    def on_release(release: ModelRelease) -> None:
        try:
            jobs.put_nowait(release)
        except queue.Full:  # a flood of releases: the retained one comes back on reconnect
            log.warning("model update queue full: release %s dropped", release.event_id)
            gateway.state.count("model_releases_dropped")

    gateway.release_hooks.append(on_release)
    previous = pub.on_command

    def on_command(cmd: Command) -> None:
        if previous is not None:
            try:
                previous(cmd)
            except Exception as e:  # its failure must not stop join_channel
                log.error("command %s failed: %s", cmd.command, type(e).__name__, exc_info=True)
                gateway.state.count("commands_refused")
        old = updater.channel
        try:
            new = updater.handle_command(cmd)
        except ValueError as e:
            log.warning("command %s refused: %s", cmd.command, e)
            gateway.state.count("commands_refused")
            return
        except Exception as e:  # e.g. the bundle folder unwritable: refused, counted
            log.error("command %s failed: %s", cmd.command, type(e).__name__, exc_info=True)
            gateway.state.count("commands_refused")
            return
        if new and new != old:
            _switch(gateway, old, new)

    pub.on_command = on_command
    gateway.updater = updater  # type: ignore[attr-defined]
    return updater


def _switch(gateway: Gateway, old: str, new: str) -> None:
    pub = gateway.publisher
    pub.topic_models = topics.models(new)
    gateway.settings.channel = new  # the status payload reports it
    if pub.connected:
        pub.client.unsubscribe(topics.models(old))
        pub.client.subscribe(pub.topic_models, 1)
        st = pub._status("online")
        pub.client.publish(pub.topic_status, st.to_json(), qos=1, retain=True)
    gateway.state.event("model", f"joined model channel {new}")
