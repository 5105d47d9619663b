"""Sequence features per snapshot: contract semantics on hand-made events, DuckDB parity, idempotence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from core.contracts import RAW_CLICKS, RAW_CONVERSIONS
from core.errors import DuetError
from core.snapshots import daily_snapshots
from core.spark import spark_schema
from duet.generate import GeneratorConfig, generate
from spark_jobs.delta_io import insert_new
from spark_jobs.sequences import (
    SequenceConfig,
    build_sequences,
    click_sequences,
    conversion_sequences,
    relevant_clicks,
)
from tests.conftest import REPO, SHORT_RUN_ENV
from tests.reference_sequences import reference_sequences

T = datetime(2026, 1, 10, tzinfo=UTC)          # the snapshot of the hand-made cases
NOON = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)  # a snapshot at a non-midnight instant


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def _write_raw(spark, lake: Path, clicks: list[tuple], conversions: list[tuple]) -> None:
    for table, rows in ((RAW_CLICKS, clicks), (RAW_CONVERSIONS, conversions)):
        spark.createDataFrame(rows, spark_schema(table)).write.format("delta").mode("overwrite") \
            .save(table.location(lake))


def _rows(lake: Path, table: str) -> dict[tuple[str, datetime], dict]:
    records = DeltaTable(str(lake / "features" / table)).to_pyarrow_table().to_pylist()
    return {(r["user_id"], r["snapshot_ts"]): r for r in records}


CFG = SequenceConfig(click_lookback=timedelta(days=3), conversion_lookback=timedelta(days=5),
                     max_clicks=3, max_conversions=2)


@pytest.fixture(scope="module")
def hand_made(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("seq") / "lake"
    clicks = [
        # user a: boundaries of the window [T - 3 days, T)
        ("a1", "a", "ad1", "adv1", _ts("2026-01-07 00:00:00")),   # exactly T - lookback: in
        ("a2", "a", "ad2", "adv1", _ts("2026-01-10 00:00:00")),   # exactly T: out
        ("a3", "a", "ad3", "adv2", _ts("2026-01-06 23:59:59.999999")),  # just before the window: out
        # user b: more clicks than max_clicks, two at the same instant (id order)
        ("b1", "b", "ad1", "adv1", _ts("2026-01-08 01:00:00")),
        ("b2", "b", "ad2", "adv1", _ts("2026-01-08 02:00:00")),
        ("b4", "b", "ad4", "adv1", _ts("2026-01-09 05:00:00")),
        ("b3", "b", "ad3", "adv1", _ts("2026-01-09 05:00:00")),
        ("b5", "b", "ad5", "adv3", _ts("2026-01-10 12:00:00")),   # only in the 12:30 snapshot
    ]
    conversions = [
        # user a: converted before T but reported after T: out of T, in at 12:30
        ("va1", "a", "adv1", "purchase", _ts("2026-01-09 10:00:00"), _ts("2026-01-10 08:00:00"), "a1", 5.0),
        # user a: reported exactly at T: out of T
        ("va2", "a", "adv1", "lead", _ts("2026-01-09 11:00:00"), _ts("2026-01-10 00:00:00"), None, None),
        # user c: only conversions, unattributed; three of them with a cap of two; one too old
        ("vc1", "c", "adv2", "purchase", _ts("2026-01-04 23:00:00"), _ts("2026-01-05 01:00:00"), None, 1.0),
        ("vc2", "c", "adv2", "install", _ts("2026-01-05 00:00:00"), _ts("2026-01-05 00:00:00"), None, None),
        ("vc4", "c", "adv3", "purchase", _ts("2026-01-08 00:00:00"), _ts("2026-01-08 00:01:00"), "x", 2.0),
        ("vc3", "c", "adv4", "lead", _ts("2026-01-08 00:00:00"), _ts("2026-01-09 00:00:00"), None, None),
    ]
    _write_raw(spark, lake, clicks, conversions)
    build_sequences(spark, str(lake), [T, NOON], CFG)
    return lake


def test_click_window_boundaries(hand_made):
    rows = _rows(hand_made, "click_sequences")
    a = rows[("a", T)]
    assert list(a["ad_ids"]) == ["ad1"] and a["length"] == 1          # T - lookback in, T out, earlier out
    assert [t.isoformat() for t in a["click_ts"]] == ["2026-01-07T00:00:00+00:00"]
    # At 12:30 the click at exactly T (00:00) is known; the window now starts 01-07 12:30.
    assert list(rows[("a", NOON)]["ad_ids"]) == ["ad2"]


def test_most_recent_kept_in_ascending_time_then_id_order(hand_made):
    rows = _rows(hand_made, "click_sequences")
    b = rows[("b", T)]
    # b1, b2, b3, b4 qualify; b3 and b4 share an instant so id orders them; the last 3 are kept.
    assert list(b["ad_ids"]) == ["ad2", "ad3", "ad4"] and b["length"] == 3
    assert list(b["advertiser_ids"]) == ["adv1"] * 3
    assert list(rows[("b", NOON)]["ad_ids"]) == ["ad3", "ad4", "ad5"]


def test_conversions_known_only_once_reported(hand_made):
    rows = _rows(hand_made, "conversion_sequences")
    assert ("a", T) not in rows                                       # reported at 08:00 and at T exactly
    a = rows[("a", NOON)]
    assert list(a["conversion_types"]) == ["purchase", "lead"] and list(a["attributed"]) == [True, False]


def test_users_with_only_conversions_unattributed_and_capped(hand_made):
    clicks, conversions = _rows(hand_made, "click_sequences"), _rows(hand_made, "conversion_sequences")
    assert ("c", T) not in clicks
    c = conversions[("c", T)]
    # vc1 is older than T - 5 days; vc2 is exactly at it; vc3/vc4 share an instant: id order; cap 2.
    assert list(c["advertiser_ids"]) == ["adv4", "adv3"] and list(c["attributed"]) == [False, True]
    assert [t.isoformat() for t in c["conversion_ts"]] == ["2026-01-08T00:00:00+00:00"] * 2
    assert c["length"] == 2


def test_tables_are_partitioned_with_change_data_feed_and_settings_per_snapshot(spark, hand_made):
    from spark_jobs.sequences import complete_snapshots

    for table in ("click_sequences", "conversion_sequences"):
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{hand_made}/features/{table}`").first()
        assert detail["partitionColumns"] == ["snapshot_ts"]
        assert detail["properties"]["delta.enableChangeDataFeed"] == "true"
    # The windows and caps each snapshot was built with, recorded once both tables hold it.
    assert complete_snapshots(spark, str(hand_made)) == {T: CFG, NOON: CFG}


@pytest.fixture(scope="module")
def generated_lake(spark, tmp_path_factory):
    """About 1M generated clicks written as the raw tables."""
    root = tmp_path_factory.mktemp("seqgen")
    s = generate(GeneratorConfig(users=18_000, days=14, seed=21), root / "events")
    assert s.clicks >= 1_000_000
    lake = root / "lake"
    for path, table in ((s.clicks_path, RAW_CLICKS), (s.conversions_path, RAW_CONVERSIONS)):
        spark.read.parquet(path).write.format("delta").save(table.location(lake))
    return lake


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("snapshot_ts", "ascending")])


@pytest.mark.slow
def test_spark_equals_the_duckdb_reference_on_a_million_clicks(spark, generated_lake):
    snapshots = daily_snapshots("2026-01-08", "2026-01-13") + [_ts("2026-01-16 07:45:00")]
    cfg = SequenceConfig(click_lookback=timedelta(days=7), conversion_lookback=timedelta(days=10))
    build_sequences(spark, str(generated_lake), snapshots[:5], cfg)      # one pass over the raw tables
    for before, snapshot in zip(snapshots[4:], snapshots[5:], strict=False):   # each grown from the last
        report = build_sequences(spark, str(generated_lake), [snapshot], cfg)
        assert {r["built"] for r in report.values()} == {f"grown from {before:%Y-%m-%d %H:%M}"}, report
    expected = reference_sequences(str(generated_lake), snapshots, 7 * 86400, 10 * 86400, 64, 16)
    for name, want in expected.items():
        got = _sorted(DeltaTable(str(generated_lake / "features" / name)).to_pyarrow_table())
        got = pa.Table.from_batches(got.to_batches())  # plain (not view) string types, like DuckDB's
        want = want.cast(got.schema)
        assert got.num_rows == want.num_rows > 30_000
        assert got.equals(want), name
    capped = expected["click_sequences"].column("length").to_pylist()
    assert max(capped) == 64 and min(capped) == 1


def test_a_day_grows_from_the_day_before_exactly_unless_events_came_late(spark, tmp_path):
    """One snapshot grows from the complete one before it when no event known before that one has reached
    the raw tables since it was built (``incremental_base``); the rows equal a build from the raw tables.
    A late click or a late report makes the next snapshot be built from the raw tables, and says so."""
    lake, P, S = tmp_path / "lake", T, T + timedelta(days=1)
    clicks = [
        ("a1", "a", "ad1", "adv1", _ts("2026-01-07 12:00:00")),   # in P's window, out of S's
        ("a2", "a", "ad2", "adv1", _ts("2026-01-08 00:00:00")),   # exactly S - lookback: in both
        ("a3", "a", "ad3", "adv2", _ts("2026-01-09 00:00:00")),
        ("c1", "c", "ad1", "adv1", _ts("2026-01-07 01:00:00")),   # c: nothing left at S
        ("d0", "d", "ad5", "adv1", _ts("2026-01-10 01:00:00")),   # known before P was built, after P
    ]
    conversions = [
        ("va1", "a", "adv1", "purchase", _ts("2026-01-09 10:00:00"), _ts("2026-01-09 12:00:00"), "a3", 5.0),
        ("ve1", "e", "adv2", "lead", _ts("2026-01-05 10:00:00"), _ts("2026-01-06 00:00:00"), None, None),
        ("ve2", "e", "adv2", "lead", _ts("2026-01-08 10:00:00"), _ts("2026-01-08 11:00:00"), None, None),
    ]
    _write_raw(spark, lake, clicks, conversions)
    report = build_sequences(spark, str(lake), [P], CFG)
    assert report["features/click_sequences"]["built"].startswith("from the raw tables: no complete snapshot")

    def insert(table, rows):
        insert_new(spark, table, str(lake), spark.createDataFrame(rows, spark_schema(table)))

    insert(RAW_CLICKS, [
        ("a4", "a", "ad4", "adv1", _ts("2026-01-10 00:00:00")),   # exactly P: in S, after a's old clicks
        ("a5", "a", "ad5", "adv3", _ts("2026-01-10 05:00:00")),   # a: 4 clicks in S's window, cap 3
        ("b2", "b", "ad2", "adv1", _ts("2026-01-10 07:00:00")),   # b: new, two at one instant (id order)
        ("b1", "b", "ad1", "adv2", _ts("2026-01-10 07:00:00")),
        ("x1", "x", "ad1", "adv1", _ts("2026-01-11 00:00:00")),   # exactly S: out
    ])
    insert(RAW_CONVERSIONS, [
        # a: reported after P, happened before a's conversion of P: ordered before it
        ("va0", "a", "adv1", "lead", _ts("2026-01-09 09:00:00"), _ts("2026-01-10 02:00:00"), None, None),
        ("vf1", "f", "adv1", "lead", _ts("2026-01-10 09:00:00"), _ts("2026-01-11 00:00:00"), None, None),
    ])
    report = build_sequences(spark, str(lake), [S], CFG)
    assert {r["built"] for r in report.values()} == {"grown from 2026-01-10 00:00"}
    grown = {name: _rows(lake, name) for name in ("click_sequences", "conversion_sequences")}
    assert [grown["click_sequences"][(u, S)]["ad_ids"] for u in ("a", "b", "d")] == [
        ["ad3", "ad4", "ad5"], ["ad1", "ad2"], ["ad5"]]
    assert ("c", S) not in grown["click_sequences"] and ("x", S) not in grown["click_sequences"]
    assert ("f", S) not in grown["conversion_sequences"]
    assert grown["conversion_sequences"][("a", S)]["conversion_types"] == ["lead", "purchase"]
    assert grown["conversion_sequences"][("e", S)]["conversion_ts"] == [_ts("2026-01-08 10:00:00")]
    # The same snapshot built from the raw tables: not a row differs.
    for name, build, raw in (("click_sequences", click_sequences, RAW_CLICKS),
                             ("conversion_sequences", conversion_sequences, RAW_CONVERSIONS)):
        build(spark.read.format("delta").load(raw.location(lake)), [S], CFG).write.format("delta") \
            .save(str(tmp_path / "raw-built" / "features" / name))
        assert _rows(tmp_path / "raw-built", name) == {k: r for k, r in grown[name].items() if k[1] == S}

    # A click before S and a conversion reported before S, ingested after S was built.
    insert(RAW_CLICKS, [("g1", "g", "ad1", "adv1", _ts("2026-01-10 12:00:00"))])
    insert(RAW_CONVERSIONS, [
        ("vg1", "g", "adv1", "lead", _ts("2026-01-10 09:00:00"), _ts("2026-01-10 23:00:00"), None, None)])
    later = S + timedelta(days=1)
    report = build_sequences(spark, str(lake), [later], CFG)
    assert {r["built"] for r in report.values()} == {
        "from the raw tables: raw/clicks gained rows known before 2026-01-11 00:00 since it was built (late "
        "events; 1 file(s) added since); raw/conversions gained rows known before 2026-01-11 00:00 since it "
        "was built (late events; 1 file(s) added since)"}
    assert _rows(lake, "click_sequences")[("g", later)]["ad_ids"] == ["ad1"]
    assert _rows(lake, "conversion_sequences")[("g", later)]["conversion_types"] == ["lead"]


def test_a_snapshot_reads_only_the_click_days_its_window_needs(spark, tmp_path):
    """raw/clicks as ingest creates it is partitioned by click_date (generated from click_ts), and the
    window's filter on click_ts becomes a partition filter: a snapshot reads its lookback's days only."""
    lake = str(tmp_path / "lake")
    clicks = [(f"c{d}", "u1", "ad1", "adv1", _ts(f"2026-01-{d:02d} 10:00:00")) for d in range(1, 15)]
    conversions = [("v1", "u1", "adv1", "purchase", _ts("2026-01-09 12:00:00"), _ts("2026-01-09 13:00:00"),
                    "c9", None)]
    insert_new(spark, RAW_CLICKS, lake, spark.createDataFrame(clicks, spark_schema(RAW_CLICKS)))
    insert_new(spark, RAW_CONVERSIONS, lake,
               spark.createDataFrame(conversions, spark_schema(RAW_CONVERSIONS)))
    assert DeltaTable(RAW_CLICKS.location(lake)).metadata().partition_columns == ["click_date"]

    events = spark.read.format("delta").load(RAW_CLICKS.location(lake))
    window = relevant_clicks(events, [T], CFG)                    # [T - 3 days, T): Jan 7, 8 and 9
    plan = window._jdf.queryExecution().executedPlan().toString()
    assert "click_date" in plan.split("PartitionFilters: ")[1].split("]")[0], plan
    days = sorted({f.split("click_date=")[1][:10] for f in window.inputFiles()})
    assert days == ["2026-01-07", "2026-01-08", "2026-01-09"]

    report = build_sequences(spark, lake, [T], CFG)["features/click_sequences"]
    assert report["files_read"] == len(window.inputFiles()) < report["files"] == len(events.inputFiles())
    row = DeltaTable(f"{lake}/features/click_sequences").to_pyarrow_table().to_pylist()
    assert [r["ad_ids"] for r in row] == [["ad1"] * 3]
    assert [t.day for t in row[0]["click_ts"]] == [7, 8, 9]


def test_rerun_is_identical_and_change_feed_shows_only_real_changes(spark, tmp_path):
    lake = tmp_path / "lake"
    clicks = [("c1", "u1", "ad1", "adv1", _ts("2026-01-09 10:00:00")),
              ("c2", "u2", "ad1", "adv1", _ts("2026-01-09 11:00:00"))]
    conversions = [("v1", "u1", "adv1", "purchase", _ts("2026-01-09 12:00:00"), _ts("2026-01-09 13:00:00"),
                    "c1", None)]
    _write_raw(spark, lake, clicks, conversions)
    table = f"delta.`{lake}/features/click_sequences`"
    assert build_sequences(spark, str(lake), [T])["features/click_sequences"]["mode"] == "append"
    before = spark.read.format("delta").load(f"{lake}/features/click_sequences").orderBy("user_id").collect()
    appended = spark.sql(f"DESCRIBE HISTORY {table}").agg({"version": "max"}).first()[0]

    report = build_sequences(spark, str(lake), [T])
    built = report["features/click_sequences"]
    assert (built["rows"], built["snapshots"], built["mode"]) == (2, 1, "merge")
    assert built["files_read"] == built["files"] > 0      # a table without partitions: read whole
    after = spark.read.format("delta").load(f"{lake}/features/click_sequences").orderBy("user_id").collect()
    assert before == after
    assert spark.sql(f"SELECT count(*) FROM {table} GROUP BY user_id, snapshot_ts HAVING count(*) > 1"
                     ).count() == 0
    version = spark.sql(f"DESCRIBE HISTORY {table}").agg({"version": "max"}).first()[0]
    assert version == appended      # a re-run with the same data changes no row: nothing to commit

    # A late click for u1 and u2 gone (say, deleted upstream): only those rows change.
    late = [("c0", "u1", "ad9", "adv9", _ts("2026-01-08 10:00:00")), clicks[0]]
    _write_raw(spark, lake, late, conversions)
    build_sequences(spark, str(lake), [T])
    changes = _changes(spark, lake, version + 1).collect()
    assert sorted((r.user_id, r._change_type) for r in changes) == [
        ("u1", "update_postimage"), ("u1", "update_preimage"), ("u2", "delete")]


def _changes(spark, lake: Path, since: int):
    return (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", since)
            .load(f"{lake}/features/click_sequences").select("user_id", "_change_type"))


@pytest.mark.slow
def test_a_killed_run_leaves_the_previous_version_and_a_rerun_converges(spark, tmp_path):
    root = tmp_path
    s = generate(GeneratorConfig(users=2000, days=14, seed=4), root / "events")
    lake = root / "lake"
    for path, table in ((s.clicks_path, RAW_CLICKS), (s.conversions_path, RAW_CONVERSIONS)):
        spark.read.parquet(path).write.format("delta").save(table.location(lake))
    build_sequences(spark, str(lake), [T])
    target = lake / "features" / "click_sequences"
    version = DeltaTable(str(target)).version()
    before = _sorted(DeltaTable(str(target)).to_pyarrow_table())

    cmd = [sys.executable, "-m", "duet.cli", "sequences", "--lake", str(lake), "--from", "2026-01-06",
           "--to", "2026-01-19", "--master", "local[1]"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=SHORT_RUN_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    existing = {p for p in target.rglob("*.parquet")}
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if {p for p in target.rglob("*.parquet")} - existing:  # data files of the new version appear
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed, "the job finished before it could be killed mid-write; make the data larger"
    assert DeltaTable(str(target)).version() == version
    assert _sorted(DeltaTable(str(target)).to_pyarrow_table()).equals(before)

    snapshots = daily_snapshots("2026-01-06", "2026-01-19")
    build_sequences(spark, str(lake), snapshots)
    expected = reference_sequences(str(lake), snapshots, 30 * 86400, 90 * 86400, 64, 16)
    got = _sorted(DeltaTable(str(target)).to_pyarrow_table())
    got = pa.Table.from_batches(got.to_batches())
    assert got.equals(expected["click_sequences"].cast(got.schema))


def _first_call_waits(barrier: threading.Barrier, original, only=lambda *args: True):
    """Wrap ``original`` so that each thread's first call (for which ``only`` holds) waits until both
    threads are there: the two runs pass their checks, then write at once (a real race, decided by
    Delta's commit protocol)."""
    seen = threading.local()

    def wrapper(*args, **kwargs):
        if not getattr(seen, "done", False) and only(*args):
            seen.done = True
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other run already failed: go on alone
        return original(*args, **kwargs)

    return wrapper


def _race(spark, lake: Path, snapshots: list[datetime], monkeypatch) -> list:
    """Two build_sequences of ``snapshots`` in two threads of one session, meeting before they create
    and before they write; -> what each returned or raised."""
    from pyspark.sql import SparkSession
    from pyspark.sql.readwriter import DataFrameWriter

    monkeypatch.setattr(SparkSession, "sql",
                        _first_call_waits(threading.Barrier(2, timeout=15), SparkSession.sql,
                                          lambda session, query, *args: query.startswith("CREATE TABLE")))
    monkeypatch.setattr(DataFrameWriter, "save",
                        _first_call_waits(threading.Barrier(2, timeout=15), DataFrameWriter.save,
                                          lambda writer, path=None: str(path).endswith("click_sequences")))
    outcomes: list = [None, None]

    def run(i: int) -> None:
        try:
            outcomes[i] = build_sequences(spark, str(lake), snapshots)
        except Exception as e:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    monkeypatch.undo()
    return outcomes


def _duplicate_keys(spark, lake: Path) -> dict[str, int]:
    return {name: spark.read.format("delta").load(str(lake / "features" / name))
            .groupBy("user_id", "snapshot_ts").count().where("count > 1").count()
            for name in ("click_sequences", "conversion_sequences")}


TINY_CLICKS = [("c1", "u1", "ad1", "adv1", _ts("2026-01-09 10:00:00")),
               ("c2", "u2", "ad1", "adv1", _ts("2026-01-09 11:00:00"))]
TINY_CONVERSIONS = [("v1", "u1", "adv1", "purchase", _ts("2026-01-09 12:00:00"), _ts("2026-01-09 13:00:00"),
                     "c1", None)]


def test_concurrent_runs_leave_one_row_per_key_or_the_loser_fails_clearly(spark, tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    _write_raw(spark, lake, TINY_CLICKS, TINY_CONVERSIONS)
    # A fresh lake: both runs create the tables and write a new snapshot at the same moment.
    outcomes = _race(spark, lake, [T], monkeypatch)
    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failed) < 2, failed
    for error in failed:
        assert isinstance(error, DuetError) and "another run is writing" in str(error), repr(error)[:500]
    assert _duplicate_keys(spark, lake) == {"click_sequences": 0, "conversion_sequences": 0}
    assert spark.read.format("delta").load(str(lake / "features/click_sequences")).count() == 2


def test_a_single_run_repairs_a_snapshot_holding_duplicates(spark, tmp_path):
    lake = tmp_path / "lake"
    _write_raw(spark, lake, TINY_CLICKS, TINY_CONVERSIONS)
    build_sequences(spark, str(lake), [T])
    table = str(lake / "features/click_sequences")
    # What two racing blind appends left behind before the fix: every row twice.
    spark.read.format("delta").load(table).write.format("delta").mode("append").save(table)
    assert _duplicate_keys(spark, lake)["click_sequences"] == 2
    build_sequences(spark, str(lake), [T])
    assert _duplicate_keys(spark, lake) == {"click_sequences": 0, "conversion_sequences": 0}
    assert spark.read.format("delta").load(table).count() == 2


def test_each_snapshot_validates_against_its_own_settings_and_an_unfinished_run_shows(spark, tmp_path,
                                                                                      monkeypatch):
    from core.quality import validate_lake
    from spark_jobs import quality, sequences

    lake = tmp_path / "lake"
    clicks = [(f"c{d}", "u1", f"ad{d}", "adv1", _ts(f"2026-01-0{d} 10:00:00")) for d in (5, 7, 8, 9)]
    conversions = [(f"v{d}", "u1", "adv1", "purchase", _ts(f"2026-01-0{d} 11:00:00"),
                    _ts(f"2026-01-0{d} 12:00:00"), None, None) for d in (3, 9)]
    _write_raw(spark, lake, clicks, conversions)
    wide = SequenceConfig(click_lookback=timedelta(days=5), conversion_lookback=timedelta(days=9),
                          max_clicks=3, max_conversions=2)
    narrow = SequenceConfig(click_lookback=timedelta(days=2), conversion_lookback=timedelta(days=2),
                            max_clicks=1, max_conversions=1)
    day = timedelta(days=1)
    build_sequences(spark, str(lake), [T], wide)            # u1: 3 clicks back to 01-05, 2 conversions
    build_sequences(spark, str(lake), [T + day], narrow)    # u1: 1 click, 1 conversion
    # A re-run of T + 1 day with other settings that dies after writing the click table.
    monkeypatch.setattr(sequences, "conversion_sequences", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_sequences(spark, str(lake), [T + day], wide)
    monkeypatch.undo()

    cfg = quality.QualityConfig(now=datetime.now(UTC))
    report = validate_lake(spark, str(lake), lambda present, props: [
        s for s in quality.suites_for(cfg, present, props) if s.table.path.startswith("features/")])
    failed = {t.table: t.failed for t in report.tables}
    # T passes against its own (wide) settings; only the unfinished snapshot is named.
    assert failed == {t: [f"{t}: every snapshot complete in both sequence tables (features/_snapshots)"]
                      for t in ("features/click_sequences", "features/conversion_sequences")}
    assert sequences.complete_snapshots(spark, str(lake)) == {T: wide}
