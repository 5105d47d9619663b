"""duet ingest: contract schema, quarantine with reasons, conservation counts, idempotence."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from core.contracts import INGEST_LOG, QUARANTINE_CLICKS, RAW_CLICKS
from core.errors import DuetError, InputError
from duet.cli import main as duet
from spark_jobs.ingest import IngestConfig, ingest

CLICKS_HEADER = "click_id,user_id,ad_id,advertiser_id,click_ts"

# (line, expected status, expected reason fragment) for every kind of bad row the contract names.
CLICK_ROWS = [
    ("c01,u1,a1,v1,2026-01-05T10:00:00Z", "new", None),
    ("c02,u1,a2,v1,1767607200", "new", None),                                 # epoch seconds
    ("c03,u2,a1,v1,2026-01-05T12:00:00+02:00", "new", None),                  # zone offset
    ("c04,u2,a1,v1,yesterday", "quarantined", "click_ts: cannot parse 'yesterday'"),
    ("c05,u2,a1,v1,", "quarantined", "missing click_ts"),
    (",u2,a1,v1,2026-01-05T10:00:00Z", "quarantined", "missing click_id"),
    ("c07,,a1,v1,2026-01-05T10:00:00Z", "quarantined", "missing user_id"),
    ("c01,u1,a1,v1,2026-01-05T10:00:00Z", "already_present", None),          # identical repeat
    ("c01,u9,a1,v1,2026-01-05T10:00:00Z", "quarantined",
     "conflicting duplicate: click_id 'c01' appears earlier"),
    ("c10,u1,a1,v1,1767607200000", "quarantined", "too large: milliseconds?"),
    ("c11,u1,a1,v1,2026-01-05T10:00:00Z,oops", "quarantined", "malformed CSV record"),  # extra field
    ("c12,u\udcff1,a1,v1,2026-01-05T10:00:00Z", "quarantined", "invalid UTF-8"),        # non-UTF-8 byte
    ("c13,u1,a1,v1,1999-12-31T00:00:00Z", "quarantined", "is outside [2000-01-01"),
    ("c14,u1,a1", "quarantined", "malformed CSV record"),                        # truncated last line
]


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    text = "\n".join([header, *rows])  # no final newline: the last line is cut off mid-record
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


def _table(lake: Path, name: str) -> pd.DataFrame:
    return DeltaTable(str(lake / name)).to_pandas()


def _counts(result) -> tuple[int, int, int, int, int]:
    return result.read, result.ingested, result.already_present, result.quarantined, result.skipped


def test_bad_click_rows_are_quarantined_with_reasons_and_counts_add_up(spark, tmp_path):
    lake = tmp_path / "lake"
    src = _write_csv(tmp_path / "clicks.csv", CLICKS_HEADER, [r for r, _, _ in CLICK_ROWS])
    (first,) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(src))

    n_new = sum(s == "new" for _, s, _ in CLICK_ROWS)
    n_quarantined = sum(s == "quarantined" for _, s, _ in CLICK_ROWS)
    assert _counts(first) == (len(CLICK_ROWS), n_new, 1, n_quarantined, 0)
    assert first.balanced and first.quarantine_added == n_quarantined

    raw = _table(lake, "raw/clicks").set_index("click_id")
    assert sorted(raw.index) == ["c01", "c02", "c03"]
    assert raw.loc["c01", "user_id"] == "u1"  # first seen wins over the conflicting c01/u9
    assert raw.loc["c03", "click_ts"] == pd.Timestamp("2026-01-05T10:00:00Z")
    assert raw.loc["c02", "click_ts"] == pd.Timestamp(1767607200, unit="s", tz="UTC")

    quarantine = _table(lake, "quarantine/clicks").sort_values("source_row")
    expected = [(i + 1, reason) for i, (_, s, reason) in enumerate(CLICK_ROWS) if s == "quarantined"]
    assert list(quarantine.source_row) == [row for row, _ in expected]
    for (_, reason), got in zip(expected, quarantine.reason, strict=True):
        assert reason in got
    assert set(quarantine.source) == {str(src)}
    # Malformed lines keep their text verbatim; others keep their fields as strings.
    truncated = quarantine[quarantine.source_row == len(CLICK_ROWS)].iloc[0]
    assert truncated.record == "c14,u1,a1"
    assert quarantine[quarantine.source_row == 4].iloc[0].click_ts == "yesterday"

    (second,) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(src))
    assert _counts(second) == (len(CLICK_ROWS), 0, 1 + n_new, n_quarantined, 0)
    assert second.quarantine_added == 0
    assert len(_table(lake, "raw/clicks")) == n_new
    assert len(_table(lake, "quarantine/clicks")) == n_quarantined


CONVERSION_LINES = [
    ('{"conversion_id":"v1","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T13:00:00Z",'
     '"attributed_click_id":"c01","value":"19.90"}', "new", None),
    ('{"conversion_id":"v2","user_id":"u2","advertiser_id":"adv1","conversion_type":"lead",'
     '"conversion_ts":1767610800,"report_ts":1767614400}', "new", None),          # epoch numbers
    ('{"conversion_id":"v3","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T10:00:00Z"}',
     "quarantined", "report_ts before conversion_ts"),
    ('{"conversion_id":"v4","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T12:00:00Z","value":"abc"}',
     "quarantined", "value: not a number: 'abc'"),                                  # wrong type
    ('{"conversion_id":"v5","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T12:00:00Z","value":12.5}', "new", None),
    ('{"conversion_id":"v6","user_id":"u1","advertiser_id":"adv1","conver', "quarantined", "malformed JSON"),
    ('{"conversion_id":"v7","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T12:00:00Z","coupon":"X"}',
     "quarantined", "unexpected field(s): coupon"),
    ('{"conversion_id":"v8","user_id":"u\udcfe1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T12:00:00Z"}',
     "quarantined", "invalid UTF-8"),
    ('{"user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T12:00:00Z"}',
     "quarantined", "missing conversion_id"),
    ("", "skipped", None),                                                         # blank line
    ('{"conversion_id":"v1","user_id":"u1","advertiser_id":"adv1","conversion_type":"purchase",'
     '"conversion_ts":"2026-01-05T11:00:00Z","report_ts":"2026-01-05T13:00:00Z",'
     '"attributed_click_id":"c01","value":"19.90"}', "already_present", None),      # identical repeat
    ('{"conversion_id":"v2","user_id":"u2","advertiser_id":"adv1","conversion_type":"lead",'
     '"conversion_ts":1767610800,"report_ts":1767618000}', "quarantined", "conflicting duplicate"),
]


def test_bad_conversion_lines_jsonl(spark, tmp_path):
    lake = tmp_path / "lake"
    src = tmp_path / "conversions.jsonl"
    src.write_bytes("\n".join(line for line, _, _ in CONVERSION_LINES).encode("utf-8", "surrogateescape"))
    (result,) = ingest(spark, IngestConfig(lake=str(lake)), conversions=str(src))
    n_new = sum(s == "new" for _, s, _ in CONVERSION_LINES)
    n_q = sum(s == "quarantined" for _, s, _ in CONVERSION_LINES)
    assert _counts(result) == (len(CONVERSION_LINES), n_new, 1, n_q, 1)

    raw = _table(lake, "raw/conversions").set_index("conversion_id").sort_index()
    assert list(raw.index) == ["v1", "v2", "v5"]
    assert raw.loc["v1", "value"] == pytest.approx(19.9) and pd.isna(raw.loc["v2", "value"])
    assert raw.loc["v1", "attributed_click_id"] == "c01" and raw.loc["v2", "attributed_click_id"] is None
    assert raw.loc["v2", "report_ts"] == pd.Timestamp("2026-01-05T12:00:00Z")

    quarantine = _table(lake, "quarantine/conversions").sort_values("source_row")
    records = [(s, r) for _, s, r in CONVERSION_LINES if s != "skipped"]  # source_row counts records
    expected = [(i + 1, r) for i, (s, r) in enumerate(records) if s == "quarantined"]
    assert list(quarantine.source_row) == [row for row, _ in expected]
    for (_, reason), got in zip(expected, quarantine.reason, strict=True):
        assert reason in got

    (again,) = ingest(spark, IngestConfig(lake=str(lake)), conversions=str(src))
    assert (again.ingested, again.quarantine_added) == (0, 0)
    assert len(_table(lake, "quarantine/conversions")) == n_q


def test_conflict_with_an_earlier_file_keeps_the_first_version(spark, tmp_path):
    lake = tmp_path / "lake"
    a = _write_csv(tmp_path / "a.csv", CLICKS_HEADER, ["c1,u1,a1,v1,2026-01-05T10:00:00Z"])
    b = _write_csv(tmp_path / "b.csv", CLICKS_HEADER, ["c1,u1,a1,v1,2026-01-05T10:00:00.000001Z",
                                                       "c2,u1,a1,v1,2026-01-05T10:00:00Z"])
    ingest(spark, IngestConfig(lake=str(lake)), clicks=str(a))
    (result,) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(b))
    assert _counts(result) == (2, 1, 0, 1, 0)
    quarantine = _table(lake, "quarantine/clicks")
    assert "was ingested before with different content" in quarantine.reason.iloc[0]
    raw = _table(lake, "raw/clicks").set_index("click_id")
    assert raw.loc["c1", "click_ts"] == pd.Timestamp("2026-01-05T10:00:00Z")  # a microsecond matters


def test_click_context_columns_are_kept(spark, tmp_path):
    lake = tmp_path / "lake"
    src = _write_csv(tmp_path / "c.csv", CLICKS_HEADER + ",placement",
                     ["c1,u1,a1,v1,2026-01-05T10:00:00Z,feed", "c2,u1,a1,v1,2026-01-05T11:00:00Z,"])
    ingest(spark, IngestConfig(lake=str(lake)), clicks=str(src))
    raw = _table(lake, "raw/clicks").set_index("click_id")
    assert raw.loc["c1", "placement"] == "feed" and raw.loc["c2", "placement"] is None


def test_whole_file_problems_fail_clearly_and_write_nothing(spark, tmp_path):
    lake = tmp_path / "lake"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        ingest(spark, IngestConfig(lake=str(lake)), clicks=str(empty))
    no_col = _write_csv(tmp_path / "nocol.csv", "click_id,user_id,ad_id,click_ts", ["c1,u1,a1,2026-01-05"])
    with pytest.raises(InputError, match="missing column.*advertiser_id"):
        ingest(spark, IngestConfig(lake=str(lake)), clicks=str(no_col))
    extra = _write_csv(tmp_path / "conv.csv", "conversion_id,user_id,advertiser_id,conversion_type,"
                       "conversion_ts,report_ts,attributed_click_id,value,coupon", [])
    with pytest.raises(InputError, match="unknown column.*coupon"):
        ingest(spark, IngestConfig(lake=str(lake)), conversions=str(extra))
    good = _write_csv(tmp_path / "good.csv", CLICKS_HEADER, ["c1,u1,a1,v1,2026-01-05T10:00:00Z"])
    with pytest.raises(InputError, match="not found"):  # checked before the good file is written
        ingest(spark, IngestConfig(lake=str(lake)), clicks=str(good), conversions=str(tmp_path / "nope.csv"))
    assert not lake.exists()

    header_only = _write_csv(tmp_path / "header.csv", CLICKS_HEADER, [])
    (result,) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(header_only))
    assert _counts(result) == (0, 0, 0, 0, 0)


def test_nanosecond_parquet_gets_a_clear_message(spark, tmp_path):
    table = pa.table({"click_id": ["c1"], "user_id": ["u1"], "ad_id": ["a1"], "advertiser_id": ["v1"],
                      "click_ts": pa.array([1767607200 * 10**9], pa.timestamp("ns", tz="UTC"))})
    path = tmp_path / "ns.parquet"
    pq.write_table(table, path)
    with pytest.raises(InputError, match="nanoseconds"):
        ingest(spark, IngestConfig(lake=str(tmp_path / "lake")), clicks=str(path))


def test_generated_events_land_with_exactly_the_contract_schema(spark, tmp_path, capsys):
    """Acceptance: generate --users 2000 --days 14 --seed 1, ingest; deltalake reads the contract."""
    gen, lake = tmp_path / "gen", tmp_path / "lake"
    assert duet(["generate", "--out", str(gen), "--users", "2000", "--days", "14", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert duet(["ingest", "--lake", str(lake), "--clicks", str(gen / "clicks.parquet"),
                 "--conversions", str(gen / "conversions.parquet")]) == 0
    out = capsys.readouterr().out
    assert f"read {summary['clicks']} = ingested {summary['clicks']} + already present 0" in out

    # The Delta log's own types, as any Delta reader sees them ...
    delta_types = lambda name: [(f.name, f.type.type) for f in _delta_schema(lake / name)]  # noqa: E731
    # (raw/clicks also has click_date, its partition column, which Delta generates from click_ts)
    assert delta_types("raw/clicks") == [("click_id", "string"), ("user_id", "string"), ("ad_id", "string"),
                                         ("advertiser_id", "string"), ("click_ts", "timestamp"),
                                         ("click_date", "date")]
    assert delta_types("raw/conversions") == [
        ("conversion_id", "string"), ("user_id", "string"), ("advertiser_id", "string"),
        ("conversion_type", "string"), ("conversion_ts", "timestamp"), ("report_ts", "timestamp"),
        ("attributed_click_id", "string"), ("value", "double")]
    # ... and the Arrow types deltalake reads them as: microsecond UTC timestamps.
    arrow = pa.schema(DeltaTable(str(lake / "raw/conversions")).schema().to_arrow())
    assert arrow.field("conversion_ts").type == pa.timestamp("us", tz="UTC")
    assert arrow.field("value").type == pa.float64()
    assert DeltaTable(str(lake / "raw/clicks")).to_pyarrow_table().num_rows == summary["clicks"]
    assert DeltaTable(str(lake / "raw/conversions")).to_pyarrow_table().num_rows == summary["conversions"]

    # Same files again: nothing added, and the accounts say so.
    assert duet(["ingest", "--lake", str(lake), "--clicks", str(gen / "clicks.parquet")]) == 0
    assert f"ingested 0 + already present {summary['clicks']}" in capsys.readouterr().out


def _delta_schema(path: Path):
    return DeltaTable(str(path)).schema().fields


def test_blank_lines_are_counted_from_the_file_and_reported_as_skipped(spark, tmp_path):
    lake = tmp_path / "lake"
    src = _write_csv(tmp_path / "blank.csv", CLICKS_HEADER,
                     ["c1,u1,a1,v1,2026-01-05T10:00:00Z", "", "  \t", "c2,u1,a1,v1,2026-01-05T11:00:00Z\r",
                      "c3,u1,a1,v1,2026-01-05T12:00:00Z"])
    (result,) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(src))
    # Spark's CSV reader never returns blank lines; the file's own lines count them.
    assert _counts(result) == (5, 3, 0, 0, 2) and result.balanced


def _corrupt_parquet(path: Path) -> Path:
    """Six clicks in three row groups; the last row group's data page overwritten (footer intact)."""
    rows = {c: [f"{c[0]}{i}" for i in range(6)] for c in CLICKS_HEADER.split(",")}
    rows["click_ts"] = ["2026-01-05T10:00:00Z"] * 6
    pq.write_table(pa.table(rows), path, row_group_size=2, compression="NONE", use_dictionary=False)
    offset = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


