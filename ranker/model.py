"""The OCVR ranker: the user's sequence summary, (optionally) a user vector, and a candidate side that the
user vector can meet -> logit.

::

    summary s (n, 8); advertiser -> c = C[advertiser] (n, k), a frozen table fitted on the training clicks
    user (n, w)  -> standardised per column (training split), 0 when missing             -> u (n, w)
    clickers     u * centroid[advertiser]   (how alike the user is to the advertiser's clickers)
    converters   u * converters[advertiser] (... to its converters; out of fold for training rows)
    x = [s, c, u, clickers, their mean, converters, their mean, user_missing], each column standardised
        on the training rows and clipped to their range                                  (n, input_width)
    logit = wide(x)                                   a ridge logistic regression, fitted exactly
          + MLP([x, (A u) * (B c), ids (optional)])   the deep part, starting at 0

Why each part (issue 22's audit, measured on generated data against the generator's own ceiling,
``benchmarks/ranker_ceiling.py``):

* **per-column standardisation**, not a per-row LayerNorm: a row norm removes each user's level and
  scale, which is exactly what a propensity coordinate says;
* **a fixed candidate table** ``C`` (``advertiser_factors``): each advertiser's coordinates in the
  factorisation of the training split's user x advertiser click counts (clicks, never labels). A learned
  advertiser table would have to learn which advertisers are alike from the few hundred positives;
  co-clicks say it from tens of thousands of clicks. Every variant (``none`` too) gets the same table;
* **ids optional** and off by default: on this data an ad says nothing its advertiser does not, and both
  tables memorised noise so that early stopping fired in the first epochs.

The same module serves every variant; ``none`` has w = 0 and no user branch. The standardisation and the
candidate table are buffers, saved with the weights (``ranker.checkpoint``), fitted once by
``fit_inputs`` on the training split before training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ranker.config import RankerConfig
from ranker.data import SUMMARY_WIDTH, Batch


def advertiser_factors(user_ids: np.ndarray, advertiser: np.ndarray, buckets: int, dim: int) -> np.ndarray:
    """(buckets, dim) float32: advertisers' coordinates from the truncated SVD of the user x advertiser
    matrix of ``log1p(clicks)`` with rows scaled to unit length (a user's click profile), each column of
    the result standardised over the advertisers seen; an advertiser never clicked gets zeros."""
    users, u = np.unique(user_ids, return_inverse=True)
    seen, a = np.unique(advertiser, return_inverse=True)
    counts = np.zeros((len(users), len(seen)))
    np.add.at(counts, (u, a), 1.0)
    x = np.log1p(counts)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(dim, *x.shape)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    factors = vt[:k].T * np.sqrt(s[:k])
    factors = (factors - factors.mean(axis=0)) / np.maximum(factors.std(axis=0), 1e-6)
    out = np.zeros((buckets, dim), np.float32)
    out[seen, :k] = factors
    return out


def _scale(x: torch.Tensor) -> torch.Tensor:
    """Per-column sd for standardising; 1 for a column (nearly) constant in training, whose sd would turn
    any other value at test time into a huge input (a flag never set in a small training split did: a
    ranker's calibration went to 6)."""
    sd = x.std(0) if len(x) > 1 else torch.zeros(x.shape[1])
    return torch.where(sd > 1e-3, sd, torch.ones_like(sd))


class Ranker(nn.Module):
    """``wide(x) + deep([x, learned parts])``: ``x`` are the fixed inputs (``inputs``), ``wide`` a logistic
    regression over them (fitted exactly by ``ranker.train``, ridge penalty chosen on validation), ``deep``
    an MLP over them and the learned parts (the id tables, the low-rank user x candidate product) whose
    output starts at zero, so that training starts from the regression and early stopping can keep it."""

    def __init__(self, cfg: RankerConfig, user_width: int):
        super().__init__()
        self.cfg = cfg
        self.user_width = user_width
        self.register_buffer("user_mean", torch.zeros(user_width))
        self.register_buffer("user_sd", torch.ones(user_width))
        self.register_buffer("candidates", torch.zeros(cfg.advertiser_buckets, cfg.candidate_dim))
        self.register_buffer("centroids", torch.zeros(cfg.advertiser_buckets, user_width))
        self.register_buffer("converters", torch.zeros(cfg.advertiser_buckets, user_width))
        self.input_width = SUMMARY_WIDTH + cfg.candidate_dim + (3 * user_width + 3 if user_width else 0)
        self.register_buffer("input_mean", torch.zeros(self.input_width))
        self.register_buffer("input_sd", torch.ones(self.input_width))
        # Inputs are clipped to the range the training rows spanned: a linear part must not extrapolate
        # (matured-only delayed-feedback training sees only users without history, then tests on users with).
        self.register_buffer("input_low", torch.full((self.input_width,), -math.inf))
        self.register_buffer("input_high", torch.full((self.input_width,), math.inf))
        self.wide = nn.Linear(self.input_width, 1)
        width = self.input_width
        self.ad = nn.Embedding(cfg.ad_buckets, cfg.id_dim) if cfg.ad_ids else None
        self.advertiser = nn.Embedding(cfg.advertiser_buckets, cfg.id_dim) if cfg.advertiser_ids else None
        for table in (self.ad, self.advertiser):
            if table is not None:
                nn.init.normal_(table.weight, std=0.05)
                width += cfg.id_dim
        if user_width:
            self.user = nn.Linear(user_width, cfg.user_dim)
            self.candidate = nn.Linear(cfg.candidate_dim, cfg.user_dim, bias=False)
            width += cfg.user_dim
        layers: list[nn.Module] = []
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @torch.no_grad()
    def fit_inputs(self, train: Batch) -> torch.Tensor | None:
        """Fit the standardisation and the candidate tables on the training split; return the training rows'
        converter vectors computed without their own users' labels (``folds`` of users, out of fold), which
        training must use instead of the table: a row whose own label built its feature would teach the
        model to trust a leak (it did: early stopping at the first epoch, NE above 1 at signal 0)."""
        self.input_mean.zero_()
        self.input_sd.fill_(1.0)
        self.input_low.fill_(-math.inf)
        self.input_high.fill_(math.inf)
        table = advertiser_factors(train.user_ids, train.advertiser.numpy(), self.cfg.advertiser_buckets,
                                   self.cfg.candidate_dim)
        self.candidates.copy_(torch.from_numpy(table))
        if not self.user_width:
            self._standardise(self.inputs(train))
            return None
        present = train.user[train.user_missing == 0]
        if len(present) > 1:
            self.user_mean.copy_(present.mean(0))
            self.user_sd.copy_(_scale(present))
        here = 1 - train.user_missing
        u = (train.user - self.user_mean) / self.user_sd * here.unsqueeze(1)
        sums = torch.zeros_like(self.centroids).index_add_(0, train.advertiser, u)
        counts = torch.zeros(len(sums)).index_add_(0, train.advertiser, here)
        self.centroids.copy_(sums / counts.clamp_min(1).unsqueeze(1))
        # Converters alike: positives pooled over similar advertisers (a kernel on the candidate table's
        # cosine similarity), so that a few hundred positives still say something about each advertiser.
        unit = self.candidates / self.candidates.norm(dim=1, keepdim=True).clamp_min(1e-6)
        kernel = torch.exp((unit @ unit.T - 1) / self.cfg.kernel_width) * (counts > 0).float().unsqueeze(0)
        positive = (train.label * here).unsqueeze(1)

        def table_of(rows: torch.Tensor) -> torch.Tensor:
            by_adv = torch.zeros_like(sums).index_add_(0, train.advertiser[rows], (u * positive)[rows])
            n_adv = torch.zeros(len(sums)).index_add_(0, train.advertiser[rows], positive[rows, 0])
            return (kernel @ by_adv) / (kernel @ n_adv).clamp_min(1e-6).unsqueeze(1)

        self.converters.copy_(table_of(torch.arange(len(train))))
        _, user_index = np.unique(train.user_ids, return_inverse=True)
        fold = torch.from_numpy(user_index % self.cfg.folds)
        out_of_fold = torch.zeros_like(u)
        for k in range(self.cfg.folds):
            inside = fold == k
            out_of_fold[inside] = table_of(torch.nonzero(~inside).squeeze(1))[train.advertiser[inside]]
        self._standardise(self.inputs(train, out_of_fold))
        return out_of_fold

    def _standardise(self, x: torch.Tensor) -> None:
        """Every input column to mean 0, sd 1 on the training rows (one ridge penalty then suits them all),
        and the range they span."""
        self.input_mean.copy_(x.mean(0))
        self.input_sd.copy_(_scale(x))
        scaled = (x - self.input_mean) / self.input_sd
        self.input_low.copy_(scaled.min(0).values)
        self.input_high.copy_(scaled.max(0).values)

    def inputs(self, batch: Batch, converters: torch.Tensor | None = None) -> torch.Tensor:
        """The fixed inputs ``x`` (n, input_width): the standardised summary, the candidate's row of the
        table and, with a user vector, the standardised vector ``u``, ``u * centroid`` (how alike the user is
        to the advertiser's clickers), ``u * converters`` (to its converters) with the mean of each, and
        the missing flag. ``converters``: the rows' converter vectors when they must not come from the
        table (the training rows, ``fit_inputs``)."""
        c = self.candidates[batch.advertiser]
        parts = [batch.summary, c]   # every column is standardised below, on the training rows
        if self.user_width:
            present = (1 - batch.user_missing).unsqueeze(1)
            u = (batch.user - self.user_mean) / self.user_sd * present
            near = u * self.centroids[batch.advertiser]
            conv = u * (self.converters[batch.advertiser] if converters is None else converters)
            parts += [u, near, near.mean(1, keepdim=True), conv, conv.mean(1, keepdim=True),
                      batch.user_missing.unsqueeze(1)]
        x = (torch.cat(parts, dim=1) - self.input_mean) / self.input_sd
        return torch.minimum(torch.maximum(x, self.input_low), self.input_high)

    def user_columns(self) -> torch.Tensor:
        """Which of ``inputs``' columns come from the user vector (bool, (input_width,))."""
        mask = torch.zeros(self.input_width, dtype=torch.bool)
        mask[SUMMARY_WIDTH + self.cfg.candidate_dim:] = True
        return mask

    def forward(self, batch: Batch, converters: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, (n,)."""
        x = self.inputs(batch, converters)
        deep = [x]
        if self.ad is not None:
            deep.append(self.ad(batch.ad))
        if self.advertiser is not None:
            deep.append(self.advertiser(batch.advertiser))
        if self.user_width:
            u = x[:, SUMMARY_WIDTH + self.cfg.candidate_dim:][:, :self.user_width]
            deep.append(self.user(u) * self.candidate(self.candidates[batch.advertiser]))
        return (self.wide(x) + self.mlp(torch.cat(deep, dim=1))).squeeze(1)
