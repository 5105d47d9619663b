"""duet demo: every stage end to end, idempotent on a re-run."""

from __future__ import annotations

import json

from deltalake import DeltaTable

from duet.cli import main as duet


def test_demo_reruns_idempotently(spark, demo_run, capsys):
    """The session's `make demo` run (tests/conftest.py), checked, then run again on the same workdir."""
    from tests.conftest import SMALL_DEMO_ARGS

    work, lake, report, _ = demo_run
    generated = report["generated"]
    clicks = report["ingest"][0]
    assert clicks["read"] == generated["clicks"] == clicks["ingested"]
    assert report["validation"]["success"] is True
    # Daily snapshots from the day after the first click to the day after the last: 20 days of data.
    assert report["snapshots"][0] == "2026-01-06T00:00:00+00:00" and len(report["snapshots"]) == 20
    sequences = report["sequences"]["features/click_sequences"]
    assert sequences["snapshots"] == 20 and sequences["rows"] > 300
    # Every variant pre-trained up to the pre-training period's end, then embedded the snapshots the
    # ranker's joins can reach and the latest (published) one.
    encoders = report["encoders"]
    assert encoders["train_until"] == report["periods"]["pretrain_until"]
    assert sorted(encoders["models"]) == ["click_only", "duet", "shared"]
    for variant, model in encoders["models"].items():
        assert model["model_version"].startswith(f"{variant}-")
        assert model["split"]["train_until"] <= encoders["train_until"]
        assert model["embedded"] > 300
    assert [t["table"] for t in report["validation"]["tables"]][-1] == "embeddings/user_embeddings"
    _assert_latest_duet_snapshot_is_online(work / "lake", report)
    assert DeltaTable(str(work / "lake/raw/conversions")).to_pyarrow_table().num_rows == \
        generated["conversions"]
    tables = ("raw/clicks", "raw/conversions")
    versions = {t: DeltaTable(str(work / "lake" / t)).version() for t in tables}
    metrics_before = json.loads((work / "report" / "metrics.json").read_text())
    capsys.readouterr()

    assert duet(["demo", "--workdir", str(work), *SMALL_DEMO_ARGS.split()]) == 0
    again = json.loads((work / "report" / "demo.json").read_text())
    _assert_latest_duet_snapshot_is_online(work / "lake", again)  # publishing again: the same rows
    # Training is deterministic on CPU: the same data gives the same model versions and the same NE.
    assert {v: m["model_version"] for v, m in again["encoders"]["models"].items()} == \
        {v: m["model_version"] for v, m in encoders["models"].items()}
    assert json.loads((work / "report" / "metrics.json").read_text()) == metrics_before
    assert again["ingest"][0]["ingested"] == 0
    assert again["ingest"][0]["already_present"] == generated["clicks"]
    # Nothing new: no commit at all on the raw tables, and not one changed row in the sequences.
    assert versions == {t: DeltaTable(str(work / "lake" / t)).version() for t in versions}
    for table in ("click_sequences", "conversion_sequences"):
        path = str(work / "lake" / "features" / table)
        latest = DeltaTable(path).version()
        changes = spark.read.format("delta").option("readChangeFeed", "true") \
            .option("startingVersion", latest).load(path)
        assert changes.count() == 0


def _assert_latest_duet_snapshot_is_online(lake, report) -> None:
    """The demo published its duet model's latest snapshot: the SQLite online store under lake/_feast
    returns exactly those Delta rows (what `DUET_LAKE=lake feast -c feature_repo serve` serves)."""
    from datetime import datetime

    import numpy as np

    from serving.online import SdkReader
    from serving.store import StoreConfig, feature_store

    version = report["encoders"]["models"]["duet"]["model_version"]
    snapshot = datetime.fromisoformat(report["snapshots"][-1])
    published = report["publish"]
    assert (published["model_version"], published["snapshot"]) == (version, snapshot.isoformat())
    rows = [r for r in DeltaTable(str(lake / "embeddings/user_embeddings")).to_pyarrow_table(
        filters=[("model_version", "=", version)]).to_pylist() if r["event_timestamp"] == snapshot]
    assert report["publish"]["users"] == len(rows) > 0
    reader = SdkReader(feature_store(StoreConfig(str(lake))))
    result = reader.read([r["user_id"] for r in rows], as_of=snapshot)
    assert result.error is None and not result.click_missing.any() and not result.conversion_missing.any()
    np.testing.assert_array_equal(result.click, np.array([r["click_embedding"] for r in rows], np.float32))
    np.testing.assert_array_equal(result.conversion,
                                  np.array([r["conversion_embedding"] for r in rows], np.float32))


def _sequence_users(lake) -> list[tuple[str, object]]:
    """(user, snapshot) pairs with a click or a conversion sequence."""
    pairs = set()
    for table in ("click_sequences", "conversion_sequences"):
        rows = DeltaTable(str(lake / "features" / table)).to_pyarrow_table(columns=["user_id", "snapshot_ts"])
        users, snapshots = rows.column("user_id").to_pylist(), rows.column("snapshot_ts").to_pylist()
        pairs |= set(zip(users, snapshots, strict=True))
    return sorted(pairs)


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
