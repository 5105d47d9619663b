"""The encoders' Delta edge, with ``deltalake`` (no Spark): read sequence snapshots, write embeddings.

Reading a snapshot of both sequence tables for every user must not hold the tables in memory.
``co_partitioned`` streams each input in Arrow batches and, when a snapshot is larger than
``chunk_rows``, spills the rows by a hash of ``user_id`` into Arrow IPC files in a temporary folder
(a grace hash join): every part holds all rows of its users from every input and about ``chunk_rows``
rows in all, so memory is bounded by a part, not by the table. A snapshot that fits is read directly.

Embeddings are written with one Delta commit per run: a full run replaces its (snapshot, model version)
rows (overwrite with a predicate), a ``--changed-only`` run MERGEs the re-embedded users and deletes the
ones that no longer have a sequence. Each commit records in its ``userMetadata`` which snapshot and model
version it wrote and which versions of the sequence tables it read; the next ``--changed-only`` run reads
the sequence tables' change data feed from there.

This module is the only one in ``encoders/`` that imports ``deltalake``; the model, training and
inference code never do.
"""

from __future__ import annotations

import json
import math
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from deltalake import CommitProperties, write_deltalake

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS, Table
from core.errors import DuetError
from core.object_storage import arrow_filesystem, delta_rs_options, delta_table, is_delta_table, on_s3
from encoders.batch import CLICK_COLUMNS, CONVERSION_COLUMNS
from encoders.hashing import fnv1a64
from encoders.model_store import VERSION_PATTERN

if TYPE_CHECKING:
    from deltalake import DeltaTable

SEQUENCE_TABLES = (CLICK_SEQUENCES, CONVERSION_SEQUENCES)
RUN_KEY = "duet.embed"  # key of the embedding run record in a commit's userMetadata


def _table(lake: str, table: Table) -> DeltaTable:
    location = table.location(lake)
    if not is_delta_table(location):
        raise DuetError(f"{location} is not a Delta table: run `duet sequences` first")
    return delta_table(location)


