"""The public Taobao UserBehavior layout (``user,item,category,behavior,ts``, no header, epoch seconds).

Mapping (../shared/CONTRACTS.md): ``pv`` rows become clicks (click_id ``user:item:ts``, ad_id = item,
advertiser_id = category); ``buy`` rows become conversions (conversion_id ``user:item:ts``, advertiser_id =
category, conversion_type ``purchase``, report_ts = conversion_ts), attributed to the same user's latest
``pv`` of the same item at or before the buy and within the attribution window, else unattributed;
``cart`` and ``fav`` rows, and blank lines, are counted as skipped. A pv at the same second as the buy
counts as before it.

Attribution looks only at pv rows of the same file: a buy whose pv is in an earlier file stays
unattributed. Rows that cannot be split into five fields or have an unknown behavior are quarantined with
the clicks (``buy`` rows with bad fields with the conversions); the usual parse rules then apply to the
mapped rows, so a bad user, item or timestamp is quarantined with its reason like any other event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.lake import absolute
from core.spark import require_utc
from spark_jobs.ingest import (
    FileCounts,
    IngestConfig,
    check_balance,
    ingest_frame,
    known_file,
    log_file,
    read_records,
)
from spark_jobs.readers import (
    CORRUPT,
    check_exists,
    has_bad_bytes,
    strict_reads,
    with_positions,
)

TAOBAO_COLUMNS = ("user", "item", "category", "behavior", "ts")
BEHAVIORS = ("pv", "buy", "cart", "fav")
SKIPPED_BEHAVIORS = ("cart", "fav")


def read_taobao(spark: SparkSession, path: str) -> DataFrame:
    """The file as strings with ``_record``, ``_malformed``, ``_pid``, ``_idx`` (see spark_jobs.readers)."""
    check_exists(path)
    path = absolute(path)
    schema = T.StructType([T.StructField(c, T.StringType()) for c in (*TAOBAO_COLUMNS, CORRUPT)])
    df = (spark.read.schema(schema).option("header", False).option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", CORRUPT).csv(path))
    behavior = F.col("behavior")
    malformed = (F.when(F.col(CORRUPT).isNotNull(),
                        F.lit("malformed Taobao record: expected 5 fields user,item,category,behavior,ts"))
                 .when(has_bad_bytes(list(TAOBAO_COLUMNS)), F.lit("invalid UTF-8 bytes in the record"))
                 .when(behavior.isNull() | ~behavior.isin(*BEHAVIORS),
                       F.concat(F.lit("unknown behavior '"), F.coalesce(behavior, F.lit("")),
                                F.lit("' (expected pv, buy, cart or fav)"))))
    return with_positions(df).select(*TAOBAO_COLUMNS, F.col(CORRUPT).alias("_record"),
                                 malformed.alias("_malformed"), "_pid", "_idx")


def to_events(events: DataFrame, attribution_window_s: float) -> tuple[DataFrame, DataFrame]:
    """Map Taobao rows to (clicks, conversions) frames in the all-string reader shape. Pure transform.

    Skipped rows (cart, fav) appear in neither.
    """
    ok = F.col("_malformed").isNull()
    ts_s = F.expr("try_cast(trim(ts) AS BIGINT)")
    event_id = F.concat_ws(":", "user", "item", F.coalesce(ts_s.cast("string"), F.col("ts")))
    tail = ["_record", "_malformed", "_pid", "_idx"]

    is_buy = ok & (F.col("behavior") == "buy")
    is_click = ~is_buy & ~(ok & F.col("behavior").isin(*SKIPPED_BEHAVIORS))
    # Latest valid pv of the same (user, item) at or before each row; a pv sorts before a buy at a tie.
    pv_ts = F.when(ok & (F.col("behavior") == "pv"), ts_s)
    w = (Window.partitionBy("user", "item")
         .orderBy(ts_s.asc_nulls_last(), F.when(F.col("behavior") == "pv", 0).otherwise(1))
         .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    with_pv = events.withColumn("_last_pv", F.last(pv_ts, ignorenulls=True).over(w))
    attributed = F.when(
        F.col("_last_pv").isNotNull() & (ts_s - F.col("_last_pv") <= F.lit(attribution_window_s)),
        F.concat_ws(":", "user", "item", F.col("_last_pv").cast("string")),
    )
    clicks = events.where(is_click).select(
        event_id.alias("click_id"), F.col("user").alias("user_id"), F.col("item").alias("ad_id"),
        F.col("category").alias("advertiser_id"), F.col("ts").alias("click_ts"), *tail)
    conversions = with_pv.where(is_buy).select(
        event_id.alias("conversion_id"), F.col("user").alias("user_id"),
        F.col("category").alias("advertiser_id"), F.lit("purchase").alias("conversion_type"),
        F.col("ts").alias("conversion_ts"), F.col("ts").alias("report_ts"),
        attributed.alias("attributed_click_id"), F.lit(None).cast("string").alias("value"), *tail)
    return clicks, conversions


def ingest_taobao(spark: SparkSession, cfg: IngestConfig, path: str) -> FileCounts:
    """Ingest one Taobao UserBehavior file into raw/clicks and raw/conversions. A file the ingest log
    holds is not read (``spark_jobs.ingest.known_file``)."""
    require_utc(spark)
    path = absolute(path)
    check_exists(path)
    file, known = known_file(spark, cfg, "taobao", path, "taobao")
    if known is not None:
        check_balance(known)
        return known
    now = datetime.now(UTC)
    with strict_reads(spark):
        events = read_taobao(spark, path).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            held, row_number, _ = read_records(spark, events, path, "csv", header=False)
            counts = FileCounts(source=path, kind="taobao", read=held.rows, sha256=file.sha256)
            counts.skipped = held.blank + events.where(F.col("_malformed").isNull()
                                                       & F.col("behavior").isin(*SKIPPED_BEHAVIORS)).count()
            clicks, conversions = to_events(events, cfg.attribution_window_s)
            ingest_frame(spark, cfg, "clicks", clicks, path, counts, now, row_number)
            ingest_frame(spark, cfg, "conversions", conversions, path, counts, now, row_number)
        finally:
            events.unpersist()
    check_balance(counts)
    log_file(spark, cfg, file, counts, now, ("clicks", "conversions"))
    return counts
