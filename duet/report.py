"""The demo's report: ``report/metrics.json`` (``contract_metrics``) and one self-contained HTML page
(``write_report``).

The page is a function of a ``ReportPage``, the typed results of the stages it shows: the ablation's
metrics table, its plots (drawn by ``duet.charts``), the time splits, data quality, stage times and, when
present, the generator's ceiling, the control run, the delayed-feedback experiment and the online-offline
consistency check. Each section is a
function of its part; a part that is absent (None) shows as "not available", or its section is left out.
The conductor owns the page because it alone holds every stage's result.

The page opens from disk (file://), so it never references anything outside itself: no scripts,
stylesheets, fonts or images by address. Every string that comes from the results is escaped before it
reaches the page. The variants' order and colours come from ``core.variants``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from core.files import write_atomic
from core.quality import LakeReport
from core.variants import NO_VECTOR, variants
from duet.ceiling import CeilingResult
from duet.charts import Bar, Series, bar_axis, bar_chart, histogram, line_chart
from ranker.delayed import DelayedFeedbackResult
from ranker.evaluate import AblationResult, Interval, LabelDelays, Reduction, SeedResult, VariantResult
from ranker.splits import Periods
from serving.consistency import ConsistencyReport

_NONE_COLOR = "#7f7f7f"
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79")


@dataclass(frozen=True)
class ReportPage:
    """What the page shows. ``seed``: the run's (None: not one run's, ``duet evaluate``); ``splits``: the
    periods the ranker was trained and tested on; ``data_quality``: the lake's validation;
    ``stage_seconds``: seconds per stage, in the order they ran; ``ceiling``: the generator's ceiling on
    the test rows (generated data only); ``control``: the same ablation on data generated with conversion
    signal 0; ``delayed_feedback``: ``ranker.delayed``'s experiment; ``consistency``: the published
    snapshot read back online and compared with the lake (``serving.consistency``)."""

    seed: int | None
    ablation: AblationResult
    splits: Periods | None = None
    data_quality: LakeReport | None = None
    stage_seconds: dict[str, float] | None = None
    ceiling: CeilingResult | None = None
    control: AblationResult | None = None
    delayed_feedback: DelayedFeedbackResult | None = None
    consistency: ConsistencyReport | None = None


def contract_metrics(seed: int | None, ablation: AblationResult) -> dict:
    """``report/metrics.json`` exactly as ../shared/CONTRACTS.md gives it (seed-mean figures)."""
    return {"seed": seed, "test_rows": ablation.test_rows, "test_positives": ablation.test_positives,
            "variants": {name: {"ne": v.ne, "auc": v.auc, "logloss": v.logloss}
                         for name, v in ablation.variants.items()}}


def write_report(page: ReportPage, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` for ``page`` atomically (a reader never sees half a page) and return
    its path."""
    target = Path(out_dir) / "index.html"
    write_atomic(target, render_html(page))
    return target


def render_html(page: ReportPage) -> str:
    """The page, as a string."""
    ablation = page.ablation
    sections = [
        _section("metrics-table", "Metrics on the test set",
                 _metrics_table(_variant_rows(ablation.variants), page.ceiling)
                 + _reduction_line(ablation.relative_ne_reduction) + _ceiling_line(page.ceiling)),
        _section("plot-ne", "NE per variant", _ne_plot(ablation.variants, page.ceiling)),
        _section("plot-calibration", "Calibration", _calibration_plot(ablation.variants)),
        _section("plot-label-delay", "Label delay", _label_delay_plot(ablation.label_delay_hours)),
        _section("plot-training", "Training", _training_plot(ablation.variants)),
        _section("data-quality", "Data quality", _data_quality(page.data_quality)),
        _section("stage-times", "Stage times", _stage_times(page.stage_seconds)),
    ]
    if page.control is not None:
        sections.append(_section("control", "Control run", _control(page.control)))
    if page.delayed_feedback is not None:
        sections.append(_section("delayed-feedback", "Delayed feedback",
                                 _delayed_feedback(page.delayed_feedback)))
    if page.consistency is not None:
        sections.append(_section("online-consistency", "Online-offline consistency",
                                 _consistency(page.consistency)))
    raw = json.dumps(_as_data(page), indent=1)
    sections.append(_section("raw-report", "The report as data",
                             f"<details><summary>JSON</summary><pre>{_e(raw)}</pre></details>"))
    seed = "n/a" if page.seed is None else page.seed
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>duet ranker evaluation (seed {_e(seed)})</title>'
            f"<style>{_STYLE}</style></head><body>{_header(page)}\n" + "\n".join(sections)
            + "\n</body></html>\n")


