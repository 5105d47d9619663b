"""The table contracts of ../shared/CONTRACTS.md, in one place.

Every stage reads table locations and schemas from here so that a column is named and typed once.
Schemas are given as Spark ``StructType`` (what jobs write) and as ``pyarrow`` schemas (what the event
generator writes and what non-Spark readers such as ``deltalake`` see). This module must never import a
stage package or start Spark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyspark.sql import types as T


@dataclass(frozen=True)
class Table:
    """A Delta table under the lake root: its relative path, key columns and Spark schema."""

    path: str
    key: tuple[str, ...]
    schema: T.StructType

    def location(self, lake: str | Path) -> str:
        """The table's folder under ``lake`` (a local path or any Hadoop URI such as s3a://...).

        A relative local path is made absolute against this process's working directory: Spark would
        resolve it against the JVM's, and Delta's SQL ``delta.`path``` does not take relative paths.
        """
        root = str(lake).rstrip("/")
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root}/{self.path}"

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _struct(*fields: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(n, t, nullable) for n, t, nullable in fields])


_S, _TS, _D = T.StringType(), T.TimestampType(), T.DoubleType()

CLICK_COLUMNS = ("click_id", "user_id", "ad_id", "advertiser_id", "click_ts")
CONVERSION_COLUMNS = (
    "conversion_id",
    "user_id",
    "advertiser_id",
    "conversion_type",
    "conversion_ts",
    "report_ts",
    "attributed_click_id",
    "value",
)

RAW_CLICKS = Table(
    "raw/clicks",
    ("click_id",),
    _struct(
        ("click_id", _S, False),
        ("user_id", _S, False),
        ("ad_id", _S, False),
        ("advertiser_id", _S, False),
        ("click_ts", _TS, False),
    ),
)

RAW_CONVERSIONS = Table(
    "raw/conversions",
    ("conversion_id",),
    _struct(
        ("conversion_id", _S, False),
        ("user_id", _S, False),
        ("advertiser_id", _S, False),
        ("conversion_type", _S, False),
        ("conversion_ts", _TS, False),
        ("report_ts", _TS, False),
        ("attributed_click_id", _S, True),
        ("value", _D, True),
    ),
)

# Quarantine rows keep the original fields as strings (whatever could be split out of the record),
# the record itself as text when it could not be split, and why it was rejected. ``quarantine_id`` is a
# hash of (source, position, record) so that re-ingesting the same bad file adds nothing.
_QUARANTINE_TAIL = (
    ("record", _S, True),
    ("reason", _S, False),
    ("source", _S, False),
    ("source_row", T.LongType(), True),
    ("ingested_at", _TS, False),
    ("quarantine_id", _S, False),
)
QUARANTINE_CLICKS = Table(
    "quarantine/clicks",
    ("quarantine_id",),
    _struct(*[(c, _S, True) for c in CLICK_COLUMNS], *_QUARANTINE_TAIL),
)
QUARANTINE_CONVERSIONS = Table(
    "quarantine/conversions",
    ("quarantine_id",),
    _struct(*[(c, _S, True) for c in CONVERSION_COLUMNS], *_QUARANTINE_TAIL),
)

CLICK_SEQUENCES = Table(
    "features/click_sequences",
    ("user_id", "snapshot_ts"),
    _struct(
        ("user_id", _S, False),
        ("snapshot_ts", _TS, False),
        ("ad_ids", T.ArrayType(_S), False),
        ("advertiser_ids", T.ArrayType(_S), False),
        ("click_ts", T.ArrayType(_TS), False),
        ("length", T.IntegerType(), False),
    ),
)

CONVERSION_SEQUENCES = Table(
    "features/conversion_sequences",
    ("user_id", "snapshot_ts"),
    _struct(
        ("user_id", _S, False),
        ("snapshot_ts", _TS, False),
        ("advertiser_ids", T.ArrayType(_S), False),
        ("conversion_types", T.ArrayType(_S), False),
        ("conversion_ts", T.ArrayType(_TS), False),
        ("attributed", T.ArrayType(T.BooleanType()), False),
        ("length", T.IntegerType(), False),
    ),
)

RAW_TABLES = (RAW_CLICKS, RAW_CONVERSIONS)
QUARANTINE_TABLES = (QUARANTINE_CLICKS, QUARANTINE_CONVERSIONS)

# Input files in the raw layout: what `duet generate` writes and `duet ingest` reads. Timestamps are
# microseconds in UTC because Spark 4.1 cannot read Parquet nanosecond timestamps (pandas' default).
_TS_ARROW = pa.timestamp("us", tz="UTC")
CLICKS_ARROW = pa.schema(
    [
        ("click_id", pa.string()),
        ("user_id", pa.string()),
        ("ad_id", pa.string()),
        ("advertiser_id", pa.string()),
        ("click_ts", _TS_ARROW),
    ]
)
CONVERSIONS_ARROW = pa.schema(
    [
        ("conversion_id", pa.string()),
        ("user_id", pa.string()),
        ("advertiser_id", pa.string()),
        ("conversion_type", pa.string()),
        ("conversion_ts", _TS_ARROW),
        ("report_ts", _TS_ARROW),
        ("attributed_click_id", pa.string()),
        ("value", pa.float64()),
    ]
)
