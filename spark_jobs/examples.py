"""Labelled clicks for the ranker (``duet examples``): ``training/examples`` from the raw tables.

Exactly the contract's label semantics (../shared/CONTRACTS.md), for every click with
``click_ts < label_cutoff``:

* ``label = 1`` iff a conversion has ``attributed_click_id = click_id``,
  ``conversion_ts - click_ts <= attribution_window`` and ``report_ts <= label_cutoff``: what an advertiser
  had *reported* by the cutoff, never a conversion that happened but was reported later;
* ``conversion_delay_s``: seconds from the click to the earliest such conversion (null when the label is 0);
* ``matured`` iff ``click_ts + attribution_window + report_grace <= label_cutoff``: the label can no
  longer change. An immature click's 0 may still become a 1, so the ranker's matured-only training set
  leaves those clicks out (``ranker.training_set``); a delayed-feedback trainer may use them.

Unattributed conversions are features (through the sequences), never labels.

The table is rebuilt whole for one cutoff: one overwrite commit (atomic; a killed run leaves the previous
table), and a re-run with the same inputs writes the same rows. Changing the cutoff relabels every click,
which is the point: labels are a function of (raw tables, cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.contracts import ATTRIBUTION_WINDOW, RAW_CLICKS, RAW_CONVERSIONS, REPORT_GRACE, TRAINING_EXAMPLES
from core.errors import DuetError
from core.records import to_dict
from core.spark import spark_schema
from core.times import micros
from spark_jobs.delta_io import ensure_table


@dataclass(frozen=True)
class ExamplesConfig:
    """The label cutoff (a zone-aware instant) and the contract's windows (defaults in brackets there)."""

    lake: str
    label_cutoff: datetime
    attribution_window: timedelta = ATTRIBUTION_WINDOW
    report_grace: timedelta = REPORT_GRACE

    def __post_init__(self) -> None:
        if self.label_cutoff.tzinfo is None:
            raise DuetError(f"label cutoff {self.label_cutoff} has no time zone: give an instant, e.g. "
                            "2026-02-01T00:00:00+00:00")
        if self.attribution_window <= timedelta(0) or self.report_grace < timedelta(0):
            raise DuetError("the attribution window must be positive and the report grace not negative")


@dataclass(frozen=True)
class ReportGrace:
    """A report grace measured on a lake (``measured_report_grace``): ``grace_days``, the ``quantile`` of
    the report delays in ``hours``, over that many attributed ``conversions``."""

    grace_days: int
    quantile: float
    hours: float
    conversions: int

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True)
class ExamplesReport:
    """What ``build_examples`` wrote: the clicks labelled at ``label_cutoff``, how many are positive, how
    many matured (and of those, positive)."""

    label_cutoff: datetime
    rows: int
    positives: int
    matured: int
    matured_positives: int

    def to_dict(self) -> dict:
        return to_dict(self)


def measured_report_grace(spark: SparkSession, lake: str, quantile: float = 0.99) -> ReportGrace:
    """The report grace a lake's own report delays call for: the ``quantile`` of ``report_ts -
    conversion_ts`` over its attributed conversions, rounded up to whole days (the ranker's periods are
    whole days). Only conversions from the first half of the lake's conversion time span count, so that a
    report delay up to half the span had the time to arrive (the latest conversions' long delays are not
    in the lake yet, and would pull the quantile down)."""
    return report_grace_of(spark.read.format("delta").load(RAW_CONVERSIONS.location(lake)), quantile)


