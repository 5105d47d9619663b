"""Run the Great Expectations suites on the lake's Delta tables (``duet validate``).

Each table present in the lake is read with Spark and validated in an ephemeral GX context (Spark
datasource, whole-dataframe batch). The full GX results are written as JSON under
``<lake>/_quality/<run time>/`` (one file per table, plus ``summary.json``), with ``_quality/latest.json``
pointing at the newest run. Figures worth tracking that are not pass/fail (the orphan rate) go into the
summary too. This module reads tables and writes only under ``_quality``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from duet.contracts import (
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    QUARANTINE_TABLES,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    RAW_TABLES,
    Table,
)
from duet.quality.suites import QualityConfig, Suite, all_suites, view_name

KNOWN_TABLES: tuple[Table, ...] = (*RAW_TABLES, *QUARANTINE_TABLES, CLICK_SEQUENCES, CONVERSION_SEQUENCES)


@dataclass
class TableResult:
    table: str
    rows: int
    success: bool
    failed: list[str] = field(default_factory=list)  # descriptions of the failed expectations
    evaluated: int = 0


@dataclass
class LakeReport:
    lake: str
    run_at: str
    tables: list[TableResult]
    metrics: dict[str, float]
    results_dir: str

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables)

    def summary(self) -> str:
        lines = []
        for t in self.tables:
            mark = "PASS" if t.success else "FAIL"
            lines.append(f"{mark} {t.table} ({t.rows} rows, {t.evaluated} expectations)")
            lines += [f"     failed: {d}" for d in t.failed]
        lines += [f"     {k}: {v:.4f}" for k, v in self.metrics.items()]
        if not self.tables:
            lines.append("no duet tables found under the lake")
        lines.append(f"GX results: {self.results_dir}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"lake": self.lake, "run_at": self.run_at, "success": self.success, "metrics": self.metrics,
                "tables": [t.__dict__ for t in self.tables], "results_dir": self.results_dir}


def _present(spark: SparkSession, lake: str) -> dict[str, dict[str, str]]:
    """The duet tables under ``lake``, by contract path, with their Delta properties."""
    from delta.tables import DeltaTable

    return {t.path: DeltaTable.forPath(spark, t.location(lake)).detail().first()["properties"]
            for t in KNOWN_TABLES if DeltaTable.isDeltaTable(spark, t.location(lake))}


def _run_suite(context, spark: SparkSession, lake: str, suite: Suite) -> tuple[TableResult, dict]:
    import great_expectations as gx

    df = spark.read.format("delta").load(suite.table.location(lake))
    for other in suite.needs:
        spark.read.format("delta").load(other.location(lake)).createOrReplaceTempView(view_name(other))
    name = suite.table.path.replace("/", "_")
    asset = context.data_sources.add_spark(name=f"{name}_source").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for e in suite.expectations:
        gx_suite.add_expectation(e)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=gx_suite, name=f"{name}_validation"))
    result = definition.run(batch_parameters={"dataframe": df})
    failed = [r.expectation_config.description or r.expectation_config.type
              for r in result.results if not r.success]
    rows = df.count()
    return TableResult(suite.table.path, rows, bool(result.success), failed, len(result.results)), \
        result.to_json_dict()


def orphan_rate(spark: SparkSession, lake: str) -> float | None:
    """Share of attributed conversions whose click is not in raw/clicks (None without both tables)."""
    from delta.tables import DeltaTable

    if not all(DeltaTable.isDeltaTable(spark, t.location(lake)) for t in (RAW_CLICKS, RAW_CONVERSIONS)):
        return None
    conv = spark.read.format("delta").load(RAW_CONVERSIONS.location(lake)) \
        .where("attributed_click_id IS NOT NULL")
    clicks = spark.read.format("delta").load(RAW_CLICKS.location(lake)).select("click_id")
    row = conv.join(clicks, conv.attributed_click_id == clicks.click_id, "left") \
        .selectExpr("count(*) AS n", "count_if(click_id IS NULL) AS orphans").first()
    return (row["orphans"] / row["n"]) if row["n"] else 0.0


def validate_lake(spark: SparkSession, lake: str, cfg: QualityConfig | None = None) -> LakeReport:
    """Validate every duet table present under ``lake``; write the GX results; return the report."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    cfg = cfg or QualityConfig(now=datetime.now(UTC))
    run_at = cfg.now.strftime("%Y%m%dT%H%M%SZ")
    out = Path(lake) / "_quality" / run_at
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    tables, raw_results = [], {}
    properties = _present(spark, lake)
    for suite in all_suites(cfg, set(properties), properties):
        result, raw = _run_suite(context, spark, lake, suite)
        tables.append(result)
        raw_results[suite.table.path] = raw
    metrics = {}
    rate = orphan_rate(spark, lake)
    if rate is not None:
        metrics["raw/conversions orphan rate"] = rate
    report = LakeReport(lake, cfg.now.isoformat(), tables, metrics, str(out))
    out.mkdir(parents=True, exist_ok=True)
    for path, raw in raw_results.items():
        (out / f"{path.replace('/', '_')}.json").write_text(json.dumps(raw, indent=1, default=str))
    _write_atomic(out / "summary.json", json.dumps(report.to_dict(), indent=1))
    _write_atomic(out.parent / "latest.json", json.dumps(report.to_dict(), indent=1))
    return report


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
