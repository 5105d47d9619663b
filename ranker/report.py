"""The ranker's evaluation as one self-contained HTML page: ``write_report(report, out_dir)``.

Takes the dict the ranker's evaluation produces (its shape is in ``write_report``'s docstring) and writes
``out_dir/index.html``: the metrics table, plots drawn as inline SVG by the small functions below (one
per plot), data quality, stage times and, when given, the control run. A section whose data is missing
says "not available"; the metrics table is always drawn.

The page opens from disk (file://), so it must never reference anything outside itself: no scripts,
stylesheets, fonts or images by address, and no plotting library. Standard library only. Every string
that comes from the report is escaped before it reaches the page. (The variants' order and colours come from
``core.variants.REGISTRY``, itself standard library only.)
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from core.variants import REGISTRY

VARIANT_ORDER = ("none", *(v.name for v in REGISTRY))  # variants outside this list follow, as given
_COLORS = {"none": "#7f7f7f", **{v.name: v.color for v in REGISTRY}}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79")

# Every plot is WIDTH x HEIGHT; the plot area sits inside these margins (the right one holds a legend).
WIDTH, HEIGHT = 640, 320
LEFT, TOP, BOTTOM = 64, 16, 48
RIGHT_PLAIN, RIGHT_LEGEND = 24, 150


class Bar(NamedTuple):
    """One bar: ``name`` goes to the mark's data-series, ``interval`` (low, high) draws an error bar."""

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


# ---------------------------------------------------------------------------------------------- formatting

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return _is_number(value) and math.isfinite(value)


def _num(value: object, digits: int = 4) -> str:
    """A number with ``digits`` decimals; "n/a" when absent; anything else escaped as text."""
    if value is None:
        return "n/a"
    if _is_number(value):
        return f"{value:.{digits}f}" if math.isfinite(value) else _e(value)
    return _e(value)


def _pct(value: object) -> str:
    return f"{value * 100:+.2f}%" if _finite(value) else _num(value)


