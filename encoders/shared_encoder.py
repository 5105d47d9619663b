"""The shared baseline: one transformer over the merged click and conversion stream.

This is the single undifferentiated encoder DUET claims to beat. Click and conversion tokens (the same
token modules DUET uses) get an event-type embedding and go through one stack of self-attention with
one summary token carrying both streams' counts. Attention has no positions here or in DUET (time is a
token feature), so concatenating the two streams is the time-ordered merge up to an order attention
cannot see.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.batch import UserBatch
from encoders.blocks import SelfAttentionBlock
from encoders.config import ModelConfig
from encoders.pooling import make_pooling
from encoders.tokens import ClickTokens, ConversionTokens, Vocabulary


class SharedEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: Vocabulary, layers: int, out_dim: int) -> None:
        super().__init__()
        self.click_tokens = ClickTokens(cfg, vocab)
        self.conversion_tokens = ConversionTokens(cfg, vocab)
        self.event_type = nn.Parameter(torch.randn(2, cfg.dim) * 0.02)  # 0 = click, 1 = conversion
        self.layers = nn.ModuleList(SelfAttentionBlock(cfg.dim, cfg.heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = make_pooling(cfg.pooling, cfg.dim, cfg.heads, out_dim)

    def forward(self, batch: UserBatch) -> torch.Tensor:
        """batch: B users' clicks (N) and conversions (M) -> (B, out_dim)."""
        clicks, conversions = self.click_tokens(batch), self.conversion_tokens(batch)
        summary = clicks.summary + conversions.summary
        x = torch.cat([summary[:, None], clicks.events + self.event_type[0],
                       conversions.events + self.event_type[1]], dim=1)
        mask = torch.cat([torch.ones_like(clicks.mask[:, :1]), clicks.mask, conversions.mask], dim=1)
        for layer in self.layers:
            x = layer(x, mask)
        return self.pool(self.norm(x), mask)
