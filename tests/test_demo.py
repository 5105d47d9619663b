"""Every check that needs the finished pipeline, on the session's one small `make demo` run
(tests/conftest.py `demo_run`): the README's `make demo`, the ranker's leakage and point-in-time checks
(against an independent DuckDB ASOF join), the report, online scoring, the delayed-feedback experiment,
and last the idempotent re-run. One module, so that `make test`'s workers (pytest-xdist, ``--dist
loadfile``) run these tests on one worker in this order, the re-run last (the demo itself runs once per
test run, whichever worker asks first: tests/conftest.py ``demo_run``)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from core.contracts import RAW_CONVERSIONS, TRAINING_EXAMPLES, TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError
from core.variants import variant_names
from duet.cli import main as duet
from feature_repo.views import EMBEDDING_TTL
from ranker.splits import demo_periods
from tests.conftest import REPO

D = timedelta(days=1)


@pytest.fixture(scope="module")
def demo(demo_run):
    """The session's small `make demo` run (tests/conftest.py): workdir, lake, demo.json."""
    work, lake, report, _ = demo_run
    return work, lake, report


def _arrow(path: str, **kw):
    return DeltaTable(path).to_pyarrow_table(**kw)


@pytest.mark.integration
def test_no_training_row_sees_an_embedding_or_a_label_from_its_future(demo):
    _, lake, report = demo
    training = _arrow(TRAINING_SET.location(lake))
    examples = {r["click_id"]: r for r in _arrow(TRAINING_EXAMPLES.location(lake)).to_pylist()}
    assert training.num_rows > 0
    for row in training.to_pylist():
        if row["embedding_ts"] is not None:
            assert row["embedding_ts"] <= row["click_ts"] <= row["embedding_ts"] + EMBEDDING_TTL
        example = examples[row["click_id"]]
        assert example["matured"] and example["label"] == row["label"]   # immature clicks never enter
    periods = report["periods"]
    cutoff = datetime.fromisoformat(periods["label_cutoff"])
    test_from, test_until = (datetime.fromisoformat(t) for t in periods["test"])
    assert max(training.column("click_ts").to_pylist()) < test_until <= cutoff - timedelta(days=8)
    # Pre-training (its targets included) ends before the ranker's first click, so before its test period.
    pretrain_until = datetime.fromisoformat(periods["pretrain_until"])
    assert pretrain_until <= datetime.fromisoformat(periods["train"][0]) < test_from
    for model in report["encoders"]["models"].values():
        assert datetime.fromisoformat(model["split"]["train_until"]) <= pretrain_until
        last_target = max(datetime.fromisoformat(t) for t in model["split"]["valid"]) + timedelta(days=3)
        assert last_target <= pretrain_until


@pytest.mark.integration
def test_the_ceilings_numpy_labels_are_the_examples_spark_wrote(demo):
    """``duet.ceiling.contract_labels`` (numpy, for the ceiling and the ranker's sanity benchmark) labels the
    demo's generated files exactly as ``spark_jobs/examples.py`` labelled them, click by click; and the
    demo reported the ceiling of its test set, below ``none``'s NE."""
    from duet.ceiling import contract_labels

    work, lake, report = demo
    cutoff = datetime.fromisoformat(report["periods"]["label_cutoff"])
    ours = contract_labels(work / "input", cutoff).select(["click_id", "label", "matured"]).to_pylist()
    spark = _arrow(TRAINING_EXAMPLES.location(lake), columns=["click_id", "label", "matured"]).to_pylist()
    key = lambda r: r["click_id"]  # noqa: E731
    assert sorted(ours, key=key) == sorted(spark, key=key) and sum(r["label"] for r in ours) > 0
    ceiling = report["ranker"]["ceiling"]
    assert ceiling["oracle_ne"] < ceiling["bayes_ne"]
    assert ceiling["positives"] == report["ranker"]["test_positives"]
    assert ceiling["gap_closed"]["none"] == 0


