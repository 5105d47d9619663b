"""When the demo may reuse a stage's result (duet.stage_cache), and every change that makes it run again."""

from __future__ import annotations

import pyarrow as pa
from deltalake import write_deltalake

from core.lake import Lake
from core.table_versions import content_version, pin, table_version, unchanged_since
from duet import stage_cache
from duet.stage_cache import StageCache


def _rows(*users: str) -> pa.Table:
    return pa.table({"user_id": list(users), "n": list(range(len(users)))})


def test_a_merge_that_changes_no_row_leaves_the_content_version_and_what_was_read(spark, tmp_path):
    from delta.tables import DeltaTable

    location = str(tmp_path / "t")
    write_deltalake(location, _rows("a", "b"))
    assert content_version(location) == 0
    first = pin(location)
    assert first[0] == 0 and pin(str(tmp_path / "none")) is None

    def merge(rows: pa.Table) -> None:
        (DeltaTable.forPath(spark, location).alias("t")
         .merge(spark.createDataFrame(rows.to_pandas()).alias("s"), "t.user_id = s.user_id")
         .whenMatchedUpdateAll(condition="NOT (t.n <=> s.n)").whenNotMatchedInsertAll().execute())

    merge(_rows("a", "b"))                    # rewrites files, changes nothing
    assert (table_version(location), content_version(location)) == (1, 0)
    no_op = pin(location)
    assert no_op[0] == 1 and unchanged_since(location, *first)    # version 0's rows are still the content
    assert not unchanged_since(location, 0, first[1] + 1)         # another table's version 0
    merge(pa.table({"user_id": ["a"], "n": [7]}))
    assert (table_version(location), content_version(location)) == (2, 2)
    assert not unchanged_since(location, *first) and not unchanged_since(location, *no_op)
    updated = pin(location)
    assert updated[0] == 2 and unchanged_since(location, *updated)
    write_deltalake(location, _rows("c"), mode="append")
    assert content_version(location) == 3
    assert not unchanged_since(location, *updated)
    assert not unchanged_since(location, 9, first[1])             # a version the table never had
    assert content_version(str(tmp_path / "none")) is None
    assert not unchanged_since(str(tmp_path / "none"), *first)


def test_a_stage_is_reused_only_while_nothing_it_depends_on_changed(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    read, wrote = str(lake / "in"), str(lake / "out")
    write_deltalake(read, _rows("a"))
    write_deltalake(wrote, _rows("x"))
    (lake / "_models/m").mkdir(parents=True)
    settings = {"seed": 1}

    def succeed() -> None:
        cache = StageCache(Lake(str(lake)))
        assert cache.lookup("train", settings, [read]) is None
        cache.store("train", {"model": "m"}, [wrote, str(lake / "_models/m")])

    def reused(**kw) -> bool:
        return StageCache(Lake(str(lake)), **kw).lookup("train", settings, [read]) is not None

    succeed()
    assert StageCache(Lake(str(lake))).lookup("train", settings, [read])["result"] == {"model": "m"}
    assert not reused(force=True)
    assert StageCache(Lake(str(lake))).lookup("train", {"seed": 2}, [read]) is None       # other settings
    assert StageCache(Lake(str(lake))).lookup("other", settings, [read]) is None          # another stage

    write_deltalake(read, _rows("b"), mode="append")                                # an input changed
    assert not reused()
    succeed()
    write_deltalake(wrote, _rows("y"), mode="append")                               # its output was written
    assert not reused()
    succeed()
    (lake / "_models/m").rmdir()                                                    # its checkpoint is gone
    assert not reused()
    (lake / "_models/m").mkdir()
    assert reused()
    monkeypatch.setattr(stage_cache, "code_fingerprint", lambda: "edited")          # the code changed
    assert not reused()
    monkeypatch.undo()
    assert reused()
    for damaged in ("{", "[]", '{"key": 1}'):                                        # not our record: run
        (lake / "_stages/train.json").write_text(damaged)
        assert not reused()


def test_the_code_fingerprint_covers_every_package_of_the_project():
    # A package the fingerprint missed would let a stage reuse results its edited code no longer gives.
    packages = {p.parent.name for p in stage_cache.REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(stage_cache.CODE_PACKAGES)
    assert len(stage_cache.code_fingerprint()) == 64


def test_the_code_fingerprint_is_the_same_from_the_zip_spark_submit_ships(tmp_path):
    # infra/submit.sh puts the packages on sys.path as a zip: reading sources with Path(__file__) failed
    # there (the cluster test's daily died at validate) and rglob found no file, leaving the code out.
    import subprocess
    import sys
    import zipfile

    shipped = tmp_path / "duet_jobs.zip"
    with zipfile.ZipFile(shipped, "w") as archive:
        for package in stage_cache.CODE_PACKAGES:
            for path in (stage_cache.REPO / package).rglob("*"):
                archive.write(path, path.relative_to(stage_cache.REPO))
    probe = ("import duet.stage_cache as s, core.quality as q; assert '.zip' in s.__file__; "
             "print(s.code_fingerprint()); print(len(q.source('core', 'quality.py')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(shipped), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    fingerprint, size = result.stdout.split()
    assert fingerprint == stage_cache.code_fingerprint()
    assert int(size) == (stage_cache.REPO / "core" / "quality.py").stat().st_size


def test_sequence_records_are_each_snapshots_latest_settings_not_when_they_were_written(tmp_path):
    from datetime import UTC, datetime

    from core.contracts import SEQUENCE_SNAPSHOTS

    lake = Lake(str(tmp_path))
    assert stage_cache.sequence_records(lake) == []
    t = datetime(2026, 1, 6, tzinfo=UTC)

    def record(tables: list[str], minute: int) -> pa.Table:
        return pa.table({"snapshot_ts": [t], "click_lookback_s": [60], "conversion_lookback_s": [90],
                         "max_clicks": [64], "max_conversions": [16],
                         "tables": pa.array([tables], pa.list_(pa.string())),
                         "updated_at": [datetime(2026, 2, 1, 0, minute, tzinfo=UTC)]})

    location = lake.table(SEQUENCE_SNAPSHOTS)
    write_deltalake(location, record([], 1))
    write_deltalake(location, record(["features/click_sequences"], 2), mode="append")
    first = stage_cache.sequence_records(lake)
    assert len(first) == 1 and "features/click_sequences" in first[0][-1]
    write_deltalake(location, record([], 3), mode="append")          # a new run: incomplete again
    write_deltalake(location, record(["features/click_sequences"], 4), mode="append")
    assert stage_cache.sequence_records(lake) == first               # same settings, later rows
    write_deltalake(location, record([], 5), mode="append")          # a run that died half-way
    assert stage_cache.sequence_records(lake) != first


def test_a_checkpoint_added_or_changed_changes_what_validation_is_keyed_on(tmp_path):
    lake = tmp_path / "lake"
    assert stage_cache.checkpoint_configs(Lake(str(lake))) == {}
    (lake / "_models/duet-1234567").mkdir(parents=True)
    (lake / "_models/duet-1234567/config.json").write_text('{"dim": 64}')
    first = stage_cache.checkpoint_configs(Lake(str(lake)))
    assert list(first) == ["duet-1234567"]
    (lake / "_models/shared-7654321").mkdir()
    (lake / "_models/shared-7654321/config.json").write_text('{"dim": 64}')
    second = stage_cache.checkpoint_configs(Lake(str(lake)))
    assert second != first
    (lake / "_models/duet-1234567/config.json").write_text('{"dim": 32}')
    assert stage_cache.checkpoint_configs(Lake(str(lake))) not in (first, second)
