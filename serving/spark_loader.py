"""Load registered online feature views for one snapshot into Feast's Redis online store from the Spark
executors, or into its SQLite online store from the driver, in Feast's own layout, so that the SDK, the
feature server and ``serving.fast`` read the rows exactly as if ``store.materialize(T, T)`` had written
them (issue 26: "loading the online store at scale").

Why: Feast's local engine collects every row of a view to the driver and converts and writes it from one
Python process (about 3,300 users/s here, BENCHMARKS.md); a snapshot of 10M users must not go through one
process. Here each Spark task reads its share of the rows as Arrow batches (``mapInArrow``), encodes them
and writes one redis-py pipeline per batch; the driver only plans and adds up the counts.

What is written, per view and entity, is what Feast 0.67's ``materialize(T, T)`` writes
(``LocalComputeEngine`` -> ``_convert_arrow_to_proto`` -> ``RedisOnlineStore.online_write_batch``):

* rows: the view's batch source (a ``SparkSource``: its SQL query or table, its field mapping), the rows
  whose event timestamp is ``T`` (the window ``[T, T]``); per entity the one with the latest created
  timestamp (Feast's dedup node sorts by event then created timestamp). The join keys are checked for
  duplicates first (a shuffle of the keys only); the window that picks the latest row runs only when
  there are any, since the contract's tables hold one row per entity and snapshot.
* key: ``serialize_entity_key`` (version of the repo config) of the join keys, then the project name;
  field ``murmur3_32("<view>:<feature>")`` holding the serialized ``ValueProto``; field ``_ts:<view>``
  the event time as a protobuf ``Timestamp``; ``EXPIRE`` after each ``HSET`` when ``key_ttl_seconds``.
  The view's name is Feast's versioned name when the registry versions online views.
* values: ``_ENCODERS`` below, for the types duet's views use: ``Array(Float32)`` (a null row: an empty
  ``ValueProto``; a null element: 0.0, as Feast's list conversion), ``Float32`` (null and NaN: empty, as
  Feast's ``pd.isnull``), ``Int32`` (null: empty), ``UnixTimestamp`` (whole seconds, floored; null:
  Feast's ``NULL_TIMESTAMP_INT_VALUE``). Another type is refused before anything is written.
* ``skip_dedup: false`` is honoured as Feast does: a view's fields of an entity are not written when the
  stored ``_ts:<view>`` is as new or newer. duet always sets ``skip_dedup`` (``serving.store``).

Views that read the same source with the same join keys are written in one pass, all their fields in one
``HSET`` per entity (the hash Feast leaves after writing them one by one); other views take a pass each.
The registry is not touched: Feast's materialization intervals serve ``materialize_incremental``, which
duet never uses.

**SQLite** (the embedded default) is one local file, which only the driver can write: each pass's rows
are collected to the driver as Arrow (``DataFrame.toArrow``; Feast's own materialize collects them too,
through pandas), a pass of more than ``SQLITE_SLICE_ROWS`` entities in hash slices so that the driver
holds at most that many at once (under Spark's ``maxResultSize``). They are upserted with one
``executemany`` per view and slice, in one transaction per pass, as the rows Feast 0.67's
``SqliteOnlineStore.online_write_batch`` writes: per entity and feature ``(entity_key, feature_name,
value, value_text, event_ts, created_ts)``, the key ``serialize_entity_key`` (no project), the value the
same ``ValueProto`` bytes as above, ``value_text`` Feast's ``extract_text_and_num`` (the number as Python
prints it for ``Float32`` and ``Int32``, else null), and the stamps as naive UTC datetimes through the
``sqlite3`` adapter Feast registers (whole epoch seconds). Feast's materialize converts each value in
Python and runs one ``execute`` per value: 57.2 s for 96,000 users at 16M clicks, the loader 35.7 s on the
same rows (BENCHMARKS.md, "A day against a rebuild at 16M clicks, 8413cc0"). A store
with ``vector_enabled`` or ``enable_openai_compatible_store`` (extra columns) is refused
(``NotLoadable``), like a source other than a ``SparkSource`` or a type without an encoder:
``serving.versions.materialize`` gives those to Feast's materialize.

The executors import this module, ``redis`` and Feast's protobuf modules: true in local mode (the driver's
interpreter, ``core.spark``) and in the project's image, where every node has the same environment.
The executors get plain data (the online store's settings as a dict, the encoding plan), never the
``FeatureStore``; each task opens its own Redis connection with Feast's ``RedisOnlineStore._get_client``
(Feast's parsing of ``host:port,db=N,ssl=true,password=...``, clusters and sentinels included).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from core.errors import DuetError
from core.times import sql_timestamp

DEFAULT_BATCH_ROWS = 2_000
# SQLite: the most entities collected to the driver at once; a larger pass is read in hash slices.
SQLITE_SLICE_ROWS = 500_000
_NULL = b""        # an empty ValueProto: what Feast stores for a null value


class NotLoadable(DuetError):
    """A store, view or type the loader does not write (refused before anything is written): Feast's
    materialize does (``serving.versions.materialize`` falls back to it)."""


# --- encoding (runs on the executors) -------------------------------------------------------------------

def _float_list_header(length: int) -> bytes:
    """The bytes a ``ValueProto`` of ``length`` floats holds before them (they come last, packed)."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    blob = ValueProto(float_list_val={"val": [0.0] * length}).SerializeToString()
    return blob[:len(blob) - 4 * length]