@pytest.mark.integration
def test_the_feast_training_set_equals_a_duckdb_asof_join_row_by_row(demo):
    _, lake, report = demo
    con = duckdb.connect()
    con.register("ts", _arrow(TRAINING_SET.location(lake)))
    con.register("emb", _arrow(USER_EMBEDDINGS.location(lake)))
    con.register("conv", _arrow(RAW_CONVERSIONS.location(lake)))
    con.execute("SET TimeZone = 'UTC'")
    ttl = int(EMBEDDING_TTL.total_seconds())
    within = f"CASE WHEN t.click_ts - a.want_ts <= INTERVAL {ttl} SECOND THEN"
    mismatches = con.execute(f"""
        WITH joined AS (
            SELECT t.click_id, t.model_version, e.event_timestamp AS want_ts, e.click_embedding AS want_click,
                   e.conversion_embedding AS want_conversion
            FROM ts t ASOF LEFT JOIN emb e
              ON t.user_id = e.user_id AND t.model_version = e.model_version
             AND t.click_ts >= e.event_timestamp),
        within AS (
            SELECT a.click_id, a.model_version,
                   {within} a.want_ts END AS want_ts, {within} a.want_click END AS want_click,
                   {within} a.want_conversion END AS want_conversion
            FROM joined a JOIN ts t USING (click_id, model_version))
        SELECT count(*) FROM ts t JOIN within w USING (click_id, model_version)
        WHERE t.embedding_ts IS DISTINCT FROM w.want_ts
           OR t.click_embedding IS DISTINCT FROM w.want_click
           OR t.conversion_embedding IS DISTINCT FROM w.want_conversion""").fetchone()[0]
    total, versions = con.execute("SELECT count(*), count(DISTINCT model_version) FROM ts").fetchone()
    assert versions == len(variant_names()) and total > 0 and mismatches == 0
    # The summary's conversion count: only conversions reported before the embedding's snapshot (a
    # conversion reported later cannot reach the snapshot's features), capped at the sequence length 16.
    wrong = con.execute("""
        SELECT count(*) FROM ts t
        WHERE t.embedding_ts IS NOT NULL AND t.conversion_count IS DISTINCT FROM (
            SELECT least(count(*), 16) FROM conv c
            WHERE c.user_id = t.user_id AND c.report_ts < t.embedding_ts
              AND c.conversion_ts >= t.embedding_ts - INTERVAL 90 DAY)""").fetchone()[0]
    assert wrong == 0
    # ... and those of the last 7 days (by conversion time), what the ranker reads.
    wrong, recent = con.execute("""
        SELECT count(*) FILTER (WHERE t.conversions_7d IS DISTINCT FROM (
                   SELECT least(count(*), 16) FROM conv c
                   WHERE c.user_id = t.user_id AND c.report_ts < t.embedding_ts
                     AND c.conversion_ts >= t.embedding_ts - INTERVAL 7 DAY)),
               count(*) FILTER (WHERE t.conversions_7d < t.conversion_count)
        FROM ts t WHERE t.embedding_ts IS NOT NULL""").fetchone()
    assert wrong == 0 and recent > 0


