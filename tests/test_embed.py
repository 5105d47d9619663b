"""Pre-training and embedding on a real lake: local and Spark engines agree, --changed-only after a late
conversion gives a full run's table, the embedding suite passes and names what corrupt vectors break."""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F

from core.arrow_schemas import CONVERSIONS_ARROW
from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from core.errors import DuetError
from core.lake import Lake
from core.quality import reusable_pass
from core.snapshots import daily_snapshots
from duet.cli import main as duet
from duet.generate import GeneratorConfig, generate
from duet.validation import validate
from encoders import checkpoint
from encoders import quality as encoder_quality
from encoders.config import ModelConfig, PretrainConfig, TrainConfig
from encoders.embed import embed_snapshot, embed_snapshots
from encoders.lake import (
    _feed_users,
    click_source,
    co_partitioned,
    conversion_source,
    last_run,
    sequence_versions,
)
from encoders.pretrain import pretrain
from encoders.spark_embed import embed_snapshots_spark
from spark_jobs.ingest import IngestConfig, ingest
from spark_jobs.sequences import build_sequences

SNAPSHOTS = daily_snapshots("2026-01-06", "2026-01-16")
SNAPSHOT = datetime(2026, 1, 14, tzinfo=UTC)
TINY = PretrainConfig(model=ModelConfig(dim=16, heads=2, ad_buckets=512, advertiser_buckets=256,
                                        click_layers=1, conversion_blocks=1, shared_layers=2,
                                        click_only_layers=2),
                      train=TrainConfig(epochs=2, batch_size=64, device="cpu"))


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """120 users over 10 days, daily sequences, a tiny duet model."""
    root = tmp_path_factory.mktemp("embed")
    events = generate(GeneratorConfig(users=120, days=10, seed=5), root / "events")
    lake = str(root / "lake")
    ingest(spark, IngestConfig(lake=lake), events.clicks_path, events.conversions_path)
    build_sequences(spark, lake, SNAPSHOTS)
    report = pretrain(lake, TINY, train_until=SNAPSHOTS[-1], log=lambda _: None)
    return {"lake": lake, "root": root, "version": report.model_version, "report": report}


def _rows(lake: str, snapshot: datetime, version: str) -> dict[str, tuple]:
    table = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(
        filters=[("model_version", "=", version)])
    out = {}
    for r in table.to_pylist():
        if r["event_timestamp"] == snapshot:
            assert r["user_id"] not in out, "duplicate key"
            conversion = r["conversion_embedding"]
            out[r["user_id"]] = (np.array(r["click_embedding"]),
                                 None if conversion is None else np.array(conversion))
    return out


