"""Model updates on the gateway: receive a signed bundle, prove it, switch to it atomically.

`ModelUpdater` is what the gateway's MQTT hooks call:

    updater = ModelUpdater(bundle_root, trusted_keys, gw="ward-3",
                           publish_state=lambda st: publisher.publish(
                               topics.model_state(st.gw), st.to_json(), retain=True),
                           on_activate=lambda loaded: scorer.use(loaded.model, loaded.manifest))
    loaded = updater.boot()               # at start: a whole, verified bundle, always
    updater.handle_release(release)       # a ModelRelease from vigil/v1/models/{channel}
    updater.handle_command(command)       # join_channel: remembered; returns the new channel

A release goes through, in order (the first failure refuses it with that reason and
the running model stays): base64 decoding, the Ed25519 signature against the trusted
keys (`unknown_key`, `bad_signature`), the manifest schema, size and sha256
(`wrong_size`, `wrong_hash`), the hub's release stamp (`unreleased`; `replayed` when
its sequence number is not above the highest this gateway has accepted: an old
release sent again), an older model version without a rollback stamp
(`older_version`), compatibility with what this gateway feeds its model
(`incompatible`: feature names and order, static features, step length, window
steps), then the bundle is written to `staging/`, re-read from disk and verified
again, loaded into a LiteRT interpreter (`model_load`), its tensors checked against
the manifest (`io_mismatch`) and its golden windows run within their tolerance
(`golden_mismatch`). Only then is the staged folder renamed into a slot and the
`active` pointer swapped; `on_activate` receives the interpreter already built, so
scoring goes on with the old model until the reference is swapped and never waits.

Each step is reported as a `ModelState` (received, verified, active or rolled_back,
refused + reason) through `publish_state`, meant for the retained topic
`vigil/v1/gw/{gw}/model`.

`boot()` (power loss at any instant): verify `active`; if it is broken or missing,
fall back to `previous`, then to the shipped default bundle (`models/default/`).

The release stamp is a signed `release` object in the manifest, written by the hub's
rollout (cloud_hub/rollout/release.py): `{"seq": int, "issued_at": str, "rollback": bool}`.
`seq` grows with every publication (milliseconds since the epoch), so a rollback to
an older model is a NEW release and is accepted, while a captured old message
replayed later is not. `seq` (as milliseconds) and `issued_at` must not be beyond
this gateway's clock plus `RELEASE_FUTURE_MARGIN_SECONDS` (`from_the_future`): a
signed release stamped by a hub whose clock is far ahead, or with an absurd `seq`,
would otherwise refuse every later release as `replayed`. A gateway that accepted
such a release before this check finds its highest accepted `seq` beyond the
ceiling and lowers it to its own clock (`seq_reset`, logged and counted), so the
next release the hub stamps is accepted while older ones are still replays.

Nothing a release or a bundle file holds escapes as an exception: `handle_release`
refuses anything unexpected as `internal` (logged with its traceback, counted), and
`boot` falls back from `active` to `previous` to the default whatever their files hold.

Shadow candidates (issue 13, edge_agent/shadow.py): a release whose signed stamp says
`"mode": "shadow"` is never activated here (`handle_release` ignores it: its claim is
signed, so a shadow release sent on the active topic cannot become active, and one
without the claim fails the signature if the claim was removed). `prove_shadow` puts
it through the same checks as an active bundle (base64, signature, manifest, size and
hash, release stamp, not from the future, not a replay of the last shadow seq,
compatible inputs, staged, re-read and verified from disk, LiteRT, golden windows),
then keeps it in its own slot behind the `shadow` pointer (`boot_shadow` reloads it
after a restart, `drop_shadow` removes it).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts.bundle import (
    MAX_MODEL_BYTES,
    MODEL,
    RELEASE_FUTURE_MARGIN_SECONDS,
    BundleError,
    Manifest,
    canonical_bytes,
    load_trusted_keys,
    read_bundle,
    verify_parts,
)
from contracts.messages import Command, ModelRef, ModelRelease, ModelState
from contracts.paths import default_bundle_dir
from contracts.timeutil import parse_iso_utc, utc_now
from contracts.topics import check_id
from model_runtime.litert import LiteRTError, RiskModel
from model_runtime.verify import check_model

from .bundle_store import ACTIVE, PREVIOUS, SHADOW, BundleStore

log = logging.getLogger(__name__)

RELEASE_KEY = "release"  # the hub's signed stamp inside the manifest (see module doc)
__all__ = ["MAX_MODEL_BYTES", "LoadedBundle", "ModelUpdater", "Requirements", "load_verified"]


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle with its interpreter built: what scoring uses."""

    folder: Path
    manifest: Manifest
    model: RiskModel
    key_id: str
    seq: int  # release sequence number (0: no stamp, e.g. the shipped default)
    source: str  # "active", "previous", "default", or "release"

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.manifest.name, version=self.manifest.version)


