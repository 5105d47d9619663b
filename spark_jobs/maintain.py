"""Delta table maintenance on Spark: OPTIMIZE (compaction) and VACUUM of one table, and what each did.

Which tables, and how long VACUUM keeps files, is the conductor's decision (``duet.maintain``, which knows
the readers of older versions); this module runs the commands on the location it is given.

OPTIMIZE here is bin-packing only: small files of a partition rewritten into fewer large ones, in one commit
whose actions carry ``dataChange: false`` (no row changes, the change data feed has nothing for it, and
``core.table_versions`` does not count it as a change), none when there is nothing to compact. No
Z-ORDER: duet's readers read whole partitions (a snapshot of the sequence tables, a model version of the
embeddings, the raw tables by time) or whole tables, where data skipping by a second column gains nothing;
only ``embed --changed-only``'s read of a few users of one snapshot would be helped, and Z-ordering is not
incremental (every run rewrites every file of the partitions it covers), a cost each run for a read that
is small already.

VACUUM deletes the files that no version newer than the retention references and that are older than it
(by modification time); it never touches ``_delta_log``. Two Delta settings stand in the way of a retention
given per command, and ``vacuum`` sets both for its one command only (the session's own values after it):

- Delta 4 ignores ``RETAIN n HOURS`` unless n is 0 and uses the table's
  ``delta.deletedFileRetentionDuration`` (7 days by default) instead
  (``spark.databricks.delta.vacuum.retentionWindowIgnore.enabled``, on by default): turned off, so that the
  retention the conductor computed is the one applied, longer or shorter. The VACUUM START commit records
  the retention Delta applied; ``vacuum`` checks it and fails, loudly, if a Delta ignored it all the same.
- Delta refuses a retention shorter than the table's ``delta.deletedFileRetentionDuration`` unless
  ``spark.databricks.delta.retentionDurationCheck.enabled`` is false, to protect the uncommitted files of a
  writer still running: turned off only when asked for less than ``DELTA_RETENTION_HOURS`` (a caller's
  decision, see ``duet.maintain``).

On a local master it also lists the table's folders with as many tasks as there are cores, not Spark's
10000 (``LISTING_TASKS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from core.errors import DuetError
from core.spark import delta_identifier, session_settings

DELTA_RETENTION_HOURS = 168          # Delta's default retention (delta.deletedFileRetentionDuration, 1 week)
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
RETENTION_IGNORED = "spark.databricks.delta.vacuum.retentionWindowIgnore.enabled"
# VACUUM lists the table's folders with this many tasks; Spark's default (10000) is for clusters: on a
# local master a two-file table took a minute (6 s with the cores' count).
LISTING_TASKS = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@dataclass(frozen=True)
class TableState:
    """A table's newest version and the data files of its current snapshot."""

    version: int
    files: int
    bytes: int


@dataclass(frozen=True)
class Vacuumed:
    """What a VACUUM deleted: files and the folders it left empty (a dry run: the files it would delete),
    their bytes; None where Delta did not say."""

    files: int | None
    bytes: int | None


def is_table(spark: SparkSession, location: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, location)


def state(spark: SparkSession, location: str) -> TableState:
    table = delta_identifier(location)
    detail = spark.sql(f"DESCRIBE DETAIL {table}").first()
    newest = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()
    return TableState(int(newest["version"]), int(detail["numFiles"]), int(detail["sizeInBytes"]))


def optimize(spark: SparkSession, location: str) -> tuple[int, int]:
    """Compact the table's small files (module docstring); (files removed, files added)."""
    metrics = spark.sql(f"OPTIMIZE {delta_identifier(location)}").first()["metrics"]
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def vacuum(spark: SparkSession, location: str, hours: int, dry_run: bool = False) -> Vacuumed:
    """VACUUM the table, keeping what the versions of the last ``hours`` hours need (module docstring);
    a dry run lists what it would delete and deletes nothing."""
    table = delta_identifier(location)
    before = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()["version"]
    command = f"VACUUM {table} RETAIN {int(hours)} HOURS" + (" DRY RUN" if dry_run else "")
    settings = {RETENTION_IGNORED: "false"}
    if hours < DELTA_RETENTION_HOURS:
        settings[RETENTION_CHECK] = "false"
    if spark.sparkContext.master.startswith("local"):
        settings[LISTING_TASKS] = str(spark.sparkContext.defaultParallelism)
    with session_settings(spark, settings):
        listed = spark.sql(command).collect()
    if dry_run:
        sizes = _file_sizes(spark, [row["path"] for row in listed])     # the listing holds folders too
        return Vacuumed(len(sizes), sum(sizes))
    commits = {c["operation"]: c for c in spark.sql(f"DESCRIBE HISTORY {table} LIMIT 2").collect()
               if c["version"] > before}
    start, end = commits.get("VACUUM START"), commits.get("VACUUM END")
    if start is None or end is None:
        return Vacuumed(None, None)       # Delta's VACUUM logging is off: no commit says
    applied = (start["operationParameters"] or {}).get("specifiedRetentionMillis")
    if applied is None or int(applied) != int(hours) * 3_600_000:
        raise DuetError(f"{location}: Delta vacuumed with a retention other than {hours} h (its VACUUM START "
                        f"commit, version {start['version']}, says {applied} ms): this Delta ignores "
                        f"{RETENTION_IGNORED}; check what it deleted")
    # START's count holds every candidate, folders too (deleted only if empty); END's what went.
    return Vacuumed(int((end["operationMetrics"] or {}).get("numDeletedFiles", 0)),
                    int((start["operationMetrics"] or {}).get("sizeOfDataToDelete", 0)))


def _file_sizes(spark: SparkSession, paths: list[str]) -> list[int]:
    """The size of each of ``paths`` that is a file (a folder or a file gone since is left out)."""
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    sizes = []
    for text in paths:
        path = jvm.org.apache.hadoop.fs.Path(text)
        fs = path.getFileSystem(conf)
        if fs.exists(path) and (status := fs.getFileStatus(path)).isFile():
            sizes.append(int(status.getLen()))
    return sizes
