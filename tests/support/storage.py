"""The failing-disk rig shared by tests/test_hardening_storage.py and
tests/test_hardening_more.py: two septic beds' monitor frames, a 2 MiB tmpfs of the
test's own (`tmpfs_disk`), the healthy-disk reference run (`healthy_run`) and the order spy that
proves scoring comes before storing (`Gateway._on_step`)."""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.messages import Alarm, Status, parse_message
from edge_agent.gateway import Gateway
from firmware_sim.monitor import Monitor
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings

GW = "gw-disk"
BEDS = ("bed-1", "bed-2")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
CYCLES = 800  # a reading every 2 simulated minutes: ~26 h, ~26 steps per bed


class _Null:
    """A monitor transport that only hands the frames back (the test feeds them)."""

    address = "memory"

    def write(self, data: bytes) -> bool:
        return True

    def close(self) -> None:
        pass


def septic_frames(n: int = CYCLES) -> dict[str, list[bytes]]:
    """Two septic beds (generated scenario, fixed seeds): their monitors' MLLP frames."""
    out = {}
    for seed, bed in enumerate(BEDS, start=1):
        m = Monitor.generated(
            bed, _Null(), "sepsis", seed=seed, speed=3600, interval=120, max_rate=1e9,
            clock_start=T0,
        )  # fmt: skip
        out[bed] = [f for f in (m.cycle(i) for i in range(n)) if f]
    return out


class Disk:
    """A small tmpfs of its own: `fill()` takes every free byte, `free()` gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f:
            for size in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def tmpfs_disk(tmp_path: Path) -> Iterator[Disk]:
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in this sandbox: {r.stderr.strip()}")
    try:
        yield Disk(d)
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def order_spy(gw: Gateway) -> list[tuple[str, int, int]]:
    """Record, at every step the gateway writes to its store, (bed, steps written so
    far, risks already shown for that bed): scoring first means shown >= written."""
    shown: Counter[str] = Counter()
    written: Counter[str] = Counter()
    seen: list[tuple[str, int, int]] = []
    gw.state.subscribe(lambda c: shown.update([c.bed]) if c.kind == "risk" else None)
    add_step = gw.store.add_step

    def spy(row: dict) -> bool:
        written[row["bed"]] += 1
        seen.append((row["bed"], written[row["bed"]], shown[row["bed"]]))
        return add_step(row)

    gw.store.add_step = spy  # type: ignore[method-assign]
    return seen


def scored_before_stored(seen: list[tuple[str, int, int]]) -> bool:
    return bool(seen) and all(shown >= n for _, n, shown in seen)


def feed(
    gw: Gateway, frames: dict[str, list[bytes]], start: int = 0, end: int | None = None
) -> None:
    n = len(next(iter(frames.values())))
    for i in range(start, n if end is None else end):
        for bed, fs in frames.items():
            gw.process_bytes(bed, fs[i])


def raised(gw: Gateway) -> Counter[tuple[str, str]]:
    """Alarm changes the nurse was shown, by (bed, action)."""
    return Counter(
        (e.bed, e.text.split(" ")[0]) for e in gw.state.snapshot().events if e.kind == "alarm"
    )


def statuses(sub: Subscriber) -> list[Status]:
    return [
        m
        for t, p, _ in list(sub.messages)
        if t.endswith("/status") and isinstance(m := parse_message(p), Status)
    ]


@pytest.fixture(scope="module")
def septic_beds() -> dict[str, list[bytes]]:
    return septic_frames()


@pytest.fixture(scope="module")
def healthy_run(
    septic_beds: dict[str, list[bytes]], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """The reference: the same beds on a healthy disk (no broker needed)."""
    tmp = tmp_path_factory.mktemp("healthy")
    gw = Gateway(edge_settings(tmp, port=1, gateway_id=GW, beds=BEDS))
    try:
        seen = order_spy(gw)
        feed(gw, septic_beds)
        return {
            "scored_first": scored_before_stored(seen),
            "raised": raised(gw),
            "steps": len(gw.store.rows("steps")),
            "risk": len(gw.store.rows("risk")),
            "alarms": len(gw.store.rows("alarms")),
            "outbox": gw.store.outbox_size(),
        }
    finally:
        gw.store.close()


def alarms_on(sub: Subscriber, source: str | None = None) -> list[Alarm]:
    """The alarm messages on MQTT; with `source`, only the model's or NEWS2's."""
    return [
        m
        for t, p, _ in list(sub.messages)
        if "/alarm" in t
        and isinstance(m := parse_message(p), Alarm)
        and (source is None or m.source == source)
    ]
