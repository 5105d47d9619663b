"""Delayed feedback: the observation CDF, the elapsed-time weights' unbiasedness, a ranker trained on
labels still arriving recovering the eventual conversion rate where the naive one cannot; FNW (Ktena et al.
2019): its loss on a hand-computed example, its rows (every click a negative, each reported conversion a
positive duplicate), and what a ranker trained on them recovers (no Spark)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import torch

from core.errors import DuetError
from ranker.config import RankerConfig
from ranker.data import Batch, to_batch
from ranker.delay_weights import ObservationCDF, elapsed_weights
from ranker.delayed import MODES, DelayedFeedbackConfig, fake_negative_rows, mode_batches
from ranker.train import batch_loss, predict, train_ranker, validation_loss

H = 3600.0


def test_the_observation_cdf_is_the_share_reported_within_the_elapsed_time_floored_and_1_when_mature():
    cdf = ObservationCDF.from_delays(np.array([4 * H, 1 * H, 2 * H, 3 * H]), horizon_s=8 * 24 * H,
                                     min_observed=0.1)
    got = cdf(np.array([0.0, 1 * H, 2.5 * H, 4 * H, 7 * 24 * H, 8 * 24 * H]))
    assert got.tolist() == pytest.approx([0.1, 0.25, 0.5, 1.0, 1.0, 1.0])
    assert cdf.quantiles()["median_hours"] == pytest.approx(2.5)
    with pytest.raises(DuetError, match="positive matured clicks"):
        ObservationCDF.from_delays(np.array([]), 8 * 24 * H)


def test_elapsed_weights_make_the_expected_loss_that_of_the_eventual_labels():
    # For any p, F and per-label losses l1, l0: E over y_seen ~ Bernoulli(p F) of w(y_seen) l(y_seen)
    # equals p l1 + (1 - p) l0, the loss on the eventual label.
    rng = np.random.default_rng(0)
    p, f = torch.from_numpy(rng.uniform(0.01, 0.9, 1000)), torch.from_numpy(rng.uniform(0.05, 1, 1000))
    l1, l0 = -torch.log(p), -torch.log(1 - p)
    w1 = elapsed_weights(p, torch.ones_like(p), f)
    w0 = elapsed_weights(p, torch.zeros_like(p), f)
    expected_weighted = p * f * w1 * l1 + (1 - p * f) * w0 * l0
    assert torch.allclose(expected_weighted, p * l1 + (1 - p) * l0, rtol=1e-10)
    # Matured clicks (F = 1) keep the plain loss.
    ones = torch.ones_like(p)
    assert torch.allclose(elapsed_weights(p, torch.zeros_like(p), ones), ones)
    assert torch.allclose(elapsed_weights(p, ones, ones), ones)


def _delayed_batch(n: int, rng: np.random.Generator, elapsed_h: np.ndarray | None, cdf: ObservationCDF
                   ) -> tuple[Batch, np.ndarray]:
    """Clicks whose eventual conversion rate depends on one summary feature; with ``elapsed_h`` the labels
    are those seen that many hours after each click (a positive is seen once its report delay passed)."""
    x = rng.normal(size=n).astype(np.float32)
    rate = 1 / (1 + np.exp(-(-2.0 + 1.0 * x)))
    eventual = (rng.uniform(size=n) < rate).astype(np.float32)
    summary = np.zeros((n, 8), np.float32)
    summary[:, 0] = x
    label, observed = eventual, None
    if elapsed_h is not None:
        delay_h = rng.exponential(24.0, size=n)               # the true first-report delays
        label = (eventual * (delay_h <= elapsed_h)).astype(np.float32)
        observed = torch.from_numpy(cdf(elapsed_h * H))
    batch = Batch(ad=torch.ones(n, dtype=torch.int64), advertiser=torch.ones(n, dtype=torch.int64),
                  summary=torch.from_numpy(summary), user=torch.zeros(n, 0), user_missing=torch.zeros(n),
                  label=torch.from_numpy(label), user_ids=np.arange(n).astype(str).astype(object),
                  observed=observed)
    return batch, rate


def test_a_ranker_trained_on_labels_still_arriving_recovers_the_eventual_rate_only_when_weighted():
    rng = np.random.default_rng(1)
    horizon_h = 8 * 24.0
    cdf = ObservationCDF.from_delays(rng.exponential(24.0, size=20_000) * H, horizon_h * H)
    # Every click is 0-4 days old when the labels are read: a large share of positives not yet seen.
    elapsed = rng.uniform(0, 96, size=30_000)
    train, _ = _delayed_batch(30_000, rng, elapsed, cdf)
    valid, _ = _delayed_batch(5_000, rng, rng.uniform(0, 96, size=5_000), cdf)
    test, test_rate = _delayed_batch(20_000, rng, None, cdf)
    cfg = RankerConfig(ad_buckets=16, advertiser_buckets=16, batch_size=1024, max_epochs=6, patience=2,
                       hidden=(8,), dropout=0.0, lr=1e-2, weight_decay=0.0)
    weighted, _ = train_ranker(cfg, train, valid)
    plain = lambda b: Batch(**{**vars(b), "observed": None})  # noqa: E731  the same labels, no weights
    naive, _ = train_ranker(cfg, plain(train), plain(valid))
    truth = test_rate.mean()
    weighted_mean = float(predict(weighted, test).mean())
    naive_mean = float(predict(naive, test).mean())
    assert abs(weighted_mean / truth - 1) < 0.05, (weighted_mean, truth)
    assert naive_mean / truth < 0.8, (naive_mean, truth)   # the seen labels understate the rate


def _rows(logits: list[float], labels: list[float], fake_negatives: bool) -> Batch:
    n = len(labels)
    return Batch(ad=torch.ones(n, dtype=torch.int64), advertiser=torch.ones(n, dtype=torch.int64),
                 summary=torch.zeros(n, 8), user=torch.zeros(n, 0), user_missing=torch.zeros(n),
                 label=torch.tensor(labels, dtype=torch.float64), user_ids=np.arange(n).astype(str),
                 fake_negatives=fake_negatives)


def test_the_fnw_loss_of_three_clicks_one_converted_is_the_hand_computed_one():
    # Clicks A, B, C; A converted and was reported: four rows, A, B, C as negatives and A's duplicate as a
    # positive. Logits ln 3, 0, -ln 3 give f = 3/4, 1/2, 1/4 (A's two rows have A's features, so A's logit).
    # FNW (Ktena et al. 2019): a negative row weighs (1 - f)(1 + f), a positive row 1 + f, times its log loss.
    #   A neg: (1/4)(7/4) = 7/16  x -ln(1 - 3/4) = 2 ln 2
    #   B neg: (1/2)(3/2) = 3/4   x -ln(1 - 1/2) = ln 2
    #   C neg: (3/4)(5/4) = 15/16 x -ln(1 - 1/4) = ln(4/3)
    #   A pos: 1 + 3/4    = 7/4   x -ln(3/4)     = ln(4/3)
    #   sum = (14/16 + 12/16) ln 2 + (15/16 + 28/16) ln(4/3) = 26/16 ln 2 + 43/16 (2 ln 2 - ln 3)
    #       = 7 ln 2 - 43/16 ln 3;   mean over the 4 rows = 7/4 ln 2 - 43/64 ln 3 = 0.474877...
    expected = 7 / 4 * math.log(2) - 43 / 64 * math.log(3)
    logits = torch.tensor([math.log(3), 0.0, -math.log(3), math.log(3)], dtype=torch.float64,
                          requires_grad=True)
    rows = _rows([0.0] * 4, [0, 0, 0, 1], fake_negatives=True)
    loss = batch_loss(logits, rows)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    assert float(loss.detach()) == pytest.approx(0.474877, abs=1e-6)
    # The weights use f with its gradient stopped: d loss / d logit = w (f - y) / 4, w held constant.
    #   A neg: 7/16 (3/4) / 4 = 21/256; B neg: 3/4 (1/2) / 4 = 3/32; C neg: 15/16 (1/4) / 4 = 15/256;
    #   A pos: 7/4 (3/4 - 1) / 4 = -7/64
    loss.backward()
    assert logits.grad.tolist() == pytest.approx([21 / 256, 3 / 32, 15 / 256, -7 / 64], rel=1e-12)
    # Early stopping reads the same loss from the predictions.
    p = torch.tensor([0.75, 0.5, 0.25, 0.75], dtype=torch.float64)
    assert validation_loss(p, rows) == pytest.approx(expected, rel=1e-9)
    # Without the flag the same rows are plain BCE: (2 ln 2 + ln 2 + 2 ln(4/3)) / 4.
    plain = (3 * math.log(2) + 2 * math.log(4 / 3)) / 4
    assert float(batch_loss(logits, _rows([0.0] * 4, [0, 0, 0, 1], False)).detach()) == pytest.approx(plain)


T = datetime(2024, 3, 10, tzinfo=UTC)
DAY_S = 24 * H


def _pool(ages_s: np.ndarray, label: np.ndarray, report_delay_s: np.ndarray, x: np.ndarray | None = None,
          users: list[str] | None = None) -> pa.Table:
    """A delayed-feedback pool at ``T`` (the columns of ``ranker.training_set.delayed_feedback_pool``):
    clicks ``ages_s`` old, the labels seen at ``T``, the report delays of the seen positives (NaN: null),
    ``x`` in the summary's attributed share (the one feature the rate depends on)."""
    n = len(ages_s)
    click_us = int(T.timestamp() * 1_000_000) - np.rint(np.asarray(ages_s) * 1e6).astype(np.int64)
    x = np.zeros(n) if x is None else x
    return pa.table({
        "click_id": [f"c{i}" for i in range(n)],
        "user_id": users or [f"u{i}" for i in range(n)],
        "click_ts": pa.array(click_us, pa.timestamp("us", "UTC")),
        "label": pa.array(np.asarray(label, np.int32)),
        "matured": pa.array(np.asarray(ages_s) >= 8 * DAY_S),
        "report_delay_s": pa.array(np.asarray(report_delay_s, np.float64), from_pandas=True),
        "ad_id": ["a1"] * n, "advertiser_id": ["v1"] * n,
        "click_count": pa.array(np.ones(n)), "conversion_count": pa.array(np.zeros(n)),
        "clicks_7d": pa.array(np.ones(n)), "conversions_7d": pa.array(np.zeros(n)),
        "hours_since_click": pa.array(np.ones(n)), "hours_since_conversion": pa.array(np.full(n, -1.0)),
        "attributed_share": pa.array(np.asarray(x, np.float64)),
    })


