"""Read one input file into an all-string DataFrame, losing nothing.

Every reader returns the same shape, whatever the format:

* one string column per contract column of the kind (``clicks`` or ``conversions``), plus, for clicks
  from CSV or Parquet, any extra columns of the file as string context columns;
* ``_record``: the original record as text when it could not be split into fields (else null);
* ``_malformed``: why the record could not be split (wrong field count, not JSON, bad bytes), else null;
* ``_pid``, ``_idx``: input partition id and index within it, taken before any shuffle, so that file order
  ("first seen wins") and 1-based row numbers can be recovered later (``row_numbers``).

Types are not parsed here: a value that fails to parse must reach quarantine with its original text, so
parsing happens on strings in ``spark_jobs.parse``. Whole-file problems (missing file, empty file, missing
required columns, an unknown column in a conversions file) raise ``InputError`` before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from core.contracts import CLICK_COLUMNS, CONVERSION_COLUMNS
from core.errors import InputError

FORMATS = ("csv", "parquet", "jsonl")
KIND_COLUMNS = {"clicks": CLICK_COLUMNS, "conversions": CONVERSION_COLUMNS}
CORRUPT = "_corrupt_record"
REPLACEMENT_CHAR = "\ufffd"  # what Spark's UTF-8 decoder puts in place of invalid bytes


def format_of(path: str, fmt: str | None) -> str:
    """The input format: ``fmt`` if given, else from the file extension."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r} for {path}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    by_ext = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl", "json": "jsonl",
              "ndjson": "jsonl"}
    if suffix not in by_ext:
        raise InputError(f"cannot tell the format of {path} from its extension; "
                         "pass --format csv|parquet|jsonl")
    return by_ext[suffix]


def resolve(path: str) -> str:
    """A relative local path made absolute against this process's directory (the JVM has its own)."""
    return path if "://" in path else os.path.abspath(path)


def check_exists(path: str) -> None:
    """Fail early, naming the file, when a local input is missing or has no bytes at all."""
    if "://" in path:
        return  # remote files are checked by Spark when read
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {path}")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"input file is empty (0 bytes, not even a header): {path}")


def with_positions(df: DataFrame) -> DataFrame:
    mid = F.monotonically_increasing_id()
    # monotonically_increasing_id = partition id << 33 | index within the partition.
    return df.withColumn("_pid", F.spark_partition_id()).withColumn("_idx", mid.bitwiseAND((1 << 33) - 1))


def has_bad_bytes(columns: list[str]) -> Column:
    return F.exists(F.array(*[F.col(c) for c in columns]), lambda v: v.contains(REPLACEMENT_CHAR))


def read_csv_header(spark: SparkSession, path: str) -> list[str]:
    try:
        return spark.read.option("header", True).option("inferSchema", False).csv(path).columns
    except AnalysisException as e:
        raise InputError(f"cannot read {path} as CSV: {str(e).splitlines()[0]}") from e


def _check_columns(path: str, kind: str, columns: list[str]) -> list[str]:
    """Validate a file's column names; return the extra (context) columns."""
    if not columns:
        raise InputError(f"input file has no header row: {path}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise InputError(f"{path}: column(s) {', '.join(dupes)} appear more than once in the header")
    required = KIND_COLUMNS[kind]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} for {kind} "
                         f"(expected {', '.join(required)})")
    extra = [c for c in columns if c not in required]
    if extra and kind == "conversions":
        raise InputError(f"{path}: unknown column(s) {', '.join(extra)} for conversions; "
                         "only clicks may carry context columns")
    return extra


