"""The contracts as plain data give the Spark and Arrow schemas ../shared/CONTRACTS.md fixes (no Spark)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from core.arrow_schemas import CLICKS_ARROW, CONVERSIONS_ARROW
from core.contracts import (
    CONVERSION_SEQUENCES,
    QUARANTINE_CLICKS,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    TABLES,
    USER_EMBEDDINGS,
    Column,
)
from core.spark import spark_schema

S, TS = T.StringType(), T.TimestampType()


def test_spark_schemas_keep_names_types_and_nullability():
    assert spark_schema(RAW_CONVERSIONS) == T.StructType([
        T.StructField("conversion_id", S, False), T.StructField("user_id", S, False),
        T.StructField("advertiser_id", S, False), T.StructField("conversion_type", S, False),
        T.StructField("conversion_ts", TS, False), T.StructField("report_ts", TS, False),
        T.StructField("attributed_click_id", S, True), T.StructField("value", T.DoubleType(), True)])
    assert spark_schema(CONVERSION_SEQUENCES) == T.StructType([
        T.StructField("user_id", S, False), T.StructField("snapshot_ts", TS, False),
        T.StructField("advertiser_ids", T.ArrayType(S), False),
        T.StructField("conversion_types", T.ArrayType(S), False),
        T.StructField("conversion_ts", T.ArrayType(TS), False),
        T.StructField("attributed", T.ArrayType(T.BooleanType()), False),
        T.StructField("length", T.IntegerType(), False)])
    tail = spark_schema(QUARANTINE_CLICKS).fields[len(RAW_CLICKS.fields):]
    assert [(f.name, f.dataType, f.nullable) for f in tail] == [
        ("record", S, True), ("reason", S, False), ("source", S, False), ("source_row", T.LongType(), True),
        ("ingested_at", TS, False), ("quarantine_id", S, False)]


def test_user_embeddings_as_contracted():
    assert USER_EMBEDDINGS.path == "embeddings/user_embeddings"
    assert USER_EMBEDDINGS.key == ("user_id", "event_timestamp", "model_version")
    assert USER_EMBEDDINGS.arrow_schema() == pa.schema([
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("created_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("click_embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("conversion_embedding", pa.list_(pa.float32()), nullable=True),
        pa.field("model_version", pa.string(), nullable=False)])
    assert spark_schema(USER_EMBEDDINGS)["click_embedding"].dataType == T.ArrayType(T.FloatType())


def test_every_table_key_is_among_its_columns_and_paths_are_unique():
    for table in TABLES:
        assert set(table.key) <= set(table.columns), table.path
        assert len(set(table.columns)) == len(table.columns), table.path
    assert len({t.path for t in TABLES}) == len(TABLES)


def test_input_file_schemas_are_the_raw_columns_all_nullable():
    for arrow, table in ((CLICKS_ARROW, RAW_CLICKS), (CONVERSIONS_ARROW, RAW_CONVERSIONS)):
        assert arrow.names == table.columns
        assert all(f.nullable for f in arrow)
    assert CONVERSIONS_ARROW.field("value").type == pa.float64()
    assert CLICKS_ARROW.field("click_ts").type == pa.timestamp("us", tz="UTC")


def test_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown type 'array<int>'"):
        Column("x", "array<int>")
