"""duet demo: the stages that exist, end to end, idempotent on a re-run."""

from __future__ import annotations

import json

from deltalake import DeltaTable

from duet.cli import main as duet


def test_demo_runs_and_reruns_idempotently(spark, tmp_path, capsys):
    args = ["demo", "--workdir", str(tmp_path), "--users", "200", "--days", "5", "--seed", "3"]
    assert duet(args) == 0
    report = json.loads((tmp_path / "report" / "demo.json").read_text())
    generated = report["generated"]
    clicks = report["ingest"][0]
    assert clicks["read"] == generated["clicks"] == clicks["ingested"]
    assert report["validation"]["success"] is True
    assert "pretrain" in report["not_built_yet"] and "sequences" not in report["not_built_yet"]
    # Daily snapshots from the day after the first click to the day after the last: 5 days of data.
    assert report["snapshots"][0] == "2026-01-06T00:00:00+00:00" and len(report["snapshots"]) == 5
    sequences = report["sequences"]["features/click_sequences"]
    assert sequences["snapshots"] == 5 and sequences["rows"] > 200  # most of 200 users, several snapshots
    assert DeltaTable(str(tmp_path / "lake/raw/conversions")).to_pyarrow_table().num_rows == \
        generated["conversions"]
    tables = ("raw/clicks", "raw/conversions")
    versions = {t: DeltaTable(str(tmp_path / "lake" / t)).version() for t in tables}
    capsys.readouterr()

    assert duet(args) == 0
    again = json.loads((tmp_path / "report" / "demo.json").read_text())
    assert again["ingest"][0]["ingested"] == 0
    assert again["ingest"][0]["already_present"] == generated["clicks"]
    # Nothing new: no commit at all on the raw tables, and not one changed row in the sequences.
    assert versions == {t: DeltaTable(str(tmp_path / "lake" / t)).version() for t in versions}
    for table in ("click_sequences", "conversion_sequences"):
        path = str(tmp_path / "lake" / "features" / table)
        latest = DeltaTable(path).version()
        changes = spark.read.format("delta").option("readChangeFeed", "true") \
            .option("startingVersion", latest).load(path)
        assert changes.count() == 0


def test_a_relative_lake_path_means_relative_to_the_callers_directory(spark, tmp_path, monkeypatch):
    from core.snapshots import daily_snapshots
    from duet.pipeline import validate
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import build_sequences

    monkeypatch.chdir(tmp_path)
    assert duet(["generate", "--out", "events", "--users", "50", "--days", "3"]) == 0
    ingest(spark, IngestConfig(lake="lake"), "events/clicks.parquet", "events/conversions.parquet")
    build_sequences(spark, "lake", daily_snapshots("2026-01-06", "2026-01-07"))
    report = validate(spark, "lake")
    assert report.success and len(report.tables) == 4
    assert (tmp_path / "lake" / "features" / "click_sequences" / "_delta_log").is_dir()
