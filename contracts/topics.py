"""MQTT topic names (docs/ARCHITECTURE.md "MQTT topics"). Build and parse them only here."""

from __future__ import annotations

import re

PREFIX = "vigil/v1"
# One id class for topics and payloads (contracts/messages.py ID_PATTERN): a topic
# level that is not one (too long, a NUL, an override character) is no Vigil topic.
_ID_LEVEL = r"[A-Za-z0-9_.-]{1,64}"
_ID = re.compile(rf"^{_ID_LEVEL}\Z")  # \Z: "$" would take a trailing newline


def check_id(kind: str, value: str) -> str:
    """Gateway, bed and channel ids are path-safe tokens (no '/', '+', '#')."""
    if not _ID.match(value):
        raise ValueError(f"{kind} id {value!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return value


def status(gw: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/status"


def vitals(gw: str, bed: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/bed/{check_id('bed', bed)}/vitals"


def risk(gw: str, bed: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/bed/{check_id('bed', bed)}/risk"


def alarm(gw: str, bed: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/bed/{check_id('bed', bed)}/alarm"


def observation(gw: str, bed: str) -> str:
    """A nurse observation of a bed (`vigil.observation/1`)."""
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/bed/{check_id('bed', bed)}/observation"


def shadow(gw: str) -> str:
    """A gateway's shadow-evaluation summary (`vigil.shadow/1`)."""
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/shadow"


def model_state(gw: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/model"


def cmd(gw: str) -> str:
    return f"{PREFIX}/gw/{check_id('gateway', gw)}/cmd"


def models(channel: str) -> str:
    return f"{PREFIX}/models/{check_id('channel', channel)}"


def shadow_models(channel: str) -> str:
    """A channel's candidate bundle, run silently beside the active one (a release whose
    signed stamp says `mode: shadow`); retained like `models`, never activated."""
    return f"{models(channel)}/shadow"


# What the hub subscribes to (shared subscription: workers split the load).
HUB_SHARE_GROUP = "hub"
GATEWAY_FILTERS = (
    f"{PREFIX}/gw/+/status",
    f"{PREFIX}/gw/+/model",
    f"{PREFIX}/gw/+/shadow",
    f"{PREFIX}/gw/+/bed/+/vitals",
    f"{PREFIX}/gw/+/bed/+/risk",
    f"{PREFIX}/gw/+/bed/+/alarm",
    f"{PREFIX}/gw/+/bed/+/observation",
)


# Model releases, read by the hub too (plain subscription: retained messages are not
# sent on shared subscriptions), so the fleet view knows each channel's target.
MODELS_FILTER = f"{PREFIX}/models/+"
_MODELS_TOPIC = re.compile(rf"^{re.escape(PREFIX)}/models/(?P<channel>{_ID_LEVEL})\Z")


def parse_models(topic: str) -> str | None:
    """The channel of a model release topic, None for anything else."""
    m = _MODELS_TOPIC.match(topic)
    return m["channel"] if m else None


def shared(filter_: str, group: str = HUB_SHARE_GROUP) -> str:
    return f"$share/{group}/{filter_}"


_GW_TOPIC = re.compile(
    rf"^{re.escape(PREFIX)}/gw/(?P<gw>{_ID_LEVEL})/(?:(?P<kind>status|model|shadow|cmd)"
    rf"|bed/(?P<bed>{_ID_LEVEL})/(?P<bkind>vitals|risk|alarm|observation))\Z"
)


def parse(topic: str) -> dict[str, str | None] | None:
    """{'gw', 'bed', 'kind'} for a gateway topic, None for anything else."""
    m = _GW_TOPIC.match(topic)
    if not m:
        return None
    return {"gw": m["gw"], "bed": m["bed"], "kind": m["kind"] or m["bkind"]}