def read_csv(spark: SparkSession, path: str, kind: str) -> DataFrame:
    header = read_csv_header(spark, path)
    extra = _check_columns(path, kind, header)
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header] +
                          [T.StructField(CORRUPT, T.StringType())])
    df = (spark.read.schema(schema)
          .option("header", True)
          .option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", CORRUPT)
          .csv(path))
    columns = [*KIND_COLUMNS[kind], *extra]
    malformed = (F.when(F.col(CORRUPT).isNotNull(),
                        F.lit(f"malformed CSV record: expected {len(header)} fields as in the header "
                              "(extra or missing fields, or an unclosed quote)"))
                 .when(has_bad_bytes(header), F.lit("invalid UTF-8 bytes in the record")))
    return with_positions(df).select(*columns, F.col(CORRUPT).alias("_record"), malformed.alias("_malformed"),
                                 "_pid", "_idx")


def read_jsonl(spark: SparkSession, path: str, kind: str) -> DataFrame:
    """JSON Lines, one object per line. A blank line is a malformed record like any other."""
    columns = list(KIND_COLUMNS[kind])
    schema = T.StructType([T.StructField(c, T.StringType()) for c in columns])
    lines = with_positions(spark.read.text(path))
    keys = F.json_object_keys("value")
    extra = F.array_except(keys, F.array(*[F.lit(c) for c in columns]))
    # The text reader keeps a line's bytes as they are: check them (the CSV reader replaces bad bytes).
    malformed = (F.when(~F.is_valid_utf8("value"), F.lit("invalid UTF-8 bytes in the record"))
                 .when(keys.isNull(), F.lit("malformed JSON: not one complete JSON object on the line"))
                 .when(F.size(extra) > 0,
                       F.concat(F.lit("unexpected field(s): "), F.array_join(F.array_sort(extra), ", "))))
    parsed = lines.withColumn("_obj", F.from_json("value", schema))
    return parsed.select(*[F.col("_obj")[c].alias(c) for c in columns],
                         F.when(malformed.isNotNull(), F.make_valid_utf8("value")).alias("_record"),
                         malformed.alias("_malformed"), "_pid", "_idx")


def read_parquet(spark: SparkSession, path: str, kind: str) -> DataFrame:
    try:
        df = spark.read.parquet(path)
        fields = {f.name: f.dataType for f in df.schema.fields}
    except Exception as e:  # noqa: BLE001 - Spark raises several types for unreadable Parquet
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot read {path} as Parquet ({first}); timestamps must be microseconds "
                         "or milliseconds, not nanoseconds") from e
    extra = _check_columns(path, kind, list(fields))
    columns = [*KIND_COLUMNS[kind], *extra]
    nested = [c for c in columns if isinstance(fields[c], T.ArrayType | T.MapType | T.StructType)]
    if nested:
        raise InputError(f"{path}: column(s) {', '.join(nested)} are nested; expected plain values")
    return with_positions(df).select(*[F.col(c).cast("string").alias(c) for c in columns],
                                 F.lit(None).cast("string").alias("_record"),
                                 F.lit(None).cast("string").alias("_malformed"), "_pid", "_idx")


def read_input(spark: SparkSession, path: str, kind: str, fmt: str | None = None) -> DataFrame:
    """Read ``path`` as ``kind`` events into the all-string shape described in the module docstring."""
    check_exists(path)
    fmt = format_of(path, fmt)
    reader = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}[fmt]
    return reader(spark, resolve(path), kind)


def row_numbers(df: DataFrame) -> tuple[Column, int]:
    """An expression giving each row's 1-based position in the file, and the number of rows.

    Needs one aggregation over ``df`` (cache it first); the expression uses ``_pid``/``_idx``.
    """
    sizes = sorted((r["_pid"], r["n"]) for r in df.groupBy("_pid").agg(F.count("*").alias("n")).collect())
    offsets, total = [], 0
    for pid, n in sizes:
        offsets += [F.lit(pid), F.lit(total)]
        total += n
    if not offsets:
        return F.lit(None).cast("long"), 0
    # One map literal, whatever the number of input partitions.
    offset = F.element_at(F.create_map(*offsets), F.col("_pid")).cast("long")
    return offset + F.col("_idx") + 1, total
