"""The generic data quality runner: Great Expectations suites on the lake's Delta tables.

A ``Suite`` is plain data: the expectations for one table and the tables its cross-table checks read.
What is checked belongs to the stage that writes a table (``spark_jobs.quality`` for raw, quarantine and
sequence tables); this module only runs the suites it is given (``validate_lake``) and offers the
expectation builders every stage's suites share. Each table present in the lake is read with Spark and
validated in an ephemeral GX context (Spark datasource, whole-dataframe batch). The full GX results are
written as JSON under ``<lake>/_quality/<run time>/`` (one file per table, plus ``summary.json``), with
``_quality/latest.json`` holding the newest run's summary. Figures worth tracking that are not pass/fail
(such as an orphan rate) go into the summary too.

Every table a suite reads (its own and the ones its cross checks need) is read at one pinned Delta
version, recorded with the version's commit stamp in the table's result, along with a fingerprint of the
suite (``suite_fingerprint``). ``reusable_pass`` uses both to tell a caller that a whole-table pass still
describes the table's rows (the publish gate: a pass of every row implies a pass of the rows to publish
for suites whose every check holds on any one (snapshot, model version) group of a table it holds on).

This module reads tables and writes only under ``_quality``; it never imports a stage. Great Expectations
is imported inside the functions that need it: it takes seconds to import.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

from core.contracts import PER_SNAPSHOT, TABLES, Table
from core.errors import DuetError
from core.files import write_atomic
from core.lake import Lake
from core.sources import source
from core.table_versions import only_inserted_since, pin, snapshot_files, unchanged_since

if TYPE_CHECKING:
    from great_expectations.expectations.expectation import Expectation
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Suite:
    """The expectations for one table, and the tables its cross checks need (as temp views).

    ``where`` (Spark SQL) restricts the table to the rows a caller is about to use, e.g. the one
    snapshot and model version a publish puts online; None checks the whole table.
    """

    table: Table
    expectations: list[Expectation]
    needs: tuple[Table, ...] = ()
    where: str | None = None
    # The snapshots ``where`` restricts a table kept per snapshot to (``duet.validation``); None: all. Every
    # check of such a table holds per snapshot, so the per-snapshot tables it needs are read at these
    # snapshots only (``_run_suite``).
    snapshots: tuple[datetime, ...] | None = None
    # A suite of the rows added since a pass (``on_added_rows``): the [version, stamp] that pass checked
    # every row through, and the [version, stamp] the table is read at (its rows added in between).
    rows_since: tuple[int, int] | None = None
    read_at: tuple[int, int] | None = None


# (paths of the tables present, their Delta properties by path) -> the suites to run.
SuitesFor = Callable[[set[str], dict[str, dict[str, str]]], list[Suite]]
# (spark, lake) -> figures for the summary, by name.
MetricsFor = Callable[["SparkSession", str], dict[str, float]]


def view_name(table: Table) -> str:
    """The temporary view under which a cross-table check reads ``table`` (raw/clicks -> raw_clicks)."""
    return table.path.replace("/", "_")


def has_columns(table: Table) -> Expectation:
    """The table has its contract columns (extra columns, such as click context, are allowed)."""
    import great_expectations.expectations as gxe

    return gxe.ExpectTableColumnsToMatchSet(
        column_set=table.columns, exact_match=False,
        description=f"{table.path}: has the contract columns {', '.join(table.columns)}")


def not_null(table: Table, columns: list[str]) -> list[Expectation]:
    """One expectation per column: never null."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{table.path}: {c} is never null")
            for c in columns]


