"""Read one input file into an all-string DataFrame, losing nothing.

Every reader returns the same shape, whatever the format:

* one string column per contract column of the kind (``clicks`` or ``conversions``), plus, for clicks
  from CSV or Parquet, any extra columns of the file as string context columns;
* ``_record``: the original record as text when it could not be split into fields (else null);
* ``_malformed``: why the record could not be split (wrong field count, not JSON, bad bytes), else null;
* ``_pid``, ``_idx``: input partition id and index within it, taken before any shuffle, so that file order
  ("first seen wins") and 1-based row numbers can be recovered later (``row_numbers``).

Types are not parsed here: a value that fails to parse must reach quarantine with its original text, so
parsing happens on strings in ``spark_jobs.parse``. Whole-file problems (missing file, a directory, empty
file, missing required columns, an unknown column in a conversions file, a column named with a leading
``_``, which the readers' own columns use, a Parquet column whose type cannot hold its values) raise
``InputError`` before anything is written.

How many rows a file holds is counted from the file itself, not from what Spark's readers return
(``file_rows``): the Parquet footer's row count, or the lines of a text file as Hadoop's line reader
splits them (``\n``, ``\r\n`` or ``\r``), blank lines (nothing but characters up to the space, which
Spark's CSV reader skips) apart. Ingest compares the two before writing, so a row a reader skipped is a
failed run, never a missing one; and it reads with ``strict_reads``, so no setting lets Spark skip a
corrupt or vanished file quietly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from core.contracts import CLICK_COLUMNS, CONVERSION_COLUMNS
from core.errors import InputError
from core.lake import absolute, is_uri
from core.spark import session_settings

FORMATS = ("csv", "parquet", "jsonl")
KIND_COLUMNS = {"clicks": CLICK_COLUMNS, "conversions": CONVERSION_COLUMNS}
# Columns whose values may be numbers with a fraction (epoch seconds, an amount); the others are ids or text.
NUMERIC_COLUMNS = ("click_ts", "conversion_ts", "report_ts", "value")
CORRUPT = "_corrupt_record"
REPLACEMENT_CHAR = "\ufffd"  # what Spark's UTF-8 decoder puts in place of invalid bytes
BLANK = bytes(range(33))  # a line of nothing but these is blank: Spark's CSV reader trims them and skips it
# Suffixes of the compression codecs Hadoop picks by file name: such files are counted with Spark's text
# reader, which decompresses them like the CSV and JSON readers do.
COMPRESSED = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst", ".br")
# Settings that let Spark skip files (and the rows in them) with only a log line: off while ingest reads.
STRICT_READS = {"spark.sql.files.ignoreCorruptFiles": "false", "spark.sql.files.ignoreMissingFiles": "false"}


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
        raise InputError(f"cannot tell the format of {path} from its extension: name it (csv, parquet or "
                         "jsonl)", fields=("format",))
    return by_ext[suffix]


def check_exists(path: str) -> None:
    """Fail early, naming the file, when a local input is missing or has no bytes at all."""
    if is_uri(path):
        return  # remote files are checked by Spark when read
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {path}")
    if p.is_dir():
        raise InputError(f"input is a directory, not a file: {path} (give each file of it on its own)")
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
    reserved = [c for c in extra if c.startswith("_")]
    if reserved:
        raise InputError(f"{path}: column(s) {', '.join(reserved)} start with '_', which duet reserves for "
                         "its own columns; rename them")
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


def _json_type_problem(variant: Column, text: Column, column: str) -> Column:
    """Why the JSON value of ``column`` has the wrong type for it, else null: text fields (ids,
    ``conversion_type``) take a string or a number written as an integer, ``NUMERIC_COLUMNS`` a string or
    any number; no field takes an array, an object or a boolean (``from_json`` into a string would give
    their text). ``text`` is that string."""
    kind = F.schema_of_variant(F.variant_get(variant, f"$.{column}", "variant"))
    wrong = (F.when(kind.startswith("ARRAY"), F.lit("an array"))
             .when(kind.startswith("OBJECT"), F.lit("an object"))
             .when(kind == "BOOLEAN", F.lit("a boolean")))
    if column not in NUMERIC_COLUMNS:
        wrong = wrong.when((kind != "STRING") & ~text.rlike("^-?[0-9]+$"),
                           F.lit("a number not written as an integer"))
    return F.when(wrong.isNotNull(), F.concat(F.lit(f"{column} is "), wrong))


def read_jsonl(spark: SparkSession, path: str, kind: str) -> DataFrame:
    """JSON Lines, one object per line. Blank lines are skipped (counted by ``file_rows``), as in CSV.

    A record is malformed (quarantined whole, its line kept) when a key repeats (JSON readers would keep
    the last value) or a field's JSON type does not fit it (``_json_type_problem``)."""
    columns = list(KIND_COLUMNS[kind])
    schema = T.StructType([T.StructField(c, T.StringType()) for c in columns])
    lines = with_positions(spark.read.text(path).where(~is_blank("value")))
    keys = F.json_object_keys("value")
    extra = F.array_except(keys, F.array(*[F.lit(c) for c in columns]))
    repeated = F.array_distinct(F.filter(keys, lambda k: F.array_position(keys, k) != F.array_size(keys)
                                         - F.array_position(F.reverse(keys), k) + 1))
    # try_parse_json gives each value's JSON type (null for a repeated key at any depth).
    variant = F.try_parse_json("value")
    problems = F.array(*[_json_type_problem(variant, F.col("_obj")[c], c) for c in columns])
    wrong_types = F.filter(problems, lambda p: p.isNotNull())
    # The text reader keeps a line's bytes as they are: check them (the CSV reader replaces bad bytes).
    malformed = (F.when(~F.is_valid_utf8("value"), F.lit("invalid UTF-8 bytes in the record"))
                 .when(keys.isNull(), F.lit("malformed JSON: not one complete JSON object on the line"))
                 .when(F.size(repeated) > 0, F.concat(F.lit("duplicated JSON key(s): "),
                                                      F.array_join(F.array_sort(repeated), ", ")))
                 # a key repeated inside a nested value: try_parse_json refuses it, the keys above miss it
                 .when(variant.isNull(), F.lit("malformed JSON: a key repeats inside a value"))
                 .when(F.size(extra) > 0,
                       F.concat(F.lit("unexpected field(s): "), F.array_join(F.array_sort(extra), ", ")))
                 .when(F.size(wrong_types) > 0,
                       F.concat(F.lit("wrong JSON type: "), F.array_join(wrong_types, ", "),
                                F.lit(" (ids and text fields take a string or an integer; timestamps and "
                                      "value a string or a number)"))))
    parsed = lines.withColumn("_obj", F.from_json("value", schema))
    return parsed.select(*[F.col("_obj")[c].alias(c) for c in columns],
                         F.when(malformed.isNotNull(), F.make_valid_utf8("value")).alias("_record"),
                         malformed.alias("_malformed"), "_pid", "_idx")


