"""What a Delta table's versions say about its rows, read with delta-rs (no Spark).

Two consumers decide from these whether something computed on a table still holds: the demo's stage cache
(``duet.stage_cache``: may a stage be skipped?) and the publish gate (``core.quality.reusable_pass``: does
an earlier validation pass still describe the rows?). Both treat as no change a MERGE that inserted,
updated and deleted nothing (what a sequence re-run committed when no input changed, before it learned to
commit nothing then; older lakes hold such commits) and the commits of table maintenance
(``duet maintain``): an OPTIMIZE, which rewrites files without changing a row (its actions carry
``dataChange: false``, the protocol's mark of a rearrangement, so the change data feed has nothing for it
either), and a VACUUM's start and end, which carry no file at all. Every other commit counts as a change,
even one that changed nothing (an empty overwrite): when unsure, the work is done again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

# Spark's MERGE metrics that count changed rows; a MERGE whose every one is 0 changed nothing.
MERGE_ROW_METRICS = ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
# Operations whose commits never change a row (module docstring): Delta writes OPTIMIZE's files with
# dataChange false (Spark and delta-rs alike), VACUUM's commits (its logging) hold no file action.
NO_ROW_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END")


def _changed_no_rows(commit: dict) -> bool:
    if commit.get("operation") in NO_ROW_OPERATIONS:
        return True
    metrics = commit.get("operationMetrics") or {}
    return commit.get("operation") == "MERGE" and all(str(metrics.get(m)) == "0" for m in MERGE_ROW_METRICS)


def _open(location: str):
    """The Delta table at ``location`` (delta-rs), told where its S3 server is if it is on S3."""
    from core.object_storage import delta_table

    return delta_table(location)


def _history(location: str, since: int | None = None) -> list[dict] | None:
    """The table's commits, newest first (those after ``since`` and ``since`` itself, when given: the log
    is not read further back); None if there is no Delta table at ``location``."""
    from deltalake.exceptions import TableNotFoundError

    try:
        table = _open(location)
    except TableNotFoundError:
        return None
    if since is None:
        return table.history()
    newer = table.version() - since
    return table.history(limit=newer + 1) if newer >= 0 else []


def table_version(location: str) -> int | None:
    """The table's current Delta version; None if there is no Delta table at ``location``."""
    from deltalake.exceptions import TableNotFoundError

    try:
        return _open(location).version()
    except TableNotFoundError:
        return None


def content_version(location: str) -> int | None:
    """The latest version of the table at ``location`` that changed its rows (module docstring); None if
    there is no Delta table there."""
    history = _history(location)
    if history is None:
        return None
    for commit in history:
        if not _changed_no_rows(commit):
            return int(commit["version"])
    return 0


def pin(location: str) -> tuple[int, int] | None:
    """(current version, its commit stamp in ms since the epoch) of the table at ``location``, from one
    read of the log's newest commit; None if there is no Delta table there. The stamp makes the pair name
    one commit: a table deleted and re-created reaches the same version number again, not the same stamp."""
    from deltalake.exceptions import TableNotFoundError

    try:
        [newest] = _open(location).history(limit=1)
    except TableNotFoundError:
        return None
    return int(newest["version"]), int(newest["timestamp"])


def unchanged_since(location: str, version: int, stamp: int | None = None) -> bool:
    """Whether the table's rows are those of ``pin``'s (``version``, ``stamp``): that commit is still in
    its history and every later commit changed no row (module docstring). Without ``stamp`` (a record that
    kept the version number only) any commit numbered ``version`` counts."""
    for commit in _history(location, since=version) or []:     # newest first, down to ``version``
        if int(commit["version"]) == version:
            return stamp is None or int(commit["timestamp"]) == stamp
        if not _changed_no_rows(commit):
            return False
    return False


def _only_inserted(commit: dict) -> bool:
    """Whether a commit at most added rows: no row change (above), an append, or a MERGE that updated and
    deleted nothing (the insert-only MERGEs of ``duet ingest``)."""
    if _changed_no_rows(commit):
        return True
    metrics = commit.get("operationMetrics") or {}
    if commit.get("operation") == "MERGE":
        return all(str(metrics.get(m)) == "0" for m in ("numTargetRowsUpdated", "numTargetRowsDeleted"))
    mode = (commit.get("operationParameters") or {}).get("mode")
    return commit.get("operation") == "WRITE" and mode == "Append"


def only_inserted_since(location: str, version: int, stamp: int | None = None) -> bool:
    """Whether the rows of ``pin``'s (``version``, ``stamp``) are all still there, unchanged, with at most
    rows added since (``unchanged_since`` allows no added row). A check that only asks whether a row exists
    in this table (an anti-join against it) keeps its verdict under such commits."""
    for commit in _history(location, since=version) or []:
        if int(commit["version"]) == version:
            return stamp is None or int(commit["timestamp"]) == stamp
        if not _only_inserted(commit):
            return False
    return False


