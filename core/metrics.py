"""Binary-classification metrics every stage scores with: AUC, log loss, normalized entropy (numpy, torch).

* ``auc``: the area under the ROC curve (Mann-Whitney, ties get average ranks); NaN with one class only;
* ``logloss``: mean binary cross-entropy of the predicted probabilities (clamped to [1e-7, 1 - 1e-7]),
  optionally weighted; ``row_losses`` is the per-row term;
* ``normalized_entropy`` (NE): log loss divided by the entropy of the labels' base rate; below 1 beats
  always predicting the base rate, lower is better; NaN when the labels hold one class only.

The encoders' embedding probe (``encoders.evaluate``) and the ranker (``ranker.metrics``) both use these.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CLIP = 1e-7   # probabilities are clamped to [CLIP, 1 - CLIP] before a log is taken


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney, ties get average ranks); NaN with one class only."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    n_pos, n = int(labels.sum()), labels.numel()
    if n_pos in (0, n):
        return math.nan
    order = torch.argsort(scores)
    _, inverse, counts = torch.unique_consecutive(scores[order], return_inverse=True, return_counts=True)
    average_rank = torch.cumsum(counts, 0).double() - (counts.double() - 1) / 2
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = average_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))


def row_losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's binary cross-entropy, ``p`` clamped to [CLIP, 1 - CLIP]."""
    p = np.clip(p, CLIP, 1 - CLIP)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def logloss(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy of probabilities ``p`` for labels ``y`` (weighted by ``w``)."""
    return float(np.average(row_losses(p, y), weights=w))


def entropy(rate: float) -> float:
    """The binary entropy of a base rate (nats); NaN at 0 and 1."""
    if rate <= 0 or rate >= 1:
        return math.nan
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def normalized_entropy(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Log loss over the entropy of the labels' base rate (both weighted by ``w``)."""
    return logloss(p, y, w) / entropy(float(np.average(y, weights=w)))
