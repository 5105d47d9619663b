"""duet validate: the raw-layer suites pass on generated data and name what a corruption breaks."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import core.quality
from core.contracts import RAW_CLICKS, RAW_CONVERSIONS
from core.quality import view_name
from core.snapshots import daily_snapshots
from duet.cli import main as duet
from duet.generate import GeneratorConfig, generate
from duet.validation import validate
from spark_jobs.ingest import IngestConfig, ingest
from spark_jobs.sequences import build_sequences


@pytest.fixture(scope="module")
def clean_lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    s = generate(GeneratorConfig(users=300, days=7, seed=5), root / "gen")
    ingest(spark, IngestConfig(lake=str(root / "lake")), s.clicks_path, s.conversions_path)
    build_sequences(spark, str(root / "lake"), daily_snapshots("2026-01-07", "2026-01-09"))
    return root / "lake"


def _copy(lake, tmp_path):
    target = tmp_path / "lake"
    shutil.copytree(lake, target)
    return target


@pytest.fixture(scope="module")
def first_pass(spark, clean_lake):
    """``duet validate``'s default on the clean lake before any pass: every table, whole. Its results stay
    in the lake, so the copies later tests take hold this pass."""
    assert not (clean_lake / "_quality").exists()
    return validate(spark, str(clean_lake), new_only=True)


def test_generated_lake_passes_and_results_are_written(first_pass, clean_lake):
    report = first_pass
    assert report.success, report.summary()
    assert [t.table for t in report.tables] == ["raw/clicks", "raw/conversions", "features/click_sequences",
                                                "features/conversion_sequences"]
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

    report = validate(spark, str(lake), tables=["raw/clicks", "raw/conversions"])
    failed = {t.table: t.failed for t in report.tables}
    assert list(failed) == ["raw/clicks", "raw/conversions"] and not report.success
    assert len(failed["raw/clicks"]) == 2
    assert "raw/clicks: click_id is unique" in failed["raw/clicks"]
    assert any("click_ts within" in d and "no future events" in d for d in failed["raw/clicks"])
    assert len(failed["raw/conversions"]) == 2
    assert "report_ts >= conversion_ts" in failed["raw/conversions"][0]
    assert "same user and precedes" in failed["raw/conversions"][1]
    # The query checks (core.quality.no_rows, counted once) decide as GX's UnexpectedRowsExpectation
    # does, on the same rows, and a failed one keeps the offending rows.
    # (The copied lake may hold the clean lake's results too: read this run's, not any run's.)
    gx_result = json.loads(Path(report.results_dir, "raw_conversions.json").read_text())
    ours = {r["expectation_config"]["description"]: r for r in gx_result["results"]
            if r["expectation_config"]["type"] == "expect_query_to_return_no_rows"}
    assert len(ours) == 2
    (intruder,) = [r for d, r in ours.items() if "same user and precedes" in d]
    assert intruder["result"]["observed_value"] == 1
    assert intruder["result"]["details"]["unexpected_rows"][0]["user_id"] == "intruder"
    assert _gx_reference(spark, lake, RAW_CONVERSIONS) == {
        d: (r["success"], r["result"]["observed_value"]) for d, r in ours.items()}


def _gx_reference(spark, lake, table):
    """The table's suite with GX's own UnexpectedRowsExpectation for its no_rows checks (and nothing else):
    (success, rows) by description."""
    from core.quality import Suite, validate_lake
    from spark_jobs import quality
    from tests.reference_quality import gx_reference

    (suite,) = [s for s in quality.suites_for(quality.QualityConfig(now=datetime.now(UTC)),
                                              {RAW_CLICKS.path, table.path}) if s.table == table]
    checks = gx_reference(Suite(table, [e for e in suite.expectations if hasattr(e, "unexpected_rows_query")],
                                suite.needs))
    report = validate_lake(spark, str(lake), lambda *_: [checks])
    gx_result = json.loads(Path(report.results_dir, f"{view_name(table)}.json").read_text())
    return {r["expectation_config"]["description"]: (r["success"], r["result"]["observed_value"])
            for r in gx_result["results"]}


def test_orphan_rate_over_the_threshold_fails_and_is_reported(spark, clean_lake, tmp_path):
    lake = _copy(clean_lake, tmp_path)
    spark.sql(f"DELETE FROM delta.`{lake}/raw/clicks` WHERE hash(click_id) % 4 = 0")
    report = validate(spark, str(lake), tables=["raw/conversions"])  # its check reads raw/clicks
    rate = report.metrics["raw/conversions orphan rate"]
    assert 0.1 < rate < 0.4
    (conv,) = [t for t in report.tables if t.table == "raw/conversions"]
    assert conv.failed == [d for d in conv.failed if "orphans" in d] and len(conv.failed) == 1


def test_cli_exits_non_zero_naming_the_expectation(spark, clean_lake, tmp_path, capsys):
    lake = _copy(clean_lake, tmp_path)
    table = f"delta.`{lake}/raw/conversions`"
    spark.sql(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1")
    assert duet(["validate", "--lake", str(lake), "--table", "raw/conversions"]) == 1
    captured = capsys.readouterr()
    assert "FAIL raw/conversions" in captured.out and "raw/clicks" not in captured.out
    assert captured.err.strip().count("\n") == 0
    assert "raw/conversions: conversion_id is unique" in captured.err
    assert duet(["validate", "--lake", str(clean_lake), "--table", "raw/conversions"]) == 0
    capsys.readouterr()
    # A name that is not a duet table, or one the lake does not hold: a one-line error, nothing validated.
    assert duet(["validate", "--lake", str(clean_lake), "--table", "raw/click"]) == 1
    assert "not a duet table: raw/click" in capsys.readouterr().err
    assert duet(["validate", "--lake", str(clean_lake), "--table", "embeddings/user_embeddings"]) == 1
    assert "no table embeddings/user_embeddings under" in capsys.readouterr().err
    assert duet(["validate", "--lake", str(clean_lake), "--table", "features/_snapshots"]) == 1
    assert "no suite checks features/_snapshots" in capsys.readouterr().err


def test_by_default_only_what_no_earlier_pass_covers_is_checked(spark, clean_lake, first_pass, tmp_path,
                                                                capsys):
    first = first_pass                                       # no pass before it: every table, whole
    lake = _copy(clean_lake, tmp_path)                       # with that pass's results
    sequences = ["features/click_sequences", "features/conversion_sequences"]
    assert first.success and first.unchanged == {}
    assert [t.where for t in first.tables] == [None] * 4

    again = validate(spark, str(lake), new_only=True)       # nothing changed: nothing checked
    assert again.tables == [] and set(again.unchanged) == {"raw/clicks", "raw/conversions", *sequences}
    assert again.unchanged["features/click_sequences"] == "3 of 3 snapshot(s) unchanged since a pass"

    new_day = datetime(2026, 1, 10, tzinfo=UTC)
    build_sequences(spark, str(lake), [new_day])            # a new snapshot; raw unchanged
    third = validate(spark, str(lake), new_only=True)
    assert [t.table for t in third.tables] == sequences
    assert all(set(t.snapshot_files[t.table]) == {new_day.isoformat()} for t in third.tables)
    assert third.unchanged["features/click_sequences"] == "3 of 4 snapshot(s) unchanged since a pass"

    clicks = f"delta.`{lake}/raw/clicks`"                     # a late click, an old snapshot rebuilt
    user = spark.sql(f"SELECT min(user_id) FROM {clicks}").first()[0]
    spark.sql(f"INSERT INTO {clicks} (click_id, user_id, ad_id, advertiser_id, click_ts) "
              f"VALUES ('late-1', '{user}', 'ad1', 'adv1', TIMESTAMP '2026-01-07 12:00:00')")
    rebuilt = datetime(2026, 1, 8, tzinfo=UTC)
    build_sequences(spark, str(lake), [rebuilt])
    fourth = validate(spark, str(lake), new_only=True)
    assert fourth.success, fourth.summary()
    checked = {t.table: set(t.snapshot_files.get(t.table, {})) for t in fourth.tables}
    assert checked == {"raw/clicks": set(), "raw/conversions": set(),   # its orphan check reads raw/clicks
                       "features/click_sequences": {rebuilt.isoformat()},
                       "features/conversion_sequences": {rebuilt.isoformat()}}   # its settings row is new

    table = f"delta.`{lake}/raw/conversions`"                # a raw row added: that table checked again
    spark.sql(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1")
    assert duet(["validate", "--lake", str(lake)]) == 1
    out = capsys.readouterr().out
    assert "FAIL raw/conversions" in out and "SKIP raw/clicks: no row changed since a pass" in out
    assert "SKIP features/click_sequences: 4 of 4 snapshot(s)" in out      # rows added to raw: still held
    assert duet(["validate", "--lake", str(lake), "--all", "--table", "raw/clicks"]) == 0
    assert "PASS raw/clicks" in capsys.readouterr().out
    assert duet(["validate", "--lake", str(lake), "--all", "--snapshot", "2026-01-08"]) == 1


def test_rows_added_to_a_raw_table_since_a_pass_are_checked_alone_and_decide_as_every_row_would(
        spark, clean_lake, first_pass, tmp_path, monkeypatch):
    lake = _copy(clean_lake, tmp_path)                       # with the first pass: every row checked
    clicks, conv = f"delta.`{lake}/raw/clicks`", f"delta.`{lake}/raw/conversions`"
    raw = ["raw/clicks", "raw/conversions"]
    a, b = (r.user_id for r in spark.sql(f"SELECT DISTINCT user_id FROM {clicks} ORDER BY 1 LIMIT 2")
            .collect())

    def insert_conversion(cid: str, user: str, click: str) -> None:
        spark.sql(f"INSERT INTO {conv} (conversion_id, user_id, advertiser_id, conversion_type, "
                  "conversion_ts, report_ts, attributed_click_id, value) "
                  f"VALUES ('{cid}', '{user}', 'adv1', 'purchase', "
                  f"TIMESTAMP '2026-01-07 12:00:00', TIMESTAMP '2026-01-07 13:00:00', '{click}', NULL)")

    def insert_click(cid: str, user: str) -> None:
        spark.sql(f"INSERT INTO {clicks} (click_id, user_id, ad_id, advertiser_id, click_ts) "
                  f"VALUES ('{cid}', '{user}', 'ad1', 'adv1', TIMESTAMP '2026-01-07 11:00:00')")

    # A day's worth: one new click, one conversion attributed to a click that has not arrived (an orphan).
    insert_click("new-1", a)
    insert_conversion("conv-1", a, "late-click")
    second = validate(spark, str(lake), tables=raw, new_only=True)
    assert second.success, second.summary()
    first_pins = {t.table: t.versions[t.table] for t in first_pass.tables}
    assert {t.table: (t.rows, t.rows_since) for t in second.tables} == {
        "raw/clicks": (1, first_pins["raw/clicks"]), "raw/conversions": (1, first_pins["raw/conversions"])}
    assert "the rows added since version" in second.summary()

    # The late click arrives for another user, with a new conversion: the old conversion now names a
    # click of someone else. The cross-table check reads every conversion, not only the one added.
    insert_click("late-click", b)
    insert_conversion("conv-2", a, "new-1")
    # And a click whose key an old click has: unique within the rows added, not within the table.
    old_click = spark.sql(f"SELECT min(click_id) FROM {clicks}").first()[0]
    insert_click(old_click, a)
    third = validate(spark, str(lake), tables=raw, new_only=True)
    assert {t.table: (t.rows, t.rows_since) for t in third.tables} == {
        "raw/clicks": (2, second.tables[0].versions["raw/clicks"]),
        "raw/conversions": (1, second.tables[1].versions["raw/conversions"])}
    failed = {t.table: t.failed for t in third.tables}
    assert failed == {"raw/clicks": ["raw/clicks: click_id is unique"],
                      "raw/conversions": [next(d for d in failed["raw/conversions"] if "same user" in d)]}
    # The same verdicts as checking every row (``duet validate --all``).
    every_row = validate(spark, str(lake), tables=raw)
    assert {t.table: t.failed for t in every_row.tables} == failed
    assert all(t.rows_since is None and t.where is None for t in every_row.tables)
    # A failed run extends nothing: the next run checks the rows added since the last pass again.
    fourth = validate(spark, str(lake), tables=raw, new_only=True)
    assert [(t.rows, t.rows_since) for t in fourth.tables] == [(t.rows, t.rows_since) for t in third.tables]
    # More rows added than the uniqueness check broadcasts: that table's every row, the same verdicts.
    monkeypatch.setattr(core.quality, "BROADCAST_ROWS", 1)
    fifth = validate(spark, str(lake), tables=raw, new_only=True)
    assert {t.table: (t.rows_since, t.failed) for t in fifth.tables} == {
        "raw/clicks": (None, failed["raw/clicks"]),
        "raw/conversions": (third.tables[1].rows_since, failed["raw/conversions"])}


def test_sequence_corruptions_are_named(spark, clean_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(clean_lake, lake)
    clicks, conv = f"delta.`{lake}/features/click_sequences`", f"delta.`{lake}/features/conversion_sequences`"
    # One row's arrays out of order, another's misaligned with its length.
    spark.sql(f"UPDATE {clicks} SET click_ts = reverse(click_ts) WHERE length > 1 AND user_id = "
              f"'{spark.sql(f'SELECT min(user_id) FROM {clicks} WHERE length > 1').first()[0]}'")
    spark.sql(f"UPDATE {clicks} SET length = length + 1 WHERE user_id = "
              f"'{spark.sql(f'SELECT max(user_id) FROM {clicks}').first()[0]}'")
    # A conversion that the platform only learned of after the snapshot, put in its user's sequence.
    late = spark.sql("SELECT r.user_id, r.advertiser_id, r.conversion_type, "
                     "unix_micros(r.conversion_ts) AS us "
                     f"FROM delta.`{lake}/raw/conversions` r JOIN {conv} s ON r.user_id = s.user_id "
                     "AND s.snapshot_ts = timestamp'2026-01-09' WHERE r.report_ts >= timestamp'2026-01-09' "
                     "AND r.conversion_ts < timestamp'2026-01-09' LIMIT 1").first()
    assert late is not None, "the generated data should have conversions reported after a snapshot"
    spark.sql(f"UPDATE {conv} SET advertiser_ids = array('{late.advertiser_id}'), "
              f"conversion_types = array('{late.conversion_type}'), "
              f"conversion_ts = array(timestamp_micros({late.us})), attributed = array(false), length = 1 "
              f"WHERE snapshot_ts = timestamp'2026-01-09' AND user_id = '{late.user_id}'")
    sequences = ["features/click_sequences", "features/conversion_sequences"]
    failed = {t.table: t.failed for t in validate(spark, str(lake), tables=sequences).tables}
    assert list(failed) == sequences
    assert sorted(failed["features/click_sequences"]) == [
        "features/click_sequences: arrays aligned, each as long as length",
        "features/click_sequences: click_ts ascending"]
    assert failed["features/conversion_sequences"] == [
        "features/conversion_sequences: no conversion reported at or after the snapshot "
        "(checked against raw/conversions)"]


def test_a_pass_on_part_of_a_snapshot_covers_no_snapshot(spark, clean_lake, tmp_path):
    """The publish gate checks one model version's rows of a snapshot; a later ``duet validate`` must still
    check the snapshot's other rows, so such a pass covers no snapshot (``checked_snapshots``). A pass on
    the whole snapshot covers it. (The gate's filter is stood in for by a filter on users.)"""
    from dataclasses import replace

    from core.quality import checked_snapshots, present_tables, snapshot_filter, validate_lake
    from spark_jobs.quality import QualityConfig, suites_for

    lake = _copy(clean_lake, tmp_path)
    shutil.rmtree(lake / "_quality", ignore_errors=True)   # earlier passes, when other tests ran first
    now = datetime.now(UTC)
    properties = present_tables(str(lake))
    snapshot = datetime(2026, 1, 8, tzinfo=UTC)

    def suite(where: str | None = None):   # built anew for each run: GX keeps an expectation to one suite
        [found] = [s for s in suites_for(QualityConfig(now=now), set(properties), properties)
                   if s.table.path == "features/click_sequences"]
        return found if where is None else replace(found, where=where, snapshots=(snapshot,))

    whole = snapshot_filter("snapshot_ts", [snapshot])
    part = suite(f"{whole} AND user_id < 'u5'")
    assert validate_lake(spark, str(lake), lambda *_: [part], now=now).success
    assert checked_snapshots(str(lake), suite()) == set()
    assert validate_lake(spark, str(lake), lambda *_: [suite(whole)], now=now + timedelta(seconds=1)).success
    assert checked_snapshots(str(lake), suite()) == {snapshot}