def _pair(value: object) -> tuple[float, float] | None:
    """A two-number interval, or None when ``value`` is not one."""
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(_finite(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _with_interval(value: object, interval: object, digits: int = 4) -> str:
    pair = _pair(interval)
    if pair is None:
        return _num(value, digits)
    low, high = _num(pair[0], digits), _num(pair[1], digits)
    return f'{_num(value, digits)} <span class="interval">[{low}, {high}]</span>'


def _short(value: float) -> str:
    """A bin edge: whole numbers without decimals, infinity as a sign."""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _not_available(what: str) -> str:
    return f'<p class="na">{_e(what)}: not available</p>'


def _ordered(variants: Mapping[str, Any]) -> list[str]:
    known = [v for v in VARIANT_ORDER if v in variants]
    return known + [v for v in variants if v not in VARIANT_ORDER]


def _colors(names: Sequence[str]) -> dict[str, str]:
    extra = iter(_EXTRA_COLORS * (len(names) // len(_EXTRA_COLORS) + 1))
    return {n: _COLORS[n] if n in _COLORS else next(extra) for n in names}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """Cells are HTML already: the caller escapes what comes from the data."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ------------------------------------------------------------------------------------------------ svg parts

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
        tip = f"{bar.name}: {_num(bar.value, digits)}"
        parts.append(f'<rect class="bar" data-series="{_e(bar.name)}" x="{x0:.1f}" y="{min(top, base):.1f}" '
                     f'width="{x1 - x0:.1f}" height="{abs(base - top):.1f}" fill="{bar.color}">'
                     f'<title>{_e(tip)}</title></rect>')
        label_y = top
        if bar.interval:
            y_lo, y_hi = frame.y(bar.interval[0]), frame.y(bar.interval[1])
            parts.append(f'<path class="error" data-series="{_e(bar.name)}" d="M{middle:.1f},{y_lo:.1f} '
                         f'V{y_hi:.1f} M{middle - 6:.1f},{y_lo:.1f} h12 M{middle - 6:.1f},{y_hi:.1f} h12"/>')
            label_y = min(top, y_hi)
        parts.append(f'<text class="value" x="{middle:.1f}" y="{label_y - 5:.1f}" text-anchor="middle">'
                     f'{_num(bar.value, digits)}</text>')
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
    """One bar per bin, every bin drawn equally wide (the delay bins double), labelled by its edges."""
    frame = _Frame(list(range(len(counts) + 1)), _ticks(0.0, max(max(counts), 1) * 1.05))
    every = max(1, math.ceil(len(edges) / 16))  # at most 16 edge labels
    parts = frame.axes(x_label, y_label, [(i, _short(e)) for i, e in enumerate(edges) if i % every == 0])
    for i, count in enumerate(counts):
        x0, x1, top = frame.x(i) + 1, frame.x(i + 1) - 1, frame.y(count)
        tip = f"[{_short(edges[i])}, {_short(edges[i + 1])}): {count:g}"
        parts.append(f'<rect class="bin" x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                     f'height="{frame.bottom - top:.1f}"><title>{_e(tip)}</title></rect>')
    return _svg(parts, title)


# ----------------------------------------------------------------------------------------------- sections

def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


def metrics_table(variants: Mapping[str, Mapping[str, Any]], reduction: Mapping[str, Any] | None,
                  ceiling: Mapping[str, Any] | None = None) -> str:
    """One row per variant (the lowest NE in bold), then the relative NE reduction line. With ``ceiling``
    (``duet.ceiling`` on generated data), a column of each variant's share of the gap between ``none`` and
    the Bayes NE that it closes, and the ceiling's line."""
    closed = ceiling.get("gap_closed") if isinstance(ceiling, Mapping) else None
    closed = closed if isinstance(closed, Mapping) else None
    names = _ordered(variants)
    colors = _colors(names)
    finite_ne = [variants[n].get("ne") for n in names if _finite(variants[n].get("ne"))]
    best = min(finite_ne) if len(finite_ne) > 1 else None
    rows = []
    for name in names:
        v = variants[name]
        seeds = [s for s in v.get("seeds") or [] if isinstance(s, Mapping)]
        per_seed = "<br>".join(f'seed {_e(s.get("seed", "?"))}: {_num(s.get("ne"))}' for s in seeds) or "n/a"
        ne = _with_interval(v.get("ne"), v.get("ne_interval"))
        if best is not None and v.get("ne") == best:
            ne = f"<strong>{ne}</strong>"
        rows.append([f'<span class="swatch" style="background:{colors[name]}"></span>{_e(name)}', ne,
                     _with_interval(v.get("auc"), v.get("auc_interval")), _num(v.get("logloss")),
                     _num(v.get("calibration"), 3), f'<span class="seeds">{per_seed}</span>'])
        if closed is not None:
            rows[-1].append(_pct(closed.get(name)) if _finite(closed.get(name)) else "n/a")
        rows[-1] += _gains(variants, name)
    if not rows:
        rows.append(['<span class="na">no variants in the report</span>', "", "", "", "", ""])
    header = ["variant", "NE [95% interval]", "AUC [95% interval]", "log loss",
              "calibration (predicted / observed)", "NE per seed"]
    if closed is not None:
        header.append("share of the gap to the Bayes NE closed")
    header += ["ranker's gain over none", "probe's gain (what the vector knows)"]
    return _table(header, rows, "metrics") + _reduction_line(reduction) + _ceiling_line(ceiling)


def _gains(variants: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
    """The ranker's relative NE gain over ``none`` and the linear probe's gain (``ranker.probe``)."""
    none = variants.get("none", {}).get("ne")
    ne = variants[name].get("ne")
    ranker = _pct((none - ne) / none) if name != "none" and _finite(none) and _finite(ne) else "n/a"
    found = variants[name].get("probe")
    gain = found.get("gain") if isinstance(found, Mapping) else None
    return [ranker, _pct(gain) if _finite(gain) else "n/a"]


def _ceiling_line(ceiling: Mapping[str, Any] | None) -> str:
    if not isinstance(ceiling, Mapping) or not _finite(ceiling.get("bayes_ne")):
        return ""
    return ('<p class="ceiling">The generator&#x27;s ceiling on this test set: Bayes NE '
            f'<strong>{_num(ceiling.get("bayes_ne"))}</strong> (the best any ranker can do from the history '
            f'reported before each click), oracle NE {_num(ceiling.get("oracle_ne"))} (with the true '
            "conversion probabilities). Share of the gap closed: (NE of none &minus; NE of the variant) / "
            "(NE of none &minus; Bayes NE).</p>")


def _reduction_line(reduction: Mapping[str, Any] | None) -> str:
    if not isinstance(reduction, Mapping) or "mean" not in reduction:
        return _not_available("relative NE reduction")
    variant, baseline = _e(reduction.get("variant", "?")), _e(reduction.get("baseline", "?"))
    text = (f"Relative NE reduction of {variant} against {baseline}, ({baseline} NE &minus; {variant} NE) / "
            f"{baseline} NE: <strong>{_pct(reduction['mean'])}</strong>")
    pair = _pair(reduction.get("interval"))
    if pair is not None:
        side = "excludes" if pair[0] > 0 or pair[1] < 0 else "includes"
        text += f", 95% interval {_pct(pair[0])} to {_pct(pair[1])} ({side} 0)"
    return f'<p class="reduction">{text}.</p>'


def _ne_plot(variants: Mapping[str, Mapping[str, Any]], ceiling: Mapping[str, Any] | None = None) -> str:
    names = _ordered(variants)
    if not any(_finite(variants[n].get("ne")) for n in names):
        return _not_available("NE per variant")
    colors = _colors(names)
    bars = [Bar(n, variants[n].get("ne"), _pair(variants[n].get("ne_interval")), colors[n]) for n in names]
    note = "Bars: NE on the test set; whiskers: 95% interval."
    if isinstance(ceiling, Mapping) and _finite(ceiling.get("bayes_ne")):
        bars += [Bar("Bayes ceiling", ceiling["bayes_ne"], None, "#9e9e9e"),
                 Bar("oracle", ceiling.get("oracle_ne"), None, "#cfcfcf")]
        note += " Grey: the generator's ceiling (Bayes NE from the reported history; oracle NE)."
    chart = bar_chart(bars, "normalized entropy (lower is better)", "NE per variant")
    if bar_axis(bars)[0] > 0:
        note += " The axis does not start at 0: compare the bars by their tops, not their lengths."
    return f'<p class="note">{note}</p>{chart}'


def _calibration_plot(variants: Mapping[str, Mapping[str, Any]]) -> str:
    names = _ordered(variants)
    colors = _colors(names)
    series, missing = [], []
    for n in names:
        bins = [b for b in variants[n].get("calibration_curve") or [] if isinstance(b, Mapping)]
        points = [(float(b["predicted"]), float(b["observed"])) for b in bins
                  if _finite(b.get("predicted")) and _finite(b.get("observed"))]
        if points:
            series.append(Series(n, n, sorted(points), colors[n]))
        else:
            missing.append(n)
    if not series:
        return _not_available("calibration curves")
    note = ("Observed conversion rate against the mean predicted probability, per bin of predicted "
            "probability; the grey diagonal is perfect calibration.")
    if missing:
        note += f" No curve for: {_e(', '.join(missing))}."
    chart = line_chart(series, "predicted probability", "observed rate", "calibration curves",
                       legend=[(s.name, s.color) for s in series], diagonal=True)
    return f'<p class="note">{note}</p>{chart}'


def _label_delay_plot(delays: Any) -> str:
    if not isinstance(delays, Mapping):
        return _not_available("label delay histogram")
    edges, counts = delays.get("edges") or [], delays.get("counts") or []
    if not counts or len(edges) != len(counts) + 1:
        return _not_available(f"label delay histogram ({len(edges)} edges for {len(counts)} counts; "
                              "expected one edge more than counts)")
    if not all(_is_number(v) for v in edges) or not all(_finite(c) for c in counts):
        return _not_available("label delay histogram (an edge or a count is not a number)")
    chart = histogram(edges, counts, "hours from click to conversion", "positive examples",
                      "label delay histogram")
    return (f'<p class="note">Delay from click to conversion of the positive examples ({sum(counts):g} in '
            f'all). Bins are drawn equally wide whatever their span; the height is the count.</p>{chart}')


def _training_plot(variants: Mapping[str, Mapping[str, Any]]) -> str:
    names = _ordered(variants)
    colors = _colors(names)
    series = []
    for n in names:
        for s in variants[n].get("seeds") or []:
            if not isinstance(s, Mapping):
                continue
            points = [(float(h["epoch"]), float(h["valid_loss"])) for h in s.get("history") or []
                      if isinstance(h, Mapping) and _finite(h.get("epoch")) and _finite(h.get("valid_loss"))]
            if points:
                series.append(Series(n, f"{n} seed {s.get('seed', '?')}", sorted(points), colors[n]))
    if not series:
        return _not_available("training curves")
    drawn = list(dict.fromkeys(s.name for s in series))
    chart = line_chart(series, "epoch", "validation loss", "validation loss per epoch",
                       legend=[(n, colors[n]) for n in drawn], integer_x=True)
    return f'<p class="note">Validation loss per epoch, one line per seed, coloured by variant.</p>{chart}'


def _verdict(success: object) -> str:
    return '<span class="pass">PASS</span>' if success else '<span class="fail">FAIL</span>'


def _data_quality(quality: Any) -> str:
    if not isinstance(quality, Mapping):
        return _not_available("data quality")
    tables = [t for t in quality.get("tables") or [] if isinstance(t, Mapping)]
    success = quality.get("success", all(t.get("success") for t in tables))
    head = f'<p>Overall: {_verdict(success)}'
    if quality.get("run_at"):
        head += f', run at {_e(quality["run_at"])}'
    head += ".</p>"
    rows = []
    for t in tables:
        failed = "".join(f"<li>{_e(d)}</li>" for d in t.get("failed") or [])
        rows.append([_e(t.get("table", "?")), _e(t.get("rows", "n/a")), _e(t.get("evaluated", "n/a")),
                     _verdict(t.get("success")), f"<ul>{failed}</ul>" if failed else ""])
    body = head + (_table(["table", "rows", "expectations", "result", "failed expectations"], rows, "quality")
                   if rows else '<p class="na">no tables were validated</p>')
    metrics = quality.get("metrics") or {}
    if isinstance(metrics, Mapping) and metrics:
        body += _table(["figure", "value"], [[_e(k), _num(v)] for k, v in metrics.items()], "figures")
    if quality.get("results_dir"):
        body += f'<p class="note">Great Expectations results: {_e(quality["results_dir"])}</p>'
    return body


def _stage_times(stages: Any) -> str:
    if not isinstance(stages, Mapping) or not stages:
        return _not_available("stage times")
    total = sum(v for v in stages.values() if _finite(v))
    rows = [[_e(name), _num(seconds, 1),
             f"{seconds / total * 100:.1f}%" if _finite(seconds) and total > 0 else "n/a"]
            for name, seconds in stages.items()]
    rows.append(["<strong>total</strong>", f"<strong>{total:.1f}</strong>", ""])
    return _table(["stage", "seconds", "share"], rows, "stages")


def _control(control: Mapping[str, Any]) -> str:
    variants = _variants(control, "report['control']")
    size = ""
    if "test_rows" in control:
        size = (f" ({_e(control.get('test_rows'))} test rows, {_e(control.get('test_positives', 'n/a'))} "
                "positives)")
    return (f'<p class="note">The same evaluation on data generated with conversion signal 0{size}.</p>'
            + metrics_table(variants, control.get("relative_ne_reduction")))


def _delayed_feedback(delayed: Mapping[str, Any]) -> str:
    """The modes of ``ranker.delayed`` on the test set, their reductions against ``matured``, the pool."""
    modes = delayed.get("modes", {})
    if not isinstance(modes, Mapping) or not all(isinstance(m, Mapping) for m in modes.values()):
        return _not_available("delayed-feedback modes")
    pool = delayed.get("pool") if isinstance(delayed.get("pool"), Mapping) else {}
    note = (f'<p class="note">Rankers trained at {_e(delayed.get("trained_at", "n/a"))} with the labels '
            f'reported by then ({_e(pool.get("clicks", "n/a"))} clicks, {_e(pool.get("matured", "n/a"))} '
            f'matured, {_e(pool.get("immature", "n/a"))} still maturing), features of '
            f'{_e(delayed.get("features", "n/a"))}; the same test set as above.</p>')
    lines = []
    for name, r in (delayed.get("relative_ne_reduction") or {}).items():
        if isinstance(r, Mapping) and "mean" in r:
            mode = str(name).split(" vs ")[0]
            lines.append(_reduction_line({"variant": mode, "baseline": "matured", **r}))
    table = metrics_table(modes, None).replace(_not_available("relative NE reduction"), "")
    return note + table + "".join(lines)


def _header(report: Mapping[str, Any]) -> str:
    rows, positives = report.get("test_rows"), report.get("test_positives")
    facts = [f"seed {_e(report.get('seed', 'n/a'))}"]
    if _is_number(rows):
        facts.append(f"{rows:,} test rows")
    if _is_number(positives):
        rate = f" ({positives / rows * 100:.2f}%)" if _is_number(rows) and rows > 0 else ""
        facts.append(f"{positives:,} positives{rate}")
    body = f"<p>{' · '.join(facts)}</p>"
    splits = report.get("splits")
    if isinstance(splits, Mapping) and splits:
        cells = []
        for key, value in splits.items():
            if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
                cells.append([_e(key), f"{_e(value[0])} &rarr; {_e(value[1])}"])
            else:
                cells.append([_e(key), _e(value)])
        body += _table(["split", "time"], cells, "splits")
    else:
        body += _not_available("time splits")
    return f'<header id="summary"><h1>duet ranker evaluation</h1>{body}</header>'


def _variants(report: Mapping[str, Any], where: str) -> Mapping[str, Mapping[str, Any]]:
    variants = report.get("variants", {})
    if not isinstance(variants, Mapping) or not all(isinstance(v, Mapping) for v in variants.values()):
        raise ValueError(f"{where}['variants'] must map each variant name to its metrics dict "
                         f"(got {type(variants).__name__}); fix the evaluation that produced the report")
    return variants


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td { font-variant-numeric: tabular-nums; } th { background: #f4f4f4; }
ul { margin: 0; padding-left: 1.2em; }
.interval, .seeds, .note { color: #666; } .note { font-size: 0.9em; }
.na { color: #888; font-style: italic; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; }
svg.plot { max-width: 100%; height: auto; font-size: 11px; }
svg .grid { stroke: #eee; } svg .axis { stroke: #444; fill: none; }
svg .tick { fill: #444; } svg text.label, svg text.legend { fill: #222; }
svg .value { fill: #222; font-size: 10px; }
svg .error { stroke: #222; stroke-width: 1.5; fill: none; }
svg .line { fill: none; stroke-width: 1.5; opacity: 0.8; } svg .bin { fill: #4c78a8; }
svg .diagonal { stroke: #999; stroke-dasharray: 4 3; }
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The page for ``report`` (see ``write_report``), as a string."""
    variants = _variants(report, "report")
    sections = [
        _section("metrics-table", "Metrics on the test set",
                 metrics_table(variants, report.get("relative_ne_reduction"), report.get("ceiling"))),
        _section("plot-ne", "NE per variant", _ne_plot(variants, report.get("ceiling"))),
        _section("plot-calibration", "Calibration", _calibration_plot(variants)),
        _section("plot-label-delay", "Label delay", _label_delay_plot(report.get("label_delay_hours"))),
        _section("plot-training", "Training", _training_plot(variants)),
        _section("data-quality", "Data quality", _data_quality(report.get("data_quality"))),
        _section("stage-times", "Stage times", _stage_times(report.get("stage_seconds"))),
    ]
    if isinstance(report.get("control"), Mapping):
        sections.append(_section("control", "Control run", _control(report["control"])))
    if isinstance(report.get("delayed_feedback"), Mapping):
        sections.append(_section("delayed-feedback", "Delayed feedback",
                                 _delayed_feedback(report["delayed_feedback"])))
    raw = json.dumps(report, indent=1, default=str)
    sections.append(_section("raw-report", "The report as data",
                             f"<details><summary>JSON</summary><pre>{_e(raw)}</pre></details>"))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>duet ranker evaluation (seed {_e(report.get("seed", "n/a"))})</title>'
            f"<style>{_STYLE}</style></head><body>{_header(report)}\n" + "\n".join(sections)
            + "\n</body></html>\n")


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` for ``report`` atomically (a reader never sees half a page) and return
    its path. The page is rendered before anything is written, so a report that cannot be rendered
    leaves an earlier page in place.

    ``report`` keys: ``seed``, ``test_rows``, ``test_positives``, ``variants`` (name -> ``ne``, ``auc``,
    ``logloss``, ``calibration``, ``ne_interval``, ``auc_interval``, ``seeds`` [{``seed``, ``ne``, ...,
    ``history`` [{``epoch``, ``train_loss``, ``valid_loss``}]}], ``calibration_curve`` [{``predicted``,
    ``observed``, ``count``}]), ``relative_ne_reduction`` {``variant``, ``baseline``, ``mean``,
    ``interval``}, ``splits``, ``label_delay_hours`` {``edges``, ``counts``}, ``data_quality``
    (``core.quality.LakeReport.to_dict()``), ``stage_seconds`` and ``control`` (``variants`` and
    ``relative_ne_reduction`` of the conversion-signal-0 run). Only ``variants`` is needed; a
    missing part shows as "not available".
    """
    page = render_html(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "index.html"
    fd, tmp = tempfile.mkstemp(prefix=".index.html.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the page is meant to be shared like any output
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