@dataclass(frozen=True)
class Requirements:
    """What this gateway feeds a model; a new bundle must expect exactly that."""

    features: tuple[str, ...]
    static_features: tuple[str, ...]
    step_seconds: int
    steps: int | None = None  # None: any window length up to `max_steps`
    max_steps: int = 168

    @classmethod
    def of(cls, manifest: Manifest) -> Requirements:
        """The running model's inputs (the gateway's sources were set up for them)."""
        p = manifest.preprocessing
        return cls(
            features=tuple(p.feature_names),
            static_features=tuple(p.static_names),
            step_seconds=p.window.step_seconds,
            steps=p.window.steps,
        )

    def check(self, manifest: Manifest) -> None:
        p = manifest.preprocessing
        problems = []
        if tuple(p.feature_names) != self.features:
            problems.append(f"features {p.feature_names} != gateway's {list(self.features)}")
        if tuple(p.static_names) != self.static_features:
            problems.append(
                f"static features {p.static_names} != gateway's {list(self.static_features)}"
            )
        if p.window.step_seconds != self.step_seconds:
            problems.append(f"step {p.window.step_seconds} s != gateway's {self.step_seconds} s")
        if self.steps is not None and p.window.steps != self.steps:
            problems.append(f"window {p.window.steps} steps != gateway's {self.steps}")
        elif p.window.steps > self.max_steps:
            problems.append(f"window {p.window.steps} steps > gateway's buffer {self.max_steps}")
        if problems:
            raise BundleError("incompatible", "; ".join(problems))


def release_seq(manifest: dict[str, Any]) -> int:
    """The release stamp's sequence number, 0 when there is none or it is malformed."""
    stamp = manifest.get(RELEASE_KEY)
    if isinstance(stamp, dict):
        seq = stamp.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
            return seq
    return 0


def release_mode(manifest: dict[str, Any]) -> str:
    """'shadow' when the release stamp marks a candidate to run silently, else 'active'."""
    stamp = manifest.get(RELEASE_KEY)
    return "shadow" if isinstance(stamp, dict) and stamp.get("mode") == "shadow" else "active"


def _state_seq(state: dict[str, Any]) -> int:
    seq = state.get("highest_seq", 0)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _text(value: object, limit: int) -> str:
    """A manifest field for a report: strings as sent (cut), anything else as '?'."""
    return value[:limit] if isinstance(value, str) else "?"


def is_rollback(manifest: dict[str, Any]) -> bool:
    stamp = manifest.get(RELEASE_KEY)
    return isinstance(stamp, dict) and stamp.get("rollback") is True


def version_key(version: str) -> tuple[int, ...] | None:
    """'12' -> (12,), '1.4.2' -> (1, 4, 2); None when not numeric (not compared)."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return None


def release_digest(release: ModelRelease) -> str:
    """Identity of a release message's content (manifest, signature, model), not its envelope."""
    h = hashlib.sha256()
    for part in (release.manifest, release.signature):
        try:
            h.update(canonical_bytes(part))
        except (RecursionError, ValueError, TypeError):  # refused later by verify_parts
            h.update(b"\0unserialisable\0")
    h.update(release.model_b64.encode())
    return h.hexdigest()


def _key_id(signature: dict[str, str]) -> str:
    return str(signature.get("key_id", ""))


def load_verified(folder: Path, trusted: dict[str, Ed25519PublicKey], source: str) -> LoadedBundle:
    """Every check of a bundle on disk, and its interpreter; raises BundleError(reason)."""
    manifest_raw, signature, model_bytes = read_bundle(folder)
    manifest = verify_parts(manifest_raw, signature, model_bytes, trusted)
    model = _interpreter(model_bytes, manifest, folder)
    try:
        check_model(manifest, model)
    except BundleError:
        raise
    except Exception as e:  # an interpreter failing on the golden windows: not this model
        raise BundleError("model_load", f"golden windows cannot run: {type(e).__name__}") from None
    return LoadedBundle(
        folder, manifest, model, _key_id(signature), release_seq(manifest_raw), source
    )