def unique(table: Table, column: str) -> Expectation:
    """No value of ``column`` appears twice."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeUnique(column=column, description=f"{table.path}: {column} is unique")


# How many offending rows a failed ``no_rows`` check keeps in its GX result, to show what went wrong.
SAMPLE_ROWS = 20


def no_rows(query: str, description: str) -> Expectation:
    """The Spark SQL ``query`` (over ``{batch}`` and the suite's views) returns no row.

    GX's ``UnexpectedRowsExpectation`` runs its query twice on Spark (a count, then a fetch of up to 200
    rows its default result format throws away); this one counts once, and only when the count is not
    zero fetches the first ``SAMPLE_ROWS`` rows into the result (``details.unexpected_rows``). Success,
    ``observed_value`` and the description are the same as GX's.
    """
    return _expect_query_returns_no_rows()(unexpected_rows_query=query, description=description)


@cache
def _expect_query_returns_no_rows() -> type[Expectation]:
    # Defined on first use: defining them registers a metric and an expectation type with GX, whose
    # import takes seconds.
    from great_expectations.core.metric_domain_types import MetricDomainTypes
    from great_expectations.execution_engine import SparkDFExecutionEngine
    from great_expectations.expectations import UnexpectedRowsExpectation
    from great_expectations.expectations.metrics.metric_provider import metric_value
    from great_expectations.expectations.metrics.query_metric_provider import QueryMetricProvider

    class UnexpectedRowsCountAndSample(QueryMetricProvider):
        metric_name = "duet.unexpected_rows.count_and_sample"
        value_keys = ("unexpected_rows_query",)
        query_param_name = "unexpected_rows_query"

        @metric_value(engine=SparkDFExecutionEngine)
        def _spark(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                   runtime_configuration):
            query = cls._get_query_from_metric_value_kwargs(metric_value_kwargs)
            df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs,
                                                           domain_type=MetricDomainTypes.TABLE)
            df.createOrReplaceTempView("tmp_view")
            rows = execution_engine.spark.sql(cls._format_query(query, batch="tmp_view"))
            count = rows.count()
            sample = [r.asDict(recursive=True) for r in rows.limit(SAMPLE_ROWS).collect()] if count else []
            return {"count": count, "sample": sample}

    class ExpectQueryToReturnNoRows(UnexpectedRowsExpectation):
        metric_dependencies = ("duet.unexpected_rows.count_and_sample",)

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
            found = metrics["duet.unexpected_rows.count_and_sample"]
            result = {"observed_value": found["count"]}
            if found["count"]:
                result["details"] = {"unexpected_rows": found["sample"]}
            return {"success": found["count"] == 0, "result": result}

    return ExpectQueryToReturnNoRows


def in_range(table: Table, column: str, lo: datetime, hi: datetime, why: str) -> Expectation:
    """Every ``column`` value within [lo, hi] (UTC instants); ``why`` ends the description."""
    import great_expectations.expectations as gxe

    lo, hi = _aware_utc(lo), _aware_utc(hi)
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=lo, max_value=hi,
        description=f"{table.path}: {column} within [{lo:%Y-%m-%d}, {hi:%Y-%m-%d %H:%M}] ({why})")


def _aware_utc(instant: datetime) -> datetime:
    # GX compares on Spark with F.lit(bound): PySpark turns a naive datetime into an instant in the host's
    # local zone, so on a host outside UTC a naive bound moves by the host's offset. Aware bounds do not.
    if instant.tzinfo is None:
        raise DuetError(f"range bound {instant.isoformat()} has no time zone: give an aware instant")
    return instant.astimezone(UTC)


@dataclass
class TableResult:
    table: str
    rows: int
    success: bool
    failed: list[str] = field(default_factory=list)  # descriptions of the failed expectations
    evaluated: int = 0
    # Each table read (this one and the suite's needs), by path: [Delta version, its commit stamp in ms];
    # empty when one could not be pinned.
    versions: dict[str, list[int]] = field(default_factory=dict)
    suite: str = ""                                   # suite_fingerprint
    where: str | None = None                          # the suite's row filter; None: the whole table
    # For a table kept per snapshot, and each such table the suite read: the snapshots checked, each with
    # the digest of its files at the version read (``core.table_versions.snapshot_files``), by path.
    snapshot_files: dict[str, dict[str, str]] = field(default_factory=dict)
    # [version, stamp] of a pass every row through which was checked before, when this run checked only
    # the rows added since (``on_added_rows``); None: every row (of ``where``).
    rows_since: list[int] | None = None


@dataclass
class LakeReport:
    lake: str
    run_at: str
    tables: list[TableResult]
    metrics: dict[str, float]
    results_dir: str
    reused: bool = False      # an earlier pass (``reusable_pass``, ``snapshot_pass``); nothing was run now
    # What was left out because an earlier pass still holds for it (``duet validate`` without ``--all``):
    # table path -> why, e.g. "12 snapshots unchanged since a pass".
    unchanged: dict[str, str] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables)

    def summary(self) -> str:
        lines = []
        for t in self.tables:
            mark = "PASS" if t.success else "FAIL"
            since = f", the rows added since version {t.rows_since[0]}" if t.rows_since else ""
            lines.append(f"{mark} {t.table} ({t.rows} rows{since}, {t.evaluated} expectations)")
            lines += [f"     failed: {d}" for d in t.failed]
        lines += [f"     {k}: {v:.4f}" for k, v in self.metrics.items()]
        lines += [f"SKIP {path}: {why}" for path, why in self.unchanged.items()]
        if not self.tables and not self.unchanged:
            lines.append("no duet tables found under the lake")
        reused = " (an earlier run, same rows)" if self.reused else ""
        lines.append(f"GX results: {self.results_dir}{reused}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"lake": self.lake, "run_at": self.run_at, "success": self.success, "metrics": self.metrics,
                "tables": [t.__dict__ for t in self.tables], "results_dir": self.results_dir,
                "reused": self.reused, "unchanged": self.unchanged}


def present_tables(lake: str) -> dict[str, dict[str, str]]:
    """The contract tables under ``lake``, by path, with their Delta properties (read from each table's
    log with delta-rs: Spark's ``DESCRIBE DETAIL`` ran a job per table, about 1.5 s each at 16M clicks)."""
    from core.object_storage import delta_table, is_delta_table

    return {t.path: dict(delta_table(t.location(lake)).metadata().configuration)
            for t in TABLES if is_delta_table(t.location(lake))}


def suite_fingerprint(suite: Suite) -> str:
    """A hash of what decides a suite's verdict on given rows: its table, every expectation's type and
    arguments (not its id or rendering), the tables its checks read, the GX version and this runner's
    code (the query check is defined here). The row filter is not in it: ``TableResult.where`` is."""
    import great_expectations as gx

    expectations = []
    for e in suite.expectations:
        config = e.configuration.to_json_dict()
        for volatile in ("id", "rendered_content", "notes"):
            config.pop(volatile, None)
        expectations.append(config)
    document = {"table": suite.table.path, "expectations": expectations,
                "needs": [t.path for t in suite.needs], "gx": gx.__version__,
                "runner": hashlib.sha256(source("core", "quality.py")).hexdigest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _pinned(spark: SparkSession, lake: str, table: Table,
            at: tuple[int, int] | None = None) -> tuple[DataFrame, list[int] | None]:
    """``table`` read at its current Delta version (or ``at``'s), and [that version, its commit stamp]
    (``core.table_versions.pin``; None, and the latest version read, if delta-rs finds no table)."""
    location = table.location(lake)
    pinned = at or pin(location)
    reader = spark.read.format("delta")
    if pinned is not None:
        reader = reader.option("versionAsOf", pinned[0])
    return reader.load(location), (None if pinned is None else list(pinned))


def snapshot_filter(column: str, snapshots: Sequence[datetime]) -> str:
    """Spark SQL keeping the rows of ``snapshots`` (``column``: the table's ``PER_SNAPSHOT`` column)."""
    from core.times import sql_timestamp

    return f"{column} IN ({', '.join(sql_timestamp(s) for s in snapshots)})"


def _run_suite(context, spark: SparkSession, lake: str, suite: Suite) -> tuple[TableResult, dict]:
    import great_expectations as gx

    df, pin = _pinned(spark, lake, suite.table, suite.read_at)
    pins = {suite.table.path: pin}
    if suite.where:
        df = df.where(suite.where)
    for other in suite.needs:
        needed, pins[other.path] = _pinned(spark, lake, other,
                                           suite.read_at if other == suite.table else None)
        if suite.snapshots is not None and other.path in PER_SNAPSHOT:
            # A check of a snapshot's rows reads another per-snapshot table's rows of that snapshot only
            # (``Suite.snapshots``): the view holds those, so its partitions are all a query reads.
            needed = needed.where(snapshot_filter(PER_SNAPSHOT[other.path], suite.snapshots))
        needed.createOrReplaceTempView(view_name(other))
    name = suite.table.path.replace("/", "_")
    asset = context.data_sources.add_spark(name=f"{name}_source").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for e in suite.expectations:
        gx_suite.add_expectation(e)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=gx_suite, name=f"{name}_validation"))
    try:
        result = definition.run(batch_parameters={"dataframe": df})
        rows = df.count()
    finally:
        # GX persists the batch DataFrame; Spark's cache matches later queries by plan, so a later read of
        # the same table (same path and filter) in this session would see these rows, not the table's
        # current version (a re-run after a fix would validate the old rows).
        df.unpersist()
    failed = [r.expectation_config.description or r.expectation_config.type
              for r in result.results if not r.success]
    versions = {} if None in pins.values() else pins
    return TableResult(suite.table.path, rows, bool(result.success), failed, len(result.results), versions,
                       suite_fingerprint(suite), suite.where, _checked_files(lake, suite, versions),
                       None if suite.rows_since is None else list(suite.rows_since)), result.to_json_dict()