def _as_data(page: ReportPage) -> dict:
    """The page's figures as one JSON document (its last section): the ablation's keys at the top, as in
    ``ablation.json``, then each other part present."""
    parts = {"ceiling": page.ceiling, "delayed_feedback": page.delayed_feedback, "splits": page.splits,
             "data_quality": page.data_quality, "control": page.control, "consistency": page.consistency}
    data = {"seed": page.seed, **page.ablation.to_dict(),
            **{name: part.to_dict() for name, part in parts.items() if part is not None}}
    if page.stage_seconds is not None:
        data["stage_seconds"] = page.stage_seconds
    return data


# ---------------------------------------------------------------------------------------------- formatting

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _num(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals; "n/a" when absent; NaN and infinities as Python writes them."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if math.isfinite(value) else _e(value)


def _pct(value: float | None) -> str:
    return f"{value * 100:+.2f}%" if _finite(value) else _num(value)


def _finite_pair(interval: Interval | None) -> Interval | None:
    """An interval both of whose ends are numbers, else None (drawn and written as no interval)."""
    return interval if interval is not None and all(_finite(v) for v in interval) else None


def _with_interval(value: float, interval: Interval | None, digits: int = 4) -> str:
    pair = _finite_pair(interval)
    if pair is None:
        return _num(value, digits)
    low, high = _num(pair[0], digits), _num(pair[1], digits)
    return f'{_num(value, digits)} <span class="interval">[{low}, {high}]</span>'


def _not_available(what: str) -> str:
    return f'<p class="na">{_e(what)}: not available</p>'


def _ordered(names: list[str]) -> list[str]:
    """``none``, the registry's variants in its order, then any other name as given."""
    order = (NO_VECTOR, *(v.name for v in variants()))
    return [n for n in order if n in names] + [n for n in names if n not in order]


def _colors(names: list[str]) -> dict[str, str]:
    """Each name's colour: ``none`` grey, a registered variant its own, any other the next spare one."""
    known = {NO_VECTOR: _NONE_COLOR, **{v.name: v.color for v in variants()}}
    extra = iter(_EXTRA_COLORS * (len(names) // len(_EXTRA_COLORS) + 1))
    return {n: known[n] if n in known else next(extra) for n in names}


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """Cells are HTML already: the caller escapes what comes from the data."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


# ------------------------------------------------------------------------------------------ metrics tables

class _Row(NamedTuple):
    """One line of a metrics table: an ablation variant, or a delayed-feedback mode (no AUC interval, no
    probe)."""

    ne: float
    ne_interval: Interval | None
    auc: float
    auc_interval: Interval | None
    logloss: float
    calibration: float
    seeds: tuple[SeedResult, ...]
    probe_gain: float | None


def _variant_rows(variants: dict[str, VariantResult]) -> dict[str, _Row]:
    return {name: _Row(v.ne, v.ne_interval, v.auc, v.auc_interval, v.logloss, v.calibration, v.seeds,
                       v.probe.gain) for name, v in variants.items()}


def _metrics_table(rows: dict[str, _Row], ceiling: CeilingResult | None = None) -> str:
    """One row per name (the lowest NE in bold). With ``ceiling`` (``duet.ceiling`` on generated data), a
    column of each row's share of the gap between ``none`` and the Bayes NE that it closes."""
    names = _ordered(list(rows))
    colors = _colors(names)
    finite_ne = [rows[n].ne for n in names if _finite(rows[n].ne)]
    best = min(finite_ne) if len(finite_ne) > 1 else None
    none_ne = rows[NO_VECTOR].ne if NO_VECTOR in rows else None
    lines = []
    for name in names:
        r = rows[name]
        per_seed = "<br>".join(f"seed {_e(s.seed)}: {_num(s.ne)}" for s in r.seeds) or "n/a"
        ne = _with_interval(r.ne, r.ne_interval)
        if best is not None and r.ne == best:
            ne = f"<strong>{ne}</strong>"
        line = [f'<span class="swatch" style="background:{colors[name]}"></span>{_e(name)}', ne,
                _with_interval(r.auc, r.auc_interval), _num(r.logloss), _num(r.calibration, 3),
                f'<span class="seeds">{per_seed}</span>']
        if ceiling is not None:
            closed = ceiling.gap_closed.get(name)
            line.append(_pct(closed) if _finite(closed) else "n/a")
        # The ranker's relative NE gain over none, beside the linear probe's gain (ranker.probe).
        gains = name != NO_VECTOR and _finite(none_ne) and _finite(r.ne)
        line += [_pct((none_ne - r.ne) / none_ne) if gains else "n/a",
                 _pct(r.probe_gain) if _finite(r.probe_gain) else "n/a"]
        lines.append(line)
    header = ["variant", "NE [95% interval]", "AUC [95% interval]", "log loss",
              "calibration (predicted / observed)", "NE per seed"]
    if ceiling is not None:
        header.append("share of the gap to the Bayes NE closed")
    header += ["ranker's gain over none", "probe's gain (what the vector knows)"]
    return _table(header, lines, "metrics")


def _reduction_line(reduction: Reduction | None) -> str:
    if reduction is None:
        return _not_available("relative NE reduction")
    variant, baseline = _e(reduction.variant), _e(reduction.baseline)
    text = (f"Relative NE reduction of {variant} against {baseline}, ({baseline} NE &minus; {variant} NE) / "
            f"{baseline} NE: <strong>{_pct(reduction.mean)}</strong>")
    pair = _finite_pair(reduction.interval)
    if pair is not None:
        side = "excludes" if pair[0] > 0 or pair[1] < 0 else "includes"
        text += f", 95% interval {_pct(pair[0])} to {_pct(pair[1])} ({side} 0)"
    return f'<p class="reduction">{text}.</p>'


def _ceiling_line(ceiling: CeilingResult | None) -> str:
    if ceiling is None or not _finite(ceiling.bayes_ne):
        return ""
    return ('<p class="ceiling">The generator&#x27;s ceiling on this test set: Bayes NE '
            f'<strong>{_num(ceiling.bayes_ne)}</strong> (the best any ranker can do from the history '
            f'reported before each click), oracle NE {_num(ceiling.oracle_ne)} (with the true '
            "conversion probabilities). Share of the gap closed: (NE of none &minus; NE of the variant) / "
            "(NE of none &minus; Bayes NE).</p>")


# ------------------------------------------------------------------------------------------------- plots

def _ne_plot(variants: dict[str, VariantResult], ceiling: CeilingResult | None) -> str:
    names = _ordered(list(variants))
    if not any(_finite(variants[n].ne) for n in names):
        return _not_available("NE per variant")
    colors = _colors(names)
    bars = [Bar(n, variants[n].ne, _finite_pair(variants[n].ne_interval), colors[n]) for n in names]
    note = "Bars: NE on the test set; whiskers: 95% interval."
    if ceiling is not None and _finite(ceiling.bayes_ne):
        bars += [Bar("Bayes ceiling", ceiling.bayes_ne, None, "#9e9e9e"),
                 Bar("oracle", ceiling.oracle_ne, None, "#cfcfcf")]
        note += " Grey: the generator's ceiling (Bayes NE from the reported history; oracle NE)."
    chart = bar_chart(bars, "normalized entropy (lower is better)", "NE per variant")
    if bar_axis(bars)[0] > 0:
        note += " The axis does not start at 0: compare the bars by their tops, not their lengths."
    return f'<p class="note">{note}</p>{chart}'


def _calibration_plot(variants: dict[str, VariantResult]) -> str:
    names = _ordered(list(variants))
    colors = _colors(names)
    series, missing = [], []
    for n in names:
        points = [(b.predicted, b.observed) for b in variants[n].calibration_curve
                  if _finite(b.predicted) and _finite(b.observed)]
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


def _label_delay_plot(delays: LabelDelays) -> str:
    chart = histogram(delays.edges, delays.counts, "hours from click to conversion", "positive examples",
                      "label delay histogram")
    return (f'<p class="note">Delay from click to conversion of the positive examples '
            f'({sum(delays.counts):g} in all). Bins are drawn equally wide whatever their span; the height '
            f'is the count.</p>{chart}')


def _training_plot(variants: dict[str, VariantResult]) -> str:
    names = _ordered(list(variants))
    colors = _colors(names)
    series = []
    for n in names:
        for s in variants[n].seeds:
            points = [(float(h.epoch), h.valid_loss) for h in s.history if _finite(h.valid_loss)]
            if points:
                series.append(Series(n, f"{n} seed {s.seed}", sorted(points), colors[n]))
    if not series:
        return _not_available("training curves")
    drawn = list(dict.fromkeys(s.name for s in series))
    chart = line_chart(series, "epoch", "validation loss", "validation loss per epoch",
                       legend=[(n, colors[n]) for n in drawn], integer_x=True)
    return f'<p class="note">Validation loss per epoch, one line per seed, coloured by variant.</p>{chart}'


# ----------------------------------------------------------------------------------- the other sections

def _verdict(success: bool) -> str:
    return '<span class="pass">PASS</span>' if success else '<span class="fail">FAIL</span>'


def _data_quality(quality: LakeReport | None) -> str:
    if quality is None:
        return _not_available("data quality")
    head = f'<p>Overall: {_verdict(quality.success)}'
    if quality.run_at:
        head += f", run at {_e(quality.run_at)}"
    head += ".</p>"
    rows = []
    for t in quality.tables:
        failed = "".join(f"<li>{_e(d)}</li>" for d in t.failed)
        rows.append([_e(t.table), _e(t.rows), _e(t.evaluated), _verdict(t.success),
                     f"<ul>{failed}</ul>" if failed else ""])
    body = head + (_table(["table", "rows", "expectations", "result", "failed expectations"], rows, "quality")
                   if rows else '<p class="na">no tables were validated</p>')
    if quality.metrics:
        body += _table(["figure", "value"], [[_e(k), _num(v)] for k, v in quality.metrics.items()], "figures")
    if quality.results_dir:
        body += f'<p class="note">Great Expectations results: {_e(quality.results_dir)}</p>'
    return body


def _stage_times(stages: dict[str, float] | None) -> str:
    if not stages:
        return _not_available("stage times")
    total = sum(stages.values())
    rows = [[_e(name), _num(seconds, 1), f"{seconds / total * 100:.1f}%" if total > 0 else "n/a"]
            for name, seconds in stages.items()]
    rows.append(["<strong>total</strong>", f"<strong>{total:.1f}</strong>", ""])
    return _table(["stage", "seconds", "share"], rows, "stages")


def _consistency(report: ConsistencyReport) -> str:
    """Per reader path: the sampled users of the published snapshot that matched its Delta rows, the
    mismatch, missing and extra rates, the largest difference."""
    head = (f"<p>Overall: {_verdict(report.ok)}: {_e(report.model_version)} at {_e(report.snapshot)} on the "
            f"{_e(report.online_store)} online store, {_e(report.delta_rows)} rows in the lake; a sample of "
            f"{_e(report.sample)} users (seed {_e(report.seed)}) read back online, tolerance "
            f"{_e(report.tolerance)}.</p>")
    rows = [[_e(p.path), _e(p.sampled), _e(p.matched), f"{p.mismatch_rate:.2%} ({p.mismatched})",
             f"{p.missing_rate:.2%} ({p.missing})", f"{p.extra_rate:.2%} ({p.extra} of {p.others_sampled})",
             _e(p.carried), _num(p.max_abs_diff, 6), _e(p.error or "")] for p in report.paths]
    note = ('<p class="note">Mismatch: a vector beyond the tolerance or of another snapshot; missing: a user '
            "of the snapshot not online; extra: a row online for a user outside the snapshot that no Delta "
            "row of the version backs (an earlier snapshot's row within the ttl is carried, not extra).</p>")
    return head + _table(["reader", "sampled", "matched", "mismatch", "missing", "extra", "carried",
                          "max abs diff", "error"], rows, "consistency") + note


def _control(control: AblationResult) -> str:
    return (f'<p class="note">The same evaluation on data generated with conversion signal 0 '
            f"({control.test_rows} test rows, {control.test_positives} positives).</p>"
            + _metrics_table(_variant_rows(control.variants))
            + _reduction_line(control.relative_ne_reduction))


def _delayed_feedback(delayed: DelayedFeedbackResult) -> str:
    """The modes of ``ranker.delayed`` on the test set, their reductions against ``matured``, the pool."""
    pool = delayed.pool
    note = (f'<p class="note">Rankers trained at {_e(delayed.trained_at.isoformat())} with the labels '
            f"reported by then ({pool.clicks} clicks, {pool.matured} matured, {pool.immature} still "
            f"maturing), features of {_e(delayed.features)}; the same test set as above.</p>")
    rows = {name: _Row(m.ne, m.ne_interval, m.auc, None, m.logloss, m.calibration, m.seeds, None)
            for name, m in delayed.modes.items()}
    lines = [_reduction_line(Reduction(name.split(" vs ")[0], "matured", r.mean, r.interval))
             for name, r in delayed.relative_ne_reduction.items()]
    return note + _metrics_table(rows) + "".join(lines)


def _header(page: ReportPage) -> str:
    ablation = page.ablation
    rows, positives = ablation.test_rows, ablation.test_positives
    rate = f" ({positives / rows * 100:.2f}%)" if rows > 0 else ""
    facts = [f"seed {_e('n/a' if page.seed is None else page.seed)}", f"{rows:,} test rows",
             f"{positives:,} positives{rate}"]
    body = f"<p>{' · '.join(facts)}</p>"
    if page.splits is not None:
        s = page.splits.splits
        periods = (("train", s.train_from, s.valid_from), ("valid", s.valid_from, s.test_from),
                   ("test", s.test_from, s.test_until))
        cells = [["label_cutoff", _e(page.splits.label_cutoff.isoformat())],
                 ["pretrain_until", _e(s.pretrain_until.isoformat())],
                 *([name, f"{_e(start.isoformat())} &rarr; {_e(end.isoformat())}"]
                   for name, start, end in periods)]
        body += _table(["split", "time"], cells, "splits")
    else:
        body += _not_available("time splits")
    return f'<header id="summary"><h1>duet ranker evaluation</h1>{body}</header>'


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