def _assert_same_vectors(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for user in a:
        np.testing.assert_allclose(a[user][0], b[user][0], atol=atol, rtol=0)
        np.testing.assert_allclose(a[user][1], b[user][1], atol=atol, rtol=0)


def _sequence_users(lake: str, snapshot: datetime) -> set[str]:
    users = set()
    sources = [click_source(snapshot), conversion_source(snapshot)]
    for clicks, conversions in co_partitioned(lake, sources, 10**9):
        users |= set(clicks.column("user_id").to_pylist()) | set(conversions.column("user_id").to_pylist())
    return users


def test_pretraining_writes_a_safetensors_checkpoint_with_its_measures(lake):
    report = lake["report"]
    folder = Lake(lake["lake"]).model(lake["version"])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(Lake(lake["lake"]).models.glob(".*")), "scratch shards left behind"
    info = json.loads((folder / "config.json").read_text())["info"]
    assert info["split"]["valid"] == [SNAPSHOTS[-4].isoformat()]  # the latest with targets by train_until
    assert all(datetime.fromisoformat(t) + timedelta(days=2) <= SNAPSHOTS[-4]
               for t in info["split"]["train"])                    # no training target in validation
    assert report.examples["train"] > 0 and report.examples["valid"] > 0
    for key in ("click_model_recall@10", "click_popularity_recall@10", "converts_auc_model"):
        assert 0.0 <= report.retrieval[key] <= 1.0
    assert len(report.training["history"]) >= 1


def test_a_snapshot_too_large_for_memory_is_read_in_parts_with_the_same_rows(lake):
    sources = [click_source(SNAPSHOT), conversion_source(SNAPSHOT)]
    whole = [t.num_rows for t in next(co_partitioned(lake["lake"], sources, 10**9))]
    parts = list(co_partitioned(lake["lake"], sources, chunk_rows=40))
    assert len(parts) > 2
    assert [sum(p[i].num_rows for p in parts) for i in range(2)] == whole
    seen = [set(p[0].column("user_id").to_pylist()) | set(p[1].column("user_id").to_pylist()) for p in parts]
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # each user in exactly one part
    assert set().union(*seen) == _sequence_users(lake["lake"], SNAPSHOT)


@pytest.mark.integration
def test_local_and_spark_engines_write_the_same_vectors(spark, lake):
    path, version = lake["lake"], lake["version"]
    report = embed_snapshot(path, SNAPSHOT, version, log=lambda _: None)
    local = _rows(path, SNAPSHOT, version)
    assert report.embedded == len(local) == len(_sequence_users(path, SNAPSHOT))
    [spark_report] = embed_snapshots_spark(spark, path, [SNAPSHOT], version, log=lambda _: None)
    assert spark_report.engine == "spark" and spark_report.embedded == len(local)
    _assert_same_vectors(local, _rows(path, SNAPSHOT, version), atol=1e-5)
    assert last_run(path, SNAPSHOT, version).mode == "full"


def _late_conversion(spark, lake: dict, user: str, name: str, reported: datetime) -> None:
    """A conversion that happened days ago, reported just before the snapshot: ingested late."""
    row = {"conversion_id": f"late-{name}", "user_id": user, "advertiser_id": "adv0001",
           "conversion_type": "purchase", "conversion_ts": reported - timedelta(days=3),
           "report_ts": reported,
           "attributed_click_id": None, "value": 12.5}
    path = lake["root"] / f"late-{name}.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=CONVERSIONS_ARROW), path)
    ingest(spark, IngestConfig(lake=lake["lake"]), conversions=str(path))
    build_sequences(spark, lake["lake"], [SNAPSHOT])


@pytest.mark.integration
def test_changed_only_re_embeds_the_changed_users_and_gives_the_full_runs_table(spark, lake, capsys):
    path, version = lake["lake"], lake["version"]
    embed_snapshot(path, SNAPSHOT, version, log=lambda _: None)
    users = sorted(_sequence_users(path, SNAPSHOT))
    before = _rows(path, SNAPSHOT, version)

    # Two users get a conversion that happened days ago and was reported just before the snapshot.
    versions = sequence_versions(path)
    _late_conversion(spark, lake, users[0], "a", SNAPSHOT - timedelta(hours=1))
    _late_conversion(spark, lake, users[1], "b", SNAPSHOT - timedelta(hours=2))
    # The change feed as read here is the one Delta's own reader gives (both tables, every version).
    for table in (CLICK_SEQUENCES, CONVERSION_SEQUENCES):
        start, end = versions[table.path] + 1, sequence_versions(path)[table.path]
        if table is CLICK_SEQUENCES:     # no click changed: its re-run committed nothing
            assert start > end and not _feed_users(table.location(path), SNAPSHOT, start, end)
            continue
        feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start)
                .option("endingVersion", end).load(table.location(path))
                .where(F.col("snapshot_ts") == SNAPSHOT))
        ours = {u for a in _feed_users(table.location(path), SNAPSHOT, start, end) for u in a.to_pylist()}
        assert ours == {r["user_id"] for r in feed.select("user_id").collect()}
        assert ours == (set(users[:2]) if table is CONVERSION_SEQUENCES else set())
    assert duet(["embed", "--lake", path, "--snapshot", SNAPSHOT.isoformat(), "--model-version", version,
                 "--changed-only"]) == 0
    assert "re-embedded 2 changed user(s), deleted 0, others carried forward" in capsys.readouterr().out
    changed = _rows(path, SNAPSHOT, version)
    assert [u for u in users if not np.array_equal(changed[u][1], before[u][1])] == users[:2]

    # The Spark engine's --changed-only does the same for a third user.
    _late_conversion(spark, lake, users[2], "c", SNAPSHOT - timedelta(minutes=5))
    [report] = embed_snapshots_spark(spark, path, [SNAPSHOT], version, changed_only=True, log=lambda _: None)
    assert (report.mode, report.embedded, report.deleted) == ("changed-only", 1, 0)
    # Nothing changed since: nothing re-embedded, no commit.
    version_before = DeltaTable(USER_EMBEDDINGS.location(path)).version()
    [again] = embed_snapshots(path, [SNAPSHOT], version, changed_only=True, log=lambda _: None)
    assert again.embedded == 0 and DeltaTable(USER_EMBEDDINGS.location(path)).version() == version_before

    incremental = _rows(path, SNAPSHOT, version)
    embed_snapshot(path, SNAPSHOT, version, log=lambda _: None)  # a full run of the same snapshot
    _assert_same_vectors(incremental, _rows(path, SNAPSHOT, version), atol=1e-5)