def _checked_files(lake: str, suite: Suite, pins: dict[str, list[int]]) -> dict[str, dict[str, str]]:
    """``TableResult.snapshot_files`` of a run of ``suite`` that read ``pins`` ({} for a table not kept per
    snapshot, or when a table's files cannot be told apart: then no later run reuses this one)."""
    if suite.table.path not in PER_SNAPSHOT or not pins:
        return {}
    if suite.where is not None and suite.where != snapshot_filter(PER_SNAPSHOT[suite.table.path],
                                                                  suite.snapshots or ()):
        return {}   # part of each snapshot (the publish gate's one model version): no snapshot was checked
    wanted = None if suite.snapshots is None else set(suite.snapshots)
    checked = {}
    for table in (suite.table, *suite.needs):
        if table.path not in PER_SNAPSHOT:
            continue
        digests = snapshot_files(table.location(lake), PER_SNAPSHOT[table.path], pins[table.path][0])
        if digests is None:
            return {}
        checked[table.path] = {s.isoformat(): d for s, d in digests.items() if wanted is None or s in wanted}
    return checked


# How many of the newest runs under ``_quality`` ``reusable_pass`` reads.
RUNS_SEARCHED = 20


# A suite as a run at an instant (its ``run_at``) built it: for suites whose bounds move with the run's
# time, such as the raw tables' "no future events" (before run time + slack). Such a bound only widens as
# time goes on, so the same checks that passed at an earlier instant on the same rows still pass now.
SuiteAt = Callable[[datetime], Suite]


