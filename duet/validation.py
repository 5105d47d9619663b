"""Which stage's data quality suites check which table: the orchestration of ``duet validate``, the
demo's two validation stages and the check of an imported embedding.

Each stage knows what is checked in its own tables (``spark_jobs.quality``, ``encoders.quality``,
``ranker.quality``); ``core.quality`` knows how a suite runs (Great Expectations on Spark). The conductor is
the one place that knows every stage, so the gathering of their suites lives here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from core.errors import DuetError
from core.quality import LakeReport, validate_lake


def validate(spark: SparkSession, lake: str, now: datetime | None = None,
             tables: Sequence[str] | None = None, exclude: Sequence[str] = (),
             snapshots: Sequence[datetime] | None = None, new_only: bool = False) -> LakeReport:
    """Run every stage's suites on the tables present under ``lake``; write and return the report.

    ``tables`` (contract paths such as ``raw/clicks``) restricts the run to those tables' suites (their
    cross-table checks still read the tables they need); a name that is not a contract table, or one the
    lake does not hold, is an error; None means every table present. ``exclude`` leaves tables out either way.
    ``snapshots`` restricts the tables kept per snapshot (the sequence tables, the embeddings) to the rows
    of those snapshots (``duet daily``, ``duet validate --snapshot``): every check of their suites holds
    per snapshot, so the rows of new snapshots pass alone exactly when they pass within the whole table.
    Tables with no snapshot (raw, quarantine, the ranker's) are then checked as by ``new_only``.

    ``new_only`` (``duet validate`` without ``--all``) leaves out what an earlier pass still holds for: the
    snapshots ``core.quality.checked_snapshots`` finds covered (without ``snapshots``), and a table not kept
    per snapshot whose last whole pass still holds (``core.quality.reusable_pass``: no row changed since).
    Of such a table that has only gained rows since a pass checked every row (the raw tables' insert-only
    ingest), only the rows added since are checked, with the checks that then decide as a check of every
    row would (``core.quality.on_added_rows``: a key's uniqueness and the cross-table checks against the
    whole tables). The report's ``unchanged`` says what was left out.
    """
    from core.contracts import PER_SNAPSHOT, RAW_CONVERSIONS, TABLES
    from core.quality import (
        BROADCAST_ROWS,
        checked_snapshots,
        covered_through,
        on_added_rows,
        reusable_pass,
    )
    from core.table_versions import files_added_since, pin, rows_in, snapshot_files, unchanged_since
    from encoders import quality as encoder_quality
    from ranker import quality as ranker_quality
    from spark_jobs import quality

    now = now or datetime.now(UTC)
    cfg = quality.QualityConfig(now=now)
    wanted = None if tables is None else set(tables)
    unknown = sorted(((wanted or set()) | set(exclude)) - {t.path for t in TABLES})
    if unknown:
        raise DuetError(f"not a duet table: {', '.join(unknown)} "
                        f"(the tables: {', '.join(t.path for t in TABLES)})")

    def chosen(path: str) -> bool:
        return (wanted is None or path in wanted) and path not in exclude

    def suites_for(present: set[str], properties: dict[str, dict[str, str]]) -> list:
        missing = sorted((wanted or set()) - present)
        if missing:
            raise DuetError(f"no table {', '.join(missing)} under {lake}")
        suites = all_suites(cfg, present, properties)
        unchecked = sorted((wanted or set()) - {s.table.path for s in suites})
        if unchecked:   # e.g. features/_snapshots, read by the sequence suites; or a table missing its input
            raise DuetError(f"no suite checks {', '.join(unchecked)} in this lake on its own")
        chosen_suites = [s for s in suites if chosen(s.table.path)]
        if not new_only and snapshots is None:
            return chosen_suites

        def at(path: str):   # the suite of ``path`` as a run at an earlier instant built it
            return lambda instant: next(s for s in all_suites(quality.QualityConfig(now=instant), present,
                                                              properties) if s.table.path == path)
        kept = [_of_snapshots(s, snapshots) if snapshots is not None and s.table.path in PER_SNAPSHOT
                else new_rows(s, at(s.table.path)) for s in chosen_suites]
        return [s for s in kept if s is not None]

    def all_suites(cfg, present: set[str], properties: dict[str, dict[str, str]]) -> list:
        return (quality.suites_for(cfg, present, properties) + encoder_quality.suites_for(lake, present)
                + ranker_quality.suites_for(present))

    unchanged: dict[str, str] = {}

    def new_rows(suite, at):
        """``suite`` restricted to what no earlier pass holds for; None when that is nothing."""
        path = suite.table.path
        if path not in PER_SNAPSHOT:
            if reusable_pass(lake, suite, at) is not None:
                unchanged[path] = "no row changed since a pass"
                return None
            read = covered_through(lake, suite, at)
            current = pin(suite.table.location(lake))
            if read is None or current is None:
                return suite
            since = tuple(read[path])
            added = files_added_since(suite.table.location(lake), since[0], current[0])
            if not added:
                others = {t.path: t.location(lake) for t in TABLES if t.path in read and t.path != path}
                if all(unchanged_since(location, *read[p]) for p, location in others.items()):
                    unchanged[path] = "no row changed since a pass"
                    return None
                return suite              # a table its checks read changed: every row, as before
            many = rows_in(suite.table.location(lake), added, current[0])
            if many is None or many > BROADCAST_ROWS:
                return suite              # too many added rows to broadcast: every row costs no more
            return on_added_rows(suite, added, since, current) or suite
        present = set(snapshot_files(suite.table.location(lake), PER_SNAPSHOT[path]) or {})
        done = checked_snapshots(lake, suite, at) & present
        if done:
            unchanged[path] = f"{len(done)} of {len(present)} snapshot(s) unchanged since a pass"
        if not done:
            return suite                      # all new: the whole table
        new = sorted(present - done)
        return _of_snapshots(suite, new) if new else None

    # The orphan rate is a figure of raw/conversions: reported when that table is validated.
    metrics = quality.metrics if chosen(RAW_CONVERSIONS.path) else None
    return validate_lake(spark, lake, suites_for, metrics_for=metrics, now=now, unchanged=unchanged)


def _of_snapshots(suite, snapshots: Sequence[datetime] | None):
    """``suite`` restricted to ``snapshots`` when its table is kept per snapshot (``validate``)."""
    from core.contracts import PER_SNAPSHOT
    from core.quality import snapshot_filter

    column = PER_SNAPSHOT.get(suite.table.path)
    if snapshots is None or column is None:
        return suite
    where = snapshot_filter(column, snapshots)
    return replace(suite, where=f"({suite.where}) AND {where}" if suite.where else where,
                   snapshots=tuple(snapshots))


def validate_training(spark: SparkSession, lake: str) -> LakeReport:
    """Only the ranker's tables (labels and the training set): the gate before the ranker trains."""
    from ranker import quality as ranker_quality

    return validate_lake(spark, lake, lambda present, _: ranker_quality.suites_for(present))


def check_imported(spark: SparkSession, lake: str, model_version: str) -> LakeReport:
    """The embedding suite on one model version's rows. Every check of the suite is hereditary to a
    (snapshot, model version) group (``encoders.quality``), so these rows pass alone exactly when they
    pass within the whole table."""
    from encoders import quality as encoder_quality
    from encoders.model_store import VERSION_PATTERN

    if not VERSION_PATTERN.match(model_version):   # it goes into the filter below
        raise DuetError(f"not a model version: {model_version!r}")

    def suites_for(present: set[str], _: dict) -> list:
        return [replace(s, where=f"model_version = '{model_version}'")
                for s in encoder_quality.suites_for(lake, present)]

    return validate_lake(spark, lake, suites_for)


def failed_rows(report: LakeReport, table: str, shown: int = 3) -> list[str]:
    """One line per failed check of ``table`` in ``report``'s GX results: how many rows, and the first
    ``shown`` of them (as the check's query returned them)."""
    path = Path(report.results_dir) / f"{table.replace('/', '_')}.json"
    try:
        results = json.loads(path.read_text()).get("results", [])
    except (OSError, ValueError):
        return []
    lines = []
    for r in results:
        if r.get("success"):
            continue
        config, result = r.get("expectation_config") or {}, r.get("result") or {}
        count = result.get("unexpected_count", result.get("observed_value"))
        details = result.get("details") or {}
        sample = details.get("unexpected_rows") or result.get("partial_unexpected_list") or []
        lines.append(f"  {config.get('description') or config.get('type')}: {count} row(s)"
                     + (f", e.g. {json.dumps(sample[:shown], default=str)}" if sample else ""))
    return lines
