"""The ranker's stage without a demo: labels as the contract defines them, the split order, the bootstrap
AUC, the examples suite. Its checks on a finished demo (leakage, the DuckDB ASOF join, the report, online
scoring, delayed feedback) are in tests/test_demo.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.contracts import TRAINING_EXAMPLES
from core.errors import DuetError
from ranker import metrics
from ranker.splits import Splits, demo_periods

T0 = datetime(2026, 1, 10, tzinfo=UTC)
H, D = timedelta(hours=1), timedelta(days=1)


# -- labels ---------------------------------------------------------------------------------------------

def test_the_measured_report_grace_is_the_early_conversions_quantile_in_whole_days(spark):
    from spark_jobs.examples import report_grace_of

    # 100 attributed conversions over 20 days, report delays 1 .. 100 hours; the late half's delays
    # are 500 h (their reports would not have arrived yet in a real lake: they must not count); one
    # unattributed conversion with a 1,000-hour delay never counts.
    rows = [(T0 + i * 0.1 * D, T0 + i * 0.1 * D + (i + 1) * H, "c") for i in range(100)]
    rows += [(T0 + (10 + i * 0.1) * D, T0 + (10 + i * 0.1) * D + 500 * H, "c") for i in range(100)]
    rows += [(T0, T0 + 1000 * H, None)]
    df = spark.createDataFrame(rows, "conversion_ts timestamp, report_ts timestamp, "
                                     "attributed_click_id string")
    measured = report_grace_of(df, 0.9)
    assert measured.conversions == 100       # the first half of the attributed conversions' span
    assert 88 <= measured.hours <= 92 and measured.grace_days == 4
    assert report_grace_of(df, 0.5).grace_days == 3     # about 50 h: rounded up to whole days
    with pytest.raises(DuetError, match="quantile"):
        report_grace_of(df, 1.0)

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
    from core.metrics import auc

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


def test_the_examples_suite_fails_on_a_label_without_a_delay(spark, tmp_path):
    from duet.validation import validate_training
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
    built = build_examples(spark, ExamplesConfig(lake, T0 + 12 * D))
    assert (built.rows, built.positives, built.label_cutoff) == (2, 1, T0 + 12 * D)
    assert built.to_dict() == {"label_cutoff": "2026-01-22T00:00:00+00:00", "rows": 2, "positives": 1,
                               "matured": 2, "matured_positives": 1}
    assert validate_training(spark, lake).success
    spark.sql(f"UPDATE delta.`{TRAINING_EXAMPLES.location(lake)}` SET label = 1 WHERE click_id = 'c2'")
    report = validate_training(spark, lake)
    assert not report.success
    assert "a delay exactly for positive examples" in json.dumps(report.to_dict())


# -- the stage's results as data (demo.json, the stage cache) ------------------------------------------

def _ablation(duet_ran: bool):
    from ranker.config import RankerConfig
    from ranker.evaluate import (
        AblationResult,
        CalibrationBin,
        Epoch,
        LabelDelays,
        Probe,
        Reduction,
        SeedResult,
        VariantResult,
    )

    def variant(version, probe, ridge):
        seed = SeedResult(1, 0.95, 0.7, 0.09, 1.01, 1, (Epoch(0, float("nan"), 0.094), Epoch(1, 0.08, 0.093)),
                          ridge)
        curve = (CalibrationBin(0.02, 0.021, 50),)
        return VariantResult(version, probe, 0.95, 0.7, 0.09, 1.01, 0.0, (seed,), curve, (0.94, 0.96),
                             (0.69, 0.71))

    ridge = {"lambda": 1000.0, "valid_loss": 0.093, "path": {"base 1": 0.095}}
    variants = {"none": variant(None, Probe(0.99), ridge),
                "shared" if not duet_ran else "duet": variant("x-1234567", Probe(0.99, 0.98, 0.0101), None)}
    reduction = Reduction("duet", "none", 0.01, (0.0, 0.02)) if duet_ran else None
    return AblationResult(100, 5, (1,), 20, RankerConfig(), variants, LabelDelays((0, 1, 2), (3, 2), 0.9),
                          {"none": reduction} if reduction else None, reduction)


def test_the_results_write_only_the_parts_they_have_and_round_trip_through_json():
    from core.records import from_dict, to_dict
    from ranker.evaluate import AblationResult

    for duet_ran in (True, False):
        result = _ablation(duet_ran)
        data = result.to_dict()
        assert ("reductions" in data, "relative_ne_reduction" in data) == (duet_ran, duet_ran)
        none, other = data["variants"].values()
        assert none["probe"] == {"ne_summary": 0.99}   # none has no vector: no probe with one, no gain
        assert set(other["probe"]) == {"ne_summary", "ne_with_vector", "gain"}
        assert "ridge" in none["seeds"][0] and "ridge" not in other["seeds"][0]   # a seed without a ridge fit
        assert none["model_version"] is None and data["seeds"] == [1] and data["ranker"]["hidden"] == [64]
        rebuilt = from_dict(AblationResult, json.loads(json.dumps(data)))
        assert json.dumps(to_dict(rebuilt)) == json.dumps(data)   # NaN (epoch 0's training loss) included
        assert rebuilt.variants["none"].seeds[0].history[1] == result.variants["none"].seeds[0].history[1]


def test_the_training_set_report_keeps_the_splits_layout_and_round_trips():
    from core.records import from_dict
    from ranker.training_set import SplitCounts, TrainingSetReport

    splits = Splits(T0, T0, T0 + 10 * D, T0 + 15 * D, T0 + 20 * D)
    report = TrainingSetReport(splits, {"duet-1234567/train": SplitCounts(10, 2, 0)})
    data = report.to_dict()
    assert data == {"splits": splits.to_dict(),
                    "rows": {"duet-1234567/train": {"rows": 10, "positives": 2, "without_embedding": 0}}}
    assert from_dict(TrainingSetReport, json.loads(json.dumps(data))) == report
    gap = [(T0 + 11 * D).isoformat(), (T0 + 15 * D).isoformat()]   # valid no longer starts where train ends
    with pytest.raises(DuetError, match="start where the one before ends"):
        Splits.from_dict({**splits.to_dict(), "valid": gap})


# -- the powered ablation's statistics (benchmarks/duet_ablation.py) -------------------------------------

def test_the_pooled_paired_reduction_and_its_minimum_detectable_effect():
    from benchmarks.duet_ablation import TARGET_MDE, paired_reduction, pool, row_losses

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(400).astype(str), 10)
    label = (rng.random(4000) < 0.05).astype(float)
    p = np.clip(0.05 + 0.02 * rng.standard_normal(4000), 0.001, 0.5)
    better = np.where(label == 1, p * 1.05, p * 0.99)          # duet a little sharper on every row
    losses = row_losses({"shared/1": p, "shared/2": p, "duet/1": better, "duet/2": better}, label)
    same = paired_reduction({"shared": losses["shared"], "duet": losses["shared"]}, users, "shared")
    assert same["r"] == 0 and same["se"] == 0                  # paired: no difference, no noise
    r = paired_reduction(losses, users, "shared")
    expected = (losses["shared"].sum() - losses["duet"].sum()) / losses["shared"].sum()
    assert r["r"] == pytest.approx(expected) and r["r"] > 0 and r["mde"] == pytest.approx(2.8016 * r["se"])

    def run(seed: int, r_value: float, se: float) -> dict:
        return {"setting": "default", "seed": seed, "variants": {"duet": {"ne": 0.9, "auc": 0.6,
                "calibration": 1.0}}, "reductions": {"shared": {"r": r_value, "se": se}}}

    powered = pool([run(s, 0.004 + 0.0005 * s, 0.0006) for s in range(5)])["default"]["duet vs shared"]
    assert powered["verdict"] == "duet better" and powered["powered"]
    assert powered["se_users"] == pytest.approx(0.0006 / np.sqrt(5))
    weak = pool([run(s, 0.001 * (-1) ** s, 0.003) for s in range(5)])["default"]["duet vs shared"]
    assert weak["verdict"] == "no difference detected" and not weak["powered"]
    assert weak["mde"] > TARGET_MDE and "underpowered" in weak
    worse = pool([run(s, -0.004 - 0.0005 * s, 0.0006) for s in range(5)])["default"]["duet vs shared"]
    assert worse["verdict"] == "duet worse"


# -- the wide part's ridge regression ----------------------------------------------------------------------

def test_a_column_left_out_of_the_ridge_weighs_exactly_zero_and_the_rest_is_the_fit_without_it():
    """``EXCLUDED`` leaves a column out (core.linear): a fit with columns left out is the fit on the other
    columns alone, to L-BFGS's tolerance. (Held out by a 1e9 penalty instead, their weights were not 0, and
    on the ranker's 126 inputs the fit stopped at its evaluation limit.)"""
    import torch

    from core.linear import EXCLUDED, fit_ridge

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4000, 6)))
    y = (torch.rand(4000, generator=torch.Generator().manual_seed(1)) <
         torch.sigmoid(x[:, 0] - 0.5 * x[:, 1] - 2)).double()
    kept = torch.tensor([True, True, True, False, True, False])
    lams = (1.0, 100.0)
    whole = fit_ridge(x, y, x, y, lams, max_iter=50, penalised=kept, fixed=(~kept).double() * EXCLUDED)
    alone = fit_ridge(x[:, kept], y, x[:, kept], y, lams, max_iter=50)
    assert whole.weight[~kept].eq(0).all()
    np.testing.assert_allclose(whole.weight[kept].numpy(), alone.weight.numpy(), atol=1e-6)
    assert whole.lam == alone.lam and whole.valid_loss == pytest.approx(alone.valid_loss, abs=1e-12)
    # A lam of EXCLUDED on the penalised columns leaves them all out: the bias alone, the base rate.
    out = fit_ridge(x, y, x, y, (EXCLUDED,), max_iter=50)
    assert out.weight.eq(0).all() and out.bias == pytest.approx(float(torch.logit(y.mean())), abs=1e-6)