def _parquet_error(path: str, e: Exception) -> InputError:
    """What Spark said about an unreadable Parquet file, in one line; the hint about nanosecond timestamps
    only when they are the cause (Spark: ``Illegal Parquet type: INT64 (TIMESTAMP(NANOS,...))``)."""
    cause = root_cause(e)
    hint = ("; timestamps must be microseconds or milliseconds, not nanoseconds (e.g. pandas "
            "to_parquet(..., coerce_timestamps='us'))" if "TIMESTAMP(NANOS" in f"{e} {cause}" else "")
    return InputError(f"cannot read {path} as Parquet: {cause}{hint}")


def _parquet_type_problems(fields: dict[str, T.DataType], columns: list[str]) -> list[str]:
    """Contract columns whose Parquet type cannot hold their values (the same rule as JSON Lines')."""
    problems = []
    for c in columns:
        t = fields[c]
        fractional = (isinstance(t, T.FloatType | T.DoubleType)
                      or (isinstance(t, T.DecimalType) and t.scale > 0))
        if isinstance(t, T.BooleanType) or (fractional and c not in NUMERIC_COLUMNS):
            problems.append(f"{c} ({t.simpleString()})")
    return problems


def read_parquet(spark: SparkSession, path: str, kind: str) -> DataFrame:
    try:
        df = spark.read.parquet(path)
        fields = {f.name: f.dataType for f in df.schema.fields}
    except Exception as e:  # noqa: BLE001 - Spark raises several types for unreadable Parquet
        raise _parquet_error(path, e) from e
    extra = _check_columns(path, kind, list(fields))
    columns = [*KIND_COLUMNS[kind], *extra]
    nested = [c for c in columns if isinstance(fields[c], T.ArrayType | T.MapType | T.StructType)]
    if nested:
        raise InputError(f"{path}: column(s) {', '.join(nested)} are nested; expected plain values")
    wrong = _parquet_type_problems(fields, list(KIND_COLUMNS[kind]))
    if wrong:
        raise InputError(f"{path}: column(s) {', '.join(wrong)} have a type that cannot hold their values; "
                         "ids and text fields take strings or integers, timestamps and value strings, "
                         "numbers or timestamps")
    return with_positions(df).select(*[F.col(c).cast("string").alias(c) for c in columns],
                                 F.lit(None).cast("string").alias("_record"),
                                 F.lit(None).cast("string").alias("_malformed"), "_pid", "_idx")


