"""The ranker's HTML report: every section, a mark per variant in each plot, escaped strings, no outside
reference, a minimal report still readable, atomic writes. Pure Python, no Spark."""

from __future__ import annotations

import ast
import random
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ranker.report import write_report
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


def full_report() -> dict:
    """A report as the ranker writes it, seeded, with every optional part."""
    rng = random.Random(0)
    variants = {}
    for name in VARIANTS:
        ne = NE[name]
        seeds = [{"seed": s, "ne": ne + rng.uniform(-0.004, 0.004), "auc": 0.74 + rng.uniform(-0.01, 0.01),
                  "logloss": 0.09, "calibration": 1.0, "best_epoch": 3,
                  "history": [{"epoch": e, "train_loss": 0.12 - 0.005 * e,
                               "valid_loss": 0.11 - 0.004 * e + rng.uniform(0, 0.002)}
                              for e in range(1, EPOCHS + 1)]}
                 for s in range(1, SEEDS + 1)]
        curve = [{"predicted": 0.005 * (b + 1), "observed": 0.005 * (b + 1) * rng.uniform(0.8, 1.2),
                  "count": 2000 - 200 * b} for b in range(CALIBRATION_BINS)]
        variants[name] = {"ne": ne, "auc": 0.74 + 0.01 * len(name) / 10, "logloss": 0.0912,
                          "calibration": 1.02, "ne_interval": [ne - 0.006, ne + 0.006],
                          "auc_interval": [0.73, 0.75], "seeds": seeds, "calibration_curve": curve}
    reduction = {"variant": "duet", "baseline": "shared", "mean": 0.004, "interval": [0.001, 0.007]}
    return {
        "seed": 0, "test_rows": 15800, "test_positives": 320,
        "splits": {"pretrain_until": "2026-01-15T00:00:00+00:00",
                   "train": ["2026-01-15T00:00:00+00:00", "2026-02-01T00:00:00+00:00"],
                   "valid": ["2026-02-01T00:00:00+00:00", "2026-02-08T00:00:00+00:00"],
                   "test": ["2026-02-08T00:00:00+00:00", "2026-02-15T00:00:00+00:00"],
                   "label_cutoff": "2026-02-22T00:00:00+00:00"},
        "variants": variants,
        "relative_ne_reduction": reduction,
        "label_delay_hours": {"edges": DELAY_EDGES, "counts": [90, 60, 50, 40, 30, 25, 15, 10]},
        "data_quality": {"lake": "/tmp/lake", "run_at": "2026-03-01T00:00:00+00:00", "success": False,
                         "metrics": {"orphan_conversion_rate": 0.0123},
                         "tables": [{"table": "raw/clicks", "rows": 50000, "success": True, "failed": [],
                                     "evaluated": 9},
                                    {"table": "raw/conversions", "rows": 900, "success": False,
                                     "failed": ["raw/conversions: click_id is never null"], "evaluated": 7}],
                         "results_dir": "/tmp/lake/_quality/20260301T000000Z"},
        "stage_seconds": {"generate": 2.1, "ingest": 20.3, "sequences": 31.0, "train": 120.4},
        "control": {"variants": {n: {"ne": 0.99, "auc": 0.5, "logloss": 0.1} for n in ("shared", "duet")},
                    "relative_ne_reduction": {"variant": "duet", "baseline": "shared", "mean": -0.0005,
                                              "interval": [-0.002, 0.001]}},
        "delayed_feedback": {
            "trained_at": "2026-02-08T00:00:00+00:00", "features": "none (ids and the sequence summary)",
            "pool": {"clicks": 9000, "matured": 4000, "immature": 5000},
            "modes": {m: {"ne": ne, "auc": 0.7, "logloss": 0.1, "calibration": c,
                          "ne_interval": [ne - 0.01, ne + 0.01]}
                      for m, ne, c in (("matured", 0.95, 1.0), ("naive", 0.96, 0.8),
                                       ("importance", 0.94, 1.0))},
            "relative_ne_reduction": {"importance vs matured": {"mean": 0.0105, "interval": [0.004, 0.017]},
                                      "naive vs matured": {"mean": -0.0105, "interval": [-0.02, -0.001]}}},
    }


