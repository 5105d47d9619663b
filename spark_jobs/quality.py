"""What is checked in the tables this stage writes: raw, quarantine and sequence suites, as plain data.

The conductor asks ``suites_for`` for the suites of the tables present and hands them, with ``metrics``,
to the generic runner ``core.quality.validate_lake``. A suite is built for a validation run because some
bounds depend on it: no event may be later than the run time plus ``future_slack`` (an event "from the
future" is a clock or unit bug), none earlier than ``ParseRules.min_ts``. Cross-table checks (an
attributed click must exist, belong to the same user and precede its conversion) are query checks
(``core.quality.no_rows``, GX's ``UnexpectedRowsExpectation`` counted once) that read the other table
through a temporary view the runner registers (``raw_clicks``, ``raw_conversions``:
``core.quality.view_name``).

GX 1.x ``ExpectColumnValueLengthsToEqual`` does not count array elements, so array sizes are checked with
``no_rows`` on Spark SQL ``size(col)``. The sequence suites check each row against the
windows and caps its own snapshot was built with, joined from ``features/_snapshots``
(``sequences.record_snapshots``), so snapshots built with other settings validate side by side; a snapshot
recorded as not complete in both sequence tables (a run died between its writes) fails. A snapshot with
no record (built before the record existed) is checked against the table's old ``duet.sequences.*``
properties, else the defaults.
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
    SEQUENCE_SNAPSHOTS,
    Table,
)
from core.quality import Suite, has_columns, in_range, no_rows, not_null, unique, view_name
from spark_jobs.parse import ParseRules
from spark_jobs.sequences import LATEST_RECORDS, SEQUENCE_TABLES, SequenceConfig

CLICKS_VIEW = view_name(RAW_CLICKS)
CONVERSIONS_VIEW = view_name(RAW_CONVERSIONS)
SNAPSHOTS_VIEW = view_name(SEQUENCE_SNAPSHOTS)
LEGACY_PROPERTY = "duet.sequences."  # + setting: how lakes recorded settings before features/_snapshots


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
        no_rows(
            query=(
                "SELECT v.conversion_id, v.user_id, v.conversion_ts, c.user_id AS click_user_id, c.click_ts "
                f"FROM {{batch}} v JOIN {CLICKS_VIEW} c ON v.attributed_click_id = c.click_id "
                "WHERE c.user_id <> v.user_id OR c.click_ts > v.conversion_ts"),
            description=f"{t.path}: an attributed click belongs to the same user and precedes the "
                        "conversion"),
        no_rows(
            query=(
                "SELECT * FROM (SELECT count_if(c.click_id IS NULL) / count(*) AS orphan_rate "
                f"FROM {{batch}} v LEFT JOIN {CLICKS_VIEW} c ON v.attributed_click_id = c.click_id "
                "WHERE v.attributed_click_id IS NOT NULL) "
                f"WHERE orphan_rate > {cfg.max_orphan_rate}"),
            description=f"{t.path}: at most {cfg.max_orphan_rate:.0%} of attributed conversions name a "
                        f"click that is not in {RAW_CLICKS.path} (orphans)"),
    ]
    return Suite(t, expectations, needs=(RAW_CLICKS,))


def quarantine(table: Table) -> Suite:
    return Suite(table, [
        has_columns(table),
        *not_null(table, ["reason", "source", "ingested_at", "quarantine_id"]),
        unique(table, "quarantine_id"),
    ])


@dataclass(frozen=True)
class _Settings:
    """Where a sequence suite finds a row's settings: its snapshot's record in ``features/_snapshots``
    (when the lake has one), else the table's legacy properties, else the defaults."""

    recorded: bool
    properties: dict[str, str]

    def source(self) -> str:
        """The FROM clause: the batch as ``b``, its snapshot's record as ``s``."""
        if not self.recorded:
            return "{batch} b"
        latest = LATEST_RECORDS.format(records=SNAPSHOTS_VIEW)
        return f"{{batch}} b LEFT JOIN ({latest}) s ON s.snapshot_ts = b.snapshot_ts"

    def of(self, name: str) -> str:
        """Spark SQL for one setting (``SequenceConfig.settings`` name) of the row's snapshot."""
        legacy = int(self.properties.get(LEGACY_PROPERTY + name, SequenceConfig().settings()[name]))
        return f"coalesce(s.{name}, {legacy})" if self.recorded else str(legacy)


