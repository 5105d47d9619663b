"""The report page (``duet.report``) from typed results: every section, a mark per variant in each plot,
escaped strings, no outside reference, "not available" for an absent part, atomic writes. No Spark."""

from __future__ import annotations

import ast
import json
import random
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.quality import LakeReport, TableResult
from core.records import from_dict, to_dict
from duet.ceiling import CeilingResult
from duet.report import ReportPage, render_html, write_report
from ranker.config import RankerConfig
from ranker.delayed import DelayedFeedbackResult, FirstReport, ModeReduction, ModeResult, PoolFigures
from ranker.evaluate import (
    AblationResult,
    CalibrationBin,
    Epoch,
    LabelDelays,
    Probe,
    Reduction,
    SeedResult,
    VariantResult,
)
from ranker.splits import Periods, Splits
from tests.conftest import REPO

VARIANTS = ("none", "shared", "click_only", "duet")
NE = {"none": 0.95012, "shared": 0.92104, "click_only": 0.92398, "duet": 0.91734}
SEEDS, EPOCHS, CALIBRATION_BINS = 3, 5, 8
DELAY_EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 168]
PLOTS = ("plot-ne", "plot-calibration", "plot-label-delay", "plot-training")
SECTIONS = ("metrics-table", *PLOTS, "data-quality", "stage-times")
MARKS = ("rect", "path", "polyline", "circle")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, *tags: str) -> list[Node]:
        return [n for n in self.walk() if n.tag in tags]

    def by_id(self, node_id: str) -> Node | None:
        return next((n for n in self.walk() if n.attrs.get("id") == node_id), None)

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _TreeParser(HTMLParser):
    """A strict little DOM: every non-void element must be closed, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        # Text after a child lands on the parent; enough for substring checks.
        self.stack[-1].text += data


def parse(path: Path) -> Node:
    parser = _TreeParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [parser.root], f"unclosed: {[n.tag for n in parser.stack[1:]]}"
    return parser.root


def _seeds(ne: float, rng: random.Random) -> tuple[SeedResult, ...]:
    return tuple(SeedResult(seed=s, ne=ne + rng.uniform(-0.004, 0.004), auc=0.74 + rng.uniform(-0.01, 0.01),
                            logloss=0.09, calibration=1.0, best_epoch=3,
                            history=tuple(Epoch(e, 0.12 - 0.005 * e, 0.11 - 0.004 * e + rng.uniform(0, 0.002))
                                          for e in range(1, EPOCHS + 1)))
                 for s in range(1, SEEDS + 1))


def _variant(name: str, ne: float, rng: random.Random) -> VariantResult:
    curve = tuple(CalibrationBin(0.005 * (b + 1), 0.005 * (b + 1) * rng.uniform(0.8, 1.2), 2000 - 200 * b)
                  for b in range(CALIBRATION_BINS))
    version = None if name == "none" else f"{name}-0000000"
    return VariantResult(model_version=version, probe=Probe(0.99), ne=ne,
                         auc=0.74 + 0.01 * len(name) / 10, logloss=0.0912, calibration=1.02, ne_seed_sd=0.003,
                         seeds=_seeds(ne, rng), calibration_curve=curve, ne_interval=(ne - 0.006, ne + 0.006),
                         auc_interval=(0.73, 0.75))


def _ablation(ne: dict[str, float], reduction: Reduction | None, seed: int = 0) -> AblationResult:
    rng = random.Random(seed)
    return AblationResult(test_rows=15800, test_positives=320, seeds=(1, 2, 3), bootstrap_replicates=200,
                          ranker=RankerConfig(), variants={n: _variant(n, v, rng) for n, v in ne.items()},
                          label_delay_hours=LabelDelays(tuple(DELAY_EDGES), (90, 60, 50, 40, 30, 25, 15, 10),
                                                        median_hours=6.5),
                          reductions=None if reduction is None else {reduction.baseline: reduction},
                          relative_ne_reduction=reduction)


def _mode(ne: float, calibration: float) -> ModeResult:
    return ModeResult(train_rows=8000, train_seen_positives=150, ne=ne, auc=0.7, logloss=0.1,
                      calibration=calibration, seeds=_seeds(ne, random.Random(1)),
                      ne_interval=(ne - 0.01, ne + 0.01))


def full_page() -> ReportPage:
    """A page as the demo writes it, seeded, with every optional part."""
    splits = Splits(*(datetime.fromisoformat(f"2026-{t}T00:00:00+00:00")
                      for t in ("01-15", "01-15", "02-01", "02-08", "02-15")))
    quality = LakeReport(
        lake="/tmp/lake", run_at="2026-03-01T00:00:00+00:00", metrics={"orphan_conversion_rate": 0.0123},
        tables=[TableResult("raw/clicks", rows=50000, success=True, evaluated=9),
                TableResult("raw/conversions", rows=900, success=False, evaluated=7,
                            failed=["raw/conversions: click_id is never null"])],
        results_dir="/tmp/lake/_quality/20260301T000000Z")
    delayed = DelayedFeedbackResult(
        trained_at=datetime.fromisoformat("2026-02-08T00:00:00+00:00"),
        model_version_of_test_rows="duet-0000000",
        features="none (ids and the sequence summary)", seeds=(1, 2, 3), test_rows=15800, test_positives=320,
        pool=PoolFigures(clicks=9000, matured=4000, matured_positives=80, immature=5000,
                         immature_seen_positives=60, first_report=FirstReport(20.0, 90.0)),
        modes={"matured": _mode(0.95, 1.0), "naive": _mode(0.96, 0.8), "importance": _mode(0.94, 1.0)},
        relative_ne_reduction={"importance vs matured": ModeReduction(0.0105, (0.004, 0.017)),
                               "naive vs matured": ModeReduction(-0.0105, (-0.02, -0.001))})
    return ReportPage(
        seed=0, ablation=_ablation(NE, Reduction("duet", "shared", 0.004, (0.001, 0.007))),
        splits=Periods(datetime.fromisoformat("2026-02-22T00:00:00+00:00"), splits),
        data_quality=quality,
        stage_seconds={"generate": 2.1, "ingest": 20.3, "sequences": 31.0, "train": 120.4},
        control=_ablation({"shared": 0.99, "duet": 0.99},
                          Reduction("duet", "shared", -0.0005, (-0.002, 0.001)), seed=1),
        delayed_feedback=delayed)


def minimal_page() -> ReportPage:
    """The ablation alone (no duet reduction), none of the optional parts."""
    return ReportPage(seed=0, ablation=_ablation({n: NE[n] for n in ("shared", "duet")}, None))


def ceiling(bayes: float, oracle: float, closed: dict[str, float | None]) -> CeilingResult:
    return CeilingResult(rows=15800, positives=320, oracle_ne=oracle, bayes_ne=bayes, oracle_auc=0.8,
                         bayes_auc=0.75, samples=1000, median_ess=300.0, conversion_signal=1.0,
                         gap_closed=closed, gap_closed_oracle=closed)


def series_of(section: Node, *tags: str) -> list[str]:
    return [n.attrs["data-series"] for n in section.find_all(*tags) if "data-series" in n.attrs]


def headers(section: Node) -> list[str]:
    return [th.all_text().strip() for th in section.find_all("table")[0].find_all("th")]


def metric_rows(section: Node) -> list[list[str]]:
    table = section.find_all("table")[0]
    body = table.find_all("tbody")[0]
    return [[td.all_text().strip() for td in tr.find_all("td")] for tr in body.find_all("tr")]


def test_every_section_is_there_and_each_plot_draws_every_variant(tmp_path):
    path = write_report(full_page(), tmp_path / "report")
    assert path == tmp_path / "report" / "index.html"
    page = parse(path)
    for section_id in (*SECTIONS, "control", "delayed-feedback"):
        section = page.by_id(section_id)
        assert section is not None and section.tag == "section", section_id
        assert "not available" not in section.all_text(), section_id
    for plot in PLOTS:
        svgs = page.by_id(plot).find_all("svg")
        assert len(svgs) == 1, plot
        assert svgs[0].find_all(*MARKS), plot
    for plot in ("plot-ne", "plot-calibration", "plot-training"):
        assert set(series_of(page.by_id(plot), *MARKS)) == set(VARIANTS), plot
    calibration = page.by_id("plot-calibration")
    assert sorted(series_of(calibration, "circle")) == sorted(VARIANTS * CALIBRATION_BINS)
    assert len(calibration.find_all("line", "path")) > 0 and any(
        "diagonal" in n.attrs.get("class", "") for n in calibration.find_all("line"))
    assert len(series_of(page.by_id("plot-training"), "polyline")) == len(VARIANTS) * SEEDS
    bins = [n for n in page.by_id("plot-label-delay").find_all("rect") if "bin" in n.attrs.get("class", "")]
    assert len(bins) == len(DELAY_EDGES) - 1
    splits = metric_rows(page.by_id("summary"))
    assert [r[0] for r in splits] == ["label_cutoff", "pretrain_until", "train", "valid", "test"]
    assert splits[2][1] == "2026-01-15T00:00:00+00:00 → 2026-02-01T00:00:00+00:00"


def test_ne_bars_follow_the_values(tmp_path):
    page = parse(write_report(full_page(), tmp_path))
    bars = {n.attrs["data-series"]: float(n.attrs["height"])
            for n in page.by_id("plot-ne").find_all("rect") if "data-series" in n.attrs}
    assert sorted(bars, key=bars.get) == sorted(NE, key=NE.get)
    # NE differences of 0.03 on 0.95: the axis starts above zero, and the note says so
    assert "does not start at 0" in page.by_id("plot-ne").all_text()


def test_metrics_table_has_a_row_per_variant_in_order_with_formatted_numbers(tmp_path):
    page = parse(write_report(full_page(), tmp_path))
    section = page.by_id("metrics-table")
    rows = metric_rows(section)
    assert [r[0] for r in rows] == list(VARIANTS)
    duet = rows[VARIANTS.index("duet")]
    assert duet[1] == "0.9173 [0.9113, 0.9233]"
    assert duet[2] == "0.7440 [0.7300, 0.7500]"
    assert duet[3] == "0.0912" and duet[4] == "1.020"
    assert duet[5].count("seed ") == SEEDS
    text = " ".join(section.all_text().split())
    assert "+0.40%" in text and "+0.10% to +0.70% (excludes 0)" in text
    control = page.by_id("control")
    assert [r[0] for r in metric_rows(control)] == ["shared", "duet"]
    assert "(includes 0)" in control.all_text() and "15800 test rows, 320 positives" in control.all_text()


def test_the_ceiling_is_drawn_on_the_ne_chart_and_each_variant_shows_its_share_of_the_gap(tmp_path):
    bayes, oracle = 0.9000, 0.8500
    closed = {n: (NE["none"] - NE[n]) / (NE["none"] - bayes) for n in VARIANTS}
    page = parse(write_report(replace(full_page(), ceiling=ceiling(bayes, oracle, closed)), tmp_path))
    bars = {n.attrs["data-series"]: float(n.attrs["height"])
            for n in page.by_id("plot-ne").find_all("rect") if "data-series" in n.attrs}
    assert set(bars) == {*VARIANTS, "Bayes ceiling", "oracle"}
    assert bars["oracle"] < bars["Bayes ceiling"] < min(bars[n] for n in VARIANTS)   # the axis is NE
    rows = metric_rows(page.by_id("metrics-table"))
    column = headers(page.by_id("metrics-table")).index("share of the gap to the Bayes NE closed")
    assert rows[VARIANTS.index("none")][column] == "+0.00%"
    assert rows[VARIANTS.index("duet")][column] == f"{closed['duet']:+.2%}"
    ceiling_line = next(n for n in page.by_id("metrics-table").walk() if n.attrs.get("class") == "ceiling")
    assert "Bayes NE" in ceiling_line.all_text() and "0.9000" in ceiling_line.all_text()
    # Without a ceiling (events from outside), the column is not there.
    plain = parse(write_report(full_page(), tmp_path / "plain")).by_id("metrics-table")
    assert len(metric_rows(plain)[0]) == len(rows[0]) - 1
    # A share that could not be computed (none not above the Bayes NE) is n/a.
    page = parse(write_report(replace(full_page(), ceiling=ceiling(bayes, oracle, dict.fromkeys(VARIANTS))),
                              tmp_path / "none"))
    assert {r[column] for r in metric_rows(page.by_id("metrics-table"))} == {"n/a"}


def test_each_variant_shows_the_rankers_gain_beside_what_its_probe_finds(tmp_path):
    page = full_page()
    variants = {name: replace(v, probe=Probe(0.99, 0.96, 0.0303 if name == "duet" else 0.01))
                if name != "none" else v for name, v in page.ablation.variants.items()}
    page = parse(write_report(replace(page, ablation=replace(page.ablation, variants=variants)), tmp_path))
    section = page.by_id("metrics-table")
    names = headers(section)
    rows = dict(zip(VARIANTS, metric_rows(section), strict=True))
    ranker = names.index("ranker's gain over none")
    probe = names.index("probe's gain (what the vector knows)")
    assert rows["duet"][ranker] == f"{(NE['none'] - NE['duet']) / NE['none']:+.2%}"
    assert rows["duet"][probe] == "+3.03%" and rows["shared"][probe] == "+1.00%"
    assert rows["none"][ranker] == "n/a" and rows["none"][probe] == "n/a"


def test_the_delayed_feedback_section_has_a_row_per_mode_and_both_reductions(tmp_path):
    page = parse(write_report(full_page(), tmp_path))
    section = page.by_id("delayed-feedback")
    assert [r[0] for r in metric_rows(section)] == ["matured", "naive", "importance"]
    text = " ".join(section.all_text().split())
    assert "importance against matured" in text and "+1.05%" in text and "(excludes 0)" in text
    assert "naive against matured" in text and "-1.05%" in text
    assert "trained at 2026-02-08T00:00:00+00:00" in text
    assert "9000 clicks, 4000 matured, 5000 still maturing" in text
    assert "not available" not in text
    assert parse(write_report(minimal_page(), tmp_path / "minimal")).by_id("delayed-feedback") is None


def test_data_quality_and_stage_times_tables(tmp_path):
    page = parse(write_report(full_page(), tmp_path))
    quality = page.by_id("data-quality").all_text()
    assert "FAIL" in quality and "raw/conversions: click_id is never null" in quality and "0.0123" in quality
    stages = metric_rows(page.by_id("stage-times"))
    assert [r[0] for r in stages] == ["generate", "ingest", "sequences", "train", "total"]
    assert stages[-1][1] == "173.8"


def test_page_references_nothing_outside_itself(tmp_path):
    text = write_report(full_page(), tmp_path).read_text(encoding="utf-8").lower()
    for outside in ("http://", "https://", "src=", "href=", "<script", "<link", "@import", "url("):
        assert outside not in text, outside


def test_strings_from_the_data_are_escaped(tmp_path):
    page = full_page()
    evil = "<script>alert(1)</script>"
    variants = {**page.ablation.variants, evil: page.ablation.variants["duet"]}
    page.data_quality.tables[0].table = f"raw/{evil}"
    page = replace(page, ablation=replace(page.ablation, variants=variants),
                   stage_seconds={**page.stage_seconds, f"{evil}&": 1.0})
    text = (path := write_report(page, tmp_path)).read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = parse(path)
    assert metric_rows(page.by_id("metrics-table"))[-1][0] == evil  # after the known variants
    assert evil in series_of(page.by_id("plot-ne"), "rect")
    assert f"raw/{evil}" in page.by_id("data-quality").all_text()


def test_a_page_without_the_optional_parts_says_what_is_not_available(tmp_path):
    page = parse(write_report(minimal_page(), tmp_path))
    rows = metric_rows(page.by_id("metrics-table"))
    assert [r[0] for r in rows] == ["shared", "duet"]
    assert rows[1][1] == "0.9173 [0.9113, 0.9233]"
    assert "not available" in page.by_id("metrics-table").all_text()  # no relative NE reduction
    assert "time splits: not available" in page.by_id("summary").all_text()
    for section_id in ("data-quality", "stage-times"):
        section = page.by_id(section_id)
        assert "not available" in section.all_text() and not section.find_all("table"), section_id
    for plot in PLOTS:   # the ablation's own figures are always there
        assert page.by_id(plot).find_all("svg"), plot
    assert page.by_id("control") is None and page.by_id("delayed-feedback") is None


def test_a_variant_without_figures_is_named_not_drawn(tmp_path):
    page = minimal_page()
    nan = float("nan")
    shared = page.ablation.variants["shared"]
    broken = replace(shared, ne=nan, calibration_curve=(CalibrationBin(nan, nan, 10),),
                     seeds=tuple(replace(s, history=(Epoch(0, nan, nan),)) for s in shared.seeds))
    page = parse(write_report(replace(page, ablation=replace(
        page.ablation, variants={**page.ablation.variants, "shared": broken})), tmp_path))
    assert "No curve for: shared." in page.by_id("plot-calibration").all_text()
    assert set(series_of(page.by_id("plot-calibration"), *MARKS)) == {"duet"}
    assert set(series_of(page.by_id("plot-training"), *MARKS)) == {"duet"}
    assert set(series_of(page.by_id("plot-ne"), *MARKS)) == {"duet"}
    assert metric_rows(page.by_id("metrics-table"))[0][1] == "nan [0.9150, 0.9270]"


def test_the_page_is_the_same_from_results_rebuilt_from_their_json(tmp_path):
    """The demo's stage cache stores each result as JSON and rebuilds it with ``core.records.from_dict``: the
    page from rebuilt results is the page from the originals."""
    page = replace(full_page(), ceiling=ceiling(0.9, 0.85, {n: 0.1 for n in VARIANTS}))
    rebuilt = replace(page, **{part: from_dict(type(value), json.loads(json.dumps(to_dict(value))))
                               for part in ("ablation", "control", "ceiling", "delayed_feedback")
                               if (value := getattr(page, part)) is not None})
    assert rebuilt == page
    assert render_html(rebuilt) == render_html(page)


def test_the_page_holds_its_figures_as_data(tmp_path):
    page = full_page()
    raw = parse(write_report(page, tmp_path)).by_id("raw-report").all_text()
    data = json.loads(raw[raw.index("{"):])
    assert data["seed"] == 0 and data["variants"]["duet"]["ne"] == NE["duet"]
    assert data["splits"] == page.splits.to_dict() and data["data_quality"]["success"] is False
    assert set(data) >= {"control", "delayed_feedback", "stage_seconds", "label_delay_hours"}


def test_the_write_is_atomic_and_a_page_that_cannot_render_keeps_the_old_one(tmp_path):
    first = write_report(minimal_page(), tmp_path)
    before = first.read_text(encoding="utf-8")
    with pytest.raises(AttributeError):
        write_report(replace(minimal_page(), ablation=None), tmp_path)
    assert first.read_text(encoding="utf-8") == before
    write_report(full_page(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left behind
    assert first.read_text(encoding="utf-8") != before


def test_the_chart_kit_imports_only_the_standard_library():
    """``duet.charts`` draws the page's plots without a plotting library (the page must stay
    self-contained), and knows nothing of duet."""
    tree = ast.parse((REPO / "duet" / "charts.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_consistency_section_has_a_row_per_reader_path(tmp_path):
    from serving.consistency import ConsistencyReport, PathResult

    paths = [PathResult("sdk", 200, matched=200, others_sampled=101, carried=40),
             PathResult("fast", 200, matched=197, mismatched=2, missing=1, others_sampled=101, extra=1,
                        max_abs_diff=0.25, examples={"extra": ["<u1>"]})]
    report = ConsistencyReport("duet-aaaaaaa", "2026-01-11T00:00:00+00:00", "sqlite", "duet-aaaaaaa", 1234,
                               1234, 200, 0, 1e-6, paths)
    page = parse(write_report(replace(full_page(), consistency=report), tmp_path))
    section = page.by_id("online-consistency")
    assert "FAIL" in section.all_text() and "duet-aaaaaaa" in section.all_text()
    rows = metric_rows(section)
    assert [r[0] for r in rows] == ["sdk", "fast"]
    assert rows[0][3:7] == ["0.00% (0)", "0.00% (0)", "0.00% (0 of 101)", "40"]
    assert rows[1][3:6] == ["1.00% (2)", "0.50% (1)", "0.99% (1 of 101)"] and rows[1][7] == "0.250000"
    raw = page.by_id("raw-report").all_text()
    assert json.loads(raw[raw.index("{"):])["consistency"]["ok"] is False
    assert parse(write_report(full_page(), tmp_path / "without")).by_id("online-consistency") is None
