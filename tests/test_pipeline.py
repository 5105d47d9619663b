"""Pipeline paths: a relative lake path. The demo end to end and its idempotent re-run are in
tests/test_demo.py."""

from __future__ import annotations

from duet.cli import main as duet


def test_a_relative_lake_path_means_relative_to_the_callers_directory(spark, tmp_path, monkeypatch):
    from core.snapshots import daily_snapshots
    from duet.validation import validate
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import build_sequences

    monkeypatch.chdir(tmp_path)
    assert duet(["generate", "--out", "events", "--users", "50", "--days", "3"]) == 0
    ingest(spark, IngestConfig(lake="lake"), "events/clicks.parquet", "events/conversions.parquet")
    build_sequences(spark, "lake", daily_snapshots("2026-01-06", "2026-01-07"))
    # Two suites whose cross-table checks read other tables (raw/clicks, raw/conversions) by the same path.
    report = validate(spark, "lake", tables=["raw/conversions", "features/conversion_sequences"])
    assert report.success and len(report.tables) == 2
    assert (tmp_path / "lake" / "features" / "click_sequences" / "_delta_log").is_dir()
