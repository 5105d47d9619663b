"""Great Expectations suites, one per lake table, as plain data (expectation lists).

A suite is built for a validation run because some bounds depend on it: no event may be later than the
run time plus ``future_slack`` (an event "from the future" is a clock or unit bug), none earlier than
``ParseRules.min_ts``. Cross-table checks (an attributed click must exist, belong to the same user and
precede its conversion) are ``UnexpectedRowsExpectation`` queries that read the other table through a
temporary view the runner registers (``raw_clicks``, ``raw_conversions``: ``view_name``).

GX 1.x ``ExpectColumnValueLengthsToEqual`` does not count array elements, so array sizes (later tables)
are checked with ``UnexpectedRowsExpectation`` on Spark SQL ``size(col)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from duet.contracts import (
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    QUARANTINE_CLICKS,
    QUARANTINE_CONVERSIONS,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    Table,
)
from spark_jobs.parse import ParseRules
from spark_jobs.sequences import SequenceConfig


def view_name(table: Table) -> str:
    """The temporary view under which a cross-table check reads ``table`` (raw/clicks -> raw_clicks)."""
    return table.path.replace("/", "_")


CLICKS_VIEW = view_name(RAW_CLICKS)
CONVERSIONS_VIEW = view_name(RAW_CONVERSIONS)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the data quality suites."""

    now: datetime
    future_slack: timedelta = timedelta(days=1)
    max_orphan_rate: float = 0.05  # attributed conversions whose click is not in raw/clicks
    rules: ParseRules = ParseRules()


@dataclass(frozen=True)
class Suite:
    """The expectations for one table, and the tables its cross checks need (as temp views)."""

    table: Table
    expectations: list[Expectation]
    needs: tuple[Table, ...] = ()


def _not_null(table: Table, columns: list[str]) -> list[Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{table.path}: {c} is never null")
            for c in columns]


def _in_range(table: Table, column: str, cfg: QualityConfig) -> Expectation:
    lo, hi = cfg.rules.min_ts.replace(tzinfo=None), (cfg.now + cfg.future_slack).replace(tzinfo=None)
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=lo, max_value=hi,
        description=f"{table.path}: {column} within [{lo:%Y-%m-%d}, {hi:%Y-%m-%d %H:%M}] (no future events)")


def _columns(table: Table) -> Expectation:
    return gxe.ExpectTableColumnsToMatchSet(
        column_set=table.columns, exact_match=False,
        description=f"{table.path}: has the contract columns {', '.join(table.columns)}")


def raw_clicks(cfg: QualityConfig) -> Suite:
    t = RAW_CLICKS
    return Suite(t, [
        _columns(t),
        *_not_null(t, t.columns),
        gxe.ExpectColumnValuesToBeUnique(column="click_id", description=f"{t.path}: click_id is unique"),
        _in_range(t, "click_ts", cfg),
    ])


def raw_conversions(cfg: QualityConfig, with_clicks: bool) -> Suite:
    t = RAW_CONVERSIONS
    expectations = [
        _columns(t),
        *_not_null(t, [c for c in t.columns if c not in ("attributed_click_id", "value")]),
        gxe.ExpectColumnValuesToBeUnique(column="conversion_id",
                                         description=f"{t.path}: conversion_id is unique"),
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
        _columns(table),
        *_not_null(table, ["reason", "source", "ingested_at", "quarantine_id"]),
        gxe.ExpectColumnValuesToBeUnique(column="quarantine_id",
                                         description=f"{table.path}: quarantine_id is unique"),
    ])


def _sequence_checks(t: Table, arrays: list[str], ts: str, lookback_s: int, cap: int) -> list[Expectation]:
    sizes = " OR ".join(f"size({a}) <> length" for a in arrays)
    return [
        _columns(t),
        *_not_null(t, t.columns),
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


def click_sequences(props: dict[str, str]) -> Suite:
    d = SequenceConfig().properties()
    lookback = int(props.get("duet.sequences.click_lookback_s", d["duet.sequences.click_lookback_s"]))
    cap = int(props.get("duet.sequences.max_clicks", d["duet.sequences.max_clicks"]))
    t = CLICK_SEQUENCES
    return Suite(t, _sequence_checks(t, ["ad_ids", "advertiser_ids", "click_ts"], "click_ts", lookback, cap))


def conversion_sequences(props: dict[str, str]) -> Suite:
    d = SequenceConfig().properties()
    key_l, key_m = "duet.sequences.conversion_lookback_s", "duet.sequences.max_conversions"
    lookback, cap = int(props.get(key_l, d[key_l])), int(props.get(key_m, d[key_m]))
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


def all_suites(cfg: QualityConfig, present: set[str],
               properties: dict[str, dict[str, str]] | None = None) -> list[Suite]:
    """The suites that apply to the tables present in the lake (by contract path).

    ``properties`` holds each table's Delta properties (the sequence windows they were built with).
    """
    properties = properties or {}
    suites = []
    if RAW_CLICKS.path in present:
        suites.append(raw_clicks(cfg))
    if RAW_CONVERSIONS.path in present:
        suites.append(raw_conversions(cfg, with_clicks=RAW_CLICKS.path in present))
    suites += [quarantine(t) for t in (QUARANTINE_CLICKS, QUARANTINE_CONVERSIONS) if t.path in present]
    if CLICK_SEQUENCES.path in present:
        suites.append(click_sequences(properties.get(CLICK_SEQUENCES.path, {})))
    if CONVERSION_SEQUENCES.path in present and RAW_CONVERSIONS.path in present:
        suites.append(conversion_sequences(properties.get(CONVERSION_SEQUENCES.path, {})))
    return suites
