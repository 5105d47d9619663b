"""The ranker's stage: labels as the contract defines them, leakage-free training sets (checked against an
independent DuckDB ASOF join), the ablation's report and online scoring, on one small demo run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import duckdb
import numpy as np
import pytest
from deltalake import DeltaTable

from core.contracts import RAW_CONVERSIONS, TRAINING_EXAMPLES, TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError
from duet.cli import main as duet
from duet.pipeline import demo_periods
from feature_repo.views import EMBEDDING_TTL
from ranker import metrics
from ranker.splits import Splits

T0 = datetime(2026, 1, 10, tzinfo=UTC)
H, D = timedelta(hours=1), timedelta(days=1)


# -- labels ---------------------------------------------------------------------------------------------

def test_examples_follow_the_contract(spark):
    from spark_jobs.examples import ExamplesConfig, label_clicks

    cutoff = T0 + 12 * D
    clicks = [  # click_id, click_ts
        ("c_fast", T0), ("c_late_report", T0), ("c_outside_window", T0), ("c_two", T0), ("c_none", T0),
        ("c_immature", cutoff - 8 * D + H), ("c_boundary", cutoff - 8 * D), ("c_after_cutoff", cutoff),
        ("c_unattributed_only", T0)]
    conversions = [  # attributed_click_id, conversion_ts, report_ts
        ("c_fast", T0 + 2 * H, T0 + 3 * H),
        ("c_late_report", T0 + H, cutoff + H),            # happened, but reported after the cutoff
        ("c_outside_window", T0 + 7 * D + H, T0 + 8 * D),  # beyond the 7-day attribution window
        ("c_two", T0 + 3 * D, T0 + 3 * D), ("c_two", T0 + 5 * H, T0 + 6 * D),  # earliest counts: 5 h
        ("c_boundary", cutoff - 1 * D, cutoff),            # report_ts == cutoff counts
        (None, T0 + H, T0 + H)]                            # unattributed: never a label
    click_df = spark.createDataFrame(
        [(c, "u1", "ad", "adv", ts) for c, ts in clicks],
        "click_id string, user_id string, ad_id string, advertiser_id string, click_ts timestamp")
    conversion_df = spark.createDataFrame(
        [(f"v{i}", "u1", "adv", "purchase", conv, rep, click, None)
         for i, (click, conv, rep) in enumerate(conversions)],
        "conversion_id string, user_id string, advertiser_id string, conversion_type string, "
        "conversion_ts timestamp, report_ts timestamp, attributed_click_id string, value double")
    rows = {r["click_id"]: r for r in label_clicks(click_df, conversion_df, ExamplesConfig("unused", cutoff))
            .collect()}
    assert "c_after_cutoff" not in rows  # only clicks before the cutoff are labelled
    labels = {c: r["label"] for c, r in rows.items()}
    assert labels == {"c_fast": 1, "c_late_report": 0, "c_outside_window": 0, "c_two": 1, "c_none": 0,
                      "c_immature": 0, "c_boundary": 1, "c_unattributed_only": 0}
    assert rows["c_fast"]["conversion_delay_s"] == 7200 and rows["c_two"]["conversion_delay_s"] == 5 * 3600
    assert rows["c_none"]["conversion_delay_s"] is None
    assert rows["c_boundary"]["matured"] and not rows["c_immature"]["matured"] and rows["c_fast"]["matured"]


def test_splits_refuse_an_order_that_would_leak():
    ok = Splits(T0, T0, T0 + 4 * D, T0 + 6 * D, T0 + 8 * D)
    ok.check(T0 + 16 * D, 8 * D)
    for bad in (Splits(T0 + D, T0, T0 + 4 * D, T0 + 6 * D, T0 + 8 * D),       # pre-training after training
                Splits(T0, T0, T0 + 6 * D, T0 + 4 * D, T0 + 8 * D)):           # test before validation
        with pytest.raises(DuetError, match="pretrain_until <= train_from"):
            bad.check()
    with pytest.raises(DuetError, match="mature only"):
        ok.check(T0 + 15 * D, 8 * D)                                          # immature test labels


def test_a_time_range_too_short_to_split_is_refused_with_the_reason():
    snapshots = [T0 + i * D for i in range(12)]
    with pytest.raises(DuetError, match="too short for the ranker.*Give events over a longer time range"):
        demo_periods(snapshots)
    periods = demo_periods([T0 + i * D for i in range(28)])
    s = periods.splits
    assert s.pretrain_until == s.train_from and s.test_until + 8 * D <= periods.label_cutoff


def test_bootstrap_auc_equals_the_plain_auc_with_unit_weights_and_resampled_rows():
    from encoders.evaluate import auc

    rng = np.random.default_rng(0)
    p, y = np.round(rng.random(300), 2), (rng.random(300) < 0.3).astype(float)  # rounded: ties
    w = np.vstack([np.ones(300), rng.integers(0, 3, 300)])
    got = metrics.bootstrap_auc(p, y, w)
    import torch
    assert got[0] == pytest.approx(auc(torch.from_numpy(p), torch.from_numpy(y)), abs=1e-12)
    rows = np.repeat(np.arange(300), w[1].astype(int))
    assert got[1] == pytest.approx(auc(torch.from_numpy(p[rows]), torch.from_numpy(y[rows])), abs=1e-12)
    ne = metrics.bootstrap_ne({"a": [p.clip(0.01, 0.99)]}, y, w)["a"]
    assert ne[0] == pytest.approx(metrics.normalized_entropy(p.clip(0.01, 0.99), y), rel=1e-12)


# -- one small demo, every check on its lake ------------------------------------------------------------

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
    assert versions == 3 and total > 0 and mismatches == 0
    # The summary's conversion count: only conversions reported before the embedding's snapshot (a
    # conversion reported later cannot reach the snapshot's features), capped at the sequence length 16.
    wrong = con.execute("""
        SELECT count(*) FROM ts t
        WHERE t.embedding_ts IS NOT NULL AND t.conversion_count IS DISTINCT FROM (
            SELECT least(count(*), 16) FROM conv c
            WHERE c.user_id = t.user_id AND c.report_ts < t.embedding_ts
              AND c.conversion_ts >= t.embedding_ts - INTERVAL 90 DAY)""").fetchone()[0]
    assert wrong == 0


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
    assert list(metrics_doc["variants"]) == ["none", "shared", "click_only", "duet"]
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


def test_the_examples_suite_fails_on_a_label_without_a_delay(spark, tmp_path):
    from duet.pipeline import validate_training
    from spark_jobs.examples import ExamplesConfig, build_examples

    lake = str(tmp_path / "lake")
    clicks = spark.createDataFrame(
        [("c1", "u1", "ad", "adv", T0), ("c2", "u1", "ad", "adv", T0 + H)],
        "click_id string, user_id string, ad_id string, advertiser_id string, click_ts timestamp")
    conversions = spark.createDataFrame(
        [("v1", "u1", "adv", "purchase", T0 + H, T0 + 2 * H, "c1", None)],
        "conversion_id string, user_id string, advertiser_id string, conversion_type string, "
        "conversion_ts timestamp, report_ts timestamp, attributed_click_id string, value double")
    clicks.write.format("delta").save(f"{lake}/raw/clicks")
    conversions.write.format("delta").save(f"{lake}/raw/conversions")
    assert build_examples(spark, ExamplesConfig(lake, T0 + 12 * D))["positives"] == 1
    assert validate_training(spark, lake).success
    spark.sql(f"UPDATE delta.`{TRAINING_EXAMPLES.location(lake)}` SET label = 1 WHERE click_id = 'c2'")
    report = validate_training(spark, lake)
    assert not report.success
    assert "a delay exactly for positive examples" in json.dumps(report.to_dict())


@pytest.mark.integration
def test_delayed_feedback_learns_only_what_was_reported_at_its_training_instant(spark, demo):
    """The delayed-feedback pool on the demo lake: its labels are those a DuckDB query of the raw tables
    gives at the training instant (a conversion reported later never labels a click); the matured mode
    trains on matured clicks only; the test set starts at the training instant; every mode is measured."""
    from duet.pipeline import DemoConfig, Periods, delayed_feedback
    from ranker.delayed import DelayedFeedbackConfig, held_out, mode_batches, observation_cdf
    from ranker.training_set import delayed_feedback_pool
    from serving.store import StoreConfig, feature_store

    work, lake, report = demo
    periods = Periods(datetime.fromisoformat(report["periods"]["label_cutoff"]), demo_periods(
        [datetime.fromisoformat(s) for s in report["snapshots"]]).splits)
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
    assert len(batches["matured"][0]) == int((matured & outside).sum()) < len(batches["importance"][0])
    assert batches["matured"][0].observed is None and batches["importance"][0].observed is not None
    assert float(batches["importance"][0].observed.min()) >= cfg.min_observed
    with pytest.raises(DuetError, match="starts before the training instant"):
        from ranker.delayed import evaluation_batch
        evaluation_batch(DelayedFeedbackConfig(lake, versions["duet"], periods.splits.test_until))

    result = delayed_feedback(spark, store, lake, periods, versions,
                              DemoConfig(workdir=str(work), ranker_seeds=(1,)), history_from)
    assert set(result["modes"]) == {"matured", "naive", "importance"}
    assert result["test_rows"] == report["ranker"]["test_rows"]
    for mode in result["modes"].values():
        assert 0 < mode["ne"] < 2 and mode["ne_interval"][0] <= mode["ne"] <= mode["ne_interval"][1]
    assert set(result["relative_ne_reduction"]) == {"importance vs matured", "naive vs matured"}