class _Sections(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.svg_in, self.stack = set(), set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
            self.stack.append(attrs["id"])
        if tag == "svg" and self.stack:
            self.svg_in.add(self.stack[-1])


@pytest.mark.integration
def test_the_report_holds_the_contract_metrics_every_plot_and_the_table(demo):
    work, _, report = demo
    metrics_doc = json.loads((work / "report" / "metrics.json").read_text())
    assert set(metrics_doc) == {"seed", "test_rows", "test_positives", "variants"}
    assert list(metrics_doc["variants"]) == ["none", *variant_names()]      # the registry's order
    # each test row's predictions, per variant and ranker seed, for analyses that pool runs
    predictions = pq.read_table(work / "report" / "test_predictions.parquet")
    assert predictions.num_rows == metrics_doc["test_rows"]
    assert predictions.column_names == ["user_id", "label", *(f"{v}/{s}" for v in ["none", *variant_names()]
                                                               for s in (1, 2, 3))]
    assert int(pc.sum(predictions.column("label")).as_py()) == metrics_doc["test_positives"]
    for figures in metrics_doc["variants"].values():
        assert set(figures) == {"ne", "auc", "logloss"} and 0 < figures["ne"] < 2
    assert metrics_doc["test_positives"] > 0 and metrics_doc["test_rows"] > metrics_doc["test_positives"]
    page = (work / "report" / "index.html").read_text()
    sections = _Sections()
    sections.feed(page)
    assert {"metrics-table", "plot-ne", "plot-calibration", "plot-label-delay", "plot-training",
            "data-quality", "stage-times"} <= sections.ids
    assert {"plot-ne", "plot-calibration", "plot-label-delay", "plot-training"} <= sections.svg_in
    assert set(report["stage_seconds"]) >= {"ingest", "sequences", "pretrain and embed", "examples",
                                            "training set", "ranker"}


@pytest.mark.integration
def test_duet_score_ranks_candidates_with_embeddings_read_online(demo, capsys):
    _, lake, report = demo
    online = report["online"]
    assert not online["embedding_missing"] and len(online["ranked"]) >= 2
    ads = ",".join(r["ad_id"] for r in online["ranked"])
    capsys.readouterr()
    as_of = report["snapshots"][-1]
    assert duet(["score", "--lake", lake, "--user", online["user"], "--ads", ads, "--as-of", as_of]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["ad_id"] for r in printed["ranked"]] == [r["ad_id"] for r in online["ranked"]]
    assert not printed["embedding_missing"]
    probabilities = [r["probability"] for r in printed["ranked"]]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 < p < 1 for p in probabilities)
    assert duet(["score", "--lake", lake, "--user", online["user"], "--ads", "never-seen-ad"]) == 1
    assert "never clicked in this lake" in capsys.readouterr().err


@pytest.mark.integration
def test_delayed_feedback_learns_only_what_was_reported_at_its_training_instant(spark, demo):
    """The delayed-feedback pool on the demo lake: its labels are those a DuckDB query of the raw tables
    gives at the training instant (a conversion reported later never labels a click); the matured mode
    trains on matured clicks only; the test set starts at the training instant; every mode is measured."""
    from core.lake import Lake
    from duet.demo import Plan, delayed_feedback
    from duet.stages import StageClock, StageContext
    from ranker.delayed import (
        DelayedFeedbackConfig,
        evaluation_batch,
        held_out,
        mode_batches,
        observation_cdf,
    )
    from ranker.training_set import delayed_feedback_pool
    from serving.store import StoreConfig, feature_store

    work, lake, report = demo
    periods = demo_periods([datetime.fromisoformat(s) for s in report["snapshots"]])
    assert periods.to_dict() == report["periods"]   # the demo's own plan
    trained_at, history_from = periods.splits.test_from, datetime.fromisoformat(report["snapshots"][0])
    store = feature_store(StoreConfig(lake))
    pool = delayed_feedback_pool(spark, store, lake, history_from, trained_at, 7 * D, D)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("pool", pool)
    con.register("clicks", _arrow(f"{lake}/raw/clicks"))
    con.register("conv", _arrow(RAW_CONVERSIONS.location(lake)))
    at = trained_at.isoformat()
    wrong = con.execute(f"""
        SELECT count(*) FROM pool p WHERE p.click_ts >= TIMESTAMPTZ '{at}'
            OR p.matured IS DISTINCT FROM (p.click_ts + INTERVAL 8 DAY <= TIMESTAMPTZ '{at}')
            OR p.label IS DISTINCT FROM (SELECT CAST(count(*) > 0 AS INT) FROM conv c
                WHERE c.attributed_click_id = p.click_id AND c.report_ts <= TIMESTAMPTZ '{at}'
                  AND c.conversion_ts - p.click_ts <= INTERVAL 7 DAY)""").fetchone()[0]
    expected = con.execute(f"""SELECT count(*) FROM clicks WHERE click_ts >= TIMESTAMPTZ '{history_from}'
                               AND click_ts < TIMESTAMPTZ '{at}'""").fetchone()[0]
    assert pool.num_rows == expected > 0 and wrong == 0
    # Some positive reported after the training instant exists, and the pool does not see it.
    late = con.execute(f"""SELECT count(*) FROM pool p JOIN conv c ON c.attributed_click_id = p.click_id
                           WHERE c.report_ts > TIMESTAMPTZ '{at}' AND p.label = 0""").fetchone()[0]
    assert late > 0

    versions = {v: m["model_version"] for v, m in report["encoders"]["models"].items()}
    cfg = DelayedFeedbackConfig(lake, versions["duet"], trained_at, seeds=(1,))
    batches = mode_batches(pool, cfg, observation_cdf(pool, cfg))
    matured = pool.column("matured").to_numpy(zero_copy_only=False)
    outside = ~held_out(pool.column("user_id"), cfg.valid_share)
    assert len(batches["matured"][0]) == int((matured & outside).sum()) < len(batches["elapsed_weighted"][0])
    assert batches["matured"][0].observed is None and batches["elapsed_weighted"][0].observed is not None
    assert float(batches["elapsed_weighted"][0].observed.min()) >= cfg.min_observed
    with pytest.raises(DuetError, match="starts before the training instant"):
        evaluation_batch(DelayedFeedbackConfig(lake, versions["duet"], periods.splits.test_until))

    snapshots = tuple(datetime.fromisoformat(s) for s in report["snapshots"])
    ctx = StageContext(Lake(lake), lambda: spark, StageClock())
    result = delayed_feedback(ctx, Plan(snapshots, periods, D), versions, (1,), 7 * D)
    assert set(result.modes) == {"matured", "naive", "elapsed_weighted", "fnw"}
    assert result.test_rows == report["ranker"]["test_rows"]
    for mode in result.modes.values():
        assert 0 < mode.ne < 2 and mode.ne_interval[0] <= mode.ne <= mode.ne_interval[1]
    assert set(result.relative_ne_reduction) == {"elapsed_weighted vs matured", "naive vs matured",
                                                    "fnw vs matured"}


