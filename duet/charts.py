"""A small chart kit: bar, line and histogram plots as inline SVG strings.

The report page (``duet.report``) opens from disk (file://) and must reference nothing outside itself, so
its plots are drawn here as SVG text rather than by a plotting library (which would bring scripts or
images, and a dependency for three plot kinds). Generic: it knows bars, lines and bins, not duet. Every
text that comes from the data is escaped. Standard library only.

Every mark carries ``data-series`` (the bar's or line's name), so a reader (or a test) can tell which
series a mark draws; the look comes from the page's stylesheet (classes ``bar``, ``line``, ``dot``,
``bin``, ``grid``, ``axis``, ``tick``, ``label``, ``legend``, ``value``, ``error``, ``diagonal``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import NamedTuple

# Every plot is WIDTH x HEIGHT; the plot area sits inside these margins (the right one holds a legend).
WIDTH, HEIGHT = 640, 320
LEFT, TOP, BOTTOM = 64, 16, 48
RIGHT_PLAIN, RIGHT_LEGEND = 24, 150


class Bar(NamedTuple):
    """One bar: ``name`` goes to the mark's data-series, ``interval`` (low, high) draws an error bar; a
    ``value`` that is None or not finite is written "n/a" instead of drawn."""

    name: str
    value: float | None
    interval: tuple[float, float] | None
    color: str


class Series(NamedTuple):
    """One line: ``name`` goes to each mark's data-series, ``label`` to its tooltip."""

    name: str
    label: str
    points: list[tuple[float, float]]
    color: str


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _short(value: float) -> str:
    """A bin edge: whole numbers without decimals, infinity as a sign."""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ticks(lo: float, hi: float, count: int = 5, min_step: float = 0.0) -> list[float]:
    """Round values from at or below ``lo`` to at or above ``hi``, about ``count`` steps apart."""
    if not hi > lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = max((hi - lo) / count, min_step)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    last = max(last, first + 1)  # a scale needs two ticks
    return [i * step for i in range(first, last + 1)]


def _tick_text(value: float, step: float) -> str:
    decimals = next((d for d in range(12) if abs(round(step, d) - step) <= step * 1e-6), 12)
    return f"{value:.{decimals}f}"