def minimal_report() -> dict:
    return {"seed": 0, "test_rows": 1000, "test_positives": 20,
            "variants": {n: {"ne": NE[n], "auc": 0.7, "logloss": 0.1} for n in ("shared", "duet")}}


def series_of(section: Node, *tags: str) -> list[str]:
    return [n.attrs["data-series"] for n in section.find_all(*tags) if "data-series" in n.attrs]


def headers(section: Node) -> list[str]:
    return [th.all_text().strip() for th in section.find_all("table")[0].find_all("th")]


def metric_rows(section: Node) -> list[list[str]]:
    table = section.find_all("table")[0]
    body = table.find_all("tbody")[0]
    return [[td.all_text().strip() for td in tr.find_all("td")] for tr in body.find_all("tr")]


def test_every_section_is_there_and_each_plot_draws_every_variant(tmp_path):
    path = write_report(full_report(), tmp_path / "report")
    assert path == tmp_path / "report" / "index.html"
    page = parse(path)
    for section_id in (*SECTIONS, "control"):
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


def test_ne_bars_follow_the_values(tmp_path):
    page = parse(write_report(full_report(), tmp_path))
    bars = {n.attrs["data-series"]: float(n.attrs["height"])
            for n in page.by_id("plot-ne").find_all("rect") if "data-series" in n.attrs}
    assert sorted(bars, key=bars.get) == sorted(NE, key=NE.get)
    # NE differences of 0.03 on 0.95: the axis starts above zero, and the note says so
    assert "does not start at 0" in page.by_id("plot-ne").all_text()


def test_metrics_table_has_a_row_per_variant_in_order_with_formatted_numbers(tmp_path):
    page = parse(write_report(full_report(), tmp_path))
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
    control = metric_rows(page.by_id("control"))
    assert [r[0] for r in control] == ["shared", "duet"]
    assert "(includes 0)" in page.by_id("control").all_text()


def test_the_ceiling_is_drawn_on_the_ne_chart_and_each_variant_shows_its_share_of_the_gap(tmp_path):
    report = full_report()
    bayes, oracle = 0.9000, 0.8500
    closed = {n: (NE["none"] - NE[n]) / (NE["none"] - bayes) for n in VARIANTS}
    report["ceiling"] = {"bayes_ne": bayes, "oracle_ne": oracle, "gap_closed": closed}
    page = parse(write_report(report, tmp_path))
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
    plain = parse(write_report(full_report(), tmp_path / "plain")).by_id("metrics-table")
    assert len(metric_rows(plain)[0]) == len(rows[0]) - 1


def test_each_variant_shows_the_rankers_gain_beside_what_its_probe_finds(tmp_path):
    report = full_report()
    for name in VARIANTS[1:]:
        report["variants"][name]["probe"] = {"ne_summary": 0.99, "ne_with_vector": 0.96,
                                             "gain": 0.0303 if name == "duet" else 0.01}
    report["variants"]["none"]["probe"] = {"ne_summary": 0.99}
    page = parse(write_report(report, tmp_path))
    section = page.by_id("metrics-table")
    names = headers(section)
    rows = dict(zip(VARIANTS, metric_rows(section), strict=True))
    ranker = names.index("ranker's gain over none")
    probe = names.index("probe's gain (what the vector knows)")
    assert rows["duet"][ranker] == f"{(NE['none'] - NE['duet']) / NE['none']:+.2%}"
    assert rows["duet"][probe] == "+3.03%" and rows["shared"][probe] == "+1.00%"
    assert rows["none"][ranker] == "n/a" and rows["none"][probe] == "n/a"


