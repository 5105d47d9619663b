"""Parse all-string event rows into contract types and list every rule each row breaks.

``parse_events(df, kind, rules)`` adds two columns to a frame shaped by ``spark_jobs.readers``:

* ``_typed``: a struct with the contract's columns in their contract types (null where unparseable);
* ``_reasons``: array<string> of every broken rule, empty for a valid row. A malformed record gets only
  its ``_malformed`` reason, since its fields cannot be trusted.

Timestamps are ISO-8601 (with a zone, or UTC assumed) or epoch seconds (fractions allowed), and must lie in
``[rules.min_ts, rules.max_ts)``: a value outside is almost always a unit error (epoch milliseconds) or a
placeholder date, and is rejected rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.contracts import RAW_CLICKS, RAW_CONVERSIONS, Table
from core.spark import spark_schema

_EPOCH = r"^\s*-?[0-9]{1,18}(\.[0-9]{1,9})?\s*$"
_MAX_EPOCH_S = 1e11  # year 5138: a larger "epoch seconds" value is really milliseconds or nanoseconds


@dataclass(frozen=True)
class ParseRules:
    """Plausibility bounds for event timestamps (UTC)."""

    min_ts: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_ts: datetime = datetime(2100, 1, 1, tzinfo=UTC)


def parse_timestamp(text: Column) -> Column:
    """ISO-8601 (zone-less means UTC: the session time zone is UTC) or epoch seconds -> timestamp."""
    seconds = F.trim(text).cast("decimal(28,9)")
    epoch = F.when(text.rlike(_EPOCH) & (F.abs(seconds) < _MAX_EPOCH_S),
                   F.timestamp_micros((seconds * F.lit(1_000_000)).cast("long")))
    return F.coalesce(epoch, F.try_to_timestamp(F.trim(text)))


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _quoted(c: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(c, 1, 60), F.lit("'"))


def _ts_reasons(name: str, rules: ParseRules) -> tuple[Column, list[Column]]:
    raw = F.col(name)
    ts = parse_timestamp(raw)
    lo, hi = rules.min_ts.strftime("%Y-%m-%d %H:%M:%S"), rules.max_ts.strftime("%Y-%m-%d %H:%M:%S")
    reasons = [
        F.when(_blank(raw), F.lit(f"missing {name}")),
        F.when(~_blank(raw) & ts.isNull(), F.concat(
            F.lit(f"{name}: cannot parse "), _quoted(raw),
            F.when(raw.rlike(_EPOCH), F.lit(" as epoch seconds (too large: milliseconds?)"))
            .otherwise(F.lit(" as ISO-8601 or epoch seconds")))),
        F.when(ts.isNotNull() & ((ts < F.lit(lo).cast("timestamp")) | (ts >= F.lit(hi).cast("timestamp"))),
               F.concat(F.lit(f"{name}: "), _quoted(raw),
                        F.lit(f" is outside [{lo[:10]}, {hi[:10]}) (epoch milliseconds or a placeholder?)"))),
    ]
    return ts, reasons


def _string_reasons(names: list[str]) -> list[Column]:
    return [F.when(_blank(F.col(n)), F.lit(f"missing {n}")) for n in names]


def _finish(df: DataFrame, table: Table, typed: dict[str, Column], reasons: list[Column]) -> DataFrame:
    struct = F.struct(*[typed[f.name].cast(f.dataType).alias(f.name) for f in spark_schema(table).fields])
    listed = F.filter(F.array(*reasons), lambda r: r.isNotNull())
    return df.withColumn("_typed", struct).withColumn(
        "_reasons", F.when(F.col("_malformed").isNotNull(), F.array(F.col("_malformed"))).otherwise(listed)
    )


def parse_clicks(df: DataFrame, rules: ParseRules) -> DataFrame:
    click_ts, ts_reasons = _ts_reasons("click_ts", rules)
    typed = {c: F.col(c) for c in ("click_id", "user_id", "ad_id", "advertiser_id")}
    typed["click_ts"] = click_ts
    reasons = _string_reasons(["click_id", "user_id", "ad_id", "advertiser_id"]) + ts_reasons
    return _finish(df, RAW_CLICKS, typed, reasons)


def parse_conversions(df: DataFrame, rules: ParseRules) -> DataFrame:
    conv_ts, conv_reasons = _ts_reasons("conversion_ts", rules)
    report_ts, report_reasons = _ts_reasons("report_ts", rules)
    raw_value = F.col("value")
    value = F.expr("try_cast(trim(value) AS DOUBLE)")
    attributed = F.when(~_blank(F.col("attributed_click_id")), F.col("attributed_click_id"))
    typed = {c: F.col(c) for c in ("conversion_id", "user_id", "advertiser_id", "conversion_type")}
    typed.update(conversion_ts=conv_ts, report_ts=report_ts, attributed_click_id=attributed,
                 value=F.when(~_blank(raw_value), value))
    reasons = (
        _string_reasons(["conversion_id", "user_id", "advertiser_id", "conversion_type"])
        + conv_reasons
        + report_reasons
        + [
            F.when(report_ts < conv_ts, F.lit("report_ts before conversion_ts (a conversion is reported "
                                              "after it happens)")),
            F.when(~_blank(raw_value) & value.isNull(),
                   F.concat(F.lit("value: not a number: "), _quoted(raw_value))),
            F.when(value.isNotNull() & (F.isnan(value) | (F.abs(value) == float("inf"))),
                   F.concat(F.lit("value: not a finite number: "), _quoted(raw_value))),
        ]
    )
    return _finish(df, RAW_CONVERSIONS, typed, reasons)


def parse_events(df: DataFrame, kind: str, rules: ParseRules) -> DataFrame:
    """Add ``_typed`` and ``_reasons`` for ``kind`` in (``clicks``, ``conversions``)."""
    return {"clicks": parse_clicks, "conversions": parse_conversions}[kind](df, rules)