def _fingerprint_at(suite: Suite, at: SuiteAt | None,
                    made: Callable[[Suite], Suite | None] = lambda s: s) -> Callable[[str], str | None]:
    """The fingerprint an earlier run (by its ``run_at``) must have recorded for its result to count; with
    ``made``, that of the suite ``made`` makes of it (None: none)."""
    def fingerprint(s: Suite) -> str | None:
        made_of = made(s)
        return None if made_of is None else suite_fingerprint(made_of)

    fixed = fingerprint(suite)
    if at is None:
        return lambda _: fixed
    return cache(lambda run_at: fingerprint(at(datetime.fromisoformat(run_at))))


def reusable_pass(lake: str, suite: Suite, at: SuiteAt | None = None) -> LakeReport | None:
    """An earlier run's pass of ``suite`` that still holds, as a report (``reused``), or None.

    The newest whole-table result (no ``where``) of the suite's table among the last ``RUNS_SEARCHED``
    runs decides: it is reused only if it passed, has this suite's fingerprint (with ``at``: that of the
    suite built for the run's instant, ``SuiteAt``), and every table it read still holds the rows of the
    version it read (``core.table_versions.unchanged_since``). The same suite on the same rows gives the
    same verdict, so nothing is run; anything else (a failure, other checks, a table written since, a
    result without pins) is None, and the caller runs the suite.
    """
    fingerprint = _fingerprint_at(suite, at)
    wanted = {suite.table.path, *(t.path for t in suite.needs)}
    locations = {t.path: t.location(lake) for t in TABLES}
    runs = sorted(Lake(lake).quality.glob("*/summary.json"), reverse=True)
    for summary_path in runs[:RUNS_SEARCHED]:
        try:
            summary = json.loads(summary_path.read_text())
            found = next((t for t in summary["tables"]
                          if t["table"] == suite.table.path and t.get("where") is None), None)
            if found is None:
                continue
            pins = found.get("versions") or {}
            holds = (found.get("success") is True and found.get("suite") == fingerprint(summary["run_at"])
                     and set(pins) == wanted
                     and all(unchanged_since(locations[p], v, stamp) for p, (v, stamp) in pins.items()))
            return LakeReport(lake, summary["run_at"], [TableResult(**found)], {}, str(summary_path.parent),
                              reused=True) if holds else None
        except (ValueError, KeyError, TypeError, AttributeError):   # not a summary this module wrote
            continue
    return None


