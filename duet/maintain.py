"""``duet maintain``: OPTIMIZE and VACUUM the lake's Delta tables without breaking a read duet relies on.

Per table (every contract table present, or those named), in data-flow order: OPTIMIZE (bin-packing,
``spark_jobs.maintain``), then VACUUM with the retention below; one line per table, a JSON line at the end.
``--dry-run`` runs no OPTIMIZE and lists what VACUUM would delete, deleting nothing. Neither changes a row,
and ``core.table_versions`` counts neither's commits as a change: the demo's stage records, ``duet daily``'s
keys and the publish gate's earlier pass all still hold afterwards.

**What reads an older version of a table, or its change data feed** (everything else reads the current
version):

- ``embed --changed-only`` (``encoders.lake.changed_users``; ``duet daily``'s embed step runs it) reads the
  sequence tables' change files in one snapshot's partition (``_change_data`` files of a MERGE, the data
  files added or removed by an overwrite) of every commit after the versions the last embedding run of that
  (snapshot, model version) recorded in its commit's ``userMetadata`` (``encoders.lake.EmbeddingRun``,
  ``last_run``). VACUUM deletes such files like any other file no current version references: this is the
  one reader that constrains the retention (``encoders.lake.pending_feeds`` lists what it would read).
- The demo's stage records (``<lake>/_stages/*.json``, ``duet.stage_cache``), ``duet daily``'s records and
  the publish gate (``core.quality.reusable_pass``) keep version numbers (and commit stamps) and compare them
  with the log (``core.table_versions``): they never read an older version's rows, and VACUUM never deletes
  the log, so they constrain nothing.
- A job's own pinned read (the validation suites' ``versionAsOf``, the embedding engines' planned versions)
  reads the version that was current when the job started, while it runs: Delta's 7 days cover any job.

**The retention rule** (``retention``): VACUUM with a retention of ``H`` hours deletes a file only when
the current version does not reference it, its removal is not recorded within the last ``H`` hours (a removal
is remembered for the table's ``delta.deletedFileRetentionDuration``, 7 days by default, at most) and the
file itself is older than ``H`` hours (its modification time): a file younger than ``H`` is always kept.
``H`` is

- by default, per table, the larger of Delta's default (168 h: what Delta keeps for readers of older
  versions and for a running writer's files not yet committed) and what the pending ``--changed-only`` reads
  of that table need: the age of the oldest file one of them reads, rounded up to whole hours, plus
  ``MARGIN_HOURS`` for the time between measuring it and VACUUM's listing (measured again just before each
  table's VACUUM). The files' own ages are the measure because that is all VACUUM spares them by: a change
  file is referenced by no version at all, and a file an overwrite removed is remembered only for the
  table's ``delta.deletedFileRetentionDuration``;
- ``--retention-hours H`` when given, for every table; refused, before anything runs, with a ``DuetError``
  naming the reader (the ``embed`` command), the table and the version it reads from, when a pending read of
  a table needs more. Below 168 h it is the operator's decision: Delta's own check is turned off for that
  command (``spark_jobs.maintain.vacuum``), and a writer running on the table meanwhile could lose files it
  has not committed yet. Run it between jobs, as duet assumes one writer per table at a time.

Delta 4 applies a ``RETAIN`` other than 0 hours only with its retention-window override off, else the
table's ``delta.deletedFileRetentionDuration`` (7 days) whatever the need: ``spark_jobs.maintain.vacuum``
turns it off for its command and checks, in the VACUUM START commit, the retention Delta applied.

A pending read holds its files until a newer run of that snapshot and model version is recorded (that
``embed --changed-only``, ``duet daily``, or a full ``embed``). The log is Delta's: its clean-up at a
checkpoint (``delta.logRetentionDuration``, 30 days by default) can drop commits that a read pending for
longer needs, whichever writer makes the checkpoint; that read then asks for a full run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from core.contracts import TABLES
from core.errors import DuetError
from core.lake import Lake
from spark_jobs.maintain import DELTA_RETENTION_HOURS, is_table, optimize, state, vacuum

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MARGIN_HOURS = 1     # the command's own time between measuring a file's age and VACUUM listing it


@dataclass(frozen=True)
class Need:
    """A pending read of one table's files: VACUUM must keep the last ``hours`` hours."""

    table: str
    hours: int
    reader: str       # the command that will read them
    version: int      # the oldest version whose files it reads
    since: int        # the version its last run read up to

    def text(self) -> str:
        return (f"{self.reader} reads the change data feed of {self.table} from version {self.version} "
                f"(its last run read up to version {self.since}): its files need {self.hours} h")


def reader_needs(lake: Lake, now: float | None = None) -> list[Need]:
    """What each pending ``embed --changed-only`` read needs kept (module docstring); none on a lake on
    object storage, whose files' ages are not read here (Delta's default retention applies there)."""
    from encoders.lake import pending_feeds

    if not lake.is_local:
        return []
    now = time.time() if now is None else now
    needs = []
    for feed in pending_feeds(lake.root):
        stamps = []
        for path in feed.files:
            try:
                stamps.append(path.stat().st_mtime)
            except FileNotFoundError:     # vacuumed already: that read fails whatever is kept now
                continue
        if not stamps:
            continue
        run = feed.run
        reader = (f"`duet embed --changed-only --snapshot {run.snapshot.isoformat()} "
                  f"--model-version {run.model_version}`")
        hours = math.ceil(max(0.0, now - min(stamps)) / 3600) + MARGIN_HOURS
        needs.append(Need(feed.table, hours, reader, feed.version, run.sequence_versions[feed.table]))
    return needs


