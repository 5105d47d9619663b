"""``duet maintain`` (issue 25): OPTIMIZE changes no row and invalidates no record; VACUUM keeps what a
pending ``embed --changed-only`` reads, removes unreferenced files older than its retention, refuses a
retention too short for a pending read (naming it), and deletes nothing in a dry run. delta-rs's OPTIMIZE is
no change either, and the training set's record (on its newest commit that wrote rows) survives it.

One tiny lake: two sequence tables (a few rows of one snapshot, each append a file), an embedding run
recorded on the embeddings table, then a MERGE on the click sequences that the next ``--changed-only``
run of that snapshot must read from the change data feed, its change file made 4.5 hours old.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError
from core.lake import Lake
from core.spark import delta_identifier
from core.table_versions import content_version, pin, table_version, unchanged_since
from duet.cli import main as duet
from duet.maintain import maintain, plan_maintenance, reader_needs
from duet.stage_cache import StageCache
from encoders.lake import EmbeddingRun, changed_users, sequence_versions

SNAPSHOT = datetime(2026, 1, 14, tzinfo=UTC)
MODEL = "duet-0123456789ab"
HOUR = 3600


def _rows(spark, location: str) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.format("delta").load(location).collect())


def _files(root: str) -> set[str]:
    return {str(p) for p in Path(root).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("maintain") / "lake")
    lake = Lake(root)
    for table in (CLICK_SEQUENCES, CONVERSION_SEQUENCES):
        location = lake.table(table)
        spark.sql(f"CREATE TABLE {delta_identifier(location)} (user_id STRING, n INT, snapshot_ts TIMESTAMP) "
                  "USING delta PARTITIONED BY (snapshot_ts) "
                  "TBLPROPERTIES (delta.enableChangeDataFeed = true)")
        for user in ("u1", "u2"):                  # one small file each
            spark.createDataFrame([(user, 1, SNAPSHOT)], "user_id string, n int, snapshot_ts timestamp") \
                .coalesce(1).write.format("delta").mode("append").save(location)
    run = EmbeddingRun(SNAPSHOT, MODEL, sequence_versions(root), "full")
    write_deltalake(lake.table(USER_EMBEDDINGS), pa.table({"user_id": ["u1"], "model_version": [MODEL]}),
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": run.to_json()}))
    clicks = lake.table(CLICK_SEQUENCES)
    spark.sql(f"MERGE INTO {delta_identifier(clicks)} t USING (SELECT 'u2' AS user_id) s "
              "ON t.user_id = s.user_id WHEN MATCHED THEN UPDATE SET n = 2")
    [change] = Path(clicks, "_change_data").rglob("*.parquet")
    os.utime(change, (time.time() - 4.5 * HOUR,) * 2)          # the late conversion came 4.5 h ago
    orphan = Path(clicks, "part-00000-orphan.c000.snappy.parquet")    # a killed writer's file, 10 h old
    shutil.copy(next(Path(clicks).glob("snapshot_ts=*/*.parquet")), orphan)
    os.utime(orphan, (time.time() - 10 * HOUR,) * 2)
    return {"root": root, "run": run, "change": change, "orphan": orphan}


def test_a_retention_too_short_for_a_pending_change_feed_read_is_refused_naming_it(lake, capsys):
    root = lake["root"]
    [need] = reader_needs(Lake(root))
    assert (need.table, need.hours, need.since) == (CLICK_SEQUENCES.path, 6, lake["run"].sequence_versions[
        CLICK_SEQUENCES.path])                                 # 4.5 h rounded up, plus the margin
    by_table = {p.table: p.hours for p in plan_maintenance(root)}
    assert by_table[CLICK_SEQUENCES.path] == by_table[CONVERSION_SEQUENCES.path] == 168   # Delta's default
    assert {p.hours for p in plan_maintenance(root, 6)} == {6}
    reader = f"`duet embed --changed-only --snapshot {SNAPSHOT.isoformat()} --model-version {MODEL}`"
    with pytest.raises(DuetError, match=rf"retention of 5 h .*{re.escape(reader)} reads the change data feed "
                       rf"of {CLICK_SEQUENCES.path} from version {need.version}.*at least 6 h"):
        plan_maintenance(root, 5)
    # The command line refuses it before Spark starts, with the flag at fault.
    assert duet(["maintain", "--lake", root, "--retention-hours", "5"]) == 1
    error = capsys.readouterr().err
    assert "duet embed --changed-only" in error and "(see --retention-hours)" in error
    assert duet(["maintain", "--lake", root, "--table", "features/nope"]) == 1
    assert "not a duet table: features/nope" in capsys.readouterr().err


def test_vacuum_keeps_the_pending_read_and_removes_older_unreferenced_files_a_dry_run_nothing(spark, lake):
    root, clicks = lake["root"], Lake(lake["root"]).table(CLICK_SEQUENCES)
    rows, files, version = _rows(spark, clicks), _files(root), table_version(clicks)
    lines = []
    dry = maintain(spark, root, 6, dry_run=True, tables=[CLICK_SEQUENCES.path], log=lines.append)
    [table] = dry.tables
    assert table.vacuumed_files == 1 and table.vacuumed_bytes == lake["orphan"].stat().st_size
    assert _files(root) == files and table_version(clicks) == version        # nothing deleted, no commit
    assert "would remove 1 file(s)" in lines[0] and "duet embed --changed-only" in lines[0]

    report = maintain(spark, root, 6, tables=[CLICK_SEQUENCES.path], log=lines.append)
    [table] = report.tables
    assert (table.files_before, table.files_after) == (2, 1)     # a file per append (the MERGE rewrote one)
    assert (table.version_before, table.version_after) == (version, version + 3)   # OPTIMIZE, VACUUM x2
    assert table.vacuumed_files == 1 and not lake["orphan"].exists()        # older than 6 h, unreferenced
    assert lake["change"].exists() and _rows(spark, clicks) == rows
    users, _ = changed_users(root, SNAPSHOT, lake["run"].sequence_versions)
    assert users.to_pylist() == ["u2"]                                      # the pending read still works
    assert lines[-1].startswith(f"{CLICK_SEQUENCES.path}: files 2 -> 1, versions ")
    assert json.loads(report.to_json())["tables"][0]["vacuumed_files"] == 1


def test_optimize_and_vacuum_keep_rows_stage_records_and_the_gates_pins(spark, lake):
    root = lake["root"]
    location = Lake(root).table(CONVERSION_SEQUENCES)
    rows, content, pinned = _rows(spark, location), content_version(location), pin(location)
    cache = StageCache(Lake(root))
    cache.lookup("stage", {}, [location])                  # takes the key
    cache.store("stage", {"answer": 42}, [location])
    report = maintain(spark, root, 0, tables=[CONVERSION_SEQUENCES.path], log=lambda _: None)
    [table] = report.tables
    assert table.files_before == 2 and table.files_after == 1
    assert table.vacuumed_files == 2                       # OPTIMIZE's small files, unreferenced since
    assert _rows(spark, location) == rows
    assert table_version(location) == pinned[0] + 3 and content_version(location) == content
    assert unchanged_since(location, *pinned)              # the publish gate's earlier pass still holds
    assert cache.lookup("stage", {}, [location])["result"] == {"answer": 42}    # so does the stage record


def test_a_delta_rs_optimize_changes_no_rows_either_and_the_training_sets_record_survives(tmp_path):
    from ranker.data import training_set_record
    from ranker.splits import RECORD_KEY

    lake = str(tmp_path)
    location = Lake(lake).table(TRAINING_SET)
    record = {"model_versions": [MODEL]}
    for n in (1, 2):                                        # two small files, the record on the newest
        write_deltalake(location, pa.table({"n": [n]}), mode="append", commit_properties=CommitProperties(
            custom_metadata={"userMetadata": json.dumps({RECORD_KEY: record})}))
    content, pinned = content_version(location), pin(location)
    DeltaTable(location).optimize.compact()
    assert DeltaTable(location).history(1)[0]["operation"] == "OPTIMIZE"
    assert content_version(location) == content and unchanged_since(location, *pinned)
    assert training_set_record(lake) == record