def files_added_since(location: str, version: int, now: int | None = None) -> list[str]:
    """The names of the data files the table holds at ``now`` (default: its current version) and did not
    hold at ``version`` (a Delta data file's name is unique in its table: a UUID). When every commit since
    ``version`` at most added rows (``only_inserted_since``), the rows added since are in these files (an
    OPTIMIZE since puts rows already there into new files too: a superset)."""
    from core.object_storage import delta_table

    then = set(delta_table(location, version).file_uris())
    return sorted(uri.rsplit("/", 1)[-1] for uri in delta_table(location, now).file_uris() if uri not in then)


def _file_statistic(location: str, field: str, now: int | None = None) -> dict[str, object]:
    """Each data file's ``field`` in the table's add actions at ``now`` (default: its current version), by
    file name (``num_records``, ``min.<column>``, ...); None where a file has none, every file None where
    the log keeps no such statistic."""
    import pyarrow as pa

    from core.object_storage import delta_table

    actions = pa.table(delta_table(location, now).get_add_actions(flatten=True))
    names = [p.rsplit("/", 1)[-1] for p in actions.column("path").to_pylist()]
    values = actions.column(field).to_pylist() if field in actions.schema.names else [None] * len(names)
    return dict(zip(names, values, strict=True))


def rows_in(location: str, names: list[str], now: int | None = None) -> int | None:
    """How many rows the data files ``names`` of the table at ``now`` (default: its current version) hold,
    by their statistics (``numRecords``); None when one is not in the table or has no count."""
    counts = _file_statistic(location, "num_records", now)
    found = [counts.get(name) for name in names]
    return None if any(n is None for n in found) else sum(found)


def least_added_since(location: str, version: int, column: str,
                      now: int | None = None) -> tuple[int, datetime | None]:
    """(how many data files the table gained from ``version`` to ``now`` (default: its current version),
    the least value of ``column`` in them by their statistics). The least value is None when no file was
    added or some added file has no statistics for ``column`` (nothing can be told from them then: treat
    it as "anything"). Delta truncates a timestamp's minimum to the millisecond, never above the true least
    value, so a bound the statistic meets, the rows meet too. An OPTIMIZE since ``version`` adds files of
    older rows: their least values count, which errs on the safe side."""
    added = files_added_since(location, version, now)
    if not added:
        return 0, None
    lows = _file_statistic(location, f"min.{column}", now)
    found = [lows.get(name) for name in added]
    if any(low is None for low in found):
        return len(added), None
    return len(added), min(found)


# Delta keeps timestamp statistics in milliseconds: a file's [min, max] is widened by this much.
_STATS_PRECISION = timedelta(milliseconds=1)


def snapshot_files(location: str, column: str, version: int | None = None) -> dict[datetime, str] | None:
    """For each snapshot (a value of ``column``) the table holds at ``version`` (default: the current one),
    a digest of the files that may hold its rows: the files of its partition when the table is partitioned
    by ``column``, else every file whose statistics of ``column`` include it (a file without statistics:
    every snapshot). A Delta data file is never rewritten in place and its name never reused, so an equal
    digest means the snapshot's rows are the same ones; any rewrite (a rebuilt snapshot, a MERGE, an
    OPTIMIZE) gives another digest. None when there is no table or that cannot be told: with deletion
    vectors a file's rows change under the same name."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake.exceptions import TableNotFoundError

    from core.object_storage import delta_table

    try:
        table = delta_table(location, version)
    except TableNotFoundError:
        return None
    if "deletionVectors" in (table.protocol().reader_features or []):
        return None
    files = pa.table(table.get_add_actions(flatten=True))
    paths = files.column("path").to_pylist()
    holders: dict[datetime, list[str]] = {}
    if column in table.metadata().partition_columns:
        for path, value in zip(paths, files.column(f"partition.{column}").to_pylist(), strict=True):
            holders.setdefault(value, []).append(path)
    else:
        values = table.to_pyarrow_dataset().to_table(columns=[column]).column(column)
        names = files.schema.names
        lo = files.column(f"min.{column}").to_pylist() if f"min.{column}" in names else [None] * len(paths)
        hi = files.column(f"max.{column}").to_pylist() if f"max.{column}" in names else [None] * len(paths)
        for snapshot in pc.unique(values).to_pylist():
            holders[snapshot] = [p for p, a, b in zip(paths, lo, hi, strict=True)
                                 if a is None or b is None
                                 or a - _STATS_PRECISION <= snapshot <= b + _STATS_PRECISION]
    return {snapshot: hashlib.sha256("\n".join(sorted(found)).encode()).hexdigest()
            for snapshot, found in holders.items() if snapshot is not None}