def retention(table: str, needs: Sequence[Need], requested: int | None) -> int:
    """The hours VACUUM keeps for ``table`` (module docstring); a ``requested`` retention too short for a
    pending read is refused, naming it."""
    mine = sorted((n for n in needs if n.table == table), key=lambda n: -n.hours)
    if requested is None:
        return max([DELTA_RETENTION_HOURS, *(n.hours for n in mine)])
    short = [n for n in mine if n.hours > requested]
    if short:
        more = f" (and {len(short) - 1} more pending read(s))" if len(short) > 1 else ""
        raise DuetError(f"a retention of {requested} h would vacuum files that are still to be read: "
                        f"{short[0].text()}{more}; keep at least {short[0].hours} h, or run that embedding "
                        "first", fields=("retention_hours",))
    return requested


@dataclass(frozen=True)
class TablePlan:
    table: str                     # contract path
    location: str
    hours: int                     # VACUUM's retention
    requested: int | None          # the retention asked for (None: the rule's)
    named: bool                    # asked for by name (then it must be there)
    needs: tuple[Need, ...] = ()


def plan_maintenance(lake: str, retention_hours: int | None = None,
                     tables: Sequence[str] | None = None) -> list[TablePlan]:
    """What ``run_maintenance`` does to each table, decided without Spark: refuses a retention that is
    negative or too short for a pending read, and a name that is not a contract table."""
    if retention_hours is not None and retention_hours < 0:
        raise DuetError(f"a retention of {retention_hours} h: give 0 or more hours",
                        fields=("retention_hours",))
    known = [t.path for t in TABLES]
    unknown = sorted(set(tables or ()) - set(known))
    if unknown:
        raise DuetError(f"not a duet table: {', '.join(unknown)} (the tables: {', '.join(known)})",
                        fields=("table",))
    root = Lake(lake)
    needs = reader_needs(root)
    chosen = [t for t in TABLES if tables is None or t.path in tables]
    return [TablePlan(t.path, root.table(t), retention(t.path, needs, retention_hours), retention_hours,
                      tables is not None, tuple(n for n in needs if n.table == t.path)) for t in chosen]


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table (a dry run: would do to it)."""

    table: str
    retention_hours: int
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    optimized: bool                # an OPTIMIZE ran (not in a dry run)
    vacuumed_files: int | None     # None: Delta did not say (its VACUUM logging off)
    vacuumed_bytes: int | None
    kept_for: list[str] = field(default_factory=list)

    def line(self, dry_run: bool) -> str:
        files = (f"{self.files_before} file(s) (dry run: no OPTIMIZE)" if dry_run
                 else f"files {self.files_before} -> {self.files_after}")
        versions = (f"version {self.version_before}" if dry_run
                    else f"versions {self.version_before} -> {self.version_after}")
        verb = "would remove" if dry_run else "removed"
        removed = ("? file(s)" if self.vacuumed_files is None
                   else f"{self.vacuumed_files} file(s), {self.vacuumed_bytes} bytes")
        kept = f"; kept for {'; '.join(self.kept_for)}" if self.kept_for else ""
        return (f"{self.table}: {files}, {versions}; VACUUM RETAIN {self.retention_hours} h {verb} "
                f"{removed}{kept}")


@dataclass(frozen=True)
class MaintainReport:
    lake: str
    dry_run: bool
    tables: list[TableMaintenance]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def run_maintenance(spark: SparkSession, lake: str, plans: Sequence[TablePlan], dry_run: bool = False,
                    log: Callable[[str], None] = print) -> MaintainReport:
    """OPTIMIZE (unless ``dry_run``) and VACUUM each planned table present; a table named but absent is
    refused before any work. A table with pending reads has its retention decided again just before its
    VACUUM: their files aged while the tables before it were maintained."""
    present = [p for p in plans if is_table(spark, p.location)]
    missing = [p.table for p in plans if p.named and p not in present]
    if missing:
        raise DuetError(f"no Delta table {', '.join(missing)} under {lake}", fields=("table",))
    done = []
    for plan in present:
        before = state(spark, plan.location)
        if not dry_run:
            optimize(spark, plan.location)
        hours, needs = plan.hours, plan.needs
        if needs:
            needs = tuple(n for n in reader_needs(Lake(lake)) if n.table == plan.table)
            hours = retention(plan.table, needs, plan.requested)
        vacuumed = vacuum(spark, plan.location, hours, dry_run=dry_run)
        after = before if dry_run else state(spark, plan.location)
        result = TableMaintenance(plan.table, hours, before.version, after.version, before.files,
                                  after.files, not dry_run, vacuumed.files, vacuumed.bytes,
                                  [f"{n.reader} ({n.hours} h)" for n in needs])
        log(result.line(dry_run))
        done.append(result)
    return MaintainReport(Lake(lake).root, dry_run, done)


def maintain(spark: SparkSession, lake: str, retention_hours: int | None = None, dry_run: bool = False,
             tables: Sequence[str] | None = None, log: Callable[[str], None] = print) -> MaintainReport:
    """``plan_maintenance`` then ``run_maintenance``."""
    return run_maintenance(spark, lake, plan_maintenance(lake, retention_hours, tables), dry_run, log)
