"""Great Expectations suites, one per lake table, as plain data (expectation lists).

A suite is built for a validation run because some bounds depend on it: no event may be later than the
run time plus ``future_slack`` (an event "from the future" is a clock or unit bug), none earlier than
``ParseRules.min_ts``. Cross-table checks (an attributed click must exist, belong to the same user and
precede its conversion) are ``UnexpectedRowsExpectation`` queries that read the other table through a
temporary view the runner registers (``raw_clicks``).

GX 1.x ``ExpectColumnValueLengthsToEqual`` does not count array elements, so array sizes (later tables)
are checked with ``UnexpectedRowsExpectation`` on Spark SQL ``size(col)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from duet.contracts import QUARANTINE_CLICKS, QUARANTINE_CONVERSIONS, RAW_CLICKS, RAW_CONVERSIONS, Table
from spark_jobs.parse import ParseRules

CLICKS_VIEW = "raw_clicks"


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


def all_suites(cfg: QualityConfig, present: set[str]) -> list[Suite]:
    """The suites that apply to the tables present in the lake (by contract path)."""
    suites = []
    if RAW_CLICKS.path in present:
        suites.append(raw_clicks(cfg))
    if RAW_CONVERSIONS.path in present:
        suites.append(raw_conversions(cfg, with_clicks=RAW_CLICKS.path in present))
    suites += [quarantine(t) for t in (QUARANTINE_CLICKS, QUARANTINE_CONVERSIONS) if t.path in present]
    return suites
