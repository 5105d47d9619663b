"""Sequence table rows -> encoder inputs and pre-training targets, in Arrow (no table I/O here).

``join_sequences`` puts one snapshot's click and conversion sequence rows side by side, one row per user
who has either (the input layout of ``encoders.batch``). ``add_targets`` adds what happened after the
snapshot, read from *later snapshots of the same sequence tables*, which hold exactly what the platform
knew at those times:

* clicked advertisers in ``[T, T + horizon)``: the clicks of the click sequence at ``T + horizon`` with
  ``click_ts >= T``;
* conversions in ``[T, T + horizon)`` reported before the label cutoff ``C = T + horizon + grace``: the
  conversions of the conversion sequence at ``C`` with ``T <= conversion_ts < T + horizon`` (a row of
  snapshot ``C`` holds only conversions with ``report_ts < C``).

Target lists hold distinct advertisers, oldest to most recent (by each advertiser's latest event), like
the sequences. Arrow joins cannot carry list columns, so joins run on keys with row indices and rows are
gathered with ``take``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from core.times import micros
from encoders.batch import CLICK_COLUMNS, CONVERSION_COLUMNS, INPUT_SCHEMA, TARGET_SCHEMA


def _indexed_keys(table: pa.Table, name: str) -> pa.Table:
    return pa.table({"user_id": table.column("user_id"), name: pa.array(range(table.num_rows), pa.int64())})


def join_sequences(clicks: pa.Table, conversions: pa.Table, snapshot: datetime) -> pa.Table:
    """One snapshot's rows of both sequence tables -> the input layout, one row per user, by user_id.

    ``clicks`` has ``user_id`` and the click sequence columns, ``conversions`` ``user_id`` and the
    conversion sequence columns (other columns are ignored).
    """
    keys = _indexed_keys(clicks, "_c").join(_indexed_keys(conversions, "_v"), "user_id",
                                            join_type="full outer").sort_by("user_id")
    click_rows = clicks.take(keys.column("_c"))
    conversion_rows = conversions.take(keys.column("_v"))
    columns = {"user_id": keys.column("user_id"),
               "snapshot_ts": pa.array([snapshot] * keys.num_rows, INPUT_SCHEMA.field("snapshot_ts").type)}
    columns |= {dst: click_rows.column(src) for src, dst in CLICK_COLUMNS.items()}
    columns |= {dst: conversion_rows.column(src) for src, dst in CONVERSION_COLUMNS.items()}
    return pa.table(columns).cast(INPUT_SCHEMA)


def _events(rows: pa.Table, advertisers: str, times: str) -> pa.Table:
    """Sequence rows -> one row per event: (user_id, advertiser, ts as int64 microseconds)."""
    rows = rows.combine_chunks()  # parent indices of a chunked list column would be per chunk
    parents = pc.list_parent_indices(rows.column(advertisers))
    return pa.table({
        "user_id": rows.column("user_id").take(parents),
        "advertiser": pc.list_flatten(rows.column(advertisers)),
        "ts": pc.list_flatten(rows.column(times)).cast(pa.int64()),
    })


def _distinct_recent(events: pa.Table, lo: datetime, hi: datetime, name: str) -> pa.Table:
    """Events with ``lo <= ts < hi`` -> (user_id, ``name``: distinct advertisers, ordered by their latest
    event)."""
    lo_us, hi_us = micros(lo), micros(hi)
    ts = events.column("ts")
    events = events.filter(pc.and_(pc.greater_equal(ts, lo_us), pc.less(ts, hi_us)))
    latest = events.group_by(["user_id", "advertiser"], use_threads=False).aggregate([("ts", "max")])
    latest = latest.sort_by([("user_id", "ascending"), ("ts_max", "ascending"), ("advertiser", "ascending")])
    lists = latest.group_by("user_id", use_threads=False).aggregate([("advertiser", "list")])
    return lists.rename_columns(["user_id", name])


def add_targets(inputs: pa.Table, future_clicks: pa.Table, cutoff_conversions: pa.Table, snapshot: datetime,
                horizon: timedelta) -> pa.Table:
    """``inputs`` (input layout, snapshot ``T``) + the ``TARGET_SCHEMA`` columns.

    ``future_clicks``: click sequence rows of snapshot ``T + horizon``; ``cutoff_conversions``:
    conversion sequence rows of the label cutoff snapshot. Users without future events get empty
    target lists and ``target_converts = False``.
    """
    end = snapshot + horizon
    clicked = _distinct_recent(_events(future_clicks, "advertiser_ids", "click_ts"), snapshot, end,
                               "target_click_advertisers")
    converted = _distinct_recent(_events(cutoff_conversions, "advertiser_ids", "conversion_ts"), snapshot,
                                 end, "target_conversion_advertisers")
    keys = _indexed_keys(inputs, "_i")
    click_idx = keys.join(_indexed_keys(clicked, "_t"), "user_id", join_type="left outer").sort_by("_i")
    conv_idx = keys.join(_indexed_keys(converted, "_t"), "user_id", join_type="left outer").sort_by("_i")
    empty = pa.scalar([], pa.list_(pa.string()))
    click_targets = clicked.column("target_click_advertisers").take(click_idx.column("_t"))
    conv_targets = converted.column("target_conversion_advertisers").take(conv_idx.column("_t"))
    targets = pa.table({
        "target_click_advertisers": pc.fill_null(click_targets, empty),
        "target_conversion_advertisers": pc.fill_null(conv_targets, empty),
        "target_converts": pc.fill_null(pc.greater(pc.list_value_length(conv_targets), 0), False),
    }).cast(TARGET_SCHEMA)
    for field in targets.schema:
        inputs = inputs.append_column(field, targets.column(field.name))
    return inputs