def test_the_delayed_feedback_section_has_a_row_per_mode_and_both_reductions(tmp_path):
    page = parse(write_report(full_report(), tmp_path))
    section = page.by_id("delayed-feedback")
    assert [r[0] for r in metric_rows(section)] == ["matured", "naive", "importance"]
    text = " ".join(section.all_text().split())
    assert "importance against matured" in text and "+1.05%" in text and "(excludes 0)" in text
    assert "naive against matured" in text and "-1.05%" in text
    assert "9000 clicks, 4000 matured, 5000 still maturing" in text
    assert "not available" not in text
    assert parse(write_report(minimal_report(), tmp_path / "minimal")).by_id("delayed-feedback") is None


def test_data_quality_and_stage_times_tables(tmp_path):
    page = parse(write_report(full_report(), tmp_path))
    quality = page.by_id("data-quality").all_text()
    assert "FAIL" in quality and "raw/conversions: click_id is never null" in quality and "0.0123" in quality
    stages = metric_rows(page.by_id("stage-times"))
    assert [r[0] for r in stages] == ["generate", "ingest", "sequences", "train", "total"]
    assert stages[-1][1] == "173.8"


def test_page_references_nothing_outside_itself(tmp_path):
    text = write_report(full_report(), tmp_path).read_text(encoding="utf-8").lower()
    for outside in ("http://", "https://", "src=", "href=", "<script", "<link", "@import", "url("):
        assert outside not in text, outside


def test_strings_from_the_data_are_escaped(tmp_path):
    report = full_report()
    evil = "<script>alert(1)</script>"
    report["variants"][evil] = dict(report["variants"]["duet"])
    report["data_quality"]["tables"][0]["table"] = f"raw/{evil}"
    report["stage_seconds"][f"{evil}&"] = 1.0
    text = (path := write_report(report, tmp_path)).read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = parse(path)
    assert metric_rows(page.by_id("metrics-table"))[-1][0] == evil  # after the known variants
    assert evil in series_of(page.by_id("plot-ne"), "rect")
    assert f"raw/{evil}" in page.by_id("data-quality").all_text()


def test_a_minimal_report_still_has_the_metrics_table(tmp_path):
    page = parse(write_report(minimal_report(), tmp_path))
    rows = metric_rows(page.by_id("metrics-table"))
    assert [r[0] for r in rows] == ["shared", "duet"]
    assert rows[1][1] == "0.9173" and rows[1][4] == "n/a"
    assert "not available" in page.by_id("metrics-table").all_text()  # no relative NE reduction
    assert page.by_id("plot-ne").find_all("svg")  # NE is there, so its plot is drawn
    for section_id in (*PLOTS[1:], "data-quality", "stage-times"):
        section = page.by_id(section_id)
        assert "not available" in section.all_text() and not section.find_all("svg"), section_id
    assert page.by_id("control") is None


def test_a_malformed_histogram_is_not_available_not_fatal(tmp_path):
    report = minimal_report() | {"label_delay_hours": {"edges": [0, 1, 2], "counts": [5, 6, 7]}}
    page = parse(write_report(report, tmp_path))
    assert "3 edges for 3 counts" in page.by_id("plot-label-delay").all_text()


def test_the_write_is_atomic_and_a_bad_report_keeps_the_old_page(tmp_path):
    first = write_report(minimal_report(), tmp_path)
    before = first.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="variants"):
        write_report({"seed": 0, "variants": ["duet"]}, tmp_path)
    assert first.read_text(encoding="utf-8") == before
    write_report(full_report(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left behind
    assert first.read_text(encoding="utf-8") != before


def test_the_module_imports_only_the_standard_library():
    """The page's module, and the project modules it reads (the variant registry), transitively."""
    seen, todo = set(), ["ranker.report"]
    while todo:
        module = todo.pop()
        seen.add(module)
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        project = {m for m in imported if (REPO / (m.replace(".", "/") + ".py")).is_file()}
        assert project <= {"core.variants", "core.errors"}, (module, project)
        outside = {m.split(".")[0] for m in imported - project}
        assert outside <= set(sys.stdlib_module_names) | {"__future__"}, (module, outside)
        todo += sorted(project - seen)
    assert seen == {"ranker.report", "core.variants", "core.errors"}
