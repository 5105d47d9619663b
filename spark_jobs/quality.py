"""What is checked in the tables this stage writes: raw, quarantine and sequence suites, as plain data.

The conductor asks ``suites_for`` for the suites of the tables present and hands them, with ``metrics``,
to the generic runner ``core.quality.validate_lake``. A suite is built for a validation run because some
bounds depend on it: no event may be later than the run time plus ``future_slack`` (an event "from the
future" is a clock or unit bug), none earlier than ``ParseRules.min_ts``. Cross-table checks (an
attributed click must exist, belong to the same user and precede its conversion) are
``UnexpectedRowsExpectation`` queries that read the other table through a temporary view the runner
registers (``raw_clicks``, ``raw_conversions``: ``core.quality.view_name``).

GX 1.x ``ExpectColumnValueLengthsToEqual`` does not count array elements, so array sizes are checked with
``UnexpectedRowsExpectation`` on Spark SQL ``size(col)``. The sequence suites read the windows and caps
the tables were built with from their Delta properties (``SequenceConfig.properties``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation
from pyspark.sql import SparkSession

from core.contracts import (
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    QUARANTINE_TABLES,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    Table,
)
from core.quality import Suite, has_columns, in_range, not_null, unique, view_name
from spark_jobs.parse import ParseRules
from spark_jobs.sequences import SequenceConfig

CLICKS_VIEW = view_name(RAW_CLICKS)
CONVERSIONS_VIEW = view_name(RAW_CONVERSIONS)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the data quality suites."""

    now: datetime
    future_slack: timedelta = timedelta(days=1)
    max_orphan_rate: float = 0.05  # attributed conversions whose click is not in raw/clicks
    rules: ParseRules = field(default_factory=ParseRules)


def _in_range(table: Table, column: str, cfg: QualityConfig) -> Expectation:
    return in_range(table, column, cfg.rules.min_ts, cfg.now + cfg.future_slack, "no future events")


def raw_clicks(cfg: QualityConfig) -> Suite:
    t = RAW_CLICKS
    return Suite(t, [
        has_columns(t),
        *not_null(t, t.columns),
        unique(t, "click_id"),
        _in_range(t, "click_ts", cfg),
    ])


def raw_conversions(cfg: QualityConfig, with_clicks: bool) -> Suite:
    t = RAW_CONVERSIONS
    expectations = [
        has_columns(t),
        *not_null(t, [c.name for c in t.fields if not c.nullable]),
        unique(t, "conversion_id"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="report_ts", column_B="conversion_ts", or_equal=True,
            description=f"{t.path}: report_ts >= conversion_ts (reported after it happened)"),
        _in_range(t, "conversion_ts", cfg),
        _in_range(t, "report_ts", cfg),
    ]
    if not with_clicks:
        return Suite(t, expectations)
    expectations += [
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "SELECT v.conversion_id, v.user_id, v.conversion_ts, c.user_id AS click_user_id, c.click_ts "
                f"FROM {{batch}} v JOIN {CLICKS_VIEW} c ON v.attributed_click_id = c.click_id "
                "WHERE c.user_id <> v.user_id OR c.click_ts > v.conversion_ts"),
            description=f"{t.path}: an attributed click belongs to the same user and precedes the "
                        "conversion"),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "SELECT * FROM (SELECT count_if(c.click_id IS NULL) / count(*) AS orphan_rate "
                f"FROM {{batch}} v LEFT JOIN {CLICKS_VIEW} c ON v.attributed_click_id = c.click_id "
                "WHERE v.attributed_click_id IS NOT NULL) "
                f"WHERE orphan_rate > {cfg.max_orphan_rate}"),
            description=f"{t.path}: at most {cfg.max_orphan_rate:.0%} of attributed conversions name a "
                        "click that is not in raw/clicks (orphans)"),
    ]
    return Suite(t, expectations, needs=(RAW_CLICKS,))


def quarantine(table: Table) -> Suite:
    return Suite(table, [
        has_columns(table),
        *not_null(table, ["reason", "source", "ingested_at", "quarantine_id"]),
        unique(table, "quarantine_id"),
    ])


