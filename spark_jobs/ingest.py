"""Ingest click and conversion files into ``raw/*`` Delta tables; rejects go to ``quarantine/*``.

The transform is ``classify(parsed, table, existing) -> DataFrame``: every input row gets a ``_status``
(``new``, ``already_present`` or ``quarantined``) and, if quarantined, a ``_reason``:

* a row breaking a parse rule (``spark_jobs.parse``) is quarantined with all its reasons;
* among valid rows with the same key in one file, the first in file order wins; a later identical row is
  ``already_present``, a later different row is quarantined ("first seen wins");
* a valid row whose key is already in the table is ``already_present`` if its contract columns are equal,
  else quarantined: the first version ever ingested is the one kept.

Row identity is the contract columns only (context columns do not make a row different). The write edge
inserts quarantined rows into ``quarantine/<kind>`` keyed by a hash of (source, row number, record) and new
rows into ``raw/<kind>`` keyed by the contract key, both insert-only MERGEs, so ingesting a file twice
adds nothing and a re-run after a crash converges; so do ingests running at once (``ingest_frame``
retries a conflicting commit). For every file,
``read = ingested + already_present + quarantined + skipped`` is checked before the run reports success,
with ``read`` counted from the file itself (``readers.file_rows``; blank lines are skipped): before
anything is written, the records Spark's reader returned must be exactly the file's non-blank rows.

Incremental by construction: before Spark reads a file, its size and SHA-256 are computed (streamed, no
Spark job) and looked up in the ingest log ``raw/_ingested`` (``spark_jobs.ingest_log``). A file the log
holds (the same bytes, kind and settings, under any path, its tables not re-created since) is not read:
its account is the log's as a re-read would give it (what it ingested then is already present now), with
``unchanged_since`` set; nothing is committed. A changed file is read as above, and so is every file with
``IngestConfig.reingest`` (``duet ingest --reingest``). A file's log row is appended only after its raw
and quarantine commits succeeded and its account balanced, so a crash in between leaves it unlogged and
the next run reads it again, adding nothing.

``ingest_frame`` is the part every input layout shares (``spark_jobs.taobao`` maps its layout to the same
frames). The conductor runs it as ``duet ingest`` (``duet.cli``), also under spark-submit.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.contracts import (
    ATTRIBUTION_WINDOW,
    INGEST_LOG,
    QUARANTINE_CLICKS,
    QUARANTINE_CONVERSIONS,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    Table,
)
from core.errors import DuetError
from core.lake import absolute
from core.spark import require_utc
from spark_jobs import delta_io, ingest_log
from spark_jobs.ingest_log import Fingerprint, Logged
from spark_jobs.parse import ParseRules, parse_events
from spark_jobs.readers import (
    KIND_COLUMNS,
    FileRows,
    check_exists,
    file_rows,
    format_of,
    read_error,
    read_input,
    root_cause,
    row_numbers,
    strict_reads,
)

RAW = {"clicks": RAW_CLICKS, "conversions": RAW_CONVERSIONS}
QUARANTINE = {"clicks": QUARANTINE_CLICKS, "conversions": QUARANTINE_CONVERSIONS}
NEW, PRESENT, QUARANTINED = "new", "already_present", "quarantined"
MAX_ATTEMPTS = 5  # per table and run, when concurrent ingests keep conflicting


@dataclass(frozen=True)
class IngestConfig:
    """What an ingest run needs besides its input files."""

    lake: str
    rules: ParseRules = field(default_factory=ParseRules)
    # Taobao layout: how far back a buy looks for its pv (seconds)
    attribution_window_s: float = ATTRIBUTION_WINDOW.total_seconds()
    # read every file, even one the ingest log holds with the same bytes and settings
    reingest: bool = False


@dataclass
class FileCounts:
    """The conservation account of one input file (Taobao files count clicks and conversions together)."""

    source: str
    kind: str
    read: int = 0
    ingested: int = 0
    already_present: int = 0
    quarantined: int = 0
    skipped: int = 0
    quarantine_added: int = 0
    by_table: dict[str, dict[str, int]] = field(default_factory=dict)
    sha256: str | None = None
    # Set when the ingest log held the file (``ingest_log``) and nothing was read: when it was ingested
    # (ISO-8601), and under which path if another; the account is then what reading it again would give.
    unchanged_since: str | None = None
    logged_as: str | None = None

    @property
    def balanced(self) -> bool:
        return self.read == self.ingested + self.already_present + self.quarantined + self.skipped

    def line(self) -> str:
        new_q = f" ({self.quarantine_added} new)" if self.quarantined else ""
        account = (f"read {self.read} = ingested {self.ingested} + already present {self.already_present} + "
                   f"quarantined {self.quarantined}{new_q} + skipped {self.skipped}")
        if self.unchanged_since is None:
            return f"{self.source}: {account}"
        as_ = f" as {self.logged_as}" if self.logged_as else ""
        return (f"{self.source}: unchanged since its ingest at {self.unchanged_since}{as_}, nothing read: "
                f"{account}")

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(columns: list[Column]) -> Column:
    """A hash of values, distinguishing null from every string (Spark's hashes skip nulls)."""
    return F.xxhash64(*[F.coalesce(c.cast("string"), F.lit("\u0000null")) for c in columns])


def _typed_hash(table: Table) -> Column:
    return content_hash([F.col("_typed")[c] for c in table.columns])


def classify(parsed: DataFrame, table: Table, existing: DataFrame | None) -> DataFrame:
    """Add ``_status`` and ``_reason`` to parsed rows (see the module docstring). Pure transform.

    ``existing`` is the current table (or None); only its key and contract columns are read.
    """
    key = table.key[0]
    valid = F.size("_reasons") == 0
    df = parsed.withColumn("_valid", valid).withColumn("_key", F.col("_typed")[key]) \
        .withColumn("_hash", _typed_hash(table))
    in_file = Window.partitionBy("_valid", "_key").orderBy("_pid", "_idx")
    df = df.withColumn("_rank", F.row_number().over(in_file)) \
        .withColumn("_first_hash", F.first("_hash").over(in_file))
    if existing is not None:
        known = existing.select(F.col(key).alias("_key"),
                                content_hash([F.col(c) for c in table.columns]).alias("_known_hash"))
        df = df.join(known, "_key", "left")
    else:
        df = df.withColumn("_known_hash", F.lit(None).cast("long"))

    quoted_key = F.concat(F.lit(f"{key} '"), F.col("_key"), F.lit("'"))
    status = (F.when(~F.col("_valid"), F.lit(QUARANTINED))
              .when((F.col("_rank") > 1) & (F.col("_hash") == F.col("_first_hash")), F.lit(PRESENT))
              .when(F.col("_rank") > 1, F.lit(QUARANTINED))
              .when(F.col("_known_hash").isNull(), F.lit(NEW))
              .when(F.col("_known_hash") == F.col("_hash"), F.lit(PRESENT))
              .otherwise(F.lit(QUARANTINED)))
    reason = (F.when(~F.col("_valid"), F.array_join("_reasons", "; "))
              .when((F.col("_rank") > 1) & (F.col("_hash") != F.col("_first_hash")),
                    F.concat(F.lit("conflicting duplicate: "), quoted_key,
                             F.lit(" appears earlier in this file with different content (first seen wins)")))
              .when((F.col("_rank") == 1) & F.col("_known_hash").isNotNull()
                    & (F.col("_known_hash") != F.col("_hash")),
                    F.concat(F.lit("conflicting duplicate: "), quoted_key,
                             F.lit(" was ingested before with different content (first seen wins)"))))
    return df.withColumn("_status", status).withColumn("_reason", reason)


def quarantine_rows(classified: DataFrame, kind: str, source: str, row_number: Column,
                    ingested_at: datetime) -> DataFrame:
    """The quarantined rows in the quarantine table's shape (original fields as strings)."""
    originals = [c for c in classified.columns if not c.startswith("_")]  # contract + context columns
    record = F.coalesce(F.col("_record"), F.to_json(F.struct(*[F.col(c) for c in originals])))
    rows = classified.where(F.col("_status") == QUARANTINED).select(
        *[F.col(c) for c in KIND_COLUMNS[kind]],
        record.alias("record"),
        F.col("_reason").alias("reason"),
        F.lit(source).alias("source"),
        row_number.alias("source_row"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
    )
    qid = F.sha2(F.concat_ws("\u0001", F.col("source"), F.col("source_row").cast("string"),
                             F.col("record")), 256)
    return rows.withColumn("quarantine_id", qid)


def new_rows(classified: DataFrame, kind: str) -> tuple[DataFrame, bool]:
    """The rows to insert into ``raw/<kind>``, and whether they carry context columns."""
    contract = KIND_COLUMNS[kind]
    context = [c for c in classified.columns if not c.startswith("_") and c not in contract]
    rows = classified.where(F.col("_status") == NEW).select(
        "_typed.*", *[F.col(c) for c in context]
    )
    return rows, bool(context)


class ConcurrentInsert(DuetError):
    """An insert-only MERGE inserted fewer rows than were new: another ingest inserted some of those keys
    after this one read the table."""


@dataclass
class _Written:
    """What one run's attempts have committed so far, over all attempts."""

    quarantine: int = 0
    raw: int = 0


def _write_once(spark: SparkSession, cfg: IngestConfig, kind: str, frame: DataFrame, source: str,
                ingested_at: datetime, row_number: Column, written: _Written) -> dict[str, int]:
    """Classify ``frame`` against the table as it is now and write; return the rows per status."""
    raw, quarantine = RAW[kind], QUARANTINE[kind]
    existing = (spark.read.format("delta").load(raw.location(cfg.lake))
                if delta_io.exists(spark, raw, cfg.lake) else None)
    classified = classify(parse_events(frame, kind, cfg.rules), raw, existing)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_status = {r["_status"]: r["n"] for r in
                     classified.groupBy("_status").agg(F.count("*").alias("n")).collect()}
        table_counts = {s: by_status.get(s, 0) for s in (NEW, PRESENT, QUARANTINED)}
        if table_counts[QUARANTINED]:
            rows = quarantine_rows(classified, kind, source, row_number, ingested_at)
            written.quarantine += delta_io.insert_new(spark, quarantine, cfg.lake, rows)
        if table_counts[NEW]:
            rows, has_context = new_rows(classified, kind)
            inserted = delta_io.insert_new(spark, raw, cfg.lake, rows, evolve_schema=has_context)
            written.raw += inserted
            if inserted != table_counts[NEW]:
                raise ConcurrentInsert(f"{raw.path}: inserted {inserted} rows, {table_counts[NEW]} were new")
        return table_counts
    finally:
        classified.unpersist()


def ingest_frame(spark: SparkSession, cfg: IngestConfig, kind: str, frame: DataFrame, source: str,
                 counts: FileCounts, ingested_at: datetime, row_number: Column) -> None:
    """Parse, classify and write one kind's rows of one source; add its figures to ``counts``.

    Ingests running at once converge: when another run commits to the same table between this one's read
    and its commit (a Delta commit conflict, or ``ConcurrentInsert``), this one classifies again against
    the table as it now is and writes again, up to ``MAX_ATTEMPTS`` times, then fails asking for a
    re-run. Both writes are insert-only MERGEs, so nothing lands twice; rows this run inserted in an
    earlier attempt are found present by the next one and still counted as ingested by it.
    """
    raw = RAW[kind]
    written = _Written()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        earlier = written.raw
        try:
            table_counts = _write_once(spark, cfg, kind, frame, source, ingested_at, row_number, written)
            break
        except (*delta_io.CONFLICTS, ConcurrentInsert) as e:
            if attempt == MAX_ATTEMPTS:
                first = root_cause(e)[:200]
                raise DuetError(f"{raw.path}: another ingest kept committing to the table at the same time "
                                f"({MAX_ATTEMPTS} attempts, the last: {first}); re-run to reconcile "
                                "(nothing lands twice)") from e
            time.sleep(0.2 * attempt + random.random())  # apart, so that the runs stop colliding
    table_counts = {NEW: table_counts[NEW] + earlier, PRESENT: table_counts[PRESENT] - earlier,
                    QUARANTINED: table_counts[QUARANTINED]}
    counts.by_table[raw.path] = table_counts
    counts.ingested += table_counts[NEW]
    counts.already_present += table_counts[PRESENT]
    counts.quarantined += table_counts[QUARANTINED]
    counts.quarantine_added += written.quarantine


def read_records(spark: SparkSession, frame: DataFrame, path: str, fmt: str,
                 header: bool = True) -> tuple[FileRows, Column, int]:
    """What the file holds by its own count (``readers.file_rows``), the row numbers of ``frame`` (its
    records, persisted) and their count, checked before anything is written: every row of the file that
    is not blank must be a record."""
    try:
        held = file_rows(spark, path, fmt, header)
        row_number, records = row_numbers(frame)
    except Exception as e:  # noqa: BLE001 - the first reads of the file: Spark raises several types
        raise read_error(path, e) from e
    if records != held.rows - held.blank:
        raise DuetError(f"{path}: the file holds {held.rows - held.blank} rows but Spark's reader returned "
                        f"{records}; nothing was written")
    return held, row_number, records


def file_settings(cfg: IngestConfig, kind: str, fmt: str) -> dict[str, Any]:
    """What decides how a file's rows are classified besides its bytes (the ingest log's ``settings``)."""
    rules = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(cfg.rules).items()}
    settings: dict[str, Any] = {"format": fmt, "rules": rules}
    if kind == "taobao":
        settings["attribution_window_s"] = cfg.attribution_window_s
    return settings


def unchanged_account(file: Fingerprint, logged: Logged) -> FileCounts:
    """The account of a file the ingest log holds, as reading it again would give it: every row it
    ingested then is present now; its quarantined rows are quarantined again, and none is new there."""
    c = logged.counts
    by_table = {path: {NEW: 0, PRESENT: t[NEW] + t[PRESENT], QUARANTINED: t[QUARANTINED]}
                for path, t in logged.by_table.items()}
    return FileCounts(source=file.source, kind=file.kind, read=c["read"], ingested=0,
                      already_present=c["ingested"] + c["already_present"], quarantined=c["quarantined"],
                      skipped=c["skipped"], by_table=by_table, sha256=file.sha256,
                      unchanged_since=logged.ingested_at.isoformat(),
                      logged_as=logged.source if logged.source != file.source else None)


def known_file(spark: SparkSession, cfg: IngestConfig, kind: str, path: str,
               fmt: str) -> tuple[Fingerprint, FileCounts | None]:
    """``path``'s fingerprint (its size and SHA-256: no Spark job) and, unless ``cfg.reingest``, its
    account if the ingest log holds the file (``unchanged_account``), else None."""
    try:
        file = ingest_log.fingerprint(spark, path, kind, file_settings(cfg, kind, fmt))
    except Exception as e:  # noqa: BLE001 - Python's or Hadoop's errors
        raise read_error(path, e) from e
    logged = None if cfg.reingest else ingest_log.find(spark, cfg.lake, file)
    return file, None if logged is None else unchanged_account(file, logged)


def log_file(spark: SparkSession, cfg: IngestConfig, file: Fingerprint, counts: FileCounts,
             ingested_at: datetime, kinds: tuple[str, ...]) -> None:
    """Append ``file``'s row to the ingest log: only once its rows are committed and its account balances."""
    tables = [t for k in kinds for t in (RAW[k], QUARANTINE[k])]
    try:
        ingest_log.record(spark, cfg.lake, file, {c: getattr(counts, c) for c in ingest_log.COUNTS},
                          counts.by_table, ingested_at, tables)
    except Exception as e:  # noqa: BLE001 - whatever failed, the rows are in and a re-run is cheap
        raise DuetError(f"{file.source}: its rows are committed but its row in the ingest log "
                        f"({INGEST_LOG.path}) could not be written ({root_cause(e)}); the next run reads "
                        "the file again and adds nothing") from e


def ingest_file(spark: SparkSession, cfg: IngestConfig, kind: str, path: str,
                fmt: str | None = None) -> FileCounts:
    """Ingest one clicks or conversions file; return its conservation account. A file the ingest log holds
    is not read (``known_file``; for a local file and lake that check touches no Spark session, so a
    caller handing a session started on first use starts none)."""
    path = absolute(path)
    check_exists(path)
    fmt = format_of(path, fmt)
    file, known = known_file(spark, cfg, kind, path, fmt)
    if known is not None:
        check_balance(known)
        return known
    require_utc(spark)
    ingested_at = datetime.now(UTC)
    with strict_reads(spark):
        frame = read_input(spark, path, kind, fmt).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            held, row_number, records = read_records(spark, frame, path, fmt)
            counts = FileCounts(source=path, kind=kind, read=held.rows, skipped=held.blank,
                                sha256=file.sha256)
            if records:
                ingest_frame(spark, cfg, kind, frame, path, counts, ingested_at, row_number)
        finally:
            frame.unpersist()
    check_balance(counts)
    log_file(spark, cfg, file, counts, ingested_at, (kind,))
    return counts


def check_balance(counts: FileCounts) -> None:
    if not counts.balanced:
        raise DuetError(f"row accounting does not add up, this is a bug: {counts.line()}")


def check_inputs(clicks: str | None, conversions: str | None, fmt: str | None) -> None:
    """Check every file before anything is written, so a typo in the second path writes nothing."""
    if not clicks and not conversions:
        raise DuetError("nothing to ingest: give a clicks file, a conversions file or both",
                        fields=("clicks", "conversions"))
    for path in (clicks, conversions):
        if path:
            check_exists(path)
            format_of(path, fmt)


def ingest(spark: SparkSession, cfg: IngestConfig, clicks: str | None = None,
           conversions: str | None = None, fmt: str | None = None) -> list[FileCounts]:
    """Ingest the given files (clicks first, then conversions); return one account per file."""
    require_utc(spark)
    check_inputs(clicks, conversions, fmt)
    results = []
    if clicks:
        results.append(ingest_file(spark, cfg, "clicks", clicks, fmt))
    if conversions:
        results.append(ingest_file(spark, cfg, "conversions", conversions, fmt))
    return results
