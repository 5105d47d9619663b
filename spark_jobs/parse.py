"""Parse all-string event rows into contract types and list every rule each row breaks.

``parse_events(df, kind, rules)`` adds two columns to a frame shaped by ``spark_jobs.readers``:

* ``_typed``: a struct with the contract's columns in their contract types (null where unparseable);
* ``_reasons``: array<string> of every broken rule, empty for a valid row. A malformed record gets only
  its ``_malformed`` reason, since its fields cannot be trusted.

Timestamps are ISO-8601 (with a zone, or UTC assumed) or epoch seconds (fractions allowed), and must lie in
``[rules.min_ts, rules.max_ts)``: a value outside is almost always a unit error (epoch milliseconds) or a
placeholder date, and is rejected rather than guessed at.

Only the forms the contract names are accepted, each value matched whole before Spark parses it (Spark
alone also takes a time without a date as today, ``2026-01`` as its first day, ``2026-1-9``,
``+2026-01-11`` and zone names): ``YYYY-MM-DD``, optionally followed by ``T`` or a space,
``hh:mm[:ss[.fraction]]`` and a zone ``Z``, ``+hh:mm``, ``+hhmm`` or ``+hh``; or epoch seconds as a
decimal number, an exponent allowed (``1.7679600005e9``, as a JSON writer or a Parquet double spells it).

Every value is first trimmed of surrounding whitespace (``WHITESPACE``), whatever the input format. Text
fields (ids, ``conversion_type``) must then hold no control character (U+0000-U+001F, U+007F) and at most
``rules.max_text_length`` characters; ``value`` must be a finite decimal number (an exponent allowed; not
Java's ``100d`` or ``0x10p0``). A row breaking these is quarantined; the quarantine keeps the original text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.contracts import RAW_CLICKS, RAW_CONVERSIONS, Table
from core.spark import spark_schema

# A decimal number, an exponent allowed: epoch seconds and `value` (not Java's 100d or 0x10p0).
_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NOT_FINITE = r"^(?i)[+-]?(nan|inf|infinity)$"
# The ISO-8601 forms the contract accepts (the module docstring); Spark then checks the values themselves.
_ISO = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
        r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$")
_NO_SECONDS = r"^([0-9-]{10}[T ][0-9]{2}:[0-9]{2})(?![0-9:])"  # Spark wants seconds before a zone
_TIME_ONLY = r"^T?[0-9]{1,2}:[0-9]{2}"
_MAX_EPOCH_S = 1e11  # year 5138: a larger "epoch seconds" value is really milliseconds or nanoseconds
WHITESPACE = " \t\n\r\f\v"  # trimmed from every value, in every format
ISO_FORMS = "YYYY-MM-DD, optionally Thh:mm[:ss[.fraction]] and Z or +hh:mm"


@dataclass(frozen=True)
class ParseRules:
    """Plausibility bounds for event timestamps (UTC), and the longest text field (an id) accepted."""

    min_ts: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_ts: datetime = datetime(2100, 1, 1, tzinfo=UTC)
    max_text_length: int = 256


def clean(text: Column) -> Column:
    """``text`` without surrounding ``WHITESPACE``: the one normalisation ingest applies to a value."""
    return F.btrim(text, F.lit(WHITESPACE))


def parse_number(text: Column) -> Column:
    """A decimal number (after ``clean``) -> double, else null. Not Spark's cast alone, which takes Java's
    ``100d`` and ``0x10p0``."""
    cleaned = clean(text)
    return F.when(cleaned.rlike(_NUMBER), cleaned.try_cast("double"))


def parse_timestamp(text: Column) -> Column:
    """ISO-8601 in the contract's forms (zone-less means UTC: the session time zone is UTC) or epoch
    seconds -> timestamp, else null."""
    cleaned = clean(text)
    seconds = F.when(cleaned.rlike(_NUMBER), cleaned.try_cast("decimal(28,9)"))  # exact, unlike a double
    micros = (seconds * F.lit(1_000_000)).cast("long")
    epoch = F.when(F.abs(seconds) < _MAX_EPOCH_S, F.timestamp_micros(micros))
    iso = F.when(cleaned.rlike(_ISO), F.try_to_timestamp(F.regexp_replace(cleaned, _NO_SECONDS, "$1:00")))
    return F.coalesce(epoch, iso)


def _blank(c: Column) -> Column:
    return c.isNull() | (clean(c) == "")


def _quoted(c: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(c, 1, 60), F.lit("'"))


def _ts_reasons(name: str, rules: ParseRules) -> tuple[Column, list[Column]]:
    raw = F.col(name)
    cleaned = clean(raw)
    ts = parse_timestamp(raw)
    lo, hi = rules.min_ts.strftime("%Y-%m-%d %H:%M:%S"), rules.max_ts.strftime("%Y-%m-%d %H:%M:%S")
    reasons = [
        F.when(_blank(raw), F.lit(f"missing {name}")),
        F.when(~_blank(raw) & ts.isNull(), F.concat(
            F.lit(f"{name}: cannot parse "), _quoted(raw),
            F.when(cleaned.rlike(_NUMBER), F.lit(" as epoch seconds (too large: milliseconds?)"))
            .when(cleaned.rlike(_TIME_ONLY), F.lit(f" (a time without a date; give the date: {ISO_FORMS})"))
            .otherwise(F.lit(f" as ISO-8601 ({ISO_FORMS}) or epoch seconds")))),
        F.when(ts.isNotNull() & ((ts < F.lit(lo).cast("timestamp")) | (ts >= F.lit(hi).cast("timestamp"))),
               F.concat(F.lit(f"{name}: "), _quoted(raw),
                        F.lit(f" is outside [{lo[:10]}, {hi[:10]}) (epoch milliseconds or a placeholder?)"))),
    ]
    return ts, reasons


def _text_reasons(names: list[str], rules: ParseRules) -> list[Column]:
    """Missing, control characters, too long: checked on the cleaned value."""
    reasons = []
    for n in names:
        cleaned = clean(F.col(n))
        reasons += [
            F.when(_blank(F.col(n)), F.lit(f"missing {n}")),
            F.when(cleaned.rlike(r"\p{Cntrl}"),
                   F.lit(f"{n}: contains a control character (U+0000-U+001F or U+007F)")),
            F.when(F.length(cleaned) > rules.max_text_length,
                   F.concat(F.lit(f"{n}: "), F.length(cleaned).cast("string"),
                            F.lit(f" characters, more than {rules.max_text_length}"))),
        ]
    return reasons


def _texts(names: list[str]) -> dict[str, Column]:
    return {n: clean(F.col(n)) for n in names}


def _finish(df: DataFrame, table: Table, typed: dict[str, Column], reasons: list[Column]) -> DataFrame:
    struct = F.struct(*[typed[f.name].cast(f.dataType).alias(f.name) for f in spark_schema(table).fields])
    listed = F.filter(F.array(*reasons), lambda r: r.isNotNull())
    return df.withColumn("_typed", struct).withColumn(
        "_reasons", F.when(F.col("_malformed").isNotNull(), F.array(F.col("_malformed"))).otherwise(listed)
    )


CLICK_TEXTS = ["click_id", "user_id", "ad_id", "advertiser_id"]
CONVERSION_TEXTS = ["conversion_id", "user_id", "advertiser_id", "conversion_type"]


def parse_clicks(df: DataFrame, rules: ParseRules) -> DataFrame:
    click_ts, ts_reasons = _ts_reasons("click_ts", rules)
    typed = _texts(CLICK_TEXTS)
    typed["click_ts"] = click_ts
    reasons = _text_reasons(CLICK_TEXTS, rules) + ts_reasons
    return _finish(df, RAW_CLICKS, typed, reasons)


def parse_conversions(df: DataFrame, rules: ParseRules) -> DataFrame:
    conv_ts, conv_reasons = _ts_reasons("conversion_ts", rules)
    report_ts, report_reasons = _ts_reasons("report_ts", rules)
    raw_value = F.col("value")
    value = parse_number(raw_value)
    attributed = F.when(~_blank(F.col("attributed_click_id")), clean(F.col("attributed_click_id")))
    typed = _texts(CONVERSION_TEXTS)
    typed.update(conversion_ts=conv_ts, report_ts=report_ts, attributed_click_id=attributed,
                 value=F.when(~_blank(raw_value), value))
    overflow = F.coalesce(F.isnan(value) | (F.abs(value) == float("inf")), F.lit(False))  # e.g. 1e400
    not_finite = clean(raw_value).rlike(_NOT_FINITE) | overflow
    reasons = (
        _text_reasons(CONVERSION_TEXTS, rules)
        + _text_reasons(["attributed_click_id"], rules)[1:]  # it may be missing (unattributed)
        + conv_reasons
        + report_reasons
        + [
            F.when(report_ts < conv_ts, F.lit("report_ts before conversion_ts (a conversion is reported "
                                              "after it happens)")),
            F.when(~_blank(raw_value) & not_finite,
                   F.concat(F.lit("value: not a finite number: "), _quoted(raw_value))),
            F.when(~_blank(raw_value) & value.isNull() & ~not_finite,
                   F.concat(F.lit("value: not a number: "), _quoted(raw_value))),
        ]
    )
    return _finish(df, RAW_CONVERSIONS, typed, reasons)


def parse_events(df: DataFrame, kind: str, rules: ParseRules) -> DataFrame:
    """Add ``_typed`` and ``_reasons`` for ``kind`` in (``clicks``, ``conversions``)."""
    return {"clicks": parse_clicks, "conversions": parse_conversions}[kind](df, rules)