@pytest.mark.integration
def test_the_embedding_suite_passes_and_names_each_corruption(spark, lake, tmp_path):
    path, version = lake["lake"], lake["version"]
    embed_snapshots(path, SNAPSHOTS[-3:], version, log=lambda _: None)
    report = validate(spark, path, tables=[USER_EMBEDDINGS.path])
    [result] = report.tables
    assert result.success, result.failed
    assert set(result.versions) == {USER_EMBEDDINGS.path, CLICK_SEQUENCES.path, CONVERSION_SEQUENCES.path}
    assert reusable_pass(path, _embedding_suite(path)).results_dir == report.results_dir

    broken = str(tmp_path / "lake")
    shutil.copytree(path, broken)
    table = DeltaTable(USER_EMBEDDINGS.location(broken)).to_pyarrow_table(
        filters=[("event_timestamp", "=", SNAPSHOTS[-1])])
    rows = table.to_pylist()
    nan, narrow, twice, gone = rows[0], rows[1], rows[2], rows[3]
    nan["click_embedding"] = [float("nan")] + nan["click_embedding"][1:]
    narrow["conversion_embedding"] = narrow["conversion_embedding"][:-1]
    ghost = dict(rows[4], user_id="nobody-has-this-id")
    kept = [nan, narrow, twice, twice, ghost] + rows[4:]
    del gone
    write_deltalake(USER_EMBEDDINGS.location(broken), pa.Table.from_pylist(kept, schema=table.schema),
                    mode="overwrite", predicate=f"event_timestamp = '{SNAPSHOTS[-1]:%Y-%m-%d %H:%M:%S}'")
    assert reusable_pass(broken, _embedding_suite(broken)) is None      # the copied pass read other rows
    [broken_result] = validate(spark, broken, tables=[USER_EMBEDDINGS.path]).tables
    failed = broken_result.failed
    for words in ("one row per user_id, event_timestamp, model_version", "vector widths match",
                  "every vector value is finite", "have an embedding", "stale row"):
        assert any(words in f for f in failed), (words, failed)
    assert reusable_pass(broken, _embedding_suite(broken)) is None      # the newest whole-table run failed


def _embedding_suite(lake: str):
    present = {USER_EMBEDDINGS.path, CLICK_SEQUENCES.path, CONVERSION_SEQUENCES.path}
    [suite] = encoder_quality.suites_for(lake, present)
    return suite


# Expectation types whose verdict on a table implies the same verdict on any subset of its rows.
ROW_WISE = {"expect_table_columns_to_match_set", "expect_column_values_to_not_be_null",
            "expect_compound_columns_to_be_unique", "expect_column_values_to_match_regex"}