def _encode_float_list(column) -> list[bytes]:
    """``list<float|double>`` -> serialized ``ValueProto(float_list_val=...)`` per row, the floats copied
    from Arrow's buffer (float32, little endian, as protobuf packs them)."""
    import pyarrow.compute as pc

    child = column.values
    if child.null_count:
        child = pc.fill_null(child, 0.0)
    floats = child.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    offsets = column.offsets.to_numpy()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    headers: dict[int, bytes] = {}
    out = []
    for i in range(len(column)):
        if not valid[i]:
            out.append(_NULL)
            continue
        start, end = offsets[i], offsets[i + 1]
        header = headers.get(end - start)
        if header is None:
            header = headers[end - start] = _float_list_header(int(end - start))
        out.append(header + floats[start:end].tobytes())
    return out


def _encode_float(column) -> list[bytes]:
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    prefix = ValueProto(float_val=1.0).SerializeToString()[:-4]
    values = column.to_numpy(zero_copy_only=False).astype("<f4")     # null -> NaN
    packed = values.tobytes()
    return [_NULL if np.isnan(v) else prefix + packed[4 * i:4 * i + 4] for i, v in enumerate(values)]


def _cached_scalar(make: Callable[[int], bytes]) -> Callable[[Sequence[int | None]], list[bytes]]:
    """Per-value protobuf serialization, cached: counts and snapshots repeat."""
    def encode(values: Sequence[int | None]) -> list[bytes]:
        cache: dict[int, bytes] = {}
        out = []
        for v in values:
            if v is None:
                out.append(_NULL)
                continue
            blob = cache.get(v)
            if blob is None:
                blob = cache[v] = make(v)
            out.append(blob)
        return out
    return encode


def _encode_int32(column) -> list[bytes]:
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    return _cached_scalar(lambda v: ValueProto(int32_val=int(v)).SerializeToString())(column.to_pylist())