def read_input(spark: SparkSession, path: str, kind: str, fmt: str | None = None) -> DataFrame:
    """Read ``path`` as ``kind`` events into the all-string shape described in the module docstring."""
    check_exists(path)
    fmt = format_of(path, fmt)
    reader = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}[fmt]
    return reader(spark, absolute(path), kind)


def is_blank(column: str) -> Column:
    """A line of nothing but ``BLANK`` characters (Spark SQL; the same rule as ``file_rows``)."""
    return F.regexp_replace(column, r"[\x00-\x20]", "") == ""


@dataclass(frozen=True)
class FileRows:
    """What a file holds by its own count: rows (lines after a header), and how many are blank."""

    rows: int
    blank: int = 0


def _local_lines(path: str) -> FileRows:
    """Lines and blank lines of a local text file, streamed, split as Hadoop's line reader splits them."""
    lines = blank = 0
    rest = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            data, hold = rest + chunk, b""
            if data.endswith(b"\r"):  # maybe the first half of \r\n: decide with the next chunk
                data, hold = data[:-1], b"\r"
            parts = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            rest = parts.pop() + hold
            lines += len(parts)
            blank += sum(1 for line in parts if not line.strip(BLANK))
    parts = rest.replace(b"\r", b"\n").split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # the file ends with a line break
    return FileRows(lines + len(parts), blank + sum(1 for line in parts if not line.strip(BLANK)))


def text_lines(spark: SparkSession, path: str) -> FileRows:
    """Lines and blank lines of a text file: read by Python for a local uncompressed file, else by
    Spark's text reader (remote or compressed files), which no CSV or JSON parsing can thin out."""
    if not is_uri(path) and not path.lower().endswith(COMPRESSED):
        return _local_lines(path)
    row = spark.read.text(path).agg(F.count("*").alias("n"), F.count_if(is_blank("value")).alias("b")).first()
    return FileRows(row["n"], row["b"])


def file_rows(spark: SparkSession, path: str, fmt: str, header: bool = True) -> FileRows:
    """The rows ``path`` holds, counted from the file: Parquet footers, or lines (less the header line of
    a CSV file, the first one that is not blank). Run it inside ``strict_reads``."""
    if fmt == "parquet":
        if is_uri(path):
            return FileRows(spark.read.parquet(path).count())  # Spark answers this from the footers
        return FileRows(pq.ParquetFile(path).metadata.num_rows)
    lines = text_lines(spark, path)
    has_header = header and fmt == "csv" and lines.rows > lines.blank
    return FileRows(lines.rows - int(has_header), lines.blank)


def strict_reads(spark: SparkSession):
    """Pin ``STRICT_READS`` whatever ``--conf`` set, for the reads inside; restore the settings after."""
    return session_settings(spark, STRICT_READS)


def root_cause(e: Exception) -> str:
    """The root cause Spark gave for ``e`` (the innermost Java exception), in one line."""
    cause = getattr(e, "java_exception", None)
    while cause is not None and cause.getCause() is not None:
        cause = cause.getCause()
    text = cause.toString() if cause is not None else (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def read_error(path: str, e: Exception) -> InputError:
    """An ``InputError`` naming ``path`` and the root cause Spark gave for failing to read it."""
    return InputError(f"cannot read {path}: {root_cause(e)}")


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