def test_fnw_rows_are_every_click_as_a_negative_and_each_conversion_reported_by_then_once_more():
    nan = float("nan")
    pool = _pool(
        # c0: 9 days old, reported a day after the click; c1: 2 days old, reported a day after;
        # c2: 2 days old, converted a day after but reported on T + 1 day: unseen at T (label 0, no delay);
        # c3: 1 day old, no conversion; c4: 12 hours old, reported exactly at T.
        ages_s=np.array([9 * DAY_S, 2 * DAY_S, 2 * DAY_S, 1 * DAY_S, 12 * H]),
        label=np.array([1, 1, 0, 0, 1]),
        report_delay_s=np.array([1 * DAY_S, 1 * DAY_S, nan, nan, 12 * H]),
        users=["u0", "u1", "u2", "u3", "u4"])
    rows = fake_negative_rows(pool, T)
    assert rows.column("click_id").to_pylist() == ["c0", "c1", "c2", "c3", "c4", "c0", "c1", "c4"]
    assert rows.column("label").to_pylist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert rows.schema == pool.schema
    # A pool whose positive was reported after T (or never) was not labelled at T: refused.
    late = _pool(np.array([2 * DAY_S]), np.array([1]), np.array([3 * DAY_S]))
    with pytest.raises(DuetError, match="no report by the training instant"):
        fake_negative_rows(late, T)
    with pytest.raises(DuetError, match="no report by the training instant"):
        fake_negative_rows(_pool(np.array([2 * DAY_S]), np.array([1]), np.array([nan])), T)

    # Every mode is a replay of the same pool: FNW's rows split by the same held-out users.
    cfg = DelayedFeedbackConfig("unused", "unused", T, valid_share=0.5,
                                ranker=RankerConfig(ad_buckets=16, advertiser_buckets=16))
    cdf = ObservationCDF.from_delays(np.array([1 * DAY_S]), 8 * DAY_S)
    batches = mode_batches(pool, cfg, cdf)
    assert set(batches) == set(MODES) == {"matured", "naive", "elapsed_weighted", "fnw"}
    (fnw_train, fnw_valid), (naive_train, naive_valid) = batches["fnw"], batches["naive"]
    assert fnw_train.fake_negatives and fnw_valid.fake_negatives
    assert not any(b.fake_negatives for mode in ("matured", "naive", "elapsed_weighted")
                   for b in batches[mode])
    assert len(fnw_train) + len(fnw_valid) == 8 and fnw_train.label.sum() + fnw_valid.label.sum() == 3
    assert set(fnw_valid.user_ids) == set(naive_valid.user_ids)
    assert set(fnw_train.user_ids) == set(naive_train.user_ids)
    assert len(naive_valid) and len(naive_train)
    assert batches["elapsed_weighted"][0].observed is not None and batches["naive"][0].observed is None


