"""The calls-per-minute chart of the last hour, laid out as SVG shapes for the template to draw.

Drawn on the server, so the page needs no script: one bar per minute (oldest
on the left) and a dashed line at the quota, both scaled to the larger of the
busiest minute and the quota.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 600, 150
LEFT, BOTTOM, TOP = 36, 18, 8
MINUTES = 60


@dataclass(frozen=True)
class Bar:
    """One minute's bar."""

    x: float
    y: float
    width: float
    height: float
    calls: int
    minutes_ago: int


@dataclass(frozen=True)
class Chart:
    """The chart's geometry: bars, the quota line's height, the scale's top value."""

    bars: list[Bar]
    quota_y: float
    quota_per_minute: float
    top: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM

    @property
    def base_y(self) -> float:
        """The y of the x axis."""
        return self.height - self.bottom


def layout(counts: list[int], quota_per_minute: float) -> Chart:
    """The chart of ``counts`` (calls per minute, oldest first, the current minute last) against the quota."""
    top = max(1, max(counts, default=0), round(quota_per_minute))
    plot_h = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / max(1, len(counts))

    def y_of(value: float) -> float:
        return round(HEIGHT - BOTTOM - plot_h * value / top, 1)

    bars = [
        Bar(
            x=round(LEFT + i * step + 0.5, 1),
            y=y_of(calls),
            width=round(max(1.0, step - 1), 1),
            height=round(plot_h * calls / top, 1),
            calls=calls,
            minutes_ago=len(counts) - 1 - i,
        )
        for i, calls in enumerate(counts)
    ]
    return Chart(bars, y_of(quota_per_minute), quota_per_minute, top, sum(counts))