def test_every_embedding_check_holds_on_one_snapshot_of_a_version_when_it_holds_on_the_table(lake):
    # The publish gate takes a whole-table pass for its verdict on one (snapshot, model version)
    # (serving.publish): every check must be row-wise, or aggregate only within such a group.
    suite = _embedding_suite(lake["lake"])
    queries = []
    for e in suite.expectations:
        config = e.configuration
        if config.type in ROW_WISE:
            continue
        assert config.type == "expect_query_to_return_no_rows", config.type
        queries.append(config.kwargs["unexpected_rows_query"])
    assert len(queries) == 5
    for query in queries:
        grouped = re.findall(r"GROUP BY ([\w., ]+?)\)", query)
        assert all({c.strip().split(".")[-1] for c in g.split(",")} == {"event_timestamp", "model_version"}
                   for g in grouped), (grouped, query)
        assert grouped or not re.search(r"\b(count|sum|avg|max|min)\(", query, re.IGNORECASE), query


def test_embedding_commands_fail_with_one_line(lake, capsys):
    path = lake["lake"]
    assert duet(["embed", "--lake", path, "--snapshot", "2026-03-01"]) == 1
    assert "no sequences for snapshot 2026-03-01T00:00:00+00:00" in capsys.readouterr().err
    at = SNAPSHOT.isoformat()
    assert duet(["embed", "--lake", path, "--snapshot", at, "--model-version", "duet-0000000"]) == 1
    assert "no model 'duet-0000000'" in capsys.readouterr().err
    assert duet(["pretrain", "--lake", path, "--train-until", "2026-01-08"]) == 1
    assert "not enough snapshots to pre-train" in capsys.readouterr().err


@pytest.mark.integration
def test_the_spark_engine_refuses_what_the_local_one_refuses_and_writes_nothing(spark, lake, tmp_path):
    """Issue 23: a name that is not a version, a checkpoint whose content is not its name, non-finite
    weights (all on the driver, before any job) and non-finite vectors (on the workers, before the
    commit) are refused by the Spark engine too, each as one DuetError."""
    path = str(tmp_path / "lake")
    shutil.copytree(lake["lake"], path)   # the module's lake keeps its versions for the other tests
    model, record = checkpoint.load(path, lake["version"])
    nan, huge = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        nan.encoder.click.norm.weight[0] = float("nan")
        huge.encoder.click.tokens.time.net[0].weight.fill_(1e30)
        huge.encoder.click.tokens.time.net[2].weight.fill_(1e30)
    renamed = "duet-0000000"
    shutil.copytree(Path(path) / "_models" / lake["version"], Path(path) / "_models" / renamed)
    cases = [("../../evil", "not a model version"), (renamed, "its content does not match its name"),
             (checkpoint.save(path, nan, record.config, {}).model_version, "weights that are not finite"),
             (checkpoint.save(path, huge, record.config, {}).model_version, "gave non-finite embeddings")]
    location = USER_EMBEDDINGS.location(path)
    before = DeltaTable(location).version() if DeltaTable.is_deltatable(location) else None
    for version, message in cases:
        with pytest.raises(DuetError, match=message):
            embed_snapshots_spark(spark, path, [SNAPSHOT], version, log=lambda _: None)
    if before is not None:
        assert DeltaTable(location).version() == before
    written = DeltaTable(location).to_pyarrow_table(columns=["model_version"]).column(0).to_pylist() \
        if DeltaTable.is_deltatable(location) else []
    assert not {v for v, _ in cases} & set(written)


def test_pretraining_the_same_data_twice_gives_the_same_model_version(lake):
    def train(seed: int) -> str:
        cfg = replace(TINY, train=replace(TINY.train, seed=seed))
        return pretrain(lake["lake"], cfg, train_until=SNAPSHOTS[-1], log=lambda _: None).model_version

    first = train(0)
    assert train(0) == first
    assert train(1) != first and first.startswith("duet-")