def _encode_unix_timestamp(column) -> list[bytes]:
    import pyarrow as pa
    import pyarrow.compute as pc
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.type_map import NULL_TIMESTAMP_INT_VALUE

    micros = pc.cast(pc.cast(column, pa.timestamp("us", "UTC")), pa.int64()).to_pylist()
    seconds = [NULL_TIMESTAMP_INT_VALUE if m is None else m // 1_000_000 for m in micros]
    return _cached_scalar(lambda v: ValueProto(unix_timestamp_val=v).SerializeToString())(seconds)


# Feast value type name -> (Arrow column -> one serialized ValueProto per row).
_ENCODERS: dict[str, Callable] = {
    "FLOAT_LIST": _encode_float_list,
    "FLOAT": _encode_float,
    "INT32": _encode_int32,
    "UNIX_TIMESTAMP": _encode_unix_timestamp,
}


def _entity_keys(batch, columns: Sequence[str], types: Sequence[str], version: int) -> list[bytes]:
    """Feast's ``serialize_entity_key`` of each row's join keys; one STRING key (duet's ``user_id``) is
    packed directly (the same bytes: key count, the key's name, then type, length and UTF-8 value)."""
    values = [batch.column(c).to_pylist() for c in columns]
    if types == ("STRING",) and version >= 3:
        head = struct.pack("<II", 1, 2) + struct.pack("<I", len(columns[0].encode())) + columns[0].encode()
        return [head + struct.pack("<II", 2, len(b)) + b for b in (v.encode() for v in values[0])]
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    protos = [python_values_to_proto_values(v, ValueType[t]) for v, t in zip(values, types, strict=True)]
    return [serialize_entity_key(EntityKey(join_keys=list(columns), entity_values=list(row)), version)
            for row in zip(*protos, strict=True)]


# --- the plan (built on the driver, shipped to the executors as plain data) -----------------------------

@dataclass(frozen=True)
class _View:
    name: str                                        # as stored (Feast's versioned name)
    ts_field: bytes                                  # b"_ts:<name>"
    features: tuple[tuple[bytes, str, str], ...]     # (hash field, column, Feast value type name)


@dataclass(frozen=True)
class _Pass:
    """One read of a source, writing the views that share it."""

    source: str                                      # Spark SQL FROM expression
    columns: tuple[tuple[str, str], ...]             # (source column, name after the field mapping)
    timestamp: str                                   # event timestamp column (source name)
    created: str | None                              # created timestamp column (source name)
    keys: tuple[str, ...]                            # join keys (mapped names)
    key_types: tuple[str, ...]
    views: tuple[_View, ...]


@dataclass(frozen=True)
class _Target:
    online_store: dict                               # RedisOnlineStoreConfig's fields
    project: str
    key_version: int
    event_time: bytes                                # the snapshot as a serialized protobuf Timestamp


def _client(target: _Target):
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    return RedisOnlineStore()._get_client(RedisOnlineStoreConfig(**target.online_store))


def _write_batch(pipe, target: _Target, plan: _Pass, batch) -> tuple[int, int]:
    """One pipeline for one Arrow batch; returns (entities written, view rows skipped as not newer)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    if batch.num_rows == 0:
        return 0, 0
    suffix = target.project.encode()
    keys = [k + suffix for k in _entity_keys(batch, plan.keys, plan.key_types, target.key_version)]
    encoded = {column: _ENCODERS[kind](batch.column(column))
               for view in plan.views for _, column, kind in view.features}
    ttl = target.online_store.get("key_ttl_seconds")
    keep = [[True] * len(plan.views) for _ in keys]
    skipped = 0
    if not target.online_store.get("skip_dedup"):
        # As Feast: a view's row is written only when newer than the stored _ts:<view> of that entity.
        new = Timestamp.FromString(target.event_time)
        new_nanos = new.seconds * 1_000_000_000 + new.nanos
        for key in keys:
            pipe.hmget(key, [view.ts_field for view in plan.views])
        for row, stored in enumerate(pipe.execute()):
            for v, blob in enumerate(stored):
                if blob:
                    old = Timestamp.FromString(blob)
                    if new_nanos <= old.seconds * 1_000_000_000 + old.nanos:
                        keep[row][v] = False
                        skipped += 1
    written = 0
    for row, key in enumerate(keys):
        mapping = {}
        for v, view in enumerate(plan.views):
            if keep[row][v]:
                mapping[view.ts_field] = target.event_time
                for hash_field, column, _ in view.features:
                    mapping[hash_field] = encoded[column][row]
        if not mapping:
            continue
        pipe.hset(key, mapping=mapping)
        if ttl:
            pipe.expire(name=key, time=ttl)
        written += 1
    pipe.execute()
    return written, skipped


def _partition_writer(target: _Target, plan: _Pass, batch_rows: int):
    """The function ``mapInArrow`` runs on each partition: writes its rows, yields one row of counts."""
    def write(batches: Iterator) -> Iterator:
        import pyarrow as pa

        client = _client(target)
        rows = written = skipped = 0
        try:
            with client.pipeline(transaction=False) as pipe:
                for batch in batches:
                    for start in range(0, batch.num_rows, batch_rows):
                        part = batch.slice(start, batch_rows)
                        w, s = _write_batch(pipe, target, plan, part)
                        rows, written, skipped = rows + part.num_rows, written + w, skipped + s
        finally:
            client.close()
        yield pa.RecordBatch.from_pydict({"rows": [rows], "written": [written], "skipped": [skipped]},
                                         schema=pa.schema([(c, pa.int64()) for c in _COUNTS]))
    return write


_COUNTS = ("rows", "written", "skipped")


# --- SQLite (written by the driver: the online store is one local file) ---------------------------------

def _texts(column, kind: str) -> list[str | None]:
    """Feast's ``value_text`` of each row (``extract_text_and_num`` of the ``ValueProto``): for ``Float32``
    the float32 value as Python prints it once widened (what reading ``float_val`` gives), for ``Int32``
    the integer; null for a null or NaN (an empty ``ValueProto``) and for every other type."""
    if kind == "FLOAT":
        values = column.to_numpy(zero_copy_only=False).astype("<f4")      # null -> NaN
        return [None if np.isnan(v) else str(float(v)) for v in values]
    if kind == "INT32":
        return [None if v is None else str(int(v)) for v in column.to_pylist()]
    return [None] * len(column)


def sqlite_loadable(config) -> bool:
    """Whether the SQLite online store of ``config`` has Feast's plain table (module docstring)."""
    online = config.online_store
    return (online.type == "sqlite" and not getattr(online, "vector_enabled", False)
            and not getattr(online, "enable_openai_compatible_store", False))


def _sqlite_pass(conn, config, plan: _Pass, tables: Iterable, snapshot: datetime, batch_rows: int) -> int:
    """Upsert the pass's rows (Arrow tables: the slices of ``_rows(keep_created=True)``) into its views'
    SQLite tables, in one transaction; returns the entities written."""
    from feast.utils import to_naive_utc

    event_ts = to_naive_utc(snapshot)
    written = 0
    with conn:
        for table in tables:
            written += table.num_rows
            for view in plan.views:
                _sqlite_view(conn, config, view, plan, table, event_ts, batch_rows)
    return written


def _sqlite_view(conn, config, view: _View, plan: _Pass, table, event_ts: datetime, batch_rows: int) -> None:
    """One view's rows of one Arrow table upserted as Feast's ``online_write_batch`` does (the caller's
    transaction): one row per entity and feature."""
    from feast.infra.online_stores.sqlite import _quote_id
    from feast.utils import to_naive_utc

    sql = (f"INSERT INTO {_quote_id(f'{config.project}_{view.name}')} "
           "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
           "value = excluded.value, value_text = excluded.value_text, "
           "event_ts = excluded.event_ts, created_ts = excluded.created_ts")
    for batch in table.to_batches(max_chunksize=batch_rows):
        keys = _entity_keys(batch, plan.keys, plan.key_types, config.entity_key_serialization_version)
        created = [None if c is None else to_naive_utc(c) for c in batch.column(CREATED).to_pylist()]
        stamps = [event_ts] * batch.num_rows
        for _, column, kind in view.features:
            values = batch.column(column)
            conn.executemany(sql, zip(keys, [column] * batch.num_rows, _ENCODERS[kind](values),
                                      _texts(values, kind), stamps, created, strict=True))


# --- the driver -----------------------------------------------------------------------------------------

@dataclass
class PassReport:
    views: list[str]
    rows: int               # rows read at the snapshot (after the per-entity dedup)
    written: int            # entities whose hash was written (Redis HSET) or rows upserted (SQLite)
    skipped: int            # (entity, view) rows not written: stored as new or newer (skip_dedup off)
    duplicates: int         # rows dropped by the per-entity dedup (latest created timestamp kept)
    partitions: int         # Redis: the tasks that wrote; SQLite: the slices collected to the driver
    seconds: float


@dataclass
class LoadReport:
    snapshot: str
    passes: list[PassReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.passes)

    def line(self) -> str:
        per = "; ".join(f"{', '.join(p.views)}: {p.written:,} entities, {p.partitions} partitions, "
                        f"{p.seconds:.1f} s" for p in self.passes)
        return f"loaded {self.snapshot} in {self.seconds:.1f} s ({per})"

    def to_dict(self) -> dict:
        return {"snapshot": self.snapshot, "seconds": self.seconds,
                "passes": [dict(p.__dict__) for p in self.passes]}


def _plan(store, view_names: Sequence[str]) -> list[_Pass]:
    """Group the views by (source, join keys) and spell out every column and hash field."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

    versioning = store.config.registry.enable_online_feature_view_versioning
    groups: dict[tuple, dict] = {}
    for name in view_names:
        view = store.get_feature_view(name)
        source = view.batch_source
        if not isinstance(source, SparkSource):
            raise NotLoadable(f"view {name} reads a {type(source).__name__}: the loader reads "
                              "SparkSources only (publish it with Feast's materialize)")
        if not view.online:
            raise DuetError(f"view {name} is not online: nothing to load")
        mapping = dict(source.field_mapping or {})          # source column -> name in the view
        reverse = {v: k for k, v in mapping.items()}
        keys = tuple((c.name, c.dtype.to_value_type().name) for c in view.entity_columns)
        if not keys:
            raise DuetError(f"view {name} has no join keys: the loader writes entity views only")
        created = source.created_timestamp_column or None
        timestamp = reverse.get(source.timestamp_field, source.timestamp_field)
        group = groups.setdefault((source.get_table_query_string(), timestamp, reverse.get(created, created),
                                   tuple(sorted(mapping.items())), keys), {"views": [], "columns": {}})
        stored = compute_versioned_name(view, versioning)
        features = []
        for feature in view.features:
            kind = feature.dtype.to_value_type().name
            if kind not in _ENCODERS:
                raise NotLoadable(f"{name}:{feature.name} is {feature.dtype}: the loader encodes "
                                  f"{', '.join(sorted(_ENCODERS))} (publish it with Feast's materialize)")
            features.append((_mmh3(f"{stored}:{feature.name}"), feature.name, kind))
        group["views"].append(_View(stored, f"_ts:{stored}".encode(), tuple(features)))
        for column in [k for k, _ in keys] + [f.name for f in view.features]:
            group["columns"][column] = reverse.get(column, column)
    return [_Pass(source, tuple((src, dst) for dst, src in group["columns"].items()), timestamp, created,
                  tuple(k for k, _ in keys), tuple(t for _, t in keys), tuple(group["views"]))
            for (source, timestamp, created, _, keys), group in groups.items()]


CREATED = "__duet_created"      # the created timestamp's column in ``_rows(keep_created=True)``


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _rows(spark, plan: _Pass, snapshot: datetime, keep_created: bool = False):
    """(the pass's rows at the snapshot, one per entity, as a DataFrame; the rows dropped as duplicates;
    the entities). With ``keep_created``, the created timestamp too, as ``CREATED`` (null without a
    created column)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    stamps = [plan.timestamp] + ([plan.created] if plan.created else [])
    selected = [f"{_q(src)} AS {_q(dst)}" for src, dst in plan.columns] + [
        f"{_q(s)} AS {_q('__duet_' + s)}" for s in stamps]
    rows = spark.sql(f"SELECT {', '.join(selected)} FROM {plan.source} "
                     f"WHERE {_q(plan.timestamp)} = {sql_timestamp(snapshot)}")
    repeated = F.col("count") > 1
    counted = rows.groupBy(*plan.keys).count().agg(
        F.sum(F.when(repeated, F.col("count"))), F.count(F.when(repeated, 1)), F.count("*")).first()
    duplicates, entities = int((counted[0] or 0) - counted[1]), int(counted[2])
    if duplicates:
        # Feast's dedup: per entity, the latest (event, created) timestamps; in [T, T] only created differs.
        order = [F.col(f"`__duet_{s}`").desc() for s in stamps]
        rank = F.row_number().over(Window.partitionBy(*plan.keys).orderBy(*order))
        rows = rows.withColumn("__duet_rank", rank).where("__duet_rank = 1")
    columns = [F.col(_q(dst)) for _, dst in plan.columns]
    if keep_created:
        created = F.col(_q(f"__duet_{plan.created}")) if plan.created else F.lit(None).cast("timestamp")
        columns.append(created.alias(CREATED))
    return rows.select(*columns), duplicates, entities


def load_views(spark, store, snapshot: datetime, view_names: Sequence[str],
               batch_rows: int = DEFAULT_BATCH_ROWS, log=print,
               slice_rows: int = SQLITE_SLICE_ROWS) -> LoadReport:
    """Write the rows of ``view_names`` (registered, online, on ``store``'s Redis or SQLite online store) at
    ``snapshot``: Redis from the executors, SQLite from the driver (module docstring); returns what was
    written. ``batch_rows``: rows per Arrow batch, per Redis pipeline and per SQLite ``executemany``;
    ``slice_rows``: on SQLite, the most entities collected to the driver at once. Raises ``NotLoadable``,
    before writing anything, for what it does not write."""
    from google.protobuf.timestamp_pb2 import Timestamp
    from pyspark.sql import functions as F

    from core.spark import session_settings

    config = store.config
    on_sqlite = config.online_store.type == "sqlite"
    if on_sqlite and not sqlite_loadable(config):
        raise NotLoadable("this SQLite online store has vector or OpenAI-compatible columns, which the "
                          "loader does not write: use Feast's materialize (serving.versions.materialize)")
    if config.online_store.type not in ("redis", "sqlite"):
        raise NotLoadable(f"the loader writes Redis and SQLite; this store's online store is "
                          f"{config.online_store.type}: use Feast's materialize "
                          "(serving.versions.materialize)")
    if snapshot.tzinfo is None:
        raise DuetError(f"{snapshot.isoformat()} has no time zone: give the snapshot as an instant")
    stamp = Timestamp()
    stamp.FromDatetime(snapshot)
    target = _Target(config.online_store.model_dump(), config.project,
                     config.entity_key_serialization_version, stamp.SerializeToString())
    report = LoadReport(snapshot.isoformat())
    started = time.perf_counter()
    for plan in _plan(store, view_names):
        begun = time.perf_counter()
        if on_sqlite:
            rows, duplicates, entities = _rows(spark, plan, snapshot, keep_created=True)
            slices = max(1, math.ceil(entities / slice_rows))
            parts = [rows] if slices == 1 else [
                rows.where(F.pmod(F.xxhash64(*[F.col(_q(k)) for k in plan.keys]), F.lit(slices)) == i)
                for i in range(slices)]
            conn = store._get_provider().online_store._get_conn(config)
            written = _sqlite_pass(conn, config, plan, (part.toArrow() for part in parts), snapshot,
                                   batch_rows)
            report.passes.append(PassReport([v.name for v in plan.views], written, written, 0, duplicates,
                                            partitions=slices, seconds=round(time.perf_counter() - begun, 2)))
            continue
        rows, duplicates, _ = _rows(spark, plan, snapshot)
        with session_settings(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows)}):
            counts = rows.mapInArrow(_partition_writer(target, plan, batch_rows),
                                     ", ".join(f"{c} long" for c in _COUNTS))
            per_task = counts.collect()                        # one row of counts per partition
        totals = [sum(row[c] for row in per_task) for c in _COUNTS]
        done = PassReport([v.name for v in plan.views], *totals, duplicates=duplicates,
                          partitions=len(per_task), seconds=round(time.perf_counter() - begun, 2))
        report.passes.append(done)
    report.seconds = round(time.perf_counter() - started, 2)
    log(report.line())
    return report
