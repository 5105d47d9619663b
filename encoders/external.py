"""Embeddings made outside duet, imported as a model version of their own: ``duet embeddings import``.

A team that already serves a user embedding holds DUET against it by landing its vectors in
``embeddings/user_embeddings`` under ``model_version = ext-<name>``, stored exactly as the encoders'
rows are (the same table, contract columns and partition), with a record of its widths under
``_models/ext-<name>/config.json`` (``encoders.model_store.write_external``; no weights). From there the
embedding suite, the Feast catalog (a FeatureService ``ext_<name>``), training sets and the ablation treat
it as any other version.

The file (Parquet): ``user_id`` (string), ``event_timestamp`` (timestamp: the snapshot the vector
describes; with a time zone, or without one meaning UTC), ``click_embedding`` (list of numbers) and,
optionally, ``conversion_embedding`` (list of numbers). Other columns are ignored (and named).

* **Without ``conversion_embedding``** the version is a single-embedding one, like ``shared`` and
  ``click_only``: the contract makes ``conversion_embedding`` null for single-embedding variants, the
  suite checks "null exactly for single-embedding versions", and the ranker reads a user vector as the
  click embedding followed by the conversion embedding, so a null adds nothing. Zeros would instead be a
  second embedding that says nothing, fail the suite's norm bounds, and could not be told from a real one.
* **Refused before anything is written**, with the rows that show why: a column missing or of the wrong
  type, an empty file, a null (a key, a vector, or a value inside one), a value that is not finite as a
  32-bit float, vectors of different widths within a column (every width found, with its row count), a
  (user_id, event_timestamp) twice, and an ``event_timestamp`` that is not one of the lake's sequence
  snapshots (an embedding describes a user at a snapshot; a stale-row check would fail every such row).
* **Landed** in one Delta commit that replaces every row of the version (``encoders.lake.replace_version``):
  re-importing the same file is idempotent, and importing another file under the same name replaces the
  earlier import whole. The record is written first and put back if the commit fails, so a version's rows
  never exist without its widths.

The embedding suite (norms, coverage of the users with sequences at each snapshot, stale rows) needs
Spark; the conductor runs it on the landed rows (``duet.validation.check_imported``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import USER_EMBEDDINGS
from core.errors import DuetError
from core.records import to_dict
from encoders import model_store
from encoders.lake import replace_version, sequence_snapshots

KEYS = ("user_id", "event_timestamp")
CLICK, CONVERSION = "click_embedding", "conversion_embedding"
SHOWN = 3   # offending rows named in an error


@dataclass(frozen=True)
class ExternalEmbeddings:
    """A checked file: ``rows`` (user_id, event_timestamp as UTC microseconds, the vectors as float32
    lists), the widths, the snapshots it covers and the columns it ignored."""

    path: str
    rows: pa.Table
    click_dim: int
    conversion_dim: int | None
    snapshots: list[datetime]
    ignored: list[str]


def _where(table: pa.Table, mask: np.ndarray, limit: int = SHOWN) -> str:
    """The first offending rows: 'row 17 (user u1 at 2026-01-06T00:00:00+00:00)', ..."""
    rows = np.flatnonzero(mask)[:limit]
    users = table.column("user_id") if "user_id" in table.column_names else None
    times = table.column("event_timestamp") if "event_timestamp" in table.column_names else None
    shown = []
    for i in rows.tolist():
        user = users[i].as_py() if users is not None else None
        when = times[i].as_py() if times is not None else None
        at = when.isoformat() if isinstance(when, datetime) else when
        shown.append(f"row {i} (user {user} at {at})")
    more = f" and {int(mask.sum()) - len(rows)} more" if mask.sum() > len(rows) else ""
    return ", ".join(shown) + more


def _refuse(path: str, what: str) -> DuetError:
    return DuetError(f"{path}: {what}; nothing was written")


def _user_ids(path: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise _refuse(path, f"user_id must be a string column, got {column.type}")
    return column.cast(pa.string())


def _instants(path: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_timestamp(column.type):
        raise _refuse(path, "event_timestamp must be a timestamp column (the snapshot, UTC), "
                            f"got {column.type}")
    try:
        # A zone-aware column holds UTC instants already; a naive one is read as UTC (the contract's zone).
        return column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as e:
        raise _refuse(path, f"event_timestamp has values finer than a microsecond ({e})") from e


def _vectors(path: str, name: str, column: pa.ChunkedArray) -> pa.Array:
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) or \
            not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise _refuse(path, f"{name} must be a list of numbers, got {kind}")
    return column.combine_chunks().cast(pa.list_(pa.float32()))


def _check_vectors(path: str, table: pa.Table, name: str, vectors: pa.Array) -> int:
    """The column's one width; refuses nulls, non-finite values and ragged widths."""
    missing = vectors.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        raise _refuse(path, f"{int(missing.sum())} row(s) have a null {name}: {_where(table, missing)}")
    values = pc.list_flatten(vectors)
    parents = pc.list_parent_indices(vectors).to_numpy(zero_copy_only=False)
    for bad, what in ((values.is_null(), "null values inside"),
                      (pc.invert(pc.is_finite(values.fill_null(0.0))), "values that are not finite (NaN or "
                                                                          "infinite as 32-bit floats) in")):
        flags = bad.to_numpy(zero_copy_only=False)
        if flags.any():
            rows = np.zeros(len(table), bool)
            rows[parents[flags]] = True
            raise _refuse(path, f"{int(rows.sum())} row(s) have {what} {name}: {_where(table, rows)}")
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    widths, counts = np.unique(lengths, return_counts=True)
    if len(widths) > 1:
        found = ", ".join(f"{w} ({c} row(s))" for w, c in zip(widths.tolist(), counts.tolist(), strict=True))
        rare = widths[np.argmin(counts)]
        raise _refuse(path, f"{name} must have one width on every row; its {len(table)} rows have "
                            f"{len(widths)} widths: {found}; the rarest at {_where(table, lengths == rare)}")
    if widths[0] == 0:
        raise _refuse(path, f"{name} vectors are empty (width 0)")
    return int(widths[0])


