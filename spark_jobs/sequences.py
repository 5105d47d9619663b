"""Per-user click and conversion sequences per snapshot (``duet sequences``).

For a snapshot ``T`` a row may use only what the platform knew strictly before ``T``: clicks with
``T - click_lookback <= click_ts < T`` and conversions with ``report_ts < T`` (known when *reported*) and
``conversion_ts >= T - conversion_lookback``. Each row keeps the most recent ``max_clicks`` /
``max_conversions`` events in ascending (time, id) order, arrays aligned element by element; a user with no
qualifying event has no row (../shared/CONTRACTS.md).

How many snapshots cost: events are **binned once per user, not scanned once per snapshot**. One pass
reads the events that can matter to any requested snapshot (``[min T - lookback, max T)``), one shuffle
groups them per user into an array sorted by (time, id), and every snapshot's sequence is then a filtered
slice of that in-memory array (``transform`` over the snapshot list, ``explode``). With E events, U users,
S snapshots and a cap M, the cost is one read and one shuffle-sort of E events, O(E x S) in-memory
comparisons (no I/O, no shuffle per snapshot), and an output of at most U x S rows of <= M elements,
which for dense daily snapshots is the dominant term and the same for any implementation. The
alternative, a range join of events to snapshots, shuffles every event once per snapshot it belongs to
(up to lookback / spacing times: 30x for daily snapshots and a 30-day lookback).

A single snapshot, what a daily run asks for, **grows from the latest complete snapshot before it** when
that gives exactly the same rows (``incremental_base``, ``grown_click_sequences``,
``grown_conversion_sequences``): the base's rows and one day of clicks are read and shuffled, not the
lookback's 30 days of clicks (``raw/conversions`` is still read whole, for the users with a report since
the base, whose sequences are built again). That holds
when no event known before the base snapshot reached a raw table after the base was built, which the Delta
log tells without reading a row: each build reads the raw tables at pinned versions and records them with
its snapshots; the next build checks that every commit since only added rows and that every file added
since has a least ``click_ts`` / ``report_ts`` at or after the base. A late event, an OPTIMIZE of a raw
table since, a base more than a click lookback back or built from newer raw versions, or several
snapshots at once (a daily catching up) make the snapshot be built from the raw tables instead; the
report says which way and why.

Writes are idempotent, atomic and safe against a concurrent run. The tables are partitioned by
``snapshot_ts`` and have Delta Change Data Feed on. Snapshots not yet in a table are written by one
overwrite of their partitions (``replaceWhere``); if the requested snapshots are already there, one MERGE
on (user_id, snapshot_ts), restricted to the requested snapshots, updates rows whose content changed,
inserts new ones and deletes rows of users who no longer qualify, so the change feed lists exactly the
users whose sequences changed (e.g. after late conversions arrived). A snapshot that holds a key twice
(left by racing appends of an older version) is replaced whole by the overwrite. Neither write is a blind
append: both read the partitions they replace, so of two runs writing the same snapshots at once Delta
commits the first and fails the second, which stops with "another run is writing ...; re-run" before it
changes anything more. A killed run leaves the previous table version intact: nothing is visible until
Delta's commit.

Each snapshot's settings (windows, caps) are recorded in ``features/_snapshots`` with the sequence tables
that hold a complete build of it: a run appends "none complete" for its snapshots before writing and
"both" once both tables have committed, so a snapshot whose run died in between reads as incomplete
(``complete_snapshots``), and validation checks every row against its own snapshot's settings.

The conductor runs it as ``duet sequences`` (``duet.cli``), also under spark-submit
(``infra/submit.sh -- sequences --lake DIR --snapshot ...``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import delta.exceptions
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.contracts import (
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    SEQUENCE_SNAPSHOTS,
    Table,
)
from core.errors import DuetError
from core.snapshots import check_snapshots
from core.spark import create_table, require_utc, spark_schema
from core.times import sql_timestamp

CDF = {"delta.enableChangeDataFeed": "true"}
SEQUENCE_TABLES = (CLICK_SEQUENCES.path, CONVERSION_SEQUENCES.path)
# Delta's commit conflicts (PySpark's classes for them share no base class of their own).
CONFLICTS = tuple(getattr(delta.exceptions, name) for name in delta.exceptions.__all__)
CREATE_ATTEMPTS = 10  # a second apart: how long to wait for a concurrent run's creation of a table
RAW_TABLES = (RAW_CLICKS, RAW_CONVERSIONS)  # in the order of their columns in features/_snapshots
# Per raw table path: (Delta version, commit stamp) a build read it at (``core.table_versions.pin``).
Pins = Mapping[str, tuple[int, int]]


@dataclass(frozen=True)
class SequenceConfig:
    """Sequence windows and caps (contract defaults)."""

    click_lookback: timedelta = timedelta(days=30)
    conversion_lookback: timedelta = timedelta(days=90)
    max_clicks: int = 64
    max_conversions: int = 16

    def __post_init__(self) -> None:
        if self.max_clicks < 1 or self.max_conversions < 1:
            raise DuetError("max_clicks and max_conversions must be at least 1")
        if self.click_lookback <= timedelta(0) or self.conversion_lookback <= timedelta(0):
            raise DuetError("lookbacks must be positive")

    def settings(self) -> dict[str, int]:
        """The settings as recorded per snapshot in ``features/_snapshots`` (seconds and counts)."""
        return {"click_lookback_s": int(self.click_lookback.total_seconds()),
                "conversion_lookback_s": int(self.conversion_lookback.total_seconds()),
                "max_clicks": self.max_clicks, "max_conversions": self.max_conversions}

    @staticmethod
    def from_settings(settings: Mapping[str, int]) -> SequenceConfig:
        return SequenceConfig(click_lookback=timedelta(seconds=settings["click_lookback_s"]),
                              conversion_lookback=timedelta(seconds=settings["conversion_lookback_s"]),
                              max_clicks=settings["max_clicks"], max_conversions=settings["max_conversions"])


def _snapshot_array(snapshots: list[datetime]) -> Column:
    # Aware datetimes: PySpark converts naive ones with the Python process's local zone.
    return F.array(*[F.lit(s) for s in snapshots])


def _per_snapshot(events: DataFrame, order: list[str], keep: Callable[[Column, Column], Column],
                  snapshots: list[datetime], cap: int) -> DataFrame:
    """Group ``events`` per user into an array sorted by ``order``; emit one row per (user, snapshot)
    holding the last ``cap`` events ``e`` for which ``keep(e, T)`` holds at snapshot ``T``.

    -> (user_id, snapshot_ts, seq: array<struct of the event columns>); users with no event are dropped.
    """
    ordered = F.struct(*[F.col(c) for c in order], *[F.col(c) for c in events.columns if c not in order
                                                      and c != "user_id"])
    per_user = events.groupBy("user_id").agg(F.array_sort(F.collect_list(ordered)).alias("events"))

    def window(t: Column) -> Column:
        kept = F.filter("events", lambda e: keep(e, t))
        return F.struct(t.alias("snapshot_ts"),
                        F.slice(kept, F.greatest(F.size(kept) - cap + 1, F.lit(1)), cap).alias("seq"))

    rows = per_user.select("user_id", F.explode(F.transform(_snapshot_array(snapshots), window)).alias("s"))
    return rows.select("user_id", "s.snapshot_ts", "s.seq").where(F.size("seq") > 0)


def relevant_clicks(clicks: DataFrame, snapshots: list[datetime], cfg: SequenceConfig) -> DataFrame:
    """The clicks some snapshot of ``snapshots`` can use: ``min T - click_lookback <= click_ts < max T``.
    On raw/clicks partitioned by ``click_date`` (``core.contracts.RAW_CLICKS.partition``) Delta turns this
    filter into partition filters, so only those days' files are read: a day's snapshot reads the
    lookback's days, however long the lake's history."""
    lo = min(snapshots) - cfg.click_lookback
    return clicks.where((F.col("click_ts") >= F.lit(lo)) & (F.col("click_ts") < F.lit(max(snapshots))))


def relevant_conversions(conversions: DataFrame, snapshots: list[datetime], cfg: SequenceConfig) -> DataFrame:
    """The conversions some snapshot of ``snapshots`` can use (reported before the last, happened within
    the first's lookback). raw/conversions is not partitioned, so this prunes row groups, not files."""
    lo = min(snapshots) - cfg.conversion_lookback
    return conversions.where((F.col("conversion_ts") >= F.lit(lo))
                             & (F.col("report_ts") < F.lit(max(snapshots))))


def click_sequences(clicks: DataFrame, snapshots: list[datetime], cfg: SequenceConfig) -> DataFrame:
    """raw/clicks -> features/click_sequences rows for ``snapshots``. Pure transform."""
    lookback = F.expr(f"INTERVAL {int(cfg.click_lookback.total_seconds())} SECONDS")
    events = relevant_clicks(clicks, snapshots, cfg).select("user_id", "click_ts", "click_id", "ad_id",
                                                             "advertiser_id")
    rows = _per_snapshot(events, ["click_ts", "click_id"],
                         lambda e, t: (e["click_ts"] < t) & (e["click_ts"] >= t - lookback),
                         snapshots, cfg.max_clicks)
    return rows.select(
        "user_id", "snapshot_ts",
        F.transform("seq", lambda e: e["ad_id"]).alias("ad_ids"),
        F.transform("seq", lambda e: e["advertiser_id"]).alias("advertiser_ids"),
        F.transform("seq", lambda e: e["click_ts"]).alias("click_ts"),
        F.size("seq").cast("int").alias("length"),
    )


def conversion_sequences(conversions: DataFrame, snapshots: list[datetime], cfg: SequenceConfig) -> DataFrame:
    """raw/conversions -> features/conversion_sequences rows for ``snapshots``. Pure transform.

    A conversion is known at ``report_ts``, never at ``conversion_ts``: it enters a snapshot only once
    reported, and is then ordered by when it happened.
    """
    lookback = F.expr(f"INTERVAL {int(cfg.conversion_lookback.total_seconds())} SECONDS")
    events = relevant_conversions(conversions, snapshots, cfg).select(
        "user_id", "conversion_ts", "conversion_id", "report_ts", "advertiser_id", "conversion_type",
        F.col("attributed_click_id").isNotNull().alias("attributed"))
    rows = _per_snapshot(events, ["conversion_ts", "conversion_id"],
                         lambda e, t: (e["report_ts"] < t) & (e["conversion_ts"] >= t - lookback),
                         snapshots, cfg.max_conversions)
    return rows.select(
        "user_id", "snapshot_ts",
        F.transform("seq", lambda e: e["advertiser_id"]).alias("advertiser_ids"),
        F.transform("seq", lambda e: e["conversion_type"]).alias("conversion_types"),
        F.transform("seq", lambda e: e["conversion_ts"]).alias("conversion_ts"),
        F.transform("seq", lambda e: e["attributed"]).alias("attributed"),
        F.size("seq").cast("int").alias("length"),
    )


def grown_click_sequences(clicks: DataFrame, previous: DataFrame, since: datetime, snapshot: datetime,
                          cfg: SequenceConfig) -> DataFrame:
    """features/click_sequences rows for ``snapshot`` from the rows of an earlier snapshot ``since``
    (``previous``) and the clicks of ``[since, snapshot)``, when no click before ``since`` reached
    raw/clicks after ``since`` was built (``incremental_base`` makes sure). Pure transform.

    Exact: every click of the new window at or after ``since`` is later than every click ``previous``
    holds, so a user's sequence is the old one cut to the new window, followed by the new clicks in (time,
    id) order, of which the last ``max_clicks`` are kept. What the cap dropped at ``since`` is older than
    what it kept there, so it would have been dropped again."""
    lo = snapshot - cfg.click_lookback
    kept = previous.select("user_id", F.filter(
        F.transform(F.arrays_zip("click_ts", "ad_ids", "advertiser_ids"),
                    lambda e: F.struct(e["click_ts"].alias("click_ts"), e["ad_ids"].alias("ad_id"),
                                       e["advertiser_ids"].alias("advertiser_id"))),
        lambda e: e["click_ts"] >= F.lit(lo)).alias("old"))
    window = clicks.where((F.col("click_ts") >= F.lit(max(since, lo)))
                          & (F.col("click_ts") < F.lit(snapshot)))
    new = window.groupBy("user_id").agg(F.array_sort(F.collect_list(
        F.struct("click_ts", "click_id", "ad_id", "advertiser_id"))).alias("new")).select(
        "user_id", F.transform("new", lambda e: F.struct(e["click_ts"].alias("click_ts"),
                                                          e["ad_id"].alias("ad_id"),
                                                          e["advertiser_id"].alias("advertiser_id"))).alias("new"))
    none = F.array().cast(kept.schema["old"].dataType)
    both = kept.join(new, "user_id", "full_outer").select(
        "user_id", F.concat(F.coalesce("old", none), F.coalesce("new", none)).alias("seq"))
    cap = cfg.max_clicks
    seq = F.slice("seq", F.greatest(F.size("seq") - cap + 1, F.lit(1)), cap)
    rows = both.select("user_id", seq.alias("seq")).where(F.size("seq") > 0)
    return rows.select(
        "user_id", F.lit(snapshot).alias("snapshot_ts"),
        F.transform("seq", lambda e: e["ad_id"]).alias("ad_ids"),
        F.transform("seq", lambda e: e["advertiser_id"]).alias("advertiser_ids"),
        F.transform("seq", lambda e: e["click_ts"]).alias("click_ts"),
        F.size("seq").cast("int").alias("length"),
    )


def _field(name: str) -> Callable[[Column], Column]:
    # Not ``lambda e, name=name``: PySpark hands a two-argument function the element's index.
    return lambda e: e[name]


def grown_conversion_sequences(conversions: DataFrame, previous: DataFrame, since: datetime,
                               snapshot: datetime, cfg: SequenceConfig) -> DataFrame:
    """features/conversion_sequences rows for ``snapshot`` from those of an earlier snapshot ``since``
    (``previous``), when no conversion reported before ``since`` reached raw/conversions after ``since``
    was built (``incremental_base`` makes sure). Pure transform.

    A conversion reported in ``[since, snapshot)`` may have happened before conversions a sequence already
    holds, so the users with such a conversion are built again from raw/conversions
    (``conversion_sequences``). Every other user's eligible conversions are those of ``since`` less the
    ones now older than the lookback, the oldest: the old sequence cut to the new window is exact."""
    lo = snapshot - cfg.conversion_lookback
    reported = conversions.where((F.col("report_ts") >= F.lit(since)) & (F.col("report_ts") < F.lit(snapshot))
                                 & (F.col("conversion_ts") >= F.lit(lo)))
    affected = reported.select("user_id").distinct()
    rebuilt = conversion_sequences(conversions.join(affected, "user_id", "left_semi"), [snapshot], cfg)
    arrays = ("advertiser_ids", "conversion_types", "conversion_ts", "attributed")
    cut = previous.join(affected, "user_id", "left_anti").select(
        "user_id", F.filter(F.arrays_zip(*arrays), lambda e: e["conversion_ts"] >= F.lit(lo)).alias("seq"))
    kept = cut.where(F.size("seq") > 0).select(
        "user_id", F.lit(snapshot).alias("snapshot_ts"),
        *[F.transform("seq", _field(a)).alias(a) for a in arrays],
        F.size("seq").cast("int").alias("length"))
    return kept.unionByName(rebuilt)


@dataclass(frozen=True)
class Base:
    """A complete snapshot a later one can grow from (``incremental_base``), and the Delta versions of the
    sequence tables to read its rows at (by path)."""

    snapshot: datetime
    versions: dict[str, int]


# Which column of a raw table says an event is known before a snapshot (the windows above).
KNOWN_AT = {RAW_CLICKS.path: "click_ts", RAW_CONVERSIONS.path: "report_ts"}


def snapshot_records(lake: str) -> dict[datetime, dict]:
    """Each snapshot's current record in ``features/_snapshots`` (its newest row), by its UTC instant, read
    with delta-rs (no Spark); empty without the log."""
    from deltalake.exceptions import TableNotFoundError

    from core.object_storage import delta_table

    try:
        rows = delta_table(SEQUENCE_SNAPSHOTS.location(lake)).to_pyarrow_table().to_pylist()
    except TableNotFoundError:
        return {}
    latest: dict[datetime, dict] = {}
    for row in sorted(rows, key=lambda r: r["updated_at"]):
        latest[row["snapshot_ts"].astimezone(UTC)] = row
    return latest


def incremental_base(lake: str, snapshot: datetime, cfg: SequenceConfig,
                     pins: Pins) -> tuple[Base | None, str]:
    """The snapshot ``snapshot`` can grow from (``grown_*_sequences``), or None and why it is built from
    the raw tables. It is the latest snapshot before ``snapshot``, less than a click lookback before it,
    complete in both tables with the same settings, whose record says which versions of the raw tables
    its build read; since those versions, each raw table may only have gained rows (``only_inserted_since``:
    ingest's insert-only MERGEs, maintenance) and only rows known at or after that snapshot, by the least
    ``click_ts`` / ``report_ts`` in the statistics of the files added since (``least_added_since``), read
    from the Delta log. A late event (a click before the base snapshot ingested after it was built) makes
    the snapshot be built in full, as does an OPTIMIZE of a raw table since (it adds files of old rows)."""
    from core.table_versions import least_added_since, only_inserted_since, pin

    records = snapshot_records(lake)
    complete = [t for t, r in records.items()
                if t < snapshot and set(SEQUENCE_TABLES) <= set(r["tables"] or ())
                and all(r[k] == v for k, v in cfg.settings().items())]
    if not complete:
        return None, f"no complete snapshot before {snapshot:%Y-%m-%d %H:%M} built with these settings"
    since = max(complete)
    at = f"{since:%Y-%m-%d %H:%M}"
    record = records[since]
    if snapshot - since >= cfg.click_lookback:
        return None, f"the latest complete snapshot ({at}) is a click lookback or more back"
    why = []
    for raw in RAW_TABLES:
        name = raw.path.split("/")[-1]
        version, stamp = record.get(f"raw_{name}_version"), record.get(f"raw_{name}_stamp")
        location = raw.location(lake)
        if version is None or stamp is None:
            why.append(f"the record of {at} does not say which {raw.path} it read")
        elif version > pins[raw.path][0]:
            why.append(f"{at} was built from a later {raw.path} than this build reads (a run since)")
        elif not only_inserted_since(location, version, stamp):
            why.append(f"{raw.path} changed other than by added rows since {at} was built (or its log "
                       "no longer reaches back to that build)")
        else:
            files, least = least_added_since(location, version, KNOWN_AT[raw.path], pins[raw.path][0])
            if files and least is None:
                why.append(f"{raw.path} gained files without statistics of {KNOWN_AT[raw.path]} since {at} "
                           "was built")
            elif files and least < since:
                why.append(f"{raw.path} gained rows known before {at} since it was built (late events; "
                           f"{files} file(s) added since)")
    if why:
        return None, "; ".join(why)
    # The base's rows are read at the sequence tables' versions now; a run rebuilding the base appends its
    # "being built" record before it writes, so a record unchanged after these pins names these rows.
    versions = {table.path: pin(table.location(lake))[0] for table in (CLICK_SEQUENCES, CONVERSION_SEQUENCES)}
    if snapshot_records(lake).get(since) != record:
        return None, f"the record of {at} changed while this build started (another run is rebuilding it)"
    return Base(since, versions), f"grown from {at}"


def _another_run(table: Table) -> str:
    return f"{table.path}: another run is writing these snapshots at the same time; re-run when it is done"


def _creating_elsewhere(e: Exception) -> bool:
    """Whether creating a table failed because another run was creating it at the same moment."""
    return isinstance(e, CONFLICTS) or (
        isinstance(e, AnalysisException) and "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION" in str(e))


def _ensure(spark: SparkSession, table: Table, lake: str) -> DeltaTable:
    """The table, created empty if missing (partitioned as its contract declares; a sequence table with
    the change data feed on). Of two runs creating it at once, one commits its first version and the other
    finds the table there and goes on."""
    location = table.location(lake)
    properties = CDF if table.path in SEQUENCE_TABLES else None
    for _ in range(CREATE_ATTEMPTS):
        try:
            create_table(spark, table, location, properties)
            return DeltaTable.forPath(spark, location)
        except Exception as e:
            if not _creating_elsewhere(e):
                raise
            if DeltaTable.isDeltaTable(spark, location):
                return DeltaTable.forPath(spark, location)
            time.sleep(1)  # the other run has not committed the table's first version yet
    raise DuetError(_another_run(table))


# The current record of each snapshot: its newest row in features/_snapshots ({records}: that table).
LATEST_RECORDS = ("SELECT snapshot_ts, r.* FROM (SELECT snapshot_ts, max_by(struct(click_lookback_s, "
                  "conversion_lookback_s, max_clicks, max_conversions, tables), updated_at) AS r "
                  "FROM {records} GROUP BY snapshot_ts)")


def record_snapshots(spark: SparkSession, lake: str, snapshots: list[datetime], cfg: SequenceConfig,
                     tables: list[str], pins: Pins | None = None) -> None:
    """Record in ``features/_snapshots`` that ``snapshots`` are built with ``cfg`` from the raw tables at
    ``pins`` and complete in ``tables`` (an empty list: being built, complete in neither). The table is a
    log: one append per call, which never conflicts with another run's, and a snapshot's newest row is its
    record. A log made before the record kept ``pins`` gains their columns with the first such append."""
    if not DeltaTable.isDeltaTable(spark, SEQUENCE_SNAPSHOTS.location(lake)):
        _ensure(spark, SEQUENCE_SNAPSHOTS, lake)
    now = datetime.now(UTC)
    read = [value for raw in RAW_TABLES for value in (pins or {}).get(raw.path, (None, None))]
    rows = spark.createDataFrame([(s, *cfg.settings().values(), tables, now, *read) for s in snapshots],
                                 spark_schema(SEQUENCE_SNAPSHOTS))
    writer = rows.write.format("delta").mode("append").option("mergeSchema", "true")
    try:
        writer.save(SEQUENCE_SNAPSHOTS.location(lake))
    except CONFLICTS:
        # The first append to a log made before the pins were kept adds their columns: a change of the
        # table's metadata, which fails an append committed at the same moment. Once is enough: the retry
        # writes to the new schema, and plain appends never conflict.
        writer.save(SEQUENCE_SNAPSHOTS.location(lake))


def complete_snapshots(spark: SparkSession, lake: str) -> dict[datetime, SequenceConfig]:
    """The snapshots complete in both sequence tables, with the settings they were built with (from
    ``features/_snapshots``; empty for a lake built before it existed)."""
    location = SEQUENCE_SNAPSHOTS.location(lake)
    if not DeltaTable.isDeltaTable(spark, location):
        return {}
    latest = spark.sql(LATEST_RECORDS, records=spark.read.format("delta").load(location))
    complete = F.lit(True)
    for path in SEQUENCE_TABLES:
        complete &= F.array_contains("tables", path)
    # As epoch microseconds: PySpark would hand timestamps back in the Python process's local time.
    rows = latest.where(complete).select(F.unix_micros("snapshot_ts").alias("us"),
                                         *SequenceConfig().settings()).collect()
    return {datetime.fromtimestamp(r["us"] / 1e6, UTC): SequenceConfig.from_settings(r.asDict())
            for r in rows}


def write_snapshots(spark: SparkSession, table: Table, lake: str, rows: DataFrame,
                    snapshots: list[datetime]) -> str:
    """Replace ``snapshots`` in ``table`` with ``rows`` in one atomic commit; return "append" (new
    snapshots), "merge" (existing ones, only changed rows touched) or "replace" (existing ones that held a
    key twice, replaced whole). A concurrent run's commit to these snapshots fails this one with a
    DuetError (see the module docstring)."""
    try:
        target = _ensure(spark, table, lake)
        rows = rows.select(*table.columns)
        in_snapshots = " OR ".join(f"t.snapshot_ts = {sql_timestamp(s)}" for s in snapshots)
        seen = target.toDF().alias("t").where(in_snapshots).agg(
            F.count("*").alias("rows"), F.count_distinct("user_id", "snapshot_ts").alias("keys")).first()
        if seen["rows"] and seen["rows"] == seen["keys"]:
            # Only the rows that differ go into the MERGE: a file none of them is in is left alone. (The
            # obvious MERGE of every row with a NOT MATCHED BY SOURCE delete makes Delta scan and rewrite
            # every file of the table, all snapshots included.) The snapshots are in the condition too, so
            # the MERGE reads their partitions only, and a concurrent commit to them still conflicts.
            key = list(table.key)
            old = target.toDF().alias("t").where(in_snapshots).select(*table.columns)
            joined = rows.withColumn("_new", F.lit(True)).alias("n").join(
                old.withColumn("_old", F.lit(True)).alias("o"), key, "full_outer")
            values = [c for c in table.columns if c not in key]
            differs = F.lit(False)
            for c in values:
                differs |= ~F.col(f"n.{c}").eqNullSafe(F.col(f"o.{c}"))
            diff = joined.where(F.col("n._new").isNull() | F.col("o._old").isNull() | differs).select(
                *key, *[F.col(f"n.{c}").alias(c) for c in values], F.col("n._new").isNull().alias("_delete"))
            (target.alias("t")
             .merge(diff.alias("s"),
                    f"t.user_id = s.user_id AND t.snapshot_ts = s.snapshot_ts AND ({in_snapshots})")
             .whenMatchedDelete(condition="s._delete")
             .whenMatchedUpdate(set={f"`{c}`": f"s.`{c}`" for c in values})
             .whenNotMatchedInsert(condition="NOT s._delete",
                                   values={f"`{c}`": f"s.`{c}`" for c in table.columns})
             .execute())
            return "merge"
        # Not a blind append: the overwrite reads the partitions it replaces, so a concurrent writer of
        # the same snapshots makes one of the two commits fail instead of both adding rows.
        replace = f"snapshot_ts IN ({', '.join(sql_timestamp(s) for s in snapshots)})"
        (rows.write.format("delta").mode("overwrite").option("replaceWhere", replace)
         .save(table.location(lake)))
        return "replace" if seen["rows"] else "append"
    except CONFLICTS as e:
        raise DuetError(_another_run(table)) from e


def report_lines(report: Mapping[str, dict]) -> list[str]:
    """``build_sequences``'s report as the lines ``duet sequences`` and ``duet daily`` print."""
    return [f"{path}: {f['rows']} rows for {f['snapshots']} snapshot(s) ({f['mode']}; {f['built']}; read "
            f"{f['files_read']} of {f['files']} raw files)" for path, f in report.items()]


def build_sequences(spark: SparkSession, lake: str, snapshots: list[datetime],
                    cfg: SequenceConfig | None = None) -> dict[str, dict]:
    """Build both sequence tables for ``snapshots``; return per-table row counts, write mode, how the
    rows were built (``built``: grown from an earlier snapshot, or from the raw tables and why) and how
    many of the raw table's files were read (``files_read`` of ``files``: partition pruning at work).

    Both raw tables are read at the versions current when the build starts (pinned, and recorded with
    the snapshots). A single snapshot grows from the latest complete one before it when
    ``incremental_base`` finds that exact (a daily run: the base's rows and one day's clicks shuffled, not
    the lookback's clicks); otherwise, and for several snapshots at once, it is built from the raw tables."""
    from core.table_versions import pin

    cfg = cfg or SequenceConfig()
    snapshots = check_snapshots(snapshots)
    require_utc(spark)
    jobs = ((RAW_CLICKS, CLICK_SEQUENCES, click_sequences, relevant_clicks, grown_click_sequences),
            (RAW_CONVERSIONS, CONVERSION_SEQUENCES, conversion_sequences, relevant_conversions,
             grown_conversion_sequences))
    for raw in RAW_TABLES:  # both inputs must be there before either table is written
        if not DeltaTable.isDeltaTable(spark, raw.location(lake)):
            raise DuetError(f"{raw.location(lake)} is not a Delta table: run `duet ingest` first")
    pins = {raw.path: pin(raw.location(lake)) for raw in RAW_TABLES}
    base, built = (incremental_base(lake, snapshots[0], cfg, pins) if len(snapshots) == 1
                   else (None, f"{len(snapshots)} snapshots in one pass"))
    built = built if base else f"from the raw tables: {built}"
    record_snapshots(spark, lake, snapshots, cfg, [], pins)  # incomplete until both tables are written
    report = {}
    for raw, table, build, relevant, grow in jobs:
        events = spark.read.format("delta").option("versionAsOf", pins[raw.path][0]).load(raw.location(lake))
        read = relevant(events, snapshots, cfg)
        if base is None:
            rows = build(events, snapshots, cfg)
        else:
            previous = (spark.read.format("delta").option("versionAsOf", base.versions[table.path])
                        .load(table.location(lake)).where(F.col("snapshot_ts") == F.lit(base.snapshot)))
            if raw == RAW_CLICKS:   # the day's clicks only; conversions: the affected users' are rebuilt
                read = events.where(F.col("click_ts") >= F.lit(base.snapshot))
            rows = grow(events, previous, base.snapshot, snapshots[0], cfg)
        files = {"files_read": len(read.inputFiles()), "files": len(events.inputFiles())}
        mode = write_snapshots(spark, table, lake, rows, snapshots)
        counts = (spark.read.format("delta").load(table.location(lake))
                  .where(F.col("snapshot_ts").isin(snapshots))
                  .groupBy().agg(F.count("*").alias("rows")).first())
        report[table.path] = {"rows": int(counts["rows"]), "snapshots": len(snapshots), "mode": mode,
                              "built": built, **files}
    record_snapshots(spark, lake, snapshots, cfg, list(SEQUENCE_TABLES), pins)
    return report