def _sequence_checks(t: Table, arrays: list[str], ts: str, settings: _Settings, lookback: str,
                     cap: str) -> list[Expectation]:
    sizes = " OR ".join(f"size({a}) <> length" for a in arrays)
    checks = [
        has_columns(t),
        *not_null(t, t.columns),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "snapshot_ts"],
                                            description=f"{t.path}: one row per (user_id, snapshot_ts)"),
        no_rows(
            query=(f"SELECT b.user_id, b.snapshot_ts, b.length FROM {settings.source()} "
                   f"WHERE b.length < 1 OR b.length > {settings.of(cap)}"),
            description=f"{t.path}: length within [1, {cap} of its snapshot]"),
        no_rows(
            query=f"SELECT user_id, snapshot_ts, length FROM {{batch}} WHERE {sizes}",
            description=f"{t.path}: arrays aligned, each as long as length"),
        no_rows(
            query=(
                f"SELECT b.user_id, b.snapshot_ts FROM {settings.source()} WHERE exists(b.{ts}, "
                f"x -> x >= b.snapshot_ts OR unix_micros(x) < unix_micros(b.snapshot_ts) - "
                f"{settings.of(lookback)} * 1000000)"),
            description=f"{t.path}: every {ts} before the snapshot and inside its snapshot's {lookback}"),
        no_rows(
            query=(f"SELECT user_id, snapshot_ts FROM {{batch}} "
                   f"WHERE {ts} <> array_sort({ts})"),
            description=f"{t.path}: {ts} ascending"),
    ]
    if settings.recorded:
        complete = " AND ".join(f"array_contains(s.tables, '{path}')" for path in SEQUENCE_TABLES)
        checks.append(no_rows(
            query=(f"SELECT DISTINCT b.snapshot_ts, s.tables FROM {settings.source()} "
                   f"WHERE s.snapshot_ts IS NOT NULL AND NOT ({complete})"),
            description=(f"{t.path}: every snapshot complete in both sequence tables "
                         f"({SEQUENCE_SNAPSHOTS.path})")))
    return checks


def _needs(settings: _Settings, *tables: Table) -> tuple[Table, ...]:
    return (*tables, SEQUENCE_SNAPSHOTS) if settings.recorded else tables


def click_sequences(settings: _Settings) -> Suite:
    t = CLICK_SEQUENCES
    return Suite(t, _sequence_checks(t, ["ad_ids", "advertiser_ids", "click_ts"], "click_ts", settings,
                                     "click_lookback_s", "max_clicks"), needs=_needs(settings))


def conversion_sequences(settings: _Settings) -> Suite:
    t = CONVERSION_SEQUENCES
    checks = _sequence_checks(t, ["advertiser_ids", "conversion_types", "conversion_ts", "attributed"],
                              "conversion_ts", settings, "conversion_lookback_s", "max_conversions")
    # Known only once reported: every element must match a raw conversion reported before the snapshot.
    checks.append(no_rows(
        query=(
            "SELECT q.* FROM (SELECT user_id, snapshot_ts, "
            "inline(arrays_zip(advertiser_ids, conversion_types, conversion_ts)) FROM {batch}) q "
            f"LEFT ANTI JOIN {CONVERSIONS_VIEW} r ON r.user_id = q.user_id "
            "AND r.advertiser_id = q.advertiser_ids AND r.conversion_type = q.conversion_types "
            "AND r.conversion_ts = q.conversion_ts AND r.report_ts < q.snapshot_ts"),
        description=f"{t.path}: no conversion reported at or after the snapshot (checked against "
                    f"{RAW_CONVERSIONS.path})"))
    return Suite(t, checks, needs=_needs(settings, RAW_CONVERSIONS))


def suites_for(cfg: QualityConfig, present: set[str],
               properties: dict[str, dict[str, str]] | None = None) -> list[Suite]:
    """The suites that apply to this stage's tables present in the lake (by contract path).

    ``properties`` holds each table's Delta properties (older lakes kept the sequence settings there).
    """
    properties = properties or {}
    recorded = SEQUENCE_SNAPSHOTS.path in present
    suites = []
    if RAW_CLICKS.path in present:
        suites.append(raw_clicks(cfg))
    if RAW_CONVERSIONS.path in present:
        suites.append(raw_conversions(cfg, with_clicks=RAW_CLICKS.path in present))
    suites += [quarantine(t) for t in QUARANTINE_TABLES if t.path in present]
    settings = {t.path: _Settings(recorded, properties.get(t.path, {}))
                for t in (CLICK_SEQUENCES, CONVERSION_SEQUENCES)}
    if CLICK_SEQUENCES.path in present:
        suites.append(click_sequences(settings[CLICK_SEQUENCES.path]))
    if CONVERSION_SEQUENCES.path in present and RAW_CONVERSIONS.path in present:
        suites.append(conversion_sequences(settings[CONVERSION_SEQUENCES.path]))
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
    return {} if rate is None else {f"{RAW_CONVERSIONS.path} orphan rate": rate}