def checked_snapshots(lake: str, suite: Suite, at: SuiteAt | None = None) -> set[datetime]:
    """The snapshots of ``suite``'s table (one kept per snapshot) that an earlier pass still covers.

    A snapshot counts when a passing result of the same suite (``suite_fingerprint``, or with ``at`` that of
    the suite built for that run's instant, ``SuiteAt``) among the newest
    ``RUNS_SEARCHED`` runs checked it, its files in every table kept per snapshot that the run read are
    the same now (``core.table_versions.snapshot_files``: its rows were not rebuilt, and the sequences and
    settings an embedding was checked against neither), and every other table the run read has at most
    gained rows since (``only_inserted_since``). That last rule is enough because the per-snapshot suites
    read those tables (raw/conversions) only in anti-joins, "no element without a raw row", which a row
    added cannot fail; and every per-snapshot check holds per snapshot, so a pass on a set of snapshots is
    a pass on each.
    """
    covered: set[datetime] = set()
    for _, _, _, snapshots in _covering_passes(lake, suite, at):
        covered |= snapshots
    return covered


def snapshot_pass(lake: str, suite: Suite, snapshot: datetime,
                  at: SuiteAt | None = None) -> LakeReport | None:
    """The newest earlier pass that still covers ``snapshot`` of ``suite``'s table (as ``checked_snapshots``
    decides), as a report of that run (``reused``), or None."""
    for summary_path, summary, found, snapshots in _covering_passes(lake, suite, at):
        if snapshot in snapshots:
            return LakeReport(lake, summary["run_at"], [TableResult(**found)], {}, str(summary_path.parent),
                              reused=True)
    return None


def _covering_passes(lake: str, suite: Suite, at: SuiteAt | None):
    """Each passing result of ``suite`` among the newest runs, newest first, with the snapshots it still
    covers (``checked_snapshots``): (summary path, summary, the table's result, those snapshots)."""
    fingerprint = _fingerprint_at(suite, at)
    locations = {t.path: t.location(lake) for t in TABLES}
    now: dict[str, dict[str, str]] = {}

    def files_now(path: str) -> dict[str, str]:
        if path not in now:
            digests = snapshot_files(locations[path], PER_SNAPSHOT[path]) or {}
            now[path] = {s.isoformat(): d for s, d in digests.items()}
        return now[path]

    for summary_path in sorted(Lake(lake).quality.glob("*/summary.json"), reverse=True)[:RUNS_SEARCHED]:
        try:
            summary = json.loads(summary_path.read_text())
            for found in summary["tables"]:
                files = found.get("snapshot_files") or {}
                if (found["table"] != suite.table.path or found.get("success") is not True
                        or suite.table.path not in files
                        or found.get("suite") != fingerprint(summary["run_at"])):
                    continue
                others = {p: v for p, v in (found.get("versions") or {}).items() if p not in PER_SNAPSHOT}
                if not all(only_inserted_since(locations[p], v, stamp) for p, (v, stamp) in others.items()):
                    continue
                covered = {datetime.fromisoformat(s) for s in files[suite.table.path]
                           if all(files_now(p).get(s) == digests.get(s) for p, digests in files.items())}
                if covered:
                    yield summary_path, summary, found, covered
        except (ValueError, KeyError, TypeError, AttributeError):   # not a summary this module wrote
            continue


# GX expectation types whose verdict on a set of rows is the conjunction of their verdicts on its rows (for
# ``ExpectColumnValuesToBeBetween`` only without ``mostly``): on the rows added since a pass they say what
# they would say on every row.
ROW_BY_ROW = ("expect_table_columns_to_match_set", "expect_column_values_to_not_be_null",
              "expect_column_values_to_be_between", "expect_column_pair_values_a_to_be_greater_than_b")


# The most rows added since a pass that ``on_added_rows`` checks (their keys are broadcast to every task:
# under about 100 MB of this contract's short string keys); more, and a check of every row costs no more
# than a shuffle join would.
BROADCAST_ROWS = 2_000_000


