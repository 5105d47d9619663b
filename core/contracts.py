"""The table contracts of ../shared/CONTRACTS.md, as plain data, in one place.

Every stage reads table locations, keys and columns from here so that a column is named and typed once.
A type is a string (``"timestamp"``, ``"array<float>"``, ...); ``core.spark.spark_schema`` turns a table
into a Spark schema and ``Table.arrow_schema`` into a pyarrow one. This module must stay cheap to import
for every consumer, Spark or not (encoders, Feast definitions): it never imports pyspark, pyarrow or any
other heavy library at module level, never imports a stage, and never starts Spark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from core.lake import Lake

if TYPE_CHECKING:
    import pyarrow

SCALAR_TYPES = ("string", "timestamp", "double", "float", "int", "long", "boolean")
ARRAY_TYPES = ("array<string>", "array<timestamp>", "array<float>", "array<boolean>")


@dataclass(frozen=True)
class Column:
    """One contract column: its name, type (one of ``SCALAR_TYPES`` or ``ARRAY_TYPES``) and nullability."""

    name: str
    type: str
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type not in SCALAR_TYPES + ARRAY_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}; "
                             f"use one of {', '.join(SCALAR_TYPES + ARRAY_TYPES)}")


@dataclass(frozen=True)
class Partition:
    """How a table is partitioned on disk: by ``column``, either one of its contract columns or, with
    ``generated`` (a Spark SQL expression over contract columns) and its ``type``, a column Delta computes
    on every write (a generated column). Layout, not contract: a reader filtering on the source column gets
    partition filters from Delta for free (``click_ts >= X`` prunes ``click_date`` folders)."""

    column: str
    generated: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Table:
    """A Delta table under the lake root: its relative path, key columns, columns in order, and the
    partitioning new tables get (``core.spark.create_table``; a table made before keeps its own)."""

    path: str
    key: tuple[str, ...]
    fields: tuple[Column, ...]
    partition: Partition | None = None

    def location(self, lake: str | Path) -> str:
        """The table's folder under ``lake`` (a local path or any Hadoop URI such as s3a://...), as
        ``core.lake.Lake.table`` gives it: one rule for every path under a lake."""
        return Lake(str(lake)).table(self)

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def arrow_schema(self) -> pyarrow.Schema:
        """The table as a pyarrow schema (what ``deltalake`` and other non-Spark readers see)."""
        import pyarrow as pa

        def arrow(type_name: str) -> pyarrow.DataType:
            if type_name.startswith("array<"):
                return pa.list_(arrow(type_name[len("array<"):-1]))
            # Microseconds in UTC: the contract's precision, and Spark 4.1 cannot read nanoseconds.
            return {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "double": pa.float64(),
                    "float": pa.float32(), "int": pa.int32(), "long": pa.int64(),
                    "boolean": pa.bool_()}[type_name]

        return pa.schema([pa.field(c.name, arrow(c.type), nullable=c.nullable) for c in self.fields])


def _columns(*specs: tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


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
    _columns(
        ("click_id", "string"),
        ("user_id", "string"),
        ("ad_id", "string"),
        ("advertiser_id", "string"),
        ("click_ts", "timestamp"),
    ),
    # Clicks are the dense stream: a day's snapshot needs only the click_lookback's days of them
    # (spark_jobs.sequences), so raw/clicks is partitioned by the UTC day of click_ts (the contract allows
    # extra columns). Conversions are sparse and read whole; their columns are fixed by the contract.
    Partition("click_date", generated="CAST(click_ts AS DATE)", type="date"),
)

RAW_CONVERSIONS = Table(
    "raw/conversions",
    ("conversion_id",),
    _columns(
        ("conversion_id", "string"),
        ("user_id", "string"),
        ("advertiser_id", "string"),
        ("conversion_type", "string"),
        ("conversion_ts", "timestamp"),
        ("report_ts", "timestamp"),
        ("attributed_click_id", "string", True),
        ("value", "double", True),
    ),
)

# Quarantine rows keep the original fields as strings (whatever could be split out of the record),
# the record itself as text when it could not be split, and why it was rejected. ``quarantine_id`` is a
# hash of (source, position, record) so that re-ingesting the same bad file adds nothing.
_QUARANTINE_TAIL = _columns(
    ("record", "string", True),
    ("reason", "string"),
    ("source", "string"),
    ("source_row", "long", True),
    ("ingested_at", "timestamp"),
    ("quarantine_id", "string"),
)
QUARANTINE_CLICKS = Table(
    "quarantine/clicks",
    ("quarantine_id",),
    _columns(*[(c, "string", True) for c in CLICK_COLUMNS]) + _QUARANTINE_TAIL,
)
QUARANTINE_CONVERSIONS = Table(
    "quarantine/conversions",
    ("quarantine_id",),
    _columns(*[(c, "string", True) for c in CONVERSION_COLUMNS]) + _QUARANTINE_TAIL,
)

CLICK_SEQUENCES = Table(
    "features/click_sequences",
    ("user_id", "snapshot_ts"),
    _columns(
        ("user_id", "string"),
        ("snapshot_ts", "timestamp"),
        ("ad_ids", "array<string>"),
        ("advertiser_ids", "array<string>"),
        ("click_ts", "array<timestamp>"),
        ("length", "int"),
    ),
    Partition("snapshot_ts"),
)

CONVERSION_SEQUENCES = Table(
    "features/conversion_sequences",
    ("user_id", "snapshot_ts"),
    _columns(
        ("user_id", "string"),
        ("snapshot_ts", "timestamp"),
        ("advertiser_ids", "array<string>"),
        ("conversion_types", "array<string>"),
        ("conversion_ts", "array<timestamp>"),
        ("attributed", "array<boolean>"),
        ("length", "int"),
    ),
    Partition("snapshot_ts"),
)

# Not in the shared contract: duet's record of how each snapshot of the two sequence tables was built, a
# log whose newest row per snapshot counts: the windows and caps (seconds, counts) and which sequence
# tables hold a complete build with them; ``duet sequences`` appends a row before its writes (no table)
# and one after both (both tables).
SEQUENCE_SNAPSHOTS = Table(
    "features/_snapshots",
    ("snapshot_ts", "updated_at"),
    _columns(
        ("snapshot_ts", "timestamp"),
        ("click_lookback_s", "long"),
        ("conversion_lookback_s", "long"),
        ("max_clicks", "int"),
        ("max_conversions", "int"),
        ("tables", "array<string>"),
        ("updated_at", "timestamp"),
        # What the build read: each raw table's Delta version and its commit stamp (ms since the epoch;
        # ``core.table_versions.pin``), so that the next snapshot can grow from this one
        # (``spark_jobs.sequences.incremental_base``). Null in records written before they were kept.
        ("raw_clicks_version", "long", True),
        ("raw_clicks_stamp", "long", True),
        ("raw_conversions_version", "long", True),
        ("raw_conversions_stamp", "long", True),
    ),
)

# Not in the shared contract: duet's ingest log, one row per input file ingested (appended only after the
# file's raw and quarantine commits), so that ingesting the same bytes again costs a checksum and this
# look-up instead of a Spark job over its rows (``spark_jobs.ingest_log``). A file is known by its content:
# ``sha256`` with ``kind`` and ``settings`` (JSON: format, parse rules, the Taobao attribution window);
# ``tables`` (JSON: contract path -> Delta table id) pins the tables its rows went to, ``by_table`` (JSON)
# its per-table figures. Two runs may log one file: any of its rows gives the same account.
INGEST_LOG = Table(
    "raw/_ingested",
    ("source", "sha256", "ingested_at"),
    _columns(
        ("source", "string"),
        ("kind", "string"),
        ("size", "long"),
        ("sha256", "string"),
        ("settings", "string"),
        ("read", "long"),
        ("ingested", "long"),
        ("already_present", "long"),
        ("quarantined", "long"),
        ("skipped", "long"),
        ("quarantine_added", "long"),
        ("by_table", "string"),
        ("tables", "string"),
        ("ingested_at", "timestamp"),
    ),
)

# event_timestamp is the snapshot the embedding was computed for (Feast's name for it);
# conversion_embedding is null for the single-embedding variants; model_version starts with the variant.
USER_EMBEDDINGS = Table(
    "embeddings/user_embeddings",
    ("user_id", "event_timestamp", "model_version"),
    _columns(
        ("user_id", "string"),
        ("event_timestamp", "timestamp"),
        ("created_timestamp", "timestamp"),
        ("click_embedding", "array<float>"),
        ("conversion_embedding", "array<float>", True),
        ("model_version", "string"),
    ),
    Partition("model_version"),
)

# The tables kept per snapshot, by path: the column that names a row's snapshot.
PER_SNAPSHOT = {CLICK_SEQUENCES.path: "snapshot_ts", CONVERSION_SEQUENCES.path: "snapshot_ts",
                SEQUENCE_SNAPSHOTS.path: "snapshot_ts",
                USER_EMBEDDINGS.path: "event_timestamp"}

# One row per click up to the label cutoff: the label as the contract defines it (attributed conversion
# within the attribution window, reported by label_cutoff) and whether it can still change (matured).
TRAINING_EXAMPLES = Table(
    "training/examples",
    ("click_id",),
    _columns(
        ("click_id", "string"),
        ("user_id", "string"),
        ("ad_id", "string"),
        ("advertiser_id", "string"),
        ("click_ts", "timestamp"),
        ("label", "int"),
        ("conversion_delay_s", "double", True),
        ("matured", "boolean"),
        ("label_cutoff", "timestamp"),
    ),
)

# The ranker's joined data: one row per (matured example, model version), the contract's columns first;
# ad_id and advertiser_id (the candidate) and the sequence summary features (point-in-time joined like
# the embeddings, null when no snapshot is within the ttl) follow.
TRAINING_SET = Table(
    "training/training_set",
    ("click_id", "model_version"),
    _columns(
        ("click_id", "string"),
        ("user_id", "string"),
        ("click_ts", "timestamp"),
        ("label", "int"),
        ("split", "string"),
        ("model_version", "string"),
        ("embedding_ts", "timestamp", True),
        ("click_embedding", "array<float>", True),
        ("conversion_embedding", "array<float>", True),
        ("ad_id", "string"),
        ("advertiser_id", "string"),
        ("click_count", "int", True),
        ("conversion_count", "int", True),
        ("clicks_7d", "int", True),
        ("conversions_7d", "int", True),
        ("hours_since_click", "float", True),
        ("hours_since_conversion", "float", True),
        ("attributed_share", "float", True),
    ),
)

# The recent window of the sequence summary's ``clicks_7d`` / ``conversions_7d`` (``feature_repo.sources``)
# and of the ranker's summary inputs (``ranker.data``). A count over a fixed window means the same on a
# lake's 10th day as on its 100th; the sequences' own lengths grow with the lake until their lookbacks
# (30 / 90 days) are full, and a ranker trained on a young lake's early days over-predicted its later ones.
SUMMARY_WINDOW = timedelta(days=7)

# The contract's label windows (CONTRACTS.md, label semantics: "defaults in brackets"): a conversion labels
# its click if it happened within ATTRIBUTION_WINDOW of it; the label is final REPORT_GRACE after that.
# Every config that uses them (ingest's Taobao attribution, the examples, the ranker's periods, the demo)
# takes its default from here.
ATTRIBUTION_WINDOW = timedelta(days=7)
REPORT_GRACE = timedelta(days=1)

RAW_TABLES = (RAW_CLICKS, RAW_CONVERSIONS)
QUARANTINE_TABLES = (QUARANTINE_CLICKS, QUARANTINE_CONVERSIONS)
# Every table of the lake, in the order data flows into them.
TABLES = (*RAW_TABLES, *QUARANTINE_TABLES, INGEST_LOG, CLICK_SEQUENCES, CONVERSION_SEQUENCES,
          SEQUENCE_SNAPSHOTS, USER_EMBEDDINGS, TRAINING_EXAMPLES, TRAINING_SET)
