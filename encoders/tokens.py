"""Events -> tokens: hashed id embeddings plus time features, and a summary token per sequence.

``Vocabulary`` holds the hashed id tables every token type shares. Clicks and conversions look up
advertisers in the same table: advertisers are learned mostly from the dense click stream, and a sparse
conversion history gains from that. Time enters as features (hours before the snapshot, gaps between
events) through a small MLP, not as positions: attention then sees *when* events happened, and extra
padding cannot move anything.

Each sequence also gets a summary token built from its counts (how many events, how recent the last one,
the attributed share of conversions). It is the slot a user with no events still has, so a user with no
conversions gets a conversion embedding from the summary token reading the clicks, and it keeps counts
that attention pooling (a weighted mean) would wash out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from encoders.batch import UserBatch
from encoders.config import ModelConfig

CLICK_TIME_FEATURES, CLICK_STATS = 2, 3
CONVERSION_TIME_FEATURES, CONVERSION_STATS = 1, 4


class Tokens(NamedTuple):
    """A sequence as tokens: ``summary`` (B, D), ``events`` (B, N, D), ``mask`` (B, N) True = real."""

    summary: torch.Tensor
    events: torch.Tensor
    mask: torch.Tensor

    def with_summary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, 1 + N, D) with the summary first, mask (B, 1 + N) (the summary is always real)."""
        tokens = torch.cat([self.summary[:, None], self.events], dim=1)
        mask = torch.cat([torch.ones_like(self.mask[:, :1]), self.mask], dim=1)
        return tokens, mask


def _embedding(rows: int, dim: int) -> nn.Embedding:
    table = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=1.0)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class Vocabulary(nn.Module):
    """Hashed id tables: ads, advertisers (shared by clicks and conversions), conversion types, and
    the attributed flag (0 padding, 1 no, 2 yes)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ad = _embedding(cfg.ad_buckets, cfg.dim)
        self.advertiser = _embedding(cfg.advertiser_buckets, cfg.dim)
        self.conversion_type = _embedding(cfg.conversion_type_buckets, cfg.dim)
        self.attributed = _embedding(3, cfg.dim)


class FeatureMLP(nn.Module):
    """A few real-valued features -> a D-dim vector.

    The output layer starts at the id embeddings' scale (std 0.02): a default-initialised layer would
    start ten times larger and drown the ids it is added to, which then barely learn.
    """

    def __init__(self, features: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.normal_(self.net[-1].weight, std=0.02)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClickTokens(nn.Module):
    """Click events -> ``Tokens``: ad + advertiser + time features; summary from the click counts."""

    def __init__(self, cfg: ModelConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.vocab = vocab
        self.time = FeatureMLP(CLICK_TIME_FEATURES, cfg.dim)
        self.stats = FeatureMLP(CLICK_STATS, cfg.dim)
        self.summary = nn.Parameter(torch.zeros(cfg.dim))

    def forward(self, batch: UserBatch) -> Tokens:
        events = (self.vocab.ad(batch.click_ad) + self.vocab.advertiser(batch.click_advertiser)
                  + self.time(batch.click_time))
        return Tokens(self.summary + self.stats(batch.click_stats), events, batch.click_mask)


class ConversionTokens(nn.Module):
    """Conversion events -> ``Tokens``: advertiser + type + attributed flag + age; summary from the
    conversion counts (a learned 'empty' state when there are none)."""

    def __init__(self, cfg: ModelConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.vocab = vocab
        self.time = FeatureMLP(CONVERSION_TIME_FEATURES, cfg.dim)
        self.stats = FeatureMLP(CONVERSION_STATS, cfg.dim)
        self.summary = nn.Parameter(torch.zeros(cfg.dim))

    def forward(self, batch: UserBatch) -> Tokens:
        events = (self.vocab.advertiser(batch.conversion_advertiser)
                  + self.vocab.conversion_type(batch.conversion_type)
                  + self.vocab.attributed(batch.conversion_attributed)
                  + self.time(batch.conversion_time))
        return Tokens(self.summary + self.stats(batch.conversion_stats), events, batch.conversion_mask)
