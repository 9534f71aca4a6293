"""NEWS2 for one bed, as the ward uses it: total and RCP response band in its colour,
the SpO2 scale, every sub-score, and the nurse's entries NEWS2 uses (oxygen, ACVPU,
SpO2 scale) with their age and who entered them.

An entry never recorded is scored as air / alert and says "assumed"; an entry older
than the site's re-assess time says "RE-ASSESS" (reverse video) instead of being
silently reused. Colours come from the component classes (app.tcss).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from edge_agent.ui.view import BedView, ObservationView, format_age

# Sub-score keys of contracts.news2, in the order of the RCP chart, as nurses abbreviate them.
SUBSCORE_LABELS = (
    ("resp", "RR"),
    ("spo2", "SpO2"),
    ("oxygen", "O2"),
    ("sbp", "SBP"),
    ("hr", "HR"),
    ("consciousness", "ACVPU"),
    ("temp", "T"),
)

BANDS = ("low", "low-medium", "medium", "high")
ACVPU_WORDS = {"A": "alert", "C": "confused", "V": "voice", "P": "pain", "U": "unresponsive"}
# The NEWS2 parameter an entry kind feeds (News2.assumed / News2.reassess name these).
PARAMETER = {"oxygen": "oxygen", "acvpu": "consciousness", "spo2_scale": "spo2_scale"}
# The bedside key that records each entry (edge_agent/ui/screens/bedside.py), shown beside it.
KEYS = {"oxygen": "[o] ", "acvpu": "[c] ", "spo2_scale": "[p] "}


def entry_when(o: ObservationView) -> str:
    return f"{format_age(o.age_seconds)} ago, {o.by}"


def oxygen_text(o: ObservationView | None) -> str:
    if o is None:
        return "O2 air assumed (never recorded)"
    if o.value == "air":
        what = "air"
    else:
        flow = f"{o.flow_l_min:g} L/min " if o.flow_l_min is not None else ""
        what = f"{flow}{o.device or 'oxygen'}"
    return f"O2 {what}, {entry_when(o)}"


def acvpu_text(o: ObservationView | None) -> str:
    if o is None:
        return "ACVPU A assumed (never recorded)"
    return f"ACVPU {o.value} {ACVPU_WORDS.get(o.value, '')}, {entry_when(o)}"


def scale_text(bed: BedView, o: ObservationView | None) -> str:
    if o is None:
        return f"SpO2 scale {bed.news2_scale}"
    reason = f" ({o.reason})" if o.reason else ""
    return f"SpO2 scale {o.value}{reason}, {entry_when(o)}"


def stale(bed: BedView, kind: str, o: ObservationView | None) -> bool:
    return (o is not None and o.reassess) or PARAMETER[kind] in bed.news2_reassess


def news2_lines(bed: BedView | None) -> list[list[tuple[str, str]]]:
    """The panel's lines as (text, component class or '') pieces (tests read the text)."""
    if bed is None:
        return [[("NEWS2 --  no vitals yet", "")]]
    obs = {k: bed.observation(k) for k in PARAMETER}
    if bed.news2 is None:
        head = [("NEWS2 --  ", ""), (bed.unscored_reason or "no vitals yet", "")]
    else:
        n = bed.news2
        parts = " ".join(f"{label} {n.subscores.get(key, 0)}" for key, label in SUBSCORE_LABELS)
        head = [
            (f"NEWS2 {n.total} ", "news2--total"),
            (n.risk.upper(), f"news2--{n.risk}" if n.risk in BANDS else ""),
            (f" │ {parts}", ""),
        ]
        if n.missing:
            head.append((f" │ missing {', '.join(n.missing)}", ""))
    lines = [head]
    for kind, text in (
        ("oxygen", oxygen_text(obs["oxygen"])),
        ("acvpu", acvpu_text(obs["acvpu"])),
    ):
        assumed = obs[kind] is None
        if not assumed and PARAMETER[kind] in bed.news2_assumed:
            # Recorded after the NEWS2 shown was scored: the next step uses it.
            text += " (not yet scored)"
        line = [(KEYS[kind], "news2--key"), (text, "news2--assumed" if assumed else "")]
        if stale(bed, kind, obs[kind]):
            line.append(("  ", ""))
            line.append((" RE-ASSESS ", "news2--reassess"))
        lines.append(line)
    # The scale: beside ACVPU while it is the default, on a line of its own once set.
    scale = [(KEYS["spo2_scale"], "news2--key"), (scale_text(bed, obs["spo2_scale"]), "")]
    if stale(bed, "spo2_scale", obs["spo2_scale"]):
        scale += [("  ", ""), (" RE-ASSESS ", "news2--reassess")]
    if obs["spo2_scale"] is None:
        lines[-1] += [(" │ ", ""), *scale]
    else:
        lines.append(scale)
    return lines


def news2_text(bed: BedView | None) -> str:
    """The panel as plain text."""
    return "\n".join("".join(t for t, _ in line) for line in news2_lines(bed))


class News2Panel(Static):
    COMPONENT_CLASSES = {
        "news2--total",
        "news2--low",
        "news2--low-medium",
        "news2--medium",
        "news2--high",
        "news2--assumed",
        "news2--reassess",
        "news2--key",
    }

    bed: reactive[BedView | None] = reactive(None, always_update=True, layout=False)

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("markup", False)  # bed ids and notes are text, not markup
        super().__init__(*args, **kw)

    def watch_bed(self, bed: BedView | None) -> None:
        # Classes first: the pieces' styles inherit the panel's band colour.
        band = bed.news2.risk if bed and bed.news2 else "none"
        for b in BANDS:
            self.set_class(band == b, f"-{b}")
        self.set_class(bool(bed and bed.reassess), "-reassess")
        text = Text(no_wrap=False)
        for i, line in enumerate(news2_lines(bed)):
            if i:
                text.append("\n")
            for piece, cls in line:
                text.append(piece, self.get_component_rich_style(cls, partial=True) if cls else "")
        self.update(text)
