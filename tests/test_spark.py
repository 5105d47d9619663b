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


def test_the_driver_start_options_name_the_class_archive_quoted_or_not_at_all(tmp_path, monkeypatch):
    from core.spark import driver_start_options

    monkeypatch.setenv("DUET_CLASS_ARCHIVE", str(tmp_path / "missing.jsa"))
    assert driver_start_options() == []                       # not built: nothing to map
    monkeypatch.setenv("DUET_CLASS_ARCHIVE", "")
    assert driver_start_options() == []                       # turned off
    spaced = tmp_path / "a dir" / "classes.jsa"
    spaced.parent.mkdir()
    spaced.write_bytes(b"x")
    monkeypatch.setenv("DUET_CLASS_ARCHIVE", str(spaced))
    # Spark splits the options string at spaces except inside quotes.
    assert driver_start_options()[0] == f"'-XX:SharedArchiveFile={spaced}'"
    quoted = tmp_path / "it's" / "classes.jsa"
    quoted.parent.mkdir()
    quoted.write_bytes(b"x")
    monkeypatch.setenv("DUET_CLASS_ARCHIVE", str(quoted))
    assert driver_start_options() == []


@pytest.mark.integration
def test_a_new_driver_maps_sparks_classes_from_the_archive_setup_built(tmp_path):
    """scripts/setup.sh built the archive for this environment; a driver that spark_session starts maps
    it: most of Spark's classes come from it, not from their jars (about 60%: the rest are classes made
    at run time, lambdas and generated code; a mismatch after an upgrade would silently load every one
    from the jars again, and none would come from the archive)."""
    import os
    import subprocess
    import sys

    from core.spark import class_archive
    from tests.conftest import REPO, SHORT_RUN_ENV

    if os.environ.get("DUET_CLASS_ARCHIVE") == "":
        pytest.skip("DUET_CLASS_ARCHIVE is empty: the archive is turned off")
    assert class_archive() is not None, "no class archive: run scripts/setup.sh"
    log = tmp_path / "classes.log"
    code = ("from core.spark import spark_session; "
            "spark_session(master='local[1]', conf={'spark.ui.enabled': 'false'}).range(3).count()")
    env = {**SHORT_RUN_ENV,
           "SPARK_SUBMIT_OPTS": f"{SHORT_RUN_ENV['SPARK_SUBMIT_OPTS']} -Xlog:class+load=info:file={log}"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    spark_classes = [line for line in log.read_text().splitlines() if " org.apache.spark." in line]
    shared = [line for line in spark_classes if "source: shared objects file" in line]
    assert len(spark_classes) > 3000 and len(shared) > 0.5 * len(spark_classes), \
        f"{len(shared)} of {len(spark_classes)} Spark classes from the archive"
