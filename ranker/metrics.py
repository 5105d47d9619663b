"""Evaluation: NE, AUC, log loss, calibration, calibration curves and bootstrap intervals over users.

* log loss, NE (normalized entropy: log loss over the entropy of the test set's base rate; below 1 beats
  always predicting the base rate, lower is better) and AUC: ``core.metrics``;
* calibration: sum of predictions over sum of labels (1 is calibrated);
* intervals: a bootstrap over **test users** (a user's clicks are resampled together, since they are not
  independent), the same replicates for every variant, so a difference between variants gets a paired
  interval; each replicate averages the variant's NE over its training seeds.
"""

from __future__ import annotations

import numpy as np
import torch

from core.metrics import auc, logloss, normalized_entropy, row_losses


def summary(p: np.ndarray, y: np.ndarray) -> dict:
    """NE, AUC, log loss and calibration of predictions ``p`` for labels ``y``."""
    return {"ne": normalized_entropy(p, y), "auc": auc(torch.from_numpy(p), torch.from_numpy(y)),
            "logloss": logloss(p, y), "calibration": float(p.sum() / max(y.sum(), 1e-12))}


def calibration_curve(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-count bins by predicted probability: mean prediction, observed rate and size of each."""
    order = np.argsort(p, kind="stable")
    return [{"predicted": float(p[part].mean()), "observed": float(y[part].mean()), "count": int(len(part))}
            for part in np.array_split(order, bins) if len(part)]


def user_bootstrap_weights(user_ids: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n) row weights: each replicate draws users with replacement; a row's weight is how
    many times its user was drawn."""
    users, inverse = np.unique(user_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(users), np.full(len(users), 1 / len(users)), size=replicates)
    return counts[:, inverse].astype(np.float64)


def interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    lo, hi = np.percentile(values, [50 * (1 - level), 100 - 50 * (1 - level)])
    return [float(lo), float(hi)]


def bootstrap_ne(predictions: dict[str, list[np.ndarray]], y: np.ndarray, weights: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Per variant, the seed-mean NE in every replicate: (replicates,) each. Per-row losses are computed
    once, so a replicate costs one weighted sum (a matrix product over all replicates)."""
    totals = weights.sum(axis=1)
    rates = weights @ y / totals
    entropies = -(rates * np.log(rates) + (1 - rates) * np.log(1 - rates))
    out = {}
    for name, seeds in predictions.items():
        per_seed = []
        for p in seeds:
            per_seed.append(weights @ row_losses(p, y) / totals / entropies)
        out[name] = np.mean(per_seed, axis=0)
    return out


def bootstrap_auc(p: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``p`` in every replicate, (replicates,): the weighted Mann-Whitney statistic, each positive
    counting the weight of the negatives scored below it (half of those tied with it)."""
    order = np.argsort(p, kind="stable")
    p, y, w = p[order], y[order].astype(bool), weights[:, order]
    # Groups of tied scores: a positive counts the negatives strictly below plus half of its group's.
    _, group = np.unique(p, return_inverse=True)
    neg = np.where(~y, w, 0.0)
    pos = np.where(y, w, 0.0)
    neg_cum = np.cumsum(neg, axis=1)
    last = np.r_[np.flatnonzero(np.diff(group)), len(p) - 1]           # last index of each group
    first = np.r_[0, last[:-1] + 1]
    below = np.where(first > 0, neg_cum[:, np.maximum(first - 1, 0)], 0.0)   # (R, groups)
    within = neg_cum[:, last] - below
    credit = (below + within / 2)[:, group]
    return (pos * credit).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