def _instant(value: str) -> datetime:
    """A partition value as deltalake lists it ('2026-01-06T00:00:00.000000Z') -> aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T")).astimezone(UTC)


def sequence_snapshots(lake: str) -> list[datetime]:
    """The snapshots present in the click or conversion sequence table, ascending."""
    found: set[datetime] = set()
    for table in SEQUENCE_TABLES:
        location = table.location(lake)
        if is_delta_table(location):
            found |= {_instant(p["snapshot_ts"]) for p in delta_table(location).partitions()}
    return sorted(found)


def sequence_versions(lake: str) -> dict[str, int]:
    """The current version of each sequence table, by contract path."""
    return {t.path: _table(lake, t).version() for t in SEQUENCE_TABLES}


@dataclass(frozen=True)
class Source:
    """One input of a co-partitioned read: a snapshot of a sequence table and the columns wanted."""

    table: Table
    snapshot: datetime
    columns: tuple[str, ...]

    def dataset(self, lake: str, versions: dict[str, int] | None = None) -> ds.Dataset:
        dt = _table(lake, self.table)
        if versions and self.table.path in versions:
            dt.load_as_version(versions[self.table.path])
        return dt.to_pyarrow_dataset()

    def filter(self, users: pa.Array | None) -> ds.Expression:
        expr = ds.field("snapshot_ts") == pa.scalar(self.snapshot, pa.timestamp("us", tz="UTC"))
        return expr if users is None else expr & ds.field("user_id").isin(users)


def click_source(snapshot: datetime, columns: tuple[str, ...] = tuple(CLICK_COLUMNS)) -> Source:
    return Source(CLICK_SEQUENCES, snapshot, ("user_id", *columns))


def conversion_source(snapshot: datetime, columns: tuple[str, ...] = tuple(CONVERSION_COLUMNS)) -> Source:
    return Source(CONVERSION_SEQUENCES, snapshot, ("user_id", *columns))


def co_partitioned(lake: str, sources: list[Source], chunk_rows: int, users: pa.Array | None = None,
                   versions: dict[str, int] | None = None, spill_dir: str | None = None,
                   ) -> Iterator[list[pa.Table]]:
    """Yield lists of tables, one per source, each list holding every row of the same set of users.

    Rows of all sources together are at most about ``chunk_rows`` per part (a hash of ``user_id``
    decides the part). ``users`` restricts the read to those user ids; ``versions`` reads the given
    table versions (by contract path) instead of the latest.
    """
    datasets = [s.dataset(lake, versions) for s in sources]
    filters = [s.filter(users) for s in sources]
    total = sum(d.count_rows(filter=f) for d, f in zip(datasets, filters, strict=True))
    if total <= chunk_rows:
        yield [d.to_table(columns=list(s.columns), filter=f)
               for d, s, f in zip(datasets, sources, filters, strict=True)]
        return
    # Twice as many parts as the average needs: hash parts are uneven.
    parts = max(2, math.ceil(2 * total / chunk_rows))
    with tempfile.TemporaryDirectory(prefix="duet-spill-", dir=spill_dir) as tmp:
        paths = [[Path(tmp) / f"{i}-{p}.arrow" for p in range(parts)] for i in range(len(sources))]
        schemas = [pa.schema([d.schema.field(c) for c in s.columns])
                   for d, s in zip(datasets, sources, strict=True)]
        for i, (d, s, f) in enumerate(zip(datasets, sources, filters, strict=True)):
            batches = d.to_batches(columns=list(s.columns), filter=f, batch_size=max(1024, chunk_rows // 4))
            _spill(batches, paths[i], schemas[i])
        for p in range(parts):
            yield [_read_ipc(paths[i][p], schemas[i]) for i in range(len(sources))]


def _spill(batches: Iterator[pa.RecordBatch], paths: list[Path], schema: pa.Schema) -> None:
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            part = (fnv1a64(batch.column("user_id")) % np.uint64(len(paths))).astype(np.int64)
            order = np.argsort(part, kind="stable")
            counts = np.bincount(part, minlength=len(paths))
            sorted_batch = batch.take(pa.array(order))
            offset = 0
            for p in np.flatnonzero(counts):
                if p not in writers:
                    writers[p] = ipc.new_file(str(paths[p]), schema)
                writers[p].write_batch(sorted_batch.slice(offset, counts[p]))
                offset += counts[p]
    finally:
        for w in writers.values():
            w.close()


def _read_ipc(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.exists():
        return schema.empty_table()
    with ipc.open_file(str(path)) as reader:
        return reader.read_all()


# --- embeddings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingRun:
    """What one embedding commit wrote and read (stored as JSON in the commit's userMetadata)."""

    snapshot: datetime
    model_version: str
    sequence_versions: dict[str, int]
    mode: str          # "full" or "changed-only"

    def to_json(self) -> str:
        return json.dumps({RUN_KEY: {"snapshot": self.snapshot.isoformat(),
                                     "model_version": self.model_version,
                                     "sequence_versions": self.sequence_versions, "mode": self.mode}},
                          sort_keys=True)

    @staticmethod
    def from_json(text: str | None) -> EmbeddingRun | None:
        try:
            record = json.loads(text)[RUN_KEY] if text else None
        except (ValueError, KeyError, TypeError):
            return None
        if record is None:
            return None
        return EmbeddingRun(_instant(record["snapshot"]), record["model_version"],
                            {k: int(v) for k, v in record["sequence_versions"].items()}, record["mode"])


def last_run(lake: str, snapshot: datetime, model_version: str) -> EmbeddingRun | None:
    """The newest embedding run recorded for (snapshot, model version), from the table's history."""
    location = USER_EMBEDDINGS.location(lake)
    if not is_delta_table(location):
        return None
    for commit in delta_table(location).history():  # newest first
        run = EmbeddingRun.from_json(commit.get("userMetadata"))
        if run and run.snapshot == snapshot and run.model_version == model_version:
            return run
    return None


# Operations whose commits carry their changes as add/remove files when they have no cdc files. DML
# (MERGE, UPDATE, DELETE) write cdc files for every row they update or delete while the change data feed
# is on; their add/remove files without cdc files only copy unchanged rows (Delta's own reader reports no
# change for them), except a MERGE that only inserted (``_inserted_only``), whose added files are its new
# rows and carry no cdc copy; OPTIMIZE-like operations change no data.
_FILE_CHANGE_OPERATIONS = ("WRITE", "STREAMING UPDATE", "CREATE TABLE", "CREATE TABLE AS SELECT",
                           "REPLACE TABLE", "REPLACE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT")


def _commit(location: str, version: int) -> list[dict]:
    fs, path = arrow_filesystem(f"{location}/_delta_log/{version:020d}.json")
    try:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
    except FileNotFoundError:
        raise DuetError(f"{location}: commit {version} is no longer in the Delta log (cleaned up after a "
                        "checkpoint): embed every user, not the changed ones only",
                        fields=("changed_only",)) from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _inserted_only(info: dict) -> bool:
    """A MERGE commit that inserted rows and removed no file (so copied none): what
    ``spark_jobs.sequences.write_snapshots`` commits when a rebuilt snapshot only gained users."""
    metrics = info.get("operationMetrics") or {}
    return (info.get("operation") == "MERGE" and str(metrics.get("numTargetFilesRemoved")) == "0"
            and str(metrics.get("numTargetRowsInserted", "0")) != "0")


def _change_files(location: str, version: int) -> list[dict]:
    """The file actions that carry commit ``version``'s changes in the change data feed, by the protocol's
    rules as Delta's own reader applies them: a commit's cdc files when it has any, else the add/remove
    files of a write."""
    actions = _commit(location, version)
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    for a in actions:
        config = a.get("metaData", {}).get("configuration", {})
        if "metaData" in a and config.get("delta.enableChangeDataFeed") != "true":
            raise DuetError(f"{location}: the change data feed is off at version {version}: embed every "
                            "user, not the changed ones only", fields=("changed_only",))
    files = [a["cdc"] for a in actions if "cdc" in a]
    if not files and (info.get("operation") in _FILE_CHANGE_OPERATIONS or _inserted_only(info)):
        files = [a[kind] for a in actions for kind in ("add", "remove")
                 if kind in a and a[kind].get("dataChange", True)]
    return files


def _in_snapshot(action: dict, snapshot: datetime) -> bool:
    value = (action.get("partitionValues") or {}).get("snapshot_ts")
    return value is not None and _instant(value) == snapshot


def _feed_users(location: str, snapshot: datetime, start: int, end: int) -> list[pa.Array]:
    """The user ids in the change data feed of one sequence table, versions ``start..end``, restricted to
    the partition of ``snapshot``.

    Read from the Delta log and the change files directly (``_change_files``). (deltalake's ``load_cdf``
    treats a MERGE's copied files as changes and cannot open Spark's percent-encoded partition folders.)
    """
    users = []
    for version in range(start, end + 1):
        for f in _change_files(location, version):
            if not _in_snapshot(f, snapshot):
                continue
            path = f"{location}/{unquote(f['path'])}"
            fs, within = arrow_filesystem(path)
            try:
                users.append(pq.read_table(within, columns=["user_id"], filesystem=fs)
                             .column("user_id").combine_chunks())
            except FileNotFoundError as e:
                raise DuetError(f"{path} is gone (vacuumed?): embed every user, not the changed ones only",
                                fields=("changed_only",)) from e
    return users


@dataclass(frozen=True)
class PendingFeed:
    """What the next ``--changed-only`` run of ``run``'s (snapshot, model version) will read of one
    sequence table: the change files in the snapshot's partition of the commits after the version ``run``
    recorded. ``version`` is the oldest such commit; ``files`` are local paths, every commit's."""

    run: EmbeddingRun
    table: str              # contract path
    version: int
    files: tuple[Path, ...]


def last_runs(lake: str) -> list[EmbeddingRun]:
    """The newest embedding run recorded for each (snapshot, model version): what ``last_run`` finds for
    each, from one read of the table's history."""
    location = USER_EMBEDDINGS.location(lake)
    if not is_delta_table(location):
        return []
    runs: dict[tuple[datetime, str], EmbeddingRun] = {}
    for commit in delta_table(location).history():  # newest first
        run = EmbeddingRun.from_json(commit.get("userMetadata"))
        if run:
            runs.setdefault((run.snapshot, run.model_version), run)
    return list(runs.values())


def pending_feeds(lake: str) -> list[PendingFeed]:
    """The change files that the next ``--changed-only`` run of each recorded (snapshot, model version)
    would read (``changed_users``), by sequence table: what ``duet maintain`` must not vacuum. None for a
    run whose feed is unreadable already (a commit cleaned from the log, the feed off: its next
    ``--changed-only`` run fails asking for a full one, whatever is kept), nor on a lake on object storage,
    whose change files this does not list (``files`` are local paths, for their modification times)."""
    if on_s3(lake):
        return []
    runs = last_runs(lake)
    pending = []
    for table in SEQUENCE_TABLES:
        location = table.location(lake)
        if not runs or not is_delta_table(location):
            continue
        now = delta_table(location).version()
        changes: dict[int, list[dict]] = {}
        for run in runs:
            since = run.sequence_versions.get(table.path)
            if since is None:
                continue
            found: list[tuple[int, dict]] = []
            try:
                for version in range(since + 1, now + 1):
                    if version not in changes:
                        changes[version] = _change_files(location, version)
                    found += [(version, f) for f in changes[version] if _in_snapshot(f, run.snapshot)]
            except DuetError:
                continue
            if found:
                pending.append(PendingFeed(run, table.path, found[0][0],
                                           tuple(Path(location) / unquote(f["path"]) for _, f in found)))
    return pending


def changed_users(lake: str, snapshot: datetime, since: dict[str, int]) -> tuple[pa.Array, dict[str, int]]:
    """User ids whose sequence rows at ``snapshot`` changed after the table versions ``since`` (from the
    sequence tables' change data feed), and the versions read up to."""
    now = sequence_versions(lake)
    changed: list[pa.Array] = []
    for table in SEQUENCE_TABLES:
        changed += _feed_users(table.location(lake), snapshot, since[table.path] + 1, now[table.path])
    if not changed:
        return pa.array([], pa.string()), now
    return pc.unique(pa.concat_arrays([c.cast(pa.string()) for c in changed])), now


def _pulled_on_own_thread(batches: Iterator[pa.RecordBatch], depth: int = 4) -> Iterator[pa.RecordBatch]:
    """Yield ``batches``, computed on a separate thread.

    The Delta writer pulls batches from a tokio worker thread; if that same thread ran the producer,
    whose reads go through deltalake's storage handler (which blocks on tokio too), tokio would panic
    ("Cannot start a runtime from within a runtime"). The producer runs ahead by ``depth`` batches,
    which also overlaps reading and embedding with writing.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        items.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            items.put(e)

    worker = threading.Thread(target=produce, name="duet-embed-producer", daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def write_embeddings(lake: str, batches: Iterator[pa.RecordBatch], run: EmbeddingRun) -> None:
    """Replace the (snapshot, model version) rows of ``embeddings/user_embeddings`` with ``batches``
    (streamed: memory holds a few batches), in one commit that records ``run``."""
    rows = pa.RecordBatchReader.from_batches(USER_EMBEDDINGS.arrow_schema(), _pulled_on_own_thread(batches))
    predicate = (f"event_timestamp = '{run.snapshot.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}' "
                 f"AND model_version = '{run.model_version}'")
    location = USER_EMBEDDINGS.location(lake)
    exists = is_delta_table(location)
    write_deltalake(location, rows, mode="overwrite" if exists else "error",
                    storage_options=delta_rs_options(location),
                    predicate=predicate if exists else None,
                    partition_by=None if exists else [USER_EMBEDDINGS.partition.column],
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": run.to_json()}))


def merge_embeddings(lake: str, rows: pa.Table, deleted: pa.Array, run: EmbeddingRun) -> dict:
    """Upsert ``rows`` and delete ``deleted`` users' rows of the run's (snapshot, model version), in one
    MERGE commit that records ``run``. Returns deltalake's merge metrics."""
    location = USER_EMBEDDINGS.location(lake)
    gone = pa.table({
        "user_id": deleted.cast(pa.string()),
        "event_timestamp": pa.array([run.snapshot] * len(deleted), pa.timestamp("us", tz="UTC")),
        "model_version": pa.array([run.model_version] * len(deleted), pa.string()),
    })
    schema = pa.schema([f.with_nullable(True) for f in rows.schema])  # delete markers have no vectors
    source = pa.concat_tables([
        rows.cast(schema).append_column("_delete", pa.array([False] * rows.num_rows, pa.bool_())),
        _pad_like(gone, schema).append_column("_delete", pa.array([True] * len(deleted), pa.bool_())),
    ])
    on = " AND ".join(f"t.{k} = s.{k}" for k in USER_EMBEDDINGS.key)
    return (delta_table(location)
            .merge(source, on, source_alias="s", target_alias="t",
                   commit_properties=CommitProperties(custom_metadata={"userMetadata": run.to_json()}))
            .when_matched_delete(predicate="s._delete")
            .when_matched_update_all(except_cols=["_delete"])
            .when_not_matched_insert_all(predicate="NOT s._delete", except_cols=["_delete"])
            .execute())


def _pad_like(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s other columns added as nulls (for delete markers in a MERGE source)."""
    columns = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


IMPORT_KEY = "duet.import"  # key of an imported embedding's record in its commit's userMetadata


def replace_version(lake: str, model_version: str, rows: pa.Table, record: dict) -> int:
    """Replace every row of ``model_version`` in ``embeddings/user_embeddings`` with ``rows`` (all of that
    version), in one commit that records ``record`` under ``IMPORT_KEY``; return the table's new version.
    What ``duet embeddings import`` lands: re-running it with the same file replaces the rows with
    themselves."""
    if not VERSION_PATTERN.match(model_version):   # it goes into the predicate below
        raise DuetError(f"not a model version: {model_version!r}")
    location = USER_EMBEDDINGS.location(lake)
    exists = is_delta_table(location)
    metadata = json.dumps({IMPORT_KEY: record}, sort_keys=True, default=str)
    write_deltalake(location, rows.cast(USER_EMBEDDINGS.arrow_schema()),
                    mode="overwrite" if exists else "error", storage_options=delta_rs_options(location),
                    predicate=f"model_version = '{model_version}'" if exists else None,
                    partition_by=None if exists else [USER_EMBEDDINGS.partition.column],
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": metadata}))
    return delta_table(location).version()
