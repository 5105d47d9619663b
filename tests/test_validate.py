"""duet validate: the raw-layer suites pass on generated data and name what a corruption breaks."""

from __future__ import annotations

import json
import shutil

import pytest

from duet.cli import main as duet
from duet.generate import GeneratorConfig, generate
from duet.quality.runner import validate_lake
from spark_jobs.ingest import IngestConfig, ingest


@pytest.fixture(scope="module")
def clean_lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    s = generate(GeneratorConfig(users=300, days=7, seed=5), root / "gen")
    ingest(spark, IngestConfig(lake=str(root / "lake")), s.clicks_path, s.conversions_path)
    return root / "lake"


def _copy(lake, tmp_path):
    target = tmp_path / "lake"
    shutil.copytree(lake, target)
    return target


def test_generated_lake_passes_and_results_are_written(spark, clean_lake):
    report = validate_lake(spark, str(clean_lake))
    assert report.success, report.summary()
    assert [t.table for t in report.tables] == ["raw/clicks", "raw/conversions"]
    assert all(t.evaluated >= 6 for t in report.tables)
    assert report.metrics["raw/conversions orphan rate"] == 0.0
    latest = json.loads((clean_lake / "_quality" / "latest.json").read_text())
    assert latest["success"] is True
    gx_result = json.loads(next((clean_lake / "_quality").glob("*/raw_conversions.json")).read_text())
    assert gx_result["success"] is True and len(gx_result["results"]) == report.tables[1].evaluated


def test_each_corruption_is_named(spark, clean_lake, tmp_path):
    lake = _copy(clean_lake, tmp_path)
    conv, clicks = f"delta.`{lake}/raw/conversions`", f"delta.`{lake}/raw/clicks`"
    first_id = "SELECT min(conversion_id) FROM {} WHERE attributed_click_id IS {}"
    first_attributed = spark.sql(first_id.format(conv, "NOT NULL")).first()[0]
    first_unattributed = spark.sql(first_id.format(conv, "NULL")).first()[0]
    spark.sql(f"UPDATE {conv} SET report_ts = conversion_ts - INTERVAL 1 HOUR "
              f"WHERE conversion_id = '{first_unattributed}'")
    spark.sql(f"UPDATE {conv} SET user_id = 'intruder' WHERE conversion_id = '{first_attributed}'")
    spark.sql(f"INSERT INTO {clicks} SELECT * FROM {clicks} LIMIT 1")
    last_click = spark.sql(f"SELECT max(click_id) FROM {clicks}").first()[0]
    spark.sql(f"UPDATE {clicks} SET click_ts = current_timestamp() + INTERVAL 30 DAYS "
              f"WHERE click_id = '{last_click}'")

    report = validate_lake(spark, str(lake))
    failed = {t.table: t.failed for t in report.tables}
    assert not report.success
    assert len(failed["raw/clicks"]) == 2
    assert "raw/clicks: click_id is unique" in failed["raw/clicks"]
    assert any("click_ts within" in d and "no future events" in d for d in failed["raw/clicks"])
    assert len(failed["raw/conversions"]) == 2
    assert "report_ts >= conversion_ts" in failed["raw/conversions"][0]
    assert "same user and precedes" in failed["raw/conversions"][1]


def test_orphan_rate_over_the_threshold_fails_and_is_reported(spark, clean_lake, tmp_path):
    lake = _copy(clean_lake, tmp_path)
    spark.sql(f"DELETE FROM delta.`{lake}/raw/clicks` WHERE hash(click_id) % 4 = 0")
    report = validate_lake(spark, str(lake))
    rate = report.metrics["raw/conversions orphan rate"]
    assert 0.1 < rate < 0.4
    (conv,) = [t for t in report.tables if t.table == "raw/conversions"]
    assert conv.failed == [d for d in conv.failed if "orphans" in d] and len(conv.failed) == 1


def test_cli_exits_non_zero_naming_the_expectation(spark, clean_lake, tmp_path, capsys):
    lake = _copy(clean_lake, tmp_path)
    table = f"delta.`{lake}/raw/conversions`"
    spark.sql(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1")
    assert duet(["validate", "--lake", str(lake)]) == 1
    captured = capsys.readouterr()
    assert "FAIL raw/conversions" in captured.out
    assert captured.err.strip().count("\n") == 0
    assert "raw/conversions: conversion_id is unique" in captured.err
    assert duet(["validate", "--lake", str(clean_lake)]) == 0