def _truncated_gzip(path: Path) -> Path:
    lines = [CLICKS_HEADER] + [f"c{i},u1,a1,v1,2026-01-05T10:00:00Z" for i in range(5000)]
    packed = gzip.compress("\n".join(lines).encode())
    path.write_bytes(packed[:len(packed) // 2])
    return path


def test_rows_spark_would_skip_are_never_lost_silently(spark, tmp_path):
    lake = tmp_path / "lake"
    key = "spark.sql.files.ignoreCorruptFiles"
    spark.conf.set(key, "true")  # as `--conf spark.sql.files.ignoreCorruptFiles=true` would
    try:
        for path, fmt in ((_corrupt_parquet(tmp_path / "corrupt.parquet"), None),
                          (_truncated_gzip(tmp_path / "clicks.csv.gz"), "csv")):
            with pytest.raises(DuetError, match=f"{path.name}"):
                ingest(spark, IngestConfig(lake=str(lake)), clicks=str(path), fmt=fmt)
        assert spark.conf.get(key) == "true"  # pinned for ingest only
    finally:
        spark.conf.unset(key)
    assert not lake.exists()


def test_a_directory_or_a_reserved_column_name_is_refused(spark, tmp_path):
    lake = tmp_path / "lake"
    folder = tmp_path / "clicks.csv"
    folder.mkdir()
    _write_csv(folder / "part-0.csv", CLICKS_HEADER, ["c1,u1,a1,v1,2026-01-05T10:00:00Z"])
    with pytest.raises(InputError, match="directory"):
        ingest(spark, IngestConfig(lake=str(lake)), clicks=str(folder))
    underscore = _write_csv(tmp_path / "u.csv", CLICKS_HEADER + ",_session",
                            ["c1,u1,a1,v1,2026-01-05T10:00:00Z,s1"])
    with pytest.raises(InputError, match="_session"):
        ingest(spark, IngestConfig(lake=str(lake)), clicks=str(underscore))
    assert not lake.exists()


@contextmanager
def _spark_jobs(spark) -> Iterator[list[int]]:
    """The ids of the Spark jobs run inside the block (from this thread: a job group), filled on exit."""
    sc, group = spark.sparkContext, f"probe-{uuid.uuid4()}"
    sc.setJobGroup(group, "ingest log probe")
    jobs: list[int] = []
    try:
        yield jobs
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        jobs += sc.statusTracker().getJobIdsForGroup(group)


def _versions(lake: Path) -> dict[str, int]:
    return {t.path: DeltaTable(t.location(str(lake))).version()
            for t in (RAW_CLICKS, QUARANTINE_CLICKS, INGEST_LOG)}


def _log(lake: Path) -> pd.DataFrame:
    return DeltaTable(INGEST_LOG.location(str(lake))).to_pandas()


# read 5 = ingested 2 (c1, c3) + already present 1 (c1 again) + quarantined 1 (c2) + skipped 1 (blank)
LOG_ROWS = ["c1,u1,a1,v1,2026-01-05T10:00:00Z", "c2,u1,a1,v1,yesterday", "c1,u1,a1,v1,2026-01-05T10:00:00Z",
            "", "c3,u1,a1,v1,2026-01-05T11:00:00Z"]


def test_a_file_ingested_before_is_not_read_again(spark, tmp_path):
    """Issue 25: the second ingest of the same bytes is a checksum and a look-up in the ingest log (no
    Spark job, no commit) and reports what reading it again would; the same bytes elsewhere too. A changed
    file, or ``reingest``, is read."""
    lake, cfg = tmp_path / "lake", IngestConfig(lake=str(tmp_path / "lake"))
    src = _write_csv(tmp_path / "clicks.csv", CLICKS_HEADER, LOG_ROWS)
    (first,) = ingest(spark, cfg, clicks=str(src))
    assert _counts(first) == (5, 2, 1, 1, 1) and first.unchanged_since is None
    versions = _versions(lake)
    [logged] = _log(lake).to_dict("records")
    assert (logged["source"], logged["kind"], logged["size"]) == (str(src), "clicks", src.stat().st_size)
    assert logged["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == first.sha256
    assert (logged["read"], logged["ingested"], logged["quarantine_added"]) == (5, 2, 1)

    copy = tmp_path / "elsewhere.csv"
    shutil.copy(src, copy)
    with _spark_jobs(spark) as jobs:
        (second,) = ingest(spark, cfg, clicks=str(src))
        (moved,) = ingest(spark, cfg, clicks=str(copy))
    assert jobs == [] and _versions(lake) == versions
    assert _counts(second) == _counts(moved) == (5, 0, 3, 1, 1) and second.balanced
    assert (second.quarantine_added, second.by_table["raw/clicks"]) == \
        (0, {"new": 0, "already_present": 3, "quarantined": 1})
    assert second.unchanged_since == logged["ingested_at"].isoformat()
    assert second.line().startswith(f"{src}: unchanged since its ingest at {second.unchanged_since}, "
                                    "nothing read: read 5 = ingested 0 + already present 3")
    assert moved.logged_as == str(src) and f" as {src}, nothing read" in moved.line()

    with _spark_jobs(spark) as jobs:  # the probe sees the jobs of a real read
        (again,) = ingest(spark, replace(cfg, reingest=True), clicks=str(src))
    assert jobs and _counts(again) == (5, 0, 3, 1, 1) and again.unchanged_since is None

    _write_csv(src, CLICKS_HEADER, [*LOG_ROWS, "c4,u1,a1,v1,2026-01-05T12:00:00Z"])  # changed in place
    (changed,) = ingest(spark, cfg, clicks=str(src))
    assert _counts(changed) == (6, 1, 3, 1, 1) and changed.unchanged_since is None
    assert len(_log(lake)) == 3  # first, reingest, changed


def test_a_crash_before_the_log_row_means_the_next_run_reads_the_file_again(spark, tmp_path, monkeypatch):
    """The log row is written after the file's commits: if it fails, the rows are in, the next run reads
    the file again (adding nothing) and logs it. A log row whose table was re-created since is void."""
    from spark_jobs import ingest_log

    lake, cfg = tmp_path / "lake", IngestConfig(lake=str(tmp_path / "lake"))
    src = _write_csv(tmp_path / "clicks.csv", CLICKS_HEADER, LOG_ROWS)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ingest_log, "record", crash)
    with pytest.raises(DuetError, match="rows are committed.*disk full.*next run reads the file again"):
        ingest(spark, cfg, clicks=str(src))
    monkeypatch.undo()
    assert len(_table(lake, "raw/clicks")) == 2
    assert not DeltaTable.is_deltatable(INGEST_LOG.location(str(lake)))

    (rerun,) = ingest(spark, cfg, clicks=str(src))
    assert _counts(rerun) == (5, 0, 3, 1, 1) and rerun.quarantine_added == 0 and rerun.unchanged_since is None
    assert len(_log(lake)) == 1

    shutil.rmtree(lake / "raw/clicks")  # the table the logged rows went to is gone
    (rebuilt,) = ingest(spark, cfg, clicks=str(src))
    assert _counts(rebuilt) == (5, 2, 1, 1, 1) and len(_table(lake, "raw/clicks")) == 2


def test_the_checksum_of_a_uri_is_that_of_the_local_path(spark, tmp_path):
    """A URI is checksummed in the driver's JVM through Hadoop's FileSystem (no Spark job)."""
    from spark_jobs.ingest_log import checksum

    src = _write_csv(tmp_path / "c.csv", CLICKS_HEADER, LOG_ROWS * 1000)
    with _spark_jobs(spark) as jobs:
        assert checksum(spark, src.as_uri()) == checksum(spark, str(src)) == \
            (src.stat().st_size, hashlib.sha256(src.read_bytes()).hexdigest())
    assert jobs == []
