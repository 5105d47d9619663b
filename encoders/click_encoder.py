"""The click encoder: multi-layer pre-norm self-attention over a user's click sequence (DUET's dense
stream), pooled to a user embedding. Its token outputs are also the context the conversion encoder
reads."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from encoders.batch import UserBatch
from encoders.blocks import SelfAttentionBlock
from encoders.config import ModelConfig
from encoders.pooling import make_pooling
from encoders.tokens import ClickTokens, Vocabulary


class ClickEncoding(NamedTuple):
    """``embedding`` (B, E); ``tokens`` (B, 1 + N, D) after the last layer, summary first; ``mask``
    (B, 1 + N) bool, True = real."""

    embedding: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


class ClickEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: Vocabulary, layers: int, out_dim: int) -> None:
        super().__init__()
        self.tokens = ClickTokens(cfg, vocab)
        self.layers = nn.ModuleList(SelfAttentionBlock(cfg.dim, cfg.heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = make_pooling(cfg.pooling, cfg.dim, cfg.heads, out_dim)

    def forward(self, batch: UserBatch) -> ClickEncoding:
        """batch: B users' clicks (N slots) -> ClickEncoding with embedding (B, out_dim)."""
        x, mask = self.tokens(batch).with_summary()
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x)
        return ClickEncoding(self.pool(x, mask), x, mask)