def _simulated_pool(n: int, rng: np.random.Generator, min_age_d: float, max_age_d: float
                    ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Clicks ``min_age_d``-``max_age_d`` days old at ``T`` whose eventual conversion rate depends on one
    feature; a conversion is first reported an exponential (mean 24 h, at most 7.9 days) after its click
    and seen at ``T`` once reported. Returns the pool, the eventual rates and the clicks' ages (hours)."""
    x = rng.normal(size=n)
    rate = 1 / (1 + np.exp(-(-2.0 + x)))
    eventual = rng.uniform(size=n) < rate
    delay_h = np.minimum(rng.exponential(24.0, size=n), 7.9 * 24)
    age_h = rng.uniform(min_age_d * 24, max_age_d * 24, size=n)
    seen = eventual & (delay_h <= age_h)
    pool = _pool(age_h * H, seen.astype(int), np.where(seen, delay_h * H, np.nan), x)
    return pool, rate, age_h


def test_a_ranker_trained_with_fnw_recovers_the_rate_once_every_conversion_is_reported_and_no_more():
    rng = np.random.default_rng(2)
    cfg = DelayedFeedbackConfig("unused", "unused", T, ranker=RankerConfig(
        ad_buckets=16, advertiser_buckets=16, batch_size=1024, max_epochs=6, patience=2, hidden=(8,),
        dropout=0.0, lr=1e-2, weight_decay=0.0))
    cdf = ObservationCDF.from_delays(rng.exponential(24.0, size=20_000) * H, cfg.horizon.total_seconds())
    test_pool, test_rate, _ = _simulated_pool(20_000, rng, 8, 12)
    test = to_batch(test_pool, (16, 16), with_user=False)
    truth = test_rate.mean()

    # Clicks 8-12 days old: every conversion has been reported, FNW's own assumption. The duplicated rows'
    # positive share is about p / (1 + p); the FNW-weighted model's output is the eventual p itself.
    pool, _, _ = _simulated_pool(30_000, rng, 8, 12)
    train, valid = mode_batches(pool, cfg, cdf)["fnw"]
    assert float(train.label.mean()) / truth < 0.92         # 1 / (1 + mean p), about 0.87 here
    fnw, _ = train_ranker(cfg.ranker, train, valid)
    fnw_mean = float(predict(fnw, test).mean())
    assert abs(fnw_mean / truth - 1) < 0.05, (fnw_mean, truth)
    # The same rows without FNW's weights learn the duplicated rows' share p / (1 + p): biased down.
    plain, _ = train_ranker(cfg.ranker, replace(train, fake_negatives=False),
                            replace(valid, fake_negatives=False))
    plain_mean = float(predict(plain, test).mean())
    assert plain_mean / truth < 0.93, (plain_mean, truth)

    # Clicks 0-4 days old: a conversion not reported yet has no duplicate, and FNW learns the share
    # reported by T (eventual rate x mean F(age), about 0.75 of it here), as the naive model does.
    pool, _, age_h = _simulated_pool(30_000, rng, 0, 4)
    train, valid = mode_batches(pool, cfg, cdf)["fnw"]
    fresh, _ = train_ranker(cfg.ranker, train, valid)
    fresh_mean = float(predict(fresh, test).mean())
    reported_share = float(np.mean(1 - np.exp(-age_h / 24.0)))     # F(age), every age under 7.9 days
    assert fresh_mean / truth < 0.85, (fresh_mean, truth)
    assert abs(fresh_mean / (truth * reported_share) - 1) < 0.07, (fresh_mean, truth, reported_share)