def _interpreter(model_bytes: bytes, manifest: Manifest, folder: Path) -> RiskModel:
    try:
        return RiskModel(model_bytes, manifest=manifest, folder=folder)
    except (LiteRTError, ValueError, RuntimeError) as e:
        raise BundleError("model_load", f"LiteRT cannot load {MODEL}: {e}") from None
    except Exception as e:  # whatever else a hostile flatbuffer makes LiteRT raise
        raise BundleError("model_load", f"LiteRT cannot load {MODEL}: {type(e).__name__}") from None


class ModelUpdater:
    """Receives releases and keeps a whole, verified bundle active (see module doc)."""

    def __init__(
        self,
        bundle_root: Path | str,
        trusted_keys: dict[str, Ed25519PublicKey] | Iterable[Path | str],
        *,
        gw: str,
        publish_state: Callable[[ModelState], None] | None = None,
        on_activate: Callable[[LoadedBundle], None] | None = None,
        default_bundle: Path | None = None,
        requirements: Requirements | None = None,
        channel: str = "stable",
        clock: Callable[[], datetime] = utc_now,
        future_margin_seconds: float = RELEASE_FUTURE_MARGIN_SECONDS,
    ) -> None:
        self.clock = clock
        # How far ahead of this gateway's clock a release stamp may be (the gateway's
        # `max_message_ahead_seconds`; a release from further ahead is `from_the_future`).
        self.future_margin = float(future_margin_seconds)
        self.store = BundleStore(bundle_root)
        self.trusted = (
            dict(trusted_keys)
            if isinstance(trusted_keys, dict)
            else load_trusted_keys([Path(p) for p in trusted_keys])
        )
        if not self.trusted:
            raise ValueError("no trusted keys: the gateway could never accept a bundle")
        self.gw = check_id("gateway", gw)
        self.publish_state = publish_state
        self.on_activate = on_activate
        self.default_bundle = Path(default_bundle or default_bundle_dir())
        self._fixed_requirements = requirements
        self._lock = threading.RLock()
        self._current: LoadedBundle | None = None
        state = self.store.read_state()
        channel_state = state.get("channel")
        self.channel = (
            channel_state if isinstance(channel_state, str) and channel_state else channel
        )
        self.counters = {
            "received": 0,
            "activated": 0,
            "refused": 0,
            "ignored": 0,
            "from_the_future": 0,
            "seq_reset": 0,
            "errors": 0,
        }

    # --- queries --------------------------------------------------------------------
    def current(self) -> LoadedBundle | None:
        return self._current

    @property
    def requirements(self) -> Requirements | None:
        if self._fixed_requirements is not None:
            return self._fixed_requirements
        cur = self._current
        return Requirements.of(cur.manifest) if cur is not None else None

    def highest_seq(self) -> int:
        state = self.store.read_state()
        cur = self._current
        return max(_state_seq(state), cur.seq if cur else 0)

    def seq_ceiling(self) -> int:
        """The highest release `seq` (ms since the epoch) this gateway's clock accepts."""
        return _ms(self.clock()) + int(self.future_margin * 1000)

    def _sane_highest(self, state: dict[str, Any]) -> int:
        """The highest accepted `seq`; one beyond the ceiling (a release accepted before
        `from_the_future` existed, or a clock far ahead) is lowered to this gateway's
        clock, durably, so later releases are accepted and older ones are still replays."""
        cur = self._current
        highest = max(_state_seq(state), cur.seq if cur else 0)
        if highest <= self.seq_ceiling():
            return highest
        now = _ms(self.clock())
        self.counters["seq_reset"] += 1
        log.error(
            "highest accepted release seq %d is beyond this gateway's clock + %d s: "
            "lowered to %d (recovery from a release from the future)",
            highest,
            self.future_margin,
            now,
        )
        state["highest_seq"] = now
        state["seq_reset_from"] = highest
        self.store.write_state(state)
        if cur is not None and cur.seq > now:
            self._current = dataclasses.replace(cur, seq=now)
        return now

    # --- boot -----------------------------------------------------------------------
    def boot(self) -> LoadedBundle:
        """A verified bundle to score with: active, else previous, else the shipped default.

        Raises BundleError only when none of the three verifies (the gateway must then
        not score, and says so).
        """
        with self._lock:
            problems: list[str] = []
            loaded: LoadedBundle | None = None
            for name in (ACTIVE, PREVIOUS):
                folder = self.store.pointer(name)
                if folder is None:
                    if name == ACTIVE and (self.store.root / ACTIVE).is_symlink():
                        problems.append("active: points at a missing folder")
                    continue
                try:
                    loaded = load_verified(folder, self.trusted, name)
                    break
                except BundleError as e:
                    problems.append(f"{name}: {e}")
                    log.error("bundle %s (%s) does not verify: %s", name, folder.name, e)
                except Exception as e:  # a reader bug must not stop the gateway booting
                    self.counters["errors"] += 1
                    problems.append(f"{name}: internal: {type(e).__name__}")
                    log.exception("bundle %s (%s) could not be checked", name, folder.name)
            if loaded is None:
                try:
                    loaded = load_verified(self.default_bundle, self.trusted, "default")
                except Exception as e:
                    why = str(e) if isinstance(e, BundleError) else f"internal: {type(e).__name__}"
                    problems.append(f"default: {why}")
                    raise BundleError(
                        "no_bundle", "no verified bundle to run: " + "; ".join(problems)
                    ) from None
            if loaded.source == PREVIOUS:
                self.store.set_pointer(ACTIVE, loaded.folder)
                self.store.set_pointer(PREVIOUS, None)
            elif loaded.source == "default" and (self.store.root / ACTIVE).is_symlink():
                self.store.set_pointer(ACTIVE, None)
            self.store.gc()
            self._current = loaded
            state = self.store.read_state()
            self._sane_highest(state)  # may lower a seq from the future (module doc)
            loaded = self._current
            if loaded.seq > _state_seq(state):
                state["highest_seq"] = loaded.seq
                self.store.write_state(state)
            if self.on_activate is not None:
                self.on_activate(loaded)
            if problems:
                self._report(
                    "rolled_back",
                    loaded.manifest.name,
                    loaded.manifest.version,
                    reason="boot: " + "; ".join(problems),
                )
            log.info(
                "booted %s %s from %s (key %s)",
                loaded.manifest.name,
                loaded.manifest.version,
                loaded.source,
                loaded.key_id,
            )
            return loaded

    # --- commands ---------------------------------------------------------------------
    def handle_command(self, command: Command) -> str | None:
        """join_channel: remember the channel (survives restarts); returns it, else None.

        The caller (the gateway's MQTT client) subscribes to the new channel's topic
        and republishes its status.
        """
        if command.command != "join_channel" or not command.channel:
            return None
        channel = check_id("channel", command.channel)
        with self._lock:
            state = self.store.read_state()
            state["channel"] = channel
            self.store.write_state(state)
            self.channel = channel
        log.info("joined model channel %s", channel)
        return channel

    # --- releases ---------------------------------------------------------------------
    def handle_release(self, release: ModelRelease) -> ModelState | None:
        """Process one release; returns the final state reported (None: ignored).

        Never raises for what the release holds: an unexpected error refuses it as
        `internal` (traceback logged, `errors` counted); the running model stays."""
        with self._lock:
            try:
                return self._handle(release)
            except Exception as e:
                self.counters["errors"] += 1
                log.exception("release could not be processed")
                return self._report(
                    "refused",
                    "?",
                    "?",
                    channel=release.channel,
                    reason=f"internal: {type(e).__name__}",
                )

    def _handle(self, release: ModelRelease) -> ModelState | None:
        raw = release.manifest
        if release_mode(raw) == "shadow":  # a candidate for edge_agent/shadow.py, never here
            self.counters["ignored"] += 1
            return None
        name = _text(raw.get("name"), 128)
        version = _text(raw.get("version"), 64)
        seq = release_seq(raw)
        sha = _text(raw.get("sha256"), 64)
        cur = self._current
        state = self.store.read_state()
        # A retained release comes again on every reconnect: the active one, or the
        # one refused last time, is not processed (nor reported) twice.
        if cur is not None and seq and seq == cur.seq and sha == cur.manifest.sha256:
            self.counters["ignored"] += 1
            return None
        digest = release_digest(release)
        if state.get("last_refused") == digest:
            self.counters["ignored"] += 1
            return None
        self.counters["received"] += 1
        self._report("received", name, version, channel=release.channel)
        try:
            loaded, staged = self._prove(release, cur, state)
        except BundleError as e:
            return self._refuse(name, version, release.channel, digest, e)
        except OSError as e:  # disk full, read-only file system: nothing was switched
            self.store.gc()
            return self._refuse(
                name, version, release.channel, digest, BundleError("storage", str(e))
            )
        if loaded is None:  # the same model, stamped again (e.g. stable after canary)
            state["highest_seq"] = max(seq, _state_seq(state))
            self.store.write_state(state)
            assert cur is not None
            self._current = LoadedBundle(
                cur.folder, cur.manifest, cur.model, cur.key_id, seq, cur.source
            )
            return self._report(
                "active",
                name,
                version,
                channel=release.channel,
                reason="already running this model",
            )
        self._report("verified", name, version, channel=release.channel)
        slot = self.store.commit(staged, f"{seq:013d}-{loaded.manifest.sha256[:12]}")
        loaded.model.folder = slot  # the interpreter was built from these very bytes
        loaded = LoadedBundle(slot, loaded.manifest, loaded.model, loaded.key_id, seq, "release")
        # The swap: pointer first (durable), then the in-memory reference. The
        # interpreter already exists, so scoring never waits for a load.
        self.store.activate(slot)
        state["highest_seq"] = max(seq, _state_seq(state))
        state.pop("last_refused", None)
        self.store.write_state(state)
        self._current = loaded
        if self.on_activate is not None:
            self.on_activate(loaded)
        self.store.gc()
        self.counters["activated"] += 1
        log.info("activated %s %s (release %d, key %s)", name, version, seq, loaded.key_id)
        return self._report(
            "rolled_back" if is_rollback(raw) else "active",
            name,
            version,
            channel=release.channel,
            reason="rollback release from the hub" if is_rollback(raw) else "",
        )

    def _prove(
        self, release: ModelRelease, cur: LoadedBundle | None, state: dict[str, Any]
    ) -> tuple[LoadedBundle | None, Path]:
        """All checks; returns (loaded bundle, staged folder) or (None, _) for a re-stamp."""
        try:
            model_bytes = base64.b64decode(release.model_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BundleError("bad_encoding", f"model_b64 is not base64: {e}") from None
        if len(model_bytes) > MAX_MODEL_BYTES:
            raise BundleError("too_large", f"model is {len(model_bytes)} bytes > {MAX_MODEL_BYTES}")
        manifest = verify_parts(release.manifest, release.signature, model_bytes, self.trusted)
        seq = release_seq(release.manifest)
        if seq == 0:
            raise BundleError(
                "unreleased", "manifest carries no signed release stamp (release.seq)"
            )
        self._check_not_future(release.manifest, seq)
        highest = self._sane_highest(state)
        cur = self._current  # its seq may have been lowered just now
        if seq <= highest:
            raise BundleError(
                "replayed",
                f"release {seq} is not newer than release {highest} already accepted",
            )
        if (
            cur is not None
            and manifest.sha256 == cur.manifest.sha256
            and (
                manifest.name,
                manifest.version,
            )
            == (cur.manifest.name, cur.manifest.version)
        ):
            return None, Path()
        if (
            cur is not None
            and not is_rollback(release.manifest)
            and manifest.name == cur.manifest.name
        ):
            new, old = version_key(manifest.version), version_key(cur.manifest.version)
            if new is not None and old is not None and new < old:
                raise BundleError(
                    "older_version",
                    f"version {manifest.version} is older than running {cur.manifest.version} "
                    "and the release is not a rollback",
                )
        req = self.requirements
        if req is not None:
            req.check(manifest)
        staged = self.store.stage(release.manifest, release.signature, model_bytes)
        try:
            # Re-read from disk: what is proven is what a reboot would load.
            loaded = load_verified(staged, self.trusted, "release")
        except BundleError:
            self.store.gc()
            raise
        return loaded, staged

    # --- shadow candidates (module doc) -------------------------------------------------
    def prove_shadow(self, release: ModelRelease) -> LoadedBundle | None:
        """Every check of an active bundle, then keep it behind the `shadow` pointer.

        Returns the loaded candidate, or None when it is the shadow already running (a
        retained release delivered again). Raises BundleError(reason) when refused."""
        with self._lock:
            raw = release.manifest
            if release_mode(raw) != "shadow":
                raise BundleError("not_shadow", "release stamp does not say mode shadow")
            try:
                model_bytes = base64.b64decode(release.model_b64, validate=True)
            except (binascii.Error, ValueError) as e:
                raise BundleError("bad_encoding", f"model_b64 is not base64: {e}") from None
            if len(model_bytes) > MAX_MODEL_BYTES:
                raise BundleError(
                    "too_large", f"model is {len(model_bytes)} bytes > {MAX_MODEL_BYTES}"
                )
            manifest = verify_parts(raw, release.signature, model_bytes, self.trusted)
            seq = release_seq(raw)
            if seq == 0:
                raise BundleError(
                    "unreleased", "manifest carries no signed release stamp (release.seq)"
                )
            self._check_not_future(raw, seq)
            state = self.store.read_state()
            last = state.get("shadow_seq", 0)
            last = last if isinstance(last, int) and not isinstance(last, bool) else 0
            current = self.store.pointer(SHADOW)
            if seq == last and current is not None:
                return None
            if seq < last:
                raise BundleError(
                    "replayed", f"shadow release {seq} is older than shadow release {last}"
                )
            req = self.requirements
            if req is not None:
                req.check(manifest)
            staged = self.store.stage(raw, release.signature, model_bytes)
            try:
                loaded = load_verified(staged, self.trusted, "shadow")
            except BundleError:
                self.store.gc()
                raise
            slot = self.store.commit(staged, f"shadow-{seq:013d}-{manifest.sha256[:12]}")
            loaded.model.folder = slot
            self.store.set_pointer(SHADOW, slot)
            state = self.store.read_state()
            state["shadow_seq"] = seq
            self.store.write_state(state)
            self.store.gc()
            log.info(
                "shadow candidate %s %s kept (release %d)", manifest.name, manifest.version, seq
            )
            return LoadedBundle(slot, loaded.manifest, loaded.model, loaded.key_id, seq, "shadow")

    def boot_shadow(self) -> LoadedBundle | None:
        """The kept shadow candidate, verified again; None (pointer removed) when it
        is absent, no longer verifies or no longer fits this gateway's inputs."""
        with self._lock:
            folder = self.store.pointer(SHADOW)
            if folder is None:
                return None
            try:
                loaded = load_verified(folder, self.trusted, "shadow")
                req = self.requirements
                if req is not None:
                    req.check(loaded.manifest)
            except BundleError as e:
                log.error("shadow bundle %s does not verify: %s", folder.name, e)
                self.drop_shadow()
                raise
            return loaded

    def drop_shadow(self) -> None:
        """Remove the shadow candidate from disk (the active bundle is not touched)."""
        with self._lock:
            self.store.set_pointer(SHADOW, None)
            self.store.gc()

    def _check_not_future(self, manifest: dict[str, Any], seq: int) -> None:
        """`from_the_future`: the stamp's seq or issued_at beyond the clock + the margin."""
        ceiling = self.seq_ceiling()
        if seq > ceiling:
            self.counters["from_the_future"] += 1
            raise BundleError(
                "from_the_future",
                f"release seq {seq} is beyond this gateway's clock + "
                f"{self.future_margin:g} s ({ceiling}): check the hub's clock",
            )
        stamp = manifest.get(RELEASE_KEY)
        issued = stamp.get("issued_at") if isinstance(stamp, dict) else None
        if isinstance(issued, str):
            try:
                at = parse_iso_utc(issued[:64])
            except (ValueError, OverflowError):
                raise BundleError("unreleased", "release.issued_at is not a timestamp") from None
            if at > self.clock() + timedelta(seconds=self.future_margin):
                self.counters["from_the_future"] += 1
                raise BundleError(
                    "from_the_future",
                    f"release issued_at {at:%Y-%m-%dT%H:%M:%SZ} is beyond this gateway's clock "
                    f"+ {self.future_margin:g} s: check the hub's clock",
                )

    def _refuse(
        self, name: str, version: str, channel: str, digest: str, e: BundleError
    ) -> ModelState:
        self.counters["refused"] += 1
        log.warning("refused %s %s: %s", name, version, e)
        state = self.store.read_state()
        state["last_refused"] = digest
        self.store.write_state(state)
        return self._report("refused", name, version, channel=channel, reason=str(e)[:500])

    def _report(
        self, state: str, name: str, version: str, *, channel: str | None = None, reason: str = ""
    ) -> ModelState:
        cur = self._current
        msg = ModelState(
            gw=self.gw,
            state=state,  # type: ignore[arg-type]
            name=name,
            version=version,
            channel=channel or self.channel,
            reason=reason,
            active=cur.ref if cur is not None else None,
        )
        if self.publish_state is not None:
            try:
                self.publish_state(msg)
            except Exception:  # reporting must never undo or block an activation
                log.exception("could not publish model state %s", state)
        return msg
