"""The encoder of the toy variant that tests/test_variant_registry.py registers: the smallest module that
keeps the encoder's contract (``core.variants.Variant``), so that the test shows a variant needs nothing
but its registry entry and its class.

Two embeddings of ``dim`` each, so that the toy can also be published: the click embedding from the mean
of the clicked advertisers and the click counts, the conversion embedding from the mean of the converted
advertisers, the conversion counts and the click embedding. No attention: it only has to be cheap.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.batch import UserBatch
from encoders.config import ModelConfig
from encoders.tokens import CLICK_STATS, CONVERSION_STATS, Vocabulary
from encoders.variants import UserEmbeddings


def _masked_mean(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N, D) vectors, (B, N) mask -> (B, D) mean of the real ones (zeros for a user with none)."""
    weights = mask.to(vectors.dtype).unsqueeze(-1)
    return (vectors * weights).sum(1) / weights.sum(1).clamp(min=1)


class ToyEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab = Vocabulary(cfg)
        self.click = nn.Linear(cfg.dim + CLICK_STATS, cfg.dim)
        self.conversion = nn.Linear(2 * cfg.dim + CONVERSION_STATS, cfg.dim)

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        clicked = _masked_mean(self.vocab.advertiser(batch.click_advertiser), batch.click_mask)
        converted = _masked_mean(self.vocab.advertiser(batch.conversion_advertiser), batch.conversion_mask)
        click = self.click(torch.cat([clicked, batch.click_stats], dim=-1))
        conversion = self.conversion(torch.cat([converted, batch.conversion_stats, click], dim=-1))
        return UserEmbeddings(click, conversion)