def on_added_rows(suite: Suite, files: list[str], since: tuple[int, int],
                  read_at: tuple[int, int]) -> Suite | None:
    """``suite`` for a table that at most gained rows since a pass checked it through ``since``: the rows
    of ``files`` (the data files added since, ``core.table_versions.files_added_since``) read at
    ``read_at``, with checks that then decide what the whole suite would decide on every row:

    - row-by-row checks (``ROW_BY_ROW``) on those rows;
    - "KEY is unique" as a query: no added row's key appears twice in the whole table. The added rows'
      keys are broadcast, so the whole table is scanned once and not shuffled: the caller checks every
      row instead when more than ``BROADCAST_ROWS`` were added (``core.table_versions.rows_in``);
    - a query check (``no_rows``) on the whole table, not only the added rows: a cross-table check, such
      as an old conversion whose attributed click arrived since, may change its verdict on old rows.

    None when a check is of another kind (its verdict could need every row): the caller checks every row.
    """
    own = view_name(suite.table)
    checks = []
    for e in suite.expectations:
        config = e.configuration
        kind, kwargs = config.type, config.kwargs
        if kind in ROW_BY_ROW and kwargs.get("mostly") in (None, 1, 1.0):
            checks.append(e)
        elif kind == "expect_column_values_to_be_unique" and kwargs.get("mostly") in (None, 1, 1.0):
            key = kwargs["column"]
            checks.append(no_rows(
                f"SELECT /*+ BROADCAST(b) */ b.{key}, count(*) AS rows FROM {{batch}} b JOIN {own} t "
                f"ON b.{key} = t.{key} GROUP BY b.{key} HAVING count(*) > 1", e.description))
        elif kind == "expect_query_to_return_no_rows":
            checks.append(no_rows(kwargs["unexpected_rows_query"].replace("{batch}", own), e.description))
        else:
            return None
    names = ", ".join(f"'{name}'" for name in files)
    where = f"_metadata.file_name IN ({names})" if files else "false"
    needs = suite.needs if suite.table in suite.needs else (*suite.needs, suite.table)
    return replace(suite, expectations=checks, needs=needs,
                   where=f"({suite.where}) AND {where}" if suite.where else where,
                   rows_since=since, read_at=read_at)


def covered_through(lake: str, suite: Suite, at: SuiteAt | None = None) -> dict[str, list[int]] | None:
    """The tables a passing run of this suite read, each as [version, stamp], when that run checked every
    row of ``suite``'s table through the version it read and the table has at most gained rows since
    (``only_inserted_since``); None otherwise.

    The newest passing result of the table among the newest ``RUNS_SEARCHED`` runs that checked every row
    (no ``where``), or the rows added since such a version (``rows_since``; ``on_added_rows``, which is
    only run from a covered version, so its pass extends the cover), decides."""
    location = suite.table.location(lake)
    whole = _fingerprint_at(suite, at)
    added = _fingerprint_at(suite, at, lambda s: on_added_rows(s, [], (0, 0), (0, 0)))
    for summary_path in sorted(Lake(lake).quality.glob("*/summary.json"), reverse=True)[:RUNS_SEARCHED]:
        try:
            summary = json.loads(summary_path.read_text())
            for found in summary["tables"]:
                if found["table"] != suite.table.path or found.get("success") is not True:
                    continue
                if found.get("rows_since") is not None:
                    expected = added(summary["run_at"])
                elif found.get("where") is None:
                    expected = whole(summary["run_at"])
                else:
                    continue
                pins = found.get("versions") or {}
                version, stamp = pins[suite.table.path]
                if found.get("suite") == expected:
                    return pins if only_inserted_since(location, version, stamp) else None
        except (ValueError, KeyError, TypeError, AttributeError):   # not a summary this module wrote
            continue
    return None


def validate_lake(spark: SparkSession, lake: str, suites_for: SuitesFor,
                  metrics_for: MetricsFor | None = None, now: datetime | None = None,
                  unchanged: dict[str, str] | None = None) -> LakeReport:
    """Run the suites ``suites_for`` gives for the tables present under ``lake``; write the GX results.

    ``now`` names the run (``_quality/<now>/``); it should be the instant the suites' bounds were built
    for. ``metrics_for`` adds figures to the summary. ``unchanged`` (``LakeReport.unchanged``) is read
    after ``suites_for`` ran, so that it can say there what it left out.
    """
    from core.spark import require_utc

    require_utc(spark)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    now = now or datetime.now(UTC)
    out = Lake(lake).quality_run(now)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    tables, raw_results = [], {}
    properties = present_tables(lake)
    for suite in suites_for(set(properties), properties):
        result, raw = _run_suite(context, spark, lake, suite)
        tables.append(result)
        raw_results[suite.table.path] = raw
    metrics = metrics_for(spark, lake) if metrics_for else {}
    report = LakeReport(lake, now.isoformat(), tables, metrics, str(out), unchanged=dict(unchanged or {}))
    out.mkdir(parents=True, exist_ok=True)
    for path, raw in raw_results.items():
        (out / f"{path.replace('/', '_')}.json").write_text(json.dumps(raw, indent=1, default=str))
    write_atomic(out / "summary.json", json.dumps(report.to_dict(), indent=1))
    write_atomic(Lake(lake).latest_quality, json.dumps(report.to_dict(), indent=1))
    return report

