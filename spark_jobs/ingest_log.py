"""The ingest log (``core.contracts.INGEST_LOG``): which input files were ingested, known by their bytes.

A file is identified by the SHA-256 of its bytes with its kind (``clicks``, ``conversions``, ``taobao``) and
the settings that decide how its rows are classified (``settings``: its format, the parse rules, the
Taobao attribution window), not by its path: the same bytes under another name (a file delivered again,
or moved) are the same file, and a new checksum at a path already logged (a changed file) is a new one.
``find`` returns the newest log row of that identity whose tables still are the ones its rows went to
(the Delta table ids it pinned: a raw or quarantine table deleted or re-created since makes the row void),
else None.

Cost: the checksum streams the file once, in Python for a local path, in the driver's JVM through Hadoop's
``FileSystem`` for a URI (``s3a://``, ``file://``); neither runs a Spark job. On a local lake the log and
the table ids are read with delta-rs (no Spark job); on a lake on object storage with Spark (small jobs on
a small table).

Writing: ``record`` appends one row per file (one commit), after the file's raw and quarantine commits
succeeded. A crash between those commits and the log row leaves the file unlogged: the next run ingests it
again, which adds nothing (the writes are insert-only MERGEs), and logs it then. Two runs ingesting one
file at once both read it and both log it: blind appends do not conflict in Delta, and two rows of one
file are harmless, since each gives the same account of a later ingest (what one run ingested, the other
found present); a reader takes the newest. Rows are never updated or deleted. The file must not change
while it is ingested (it is checksummed before Spark reads it).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.contracts import INGEST_LOG, TABLES, Table
from core.lake import Lake, is_uri
from core.spark import spark_schema
from spark_jobs import delta_io

COUNTS = ("read", "ingested", "already_present", "quarantined", "skipped", "quarantine_added")
CHUNK = 1 << 22
MAX_ATTEMPTS = 5  # appends conflict only while two runs create the log at once
_BY_PATH = {t.path: t for t in TABLES}


@dataclass(frozen=True)
class Fingerprint:
    """What identifies an input file in the log (module docstring), and where it was read from."""

    source: str
    kind: str
    size: int
    sha256: str
    settings: str  # JSON, keys sorted


@dataclass(frozen=True)
class Logged:
    """One log row: the file's account when it was ingested (``COUNTS``, and per table)."""

    source: str
    ingested_at: datetime
    counts: dict[str, int]
    by_table: dict[str, dict[str, int]]


def checksum(spark: SparkSession, path: str) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of the file at ``path``, streamed: by Python for a local path, in the
    driver's JVM through Hadoop's FileSystem for a URI (the bytes never cross into Python)."""
    if not is_uri(path):
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark._jsparkSession.sessionState().newHadoopConf())
    size = fs.getFileStatus(hadoop_path).getLen()
    stream = fs.open(hadoop_path)
    try:
        return int(size), str(jvm.org.apache.commons.codec.digest.DigestUtils.sha256Hex(stream))
    finally:
        stream.close()


def fingerprint(spark: SparkSession, path: str, kind: str, settings: dict) -> Fingerprint:
    size, sha256 = checksum(spark, path)
    return Fingerprint(path, kind, size, sha256, json.dumps(settings, sort_keys=True))


def _table_ids(spark: SparkSession, lake: str, paths: Iterable[str]) -> dict[str, str | None]:
    """Each table's Delta table id (None where there is no table), by contract path."""
    ids: dict[str, str | None] = {}
    for path in paths:
        location = _BY_PATH[path].location(lake)
        if Lake(lake).is_local:
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError

            try:
                ids[path] = DeltaTable(location).metadata().id
            except TableNotFoundError:
                ids[path] = None
        else:
            from delta.tables import DeltaTable as SparkDeltaTable

            ids[path] = (SparkDeltaTable.forPath(spark, location).detail().first()["id"]
                         if SparkDeltaTable.isDeltaTable(spark, location) else None)
    return ids


def _rows(spark: SparkSession, lake: str, sha256: str) -> list[dict]:
    """The log's rows with this checksum ([] without a log)."""
    location = INGEST_LOG.location(lake)
    if Lake(lake).is_local:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            log = DeltaTable(location)
        except TableNotFoundError:
            return []
        return log.to_pyarrow_table(filters=[("sha256", "=", sha256)]).to_pylist()
    if not delta_io.exists(spark, INGEST_LOG, lake):
        return []
    frame = spark.read.format("delta").load(location).where(F.col("sha256") == sha256) \
        .withColumn("ingested_at", F.unix_micros("ingested_at"))  # no local-time conversion on the way
    return [{**row.asDict(), "ingested_at": datetime.fromtimestamp(0, UTC) + timedelta(
        microseconds=row["ingested_at"])} for row in frame.collect()]


def find(spark: SparkSession, lake: str, file: Fingerprint) -> Logged | None:
    """The newest log row of ``file``'s identity whose pinned tables are unchanged, else None."""
    rows = [r for r in _rows(spark, lake, file.sha256)
            if r["kind"] == file.kind and r["settings"] == file.settings]
    for row in sorted(rows, key=lambda r: r["ingested_at"], reverse=True):
        pinned = json.loads(row["tables"])
        if _table_ids(spark, lake, pinned) == pinned:
            return Logged(row["source"], row["ingested_at"], {c: int(row[c]) for c in COUNTS},
                          json.loads(row["by_table"]))
    return None


def record(spark: SparkSession, lake: str, file: Fingerprint, counts: dict[str, int],
           by_table: dict[str, dict[str, int]], ingested_at: datetime, tables: Iterable[Table]) -> None:
    """Append ``file``'s row (one commit): its account and the ids of ``tables`` present now."""
    ids = {path: i for path, i in _table_ids(spark, lake, [t.path for t in tables]).items() if i is not None}
    row = (file.source, file.kind, file.size, file.sha256, file.settings, *(int(counts[c]) for c in COUNTS),
           json.dumps(by_table, sort_keys=True), json.dumps(ids, sort_keys=True), ingested_at)
    frame = spark.createDataFrame([row], spark_schema(INGEST_LOG))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            delta_io.ensure_table(spark, INGEST_LOG, lake)
            frame.write.format("delta").mode("append").save(INGEST_LOG.location(lake))
            return
        except delta_io.CONFLICTS:
            if attempt == MAX_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt + random.random())
