"""Charts drawn on the server as SVG: no JavaScript, nothing fetched, printable.

`bars` draws stacked bars, one per bucket (a minute, a day), one colour per series. The
result is markup built from numbers and escaped labels only, so it is safe to place in a
page as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from html import escape

WIDTH = 720
HEIGHT = 160
_PAD_LEFT = 44
_PAD_BOTTOM = 22
_PAD_TOP = 8


@dataclasses.dataclass(frozen=True)
class Series:
    """One stacked series: its name (the legend), CSS class (its colour) and values."""

    name: str
    css: str
    values: Sequence[int]


def _nice_max(value: int) -> int:
    """The axis top: the first of 1, 2 or 5 times 10^k at or above ``value`` (at least 1)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def bars(labels: Sequence[str], series: Sequence[Series], *, title: str) -> str:
    """Stacked bars, one per label; a label is drawn under every ``len/6``-th bar."""
    count = len(labels)
    if any(len(s.values) != count for s in series):
        raise ValueError("every series needs one value per label")
    totals = [sum(s.values[i] for s in series) for i in range(count)]
    top = _nice_max(max(totals, default=0))
    plot_w = WIDTH - _PAD_LEFT - 4
    plot_h = HEIGHT - _PAD_BOTTOM - _PAD_TOP
    slot = plot_w / max(count, 1)
    bar_w = max(slot * 0.8, 1.0)
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0.0, 0.5, 1.0) if top >= 2 else (0.0, 1.0):
        y = _PAD_TOP + plot_h * (1 - frac)
        out.append(
            f'<line class="grid" x1="{_PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - 4}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{int(top * frac)}</text>"
        )
    every = max(1, count // 6)
    for i, label in enumerate(labels):
        x = _PAD_LEFT + i * slot + (slot - bar_w) / 2
        base: float = _PAD_TOP + plot_h
        tip = [f"{escape(label)}"] + [f"{escape(s.name)}: {s.values[i]}" for s in series]
        out.append(f"<g><title>{' · '.join(tip)}</title>")
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            base -= h
            out.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{base:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        out.append("</g>")
        if i % every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)