class _Frame:
    """Maps data values to the plot area of one svg and draws its axes."""

    def __init__(self, x_ticks: list[float], y_ticks: list[float], right: int = RIGHT_PLAIN):
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.left, self.right_edge = LEFT, WIDTH - right
        self.top, self.bottom = TOP, HEIGHT - BOTTOM

    def x(self, value: float) -> float:
        lo, hi = self.x_ticks[0], self.x_ticks[-1]
        return self.left + (value - lo) / (hi - lo) * (self.right_edge - self.left)

    def y(self, value: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        return self.bottom - (value - lo) / (hi - lo) * (self.bottom - self.top)

    def axes(self, x_label: str, y_label: str, x_labels: list[tuple[float, str]] | None = None) -> list[str]:
        """Grid, ticks and axis titles; ``x_labels`` (position, text) replaces the numeric x ticks."""
        parts = []
        y_step = self.y_ticks[1] - self.y_ticks[0]
        for t in self.y_ticks:
            y = self.y(t)
            parts.append(f'<line class="grid" x1="{self.left}" y1="{y:.1f}" x2="{self.right_edge}" '
                         f'y2="{y:.1f}"/>')
            parts.append(f'<text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{_tick_text(t, y_step)}</text>')
        if x_labels is None:
            x_step = self.x_ticks[1] - self.x_ticks[0]
            x_labels = [(t, _tick_text(t, x_step)) for t in self.x_ticks]
        for position, text in x_labels:
            x = self.x(position)
            parts.append(f'<line class="axis" x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" '
                         f'y2="{self.bottom + 4}"/>')
            parts.append(f'<text class="tick" x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle">'
                         f'{_e(text)}</text>')
        parts.append(f'<path class="axis" d="M{self.left},{self.top} V{self.bottom} H{self.right_edge}"/>')
        middle_x, middle_y = (self.left + self.right_edge) / 2, (self.top + self.bottom) / 2
        parts.append(f'<text class="label" x="{middle_x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                     f'{_e(x_label)}</text>')
        parts.append(f'<text class="label" transform="translate(14,{middle_y:.1f}) rotate(-90)" '
                     f'text-anchor="middle">{_e(y_label)}</text>')
        return parts


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    """(label, color) swatches in the right margin; not marks: they carry no data-series."""
    x = WIDTH - RIGHT_LEGEND + 14
    parts = []
    for i, (label, color) in enumerate(items):
        y = TOP + 4 + 18 * i
        parts.append(f'<rect class="legend" x="{x}" y="{y}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text class="legend" x="{x + 18}" y="{y + 10}">{_e(label)}</text>')
    return parts


def _svg(parts: list[str], label: str) -> str:
    return (f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
            f'role="img" aria-label="{_e(label)}">' + "".join(parts) + "</svg>")


# -------------------------------------------------------------------------------------------------- plots

def bar_axis(bars: Sequence[Bar]) -> list[float]:
    """The value axis ticks of ``bar_chart``: from 0 when the values spread over more than half their
    top, else from near the lowest value (an NE gain of 0.004 on 0.9 would not show from 0)."""
    values = [v for b in bars for v in (b.value, *(b.interval or ())) if _finite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if 0 <= lo <= 0.5 * hi:
        return _ticks(0.0, hi * 1.1)
    pad = (hi - lo) * 0.3 or abs(hi) * 0.01 or 1.0
    return _ticks(lo - pad, hi + pad)


def bar_chart(bars: Sequence[Bar], y_label: str, title: str, digits: int = 4) -> str:
    """Bars on ``bar_axis`` with error bars and their values written above."""
    frame = _Frame(list(range(len(bars) + 1)) if bars else [0, 1], bar_axis(bars))
    base = frame.y(min(max(0.0, frame.y_ticks[0]), frame.y_ticks[-1]))
    parts = frame.axes("", y_label, [(i + 0.5, b.name) for i, b in enumerate(bars)])
    for i, bar in enumerate(bars):
        x0, x1, middle = frame.x(i + 0.2), frame.x(i + 0.8), frame.x(i + 0.5)
        if not _finite(bar.value):
            parts.append(f'<text class="value" x="{middle:.1f}" y="{base - 6:.1f}" text-anchor="middle">'
                         f'n/a</text>')
            continue
        top = frame.y(bar.value)
        value = f"{bar.value:.{digits}f}"
        parts.append(f'<rect class="bar" data-series="{_e(bar.name)}" x="{x0:.1f}" y="{min(top, base):.1f}" '
                     f'width="{x1 - x0:.1f}" height="{abs(base - top):.1f}" fill="{bar.color}">'
                     f'<title>{_e(f"{bar.name}: {value}")}</title></rect>')
        label_y = top
        if bar.interval:
            y_lo, y_hi = frame.y(bar.interval[0]), frame.y(bar.interval[1])
            parts.append(f'<path class="error" data-series="{_e(bar.name)}" d="M{middle:.1f},{y_lo:.1f} '
                         f'V{y_hi:.1f} M{middle - 6:.1f},{y_lo:.1f} h12 M{middle - 6:.1f},{y_hi:.1f} h12"/>')
            label_y = min(top, y_hi)
        parts.append(f'<text class="value" x="{middle:.1f}" y="{label_y - 5:.1f}" text-anchor="middle">'
                     f'{value}</text>')
    return _svg(parts, title)


def line_chart(series: Sequence[Series], x_label: str, y_label: str, title: str,
               legend: Sequence[tuple[str, str]] = (), diagonal: bool = False,
               integer_x: bool = False) -> str:
    """A polyline and a dot per point for each series. ``diagonal`` puts both axes on one scale from 0 and
    draws y = x (a calibration plot); ``integer_x`` keeps x ticks whole (epochs)."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if diagonal:
        ticks = _ticks(min(0.0, *xs, *ys), max(*xs, *ys))
        x_ticks, y_ticks = ticks, ticks
    else:
        x_ticks = _ticks(min(xs), max(xs), min_step=1.0 if integer_x else 0.0)
        pad = (max(ys) - min(ys)) * 0.05  # keeps the extreme dots off the axes
        y_ticks = _ticks(min(ys) - pad, max(ys) + pad)
    frame = _Frame(x_ticks, y_ticks, right=RIGHT_LEGEND if legend else RIGHT_PLAIN)
    parts = frame.axes(x_label, y_label)
    if diagonal:
        lo, hi = x_ticks[0], x_ticks[-1]
        parts.append(f'<line class="diagonal" x1="{frame.x(lo):.1f}" y1="{frame.y(lo):.1f}" '
                     f'x2="{frame.x(hi):.1f}" y2="{frame.y(hi):.1f}"/>')
    for s in series:
        points = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in s.points)
        if len(s.points) > 1:
            parts.append(f'<polyline class="line" data-series="{_e(s.name)}" points="{points}" '
                         f'stroke="{s.color}"/>')
        for x, y in s.points:
            parts.append(f'<circle class="dot" data-series="{_e(s.name)}" cx="{frame.x(x):.1f}" '
                         f'cy="{frame.y(y):.1f}" r="3" fill="{s.color}">'
                         f'<title>{_e(s.label)}: ({x:g}, {y:.4g})</title></circle>')
    parts += _legend(legend)
    return _svg(parts, title)


def histogram(edges: Sequence[float], counts: Sequence[float], x_label: str, y_label: str, title: str) -> str:
    """One bar per bin (``counts[i]`` in ``[edges[i], edges[i + 1])``), every bin drawn equally wide (a
    reader's bins may double), labelled by its edges."""
    frame = _Frame(list(range(len(counts) + 1)), _ticks(0.0, max(max(counts), 1) * 1.05))
    every = max(1, math.ceil(len(edges) / 16))  # at most 16 edge labels
    parts = frame.axes(x_label, y_label, [(i, _short(e)) for i, e in enumerate(edges) if i % every == 0])
    for i, count in enumerate(counts):
        x0, x1, top = frame.x(i) + 1, frame.x(i + 1) - 1, frame.y(count)
        tip = f"[{_short(edges[i])}, {_short(edges[i + 1])}): {count:g}"
        parts.append(f'<rect class="bin" x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                     f'height="{frame.bottom - top:.1f}"><title>{_e(tip)}</title></rect>')
    return _svg(parts, title)