def report_grace_of(conversions: DataFrame, quantile: float = 0.99) -> ReportGrace:
    """``measured_report_grace`` on a DataFrame in the raw conversions layout."""
    import math

    if not 0 < quantile < 1:
        raise DuetError(f"quantile {quantile} must be in (0, 1)")
    conversions = conversions.where(F.col("attributed_click_id").isNotNull())
    at, reported = F.unix_micros("conversion_ts"), F.unix_micros("report_ts")
    span = conversions.agg(F.min(at).alias("lo"), F.max(at).alias("hi")).first()
    if span["lo"] is None:
        raise DuetError(f"{RAW_CONVERSIONS.path} holds no attributed conversion: no report delay to measure")
    early = conversions.where(at <= F.lit((span["lo"] + span["hi"]) // 2))
    row = early.agg(F.percentile_approx((reported - at) / 3.6e9, quantile, 10_000).alias("hours"),
                    F.count(F.lit(1)).alias("n")).first()
    hours = max(float(row["hours"]), 0.0)
    return ReportGrace(grace_days=max(math.ceil(hours / 24), 1), quantile=quantile, hours=hours,
                       conversions=int(row["n"]))


def _labelled(clicks: DataFrame, conversions: DataFrame, cfg: ExamplesConfig) -> DataFrame:
    """Every click before the cutoff with, when labelled 1, ``delay_us`` (click to the earliest
    qualifying conversion) and ``report_delay_us`` (click to the earliest report of one: when the label
    became known)."""
    cutoff = F.lit(micros(cfg.label_cutoff))   # compared with unix_micros(column): no session time zone
    window_us = int(cfg.attribution_window.total_seconds() * 1_000_000)
    clicks = clicks.where(F.unix_micros("click_ts") < cutoff) \
        .select("click_id", "user_id", "ad_id", "advertiser_id", "click_ts")
    attributed = conversions.where(F.col("attributed_click_id").isNotNull()
                                   & (F.unix_micros("report_ts") <= cutoff)) \
        .select(F.col("attributed_click_id").alias("click_id"), "conversion_ts", "report_ts")
    delay_us = F.unix_micros("conversion_ts") - F.unix_micros("click_ts")
    earliest = clicks.select("click_id", "click_ts").join(attributed, "click_id") \
        .where(delay_us <= window_us) \
        .groupBy("click_id").agg(F.min(delay_us).alias("delay_us"),
                                 F.min(F.unix_micros("report_ts") - F.unix_micros("click_ts"))
                                 .alias("report_delay_us"))
    return clicks.join(earliest, "click_id", "left")


def label_clicks(clicks: DataFrame, conversions: DataFrame, cfg: ExamplesConfig,
                 report_delay: bool = False) -> DataFrame:
    """The contract's examples for ``clicks`` (raw/clicks rows) given ``conversions`` (raw/conversions).

    ``report_delay``: also ``report_delay_s``, seconds from the click to the first report that made its
    label 1 (null when 0): what a delayed-feedback trainer needs to know how labels arrive
    (``ranker.delayed``). Not a column of ``training/examples``."""
    cutoff = F.lit(micros(cfg.label_cutoff))
    settle_us = int((cfg.attribution_window + cfg.report_grace).total_seconds() * 1_000_000)
    extra = [(F.col("report_delay_us") / 1e6).alias("report_delay_s")] if report_delay else []
    return _labelled(clicks, conversions, cfg).select(
        "click_id", "user_id", "ad_id", "advertiser_id", "click_ts",
        F.col("delay_us").isNotNull().cast("int").alias("label"),
        (F.col("delay_us") / 1e6).alias("conversion_delay_s"),
        (F.unix_micros("click_ts") + settle_us <= cutoff).alias("matured"),
        F.timestamp_micros(cutoff).alias("label_cutoff"),
        *extra,
    )


def build_examples(spark: SparkSession, cfg: ExamplesConfig) -> ExamplesReport:
    """Write ``training/examples`` for ``cfg.label_cutoff`` (one overwrite commit); return its figures."""
    clicks = spark.read.format("delta").load(RAW_CLICKS.location(cfg.lake))
    conversions = spark.read.format("delta").load(RAW_CONVERSIONS.location(cfg.lake))
    examples = label_clicks(clicks, conversions, cfg)
    # The table is created from the contract first, so its NOT NULL columns are Delta constraints; the
    # overwrite keeps that schema (a row breaking it fails the commit).
    ensure_table(spark, TRAINING_EXAMPLES, cfg.lake)
    schema = spark_schema(TRAINING_EXAMPLES)
    examples.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields]) \
        .write.format("delta").mode("overwrite").save(TRAINING_EXAMPLES.location(cfg.lake))
    figures = spark.read.format("delta").load(TRAINING_EXAMPLES.location(cfg.lake)).agg(
        F.count("*").alias("rows"), F.sum("label").alias("positives"),
        F.sum(F.col("matured").cast("int")).alias("matured"),
        F.sum(F.when(F.col("matured"), F.col("label"))).alias("matured_positives")).first()
    return ExamplesReport(label_cutoff=cfg.label_cutoff, rows=int(figures["rows"]),
                          positives=int(figures["positives"] or 0), matured=int(figures["matured"] or 0),
                          matured_positives=int(figures["matured_positives"] or 0))