@pytest.mark.integration
def test_make_demo_runs_as_the_readme_says(demo_run):
    """`make demo` as the README gives it (smaller data through DEMO_ARGS; the full size is timed in
    BENCHMARKS.md): every stage, the NE table and one online scoring printed, the reports written."""
    work, _, report, result = demo_run
    assert report["validation"]["success"] is True
    assert report["ingest"][0]["ingested"] == report["generated"]["clicks"]
    assert report["sequences"]["features/click_sequences"]["rows"] > 0
    assert sorted(report["encoders"]["models"]) == sorted(variant_names())
    assert "PASS embeddings/user_embeddings" in result.stdout
    assert re.search(r"^duet\s+\d\.\d{4}\s+\[", result.stdout, re.M)          # the NE table
    assert "relative NE reduction" in result.stdout and "p(convert) =" in result.stdout
    for stage in ("ingest", "sequences", "pretrain and embed", "consistency", "training set", "ranker"):
        assert f"== {stage}: " in result.stdout
    # The published snapshot read back online (serving.consistency): every sampled user, on every path.
    consistency = report["consistency"]
    assert consistency["ok"] and consistency["snapshot"] == report["publish"]["snapshot"]
    assert [p["path"] for p in consistency["paths"]] == ["sdk", "fast", "fast (contract views)"]
    for path in consistency["paths"]:
        assert path["sampled"] == path["matched"] == min(200, report["publish"]["users"]), path
    assert (work / "report" / "index.html").is_file() and (work / "report" / "metrics.json").is_file()


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
    assert sorted(encoders["models"]) == sorted(variant_names())
    for variant, model in encoders["models"].items():
        assert model["model_version"].startswith(f"{variant}-")
        assert model["split"]["train_until"] <= encoders["train_until"]
        assert model["embedded"] > 300
    assert [t["table"] for t in report["validation"]["tables"]][-1] == "embeddings/user_embeddings"
    _assert_latest_duet_snapshot_is_online(work / "lake", report)
    assert DeltaTable(str(work / "lake/raw/conversions")).to_pyarrow_table().num_rows == \
        generated["conversions"]
    tables = ("raw/clicks", "raw/conversions", "features/click_sequences", "features/conversion_sequences",
              "embeddings/user_embeddings", "training/examples", "training/training_set")
    versions = {t: DeltaTable(str(work / "lake" / t)).version() for t in tables}
    metrics_before = json.loads((work / "report" / "metrics.json").read_text())
    capsys.readouterr()

    assert duet(["demo", "--workdir", str(work), *SMALL_DEMO_ARGS.split()]) == 0
    again = json.loads((work / "report" / "demo.json").read_text())
    # Nothing that pre-training, validation or the ranker read has changed: their results are reused
    # (duet.stage_cache; tests/test_stage_cache.py shows what makes them run again).
    printed = capsys.readouterr().out
    assert again["reused"] == ["pretrain and embed", "validate", "examples", "training set",
                               "validate training tables", "ranker", "ceiling"], printed[-3000:]
    _assert_latest_duet_snapshot_is_online(work / "lake", again)  # publishing again: the same rows
    # The reused results are the first run's: the same model versions and the same NE (that retraining
    # gives the same versions too: tests/test_embed.py, the same data pre-trained twice).
    assert {v: m["model_version"] for v, m in again["encoders"]["models"].items()} == \
        {v: m["model_version"] for v, m in encoders["models"].items()}
    assert json.loads((work / "report" / "metrics.json").read_text()) == metrics_before
    assert again["ingest"][0]["ingested"] == 0
    # The validation reused is the first run's: not the ranker's tables, present now (their check is the
    # ranker chain's).
    assert [t["table"] for t in again["validation"]["tables"]] == \
        [t["table"] for t in report["validation"]["tables"]]
    assert {t["table"] for t in again["ranker"]["training_validation"]["tables"]} == \
        {"training/examples", "training/training_set"}
    assert again["ingest"][0]["already_present"] == generated["clicks"]
    # Nothing new: no commit at all on the raw tables, on the sequences (their re-run found no row that
    # differs, so committed nothing) or on the tables of the reused stages.
    assert versions == {t: DeltaTable(str(work / "lake" / t)).version() for t in versions}