def read_external(path: str) -> ExternalEmbeddings:
    """Read and check ``path`` (module docstring); raises ``DuetError`` naming the first problem."""
    file = Path(path)
    if not file.is_file():
        raise DuetError(f"embeddings file not found: {path}")
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as e:
        raise DuetError(f"cannot read {path} as Parquet: {e}") from e
    missing = [c for c in (*KEYS, CLICK) if c not in table.column_names]
    if missing:
        raise _refuse(path, f"missing column(s) {', '.join(missing)} (expected user_id, event_timestamp, "
                            "click_embedding and optionally conversion_embedding)")
    if table.num_rows == 0:
        raise _refuse(path, "no rows")
    ignored = [c for c in table.column_names if c not in (*KEYS, CLICK, CONVERSION)]
    users, times = _user_ids(path, table.column("user_id")), _instants(path, table.column("event_timestamp"))
    keys = pa.table({"user_id": users, "event_timestamp": times})
    for column in KEYS:
        nulls = keys.column(column).is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            raise _refuse(path, f"{int(nulls.sum())} row(s) have a null {column}: {_where(keys, nulls)}")
    columns = {"user_id": users, "event_timestamp": times}
    dims: dict[str, int | None] = {CONVERSION: None}
    for name in (CLICK, CONVERSION):
        if name in table.column_names:
            columns[name] = _vectors(path, name, table.column(name))
            dims[name] = _check_vectors(path, keys, name, columns[name])
    rows = pa.table(columns)
    counted = keys.group_by(list(KEYS)).aggregate([("user_id", "count")])
    twice = counted.filter(pc.greater(counted.column("user_id_count"), 1))
    if twice.num_rows:
        first = twice.slice(0, 1).to_pylist()[0]
        raise _refuse(path, f"{twice.num_rows} (user_id, event_timestamp) pair(s) appear more than once, "
                            f"e.g. user {first['user_id']} at {first['event_timestamp'].isoformat()}")
    snapshots = sorted(pc.unique(times.combine_chunks()).to_pylist())
    return ExternalEmbeddings(str(path), rows, dims[CLICK], dims[CONVERSION], snapshots, ignored)


def check_snapshots(lake: str, imported: ExternalEmbeddings) -> None:
    """Every ``event_timestamp`` is a snapshot of the lake's sequence tables."""
    known = set(sequence_snapshots(lake))
    if not known:
        raise DuetError(f"no sequence snapshots under {lake}: an imported embedding describes users at the "
                        "lake's snapshots; run `duet sequences` first")
    unknown = [t for t in imported.snapshots if t not in known]
    if unknown:
        times = imported.rows.column("event_timestamp")
        stray = pc.is_in(times, value_set=pa.array(unknown, times.type)).to_numpy(zero_copy_only=False)
        span = f"{min(known).isoformat()} .. {max(known).isoformat()}, {len(known)} snapshots"
        first = ", ".join(t.isoformat() for t in unknown[:3])
        raise _refuse(imported.path, f"{len(unknown)} event_timestamp value(s) are not snapshots of the "
                                     f"lake's sequence tables ({span}): {first}; {int(stray.sum())} row(s), "
                                     f"e.g. {_where(imported.rows, stray)}")


@dataclass(frozen=True)
class Landed:
    """What ``land`` wrote: the rows and snapshots of ``model_version``, its widths (conversion None: one
    embedding), the table version of the commit, and what the file held that was not landed."""

    model_version: str
    rows: int
    snapshots: int
    click_dim: int
    conversion_dim: int | None
    table_version: int
    replaced_an_earlier_import: bool
    ignored_columns: tuple[str, ...]

    def to_dict(self) -> dict:
        return to_dict(self)


def land(lake: str, model_version: str, imported: ExternalEmbeddings) -> Landed:
    """Write the version's record and its rows (one commit replacing every earlier row of the version);
    return what was landed."""
    model_store.check_external_name(model_version)
    created = datetime.now(UTC)
    n = imported.rows.num_rows
    conversion = (imported.rows.column(CONVERSION) if imported.conversion_dim
                  else pa.nulls(n, pa.list_(pa.float32())))
    rows = pa.table({
        "user_id": imported.rows.column("user_id"),
        "event_timestamp": imported.rows.column("event_timestamp"),
        "created_timestamp": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
        CLICK: imported.rows.column(CLICK), CONVERSION: conversion,
        "model_version": pa.array([model_version] * n, pa.string())})
    snapshots = [t.isoformat() for t in imported.snapshots]
    info = {"imported_at": created.isoformat(), "source": str(Path(imported.path).resolve()), "rows": n,
            "snapshots": snapshots}
    previous = model_store.write_external(lake, model_version, imported.click_dim, imported.conversion_dim,
                                          info)
    try:
        version = replace_version(lake, model_version, rows.select(USER_EMBEDDINGS.columns),
                                  {"model_version": model_version, **info})
    except BaseException:
        model_store.restore_external(lake, model_version, previous)
        raise
    return Landed(model_version, n, len(snapshots), imported.click_dim, imported.conversion_dim, version,
                  previous is not None, tuple(imported.ignored))
