"""The SparkSession factory: Delta and UTC everywhere, user settings honoured, conflicts refused."""

from __future__ import annotations

import datetime as dt

import pytest

from core.errors import DuetError
from core.spark import delta_jars, parse_conf, spark_session


def test_session_is_utc_with_delta(spark, tmp_path):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
    assert spark.sparkContext._jvm.java.util.TimeZone.getDefault().getID() == "UTC"
    # A naive timestamp string means UTC, whatever the machine's zone.
    row = spark.sql("SELECT unix_timestamp(timestamp'2026-01-05 00:00:00') AS s").first()
    assert row.s == int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())
    spark.range(3).write.format("delta").save(str(tmp_path / "t"))
    assert spark.read.format("delta").load(str(tmp_path / "t")).count() == 3


def test_active_session_is_reused(spark):
    assert spark_session() is spark


def test_user_conf_from_the_command_line(spark):
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"  # set by the tests' fixture
    assert parse_conf(["a.b=1", "c= x=y"]) == {"a.b": "1", "c": " x=y"}
    with pytest.raises(DuetError, match="key=value"):
        parse_conf(["novalue"])
    with pytest.raises(DuetError, match="conflicts"):
        spark_session(conf={"spark.sql.session.timeZone": "Europe/Paris"})


def test_delta_jars_are_cached_locally():
    jars = delta_jars()
    assert any("delta-spark_4.1_2.13" in j for j in jars), "run scripts/setup.sh to fetch the Delta jars"
