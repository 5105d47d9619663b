"""Delayed feedback: the observation CDF, the importance weights' unbiasedness, and a ranker trained on
labels still arriving recovering the eventual conversion rate where the naive one cannot (no Spark)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import DuetError
from ranker.config import RankerConfig
from ranker.data import Batch
from ranker.delay_weights import ObservationCDF, importance_weights
from ranker.train import predict, train_ranker

H = 3600.0


def test_the_observation_cdf_is_the_share_reported_within_the_elapsed_time_floored_and_1_when_mature():
    cdf = ObservationCDF.from_delays(np.array([4 * H, 1 * H, 2 * H, 3 * H]), horizon_s=8 * 24 * H,
                                     min_observed=0.1)
    got = cdf(np.array([0.0, 1 * H, 2.5 * H, 4 * H, 7 * 24 * H, 8 * 24 * H]))
    assert got.tolist() == pytest.approx([0.1, 0.25, 0.5, 1.0, 1.0, 1.0])
    assert cdf.quantiles()["median_hours"] == pytest.approx(2.5)
    with pytest.raises(DuetError, match="positive matured clicks"):
        ObservationCDF.from_delays(np.array([]), 8 * 24 * H)


def test_importance_weights_make_the_expected_loss_that_of_the_eventual_labels():
    # For any p, F and per-label losses l1, l0: E over y_seen ~ Bernoulli(p F) of w(y_seen) l(y_seen)
    # equals p l1 + (1 - p) l0, the loss on the eventual label.
    rng = np.random.default_rng(0)
    p, f = torch.from_numpy(rng.uniform(0.01, 0.9, 1000)), torch.from_numpy(rng.uniform(0.05, 1, 1000))
    l1, l0 = -torch.log(p), -torch.log(1 - p)
    w1 = importance_weights(p, torch.ones_like(p), f)
    w0 = importance_weights(p, torch.zeros_like(p), f)
    expected_weighted = p * f * w1 * l1 + (1 - p * f) * w0 * l0
    assert torch.allclose(expected_weighted, p * l1 + (1 - p) * l0, rtol=1e-10)
    # Matured clicks (F = 1) keep the plain loss.
    ones = torch.ones_like(p)
    assert torch.allclose(importance_weights(p, torch.zeros_like(p), ones), ones)
    assert torch.allclose(importance_weights(p, ones, ones), ones)


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