def _sequence_checks(t: Table, arrays: list[str], ts: str, lookback_s: int, cap: int) -> list[Expectation]:
    sizes = " OR ".join(f"size({a}) <> length" for a in arrays)
    return [
        has_columns(t),
        *not_null(t, t.columns),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "snapshot_ts"],
                                            description=f"{t.path}: one row per (user_id, snapshot_ts)"),
        gxe.ExpectColumnValuesToBeBetween(column="length", min_value=1, max_value=cap,
                                          description=f"{t.path}: length within [1, {cap}]"),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=f"SELECT user_id, snapshot_ts, length FROM {{batch}} WHERE {sizes}",
            description=f"{t.path}: arrays aligned, each as long as length"),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                f"SELECT user_id, snapshot_ts FROM {{batch}} WHERE exists({ts}, x -> x >= snapshot_ts "
                f"OR x < snapshot_ts - INTERVAL {lookback_s} SECONDS)"),
            description=f"{t.path}: every {ts} before the snapshot and inside the {lookback_s} s lookback"),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(f"SELECT user_id, snapshot_ts FROM {{batch}} "
                                   f"WHERE {ts} <> array_sort({ts})"),
            description=f"{t.path}: {ts} ascending"),
    ]


def _built_with(props: dict[str, str], lookback_key: str, cap_key: str) -> tuple[int, int]:
    """The (lookback seconds, cap) a sequence table was built with; the defaults for an older table."""
    d = SequenceConfig().properties()
    return int(props.get(lookback_key, d[lookback_key])), int(props.get(cap_key, d[cap_key]))


def click_sequences(props: dict[str, str]) -> Suite:
    lookback, cap = _built_with(props, "duet.sequences.click_lookback_s", "duet.sequences.max_clicks")
    t = CLICK_SEQUENCES
    return Suite(t, _sequence_checks(t, ["ad_ids", "advertiser_ids", "click_ts"], "click_ts", lookback, cap))


def conversion_sequences(props: dict[str, str]) -> Suite:
    lookback, cap = _built_with(props, "duet.sequences.conversion_lookback_s",
                                "duet.sequences.max_conversions")
    t = CONVERSION_SEQUENCES
    checks = _sequence_checks(t, ["advertiser_ids", "conversion_types", "conversion_ts", "attributed"],
                              "conversion_ts", lookback, cap)
    # Known only once reported: every element must match a raw conversion reported before the snapshot.
    checks.append(gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            "SELECT q.* FROM (SELECT user_id, snapshot_ts, "
            "inline(arrays_zip(advertiser_ids, conversion_types, conversion_ts)) FROM {batch}) q "
            f"LEFT ANTI JOIN {CONVERSIONS_VIEW} r ON r.user_id = q.user_id "
            "AND r.advertiser_id = q.advertiser_ids AND r.conversion_type = q.conversion_types "
            "AND r.conversion_ts = q.conversion_ts AND r.report_ts < q.snapshot_ts"),
        description=f"{t.path}: no conversion reported at or after the snapshot (checked against "
                    "raw/conversions)"))
    return Suite(t, checks, needs=(RAW_CONVERSIONS,))


def suites_for(cfg: QualityConfig, present: set[str],
               properties: dict[str, dict[str, str]] | None = None) -> list[Suite]:
    """The suites that apply to this stage's tables present in the lake (by contract path).

    ``properties`` holds each table's Delta properties (the sequence windows they were built with).
    """
    properties = properties or {}
    suites = []
    if RAW_CLICKS.path in present:
        suites.append(raw_clicks(cfg))
    if RAW_CONVERSIONS.path in present:
        suites.append(raw_conversions(cfg, with_clicks=RAW_CLICKS.path in present))
    suites += [quarantine(t) for t in QUARANTINE_TABLES if t.path in present]
    if CLICK_SEQUENCES.path in present:
        suites.append(click_sequences(properties.get(CLICK_SEQUENCES.path, {})))
    if CONVERSION_SEQUENCES.path in present and RAW_CONVERSIONS.path in present:
        suites.append(conversion_sequences(properties.get(CONVERSION_SEQUENCES.path, {})))
    return suites


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


def metrics(spark: SparkSession, lake: str) -> dict[str, float]:
    """Figures of this stage's tables worth tracking that are not pass/fail."""
    rate = orphan_rate(spark, lake)
    return {} if rate is None else {"raw/conversions orphan rate": rate}