def _assert_latest_duet_snapshot_is_online(lake, report) -> None:
    """The demo published its duet model's latest snapshot: the SQLite online store under lake/_feast
    returns exactly those Delta rows (what `DUET_LAKE=lake feast -c feature_repo serve` serves)."""
    import numpy as np

    from serving.online import SdkReader
    from serving.store import StoreConfig, feature_store

    version = report["encoders"]["models"]["duet"]["model_version"]
    snapshot = datetime.fromisoformat(report["snapshots"][-1])
    published = report["publish"]
    assert (published["model_version"], published["snapshot"]) == (version, snapshot.isoformat())
    # The gate's verdict is the demo's own validation pass: the same suite on rows unchanged since.
    # (The demo's lake is relative to make's directory, REPO; the publisher's is resolved.)
    assert published["gate_reused"]
    assert Path(published["gate_results"]) == (REPO / report["validation"]["results_dir"]).resolve()
    rows = [r for r in DeltaTable(str(lake / "embeddings/user_embeddings")).to_pyarrow_table(
        filters=[("model_version", "=", version)]).to_pylist() if r["event_timestamp"] == snapshot]
    assert report["publish"]["users"] == len(rows) > 0
    reader = SdkReader(feature_store(StoreConfig(str(lake))))
    result = reader.read([r["user_id"] for r in rows], as_of=snapshot)
    assert result.error is None and not result.click_missing.any() and not result.conversion_missing.any()
    np.testing.assert_array_equal(result.click, np.array([r["click_embedding"] for r in rows], np.float32))
    np.testing.assert_array_equal(result.conversion,
                                  np.array([r["conversion_embedding"] for r in rows], np.float32))
