"""Bar charts for the pages, computed here and drawn by the templates as SVG (no script, no inline
style: the strict CSP holds). Each chart also has its numbers as a table for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Chart:
    """Bars in a box of `width` by `height` SVG user units, scaled to the largest value."""

    title: str
    bars: tuple[Bar, ...]
    width: int
    height: int
    largest: int
    horizontal: bool


def columns(title: str, points: Sequence[tuple[str, int]], *, width: int = 640, height: int = 160) -> Chart:
    """Vertical bars, one per point, left to right (values over time)."""
    largest = max((value for _, value in points), default=0)
    slot = width / max(1, len(points))
    bars = tuple(
        Bar(
            label,
            value,
            i * slot + slot * 0.1,
            height - _scaled(value, largest, height),
            slot * 0.8,
            _scaled(value, largest, height),
        )
        for i, (label, value) in enumerate(points)
    )
    return Chart(title, bars, width, height, largest, horizontal=False)


def rows(title: str, points: Sequence[tuple[str, int]], *, width: int = 420, row: int = 24) -> Chart:
    """Horizontal bars, one per point, top to bottom (a ranking); labels are drawn beside them."""
    largest = max((value for _, value in points), default=0)
    length = width * 0.55
    bars = tuple(
        Bar(label, value, width * 0.4, i * row + 3, _scaled(value, largest, length), row - 6)
        for i, (label, value) in enumerate(points)
    )
    return Chart(title, bars, width, max(row, row * len(points)), largest, horizontal=True)


def _scaled(value: int, largest: int, room: float) -> float:
    return 0.0 if largest <= 0 else max(1.0, room * value / largest) if value else 0.0
