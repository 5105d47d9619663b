"""The conversion encoder: interleaved cross- and self-attention over a user's conversion sequence.

Conversions are sparse, late and often unattributed; on their own they say little about a user with one
or two of them. Each block lets the conversion tokens read the click encoder's token outputs (context
from the dense stream: which of the user's clicks a conversion relates to, how active the user is), then
attend to each other. The summary token always exists, so a user with no conversion still gets an
embedding: the learned empty state reading the clicks. It also starts from a projection of the click
embedding, so the conversion embedding does not have to rebuild the user's activity from click tokens
alone (the README's "What the embeddings know" gives what that changed on pre-training validation).
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.batch import UserBatch
from encoders.blocks import CrossSelfBlock
from encoders.click_encoder import ClickEncoding
from encoders.config import ModelConfig
from encoders.pooling import make_pooling
from encoders.tokens import ConversionTokens, Vocabulary


class ConversionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: Vocabulary, blocks: int, out_dim: int,
                 click_dim: int) -> None:
        super().__init__()
        self.tokens = ConversionTokens(cfg, vocab)
        self.click_summary = nn.Linear(click_dim, cfg.dim)
        self.blocks = nn.ModuleList(CrossSelfBlock(cfg.dim, cfg.heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(blocks))
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = make_pooling(cfg.pooling, cfg.dim, cfg.heads, out_dim)

    def forward(self, batch: UserBatch, clicks: ClickEncoding) -> torch.Tensor:
        """batch: B users' conversions (M slots); clicks: the click encoder's output for the same users
        -> (B, out_dim)."""
        tokens = self.tokens(batch)
        tokens = tokens._replace(summary=tokens.summary + self.click_summary(clicks.embedding))
        x, mask = tokens.with_summary()
        for block in self.blocks:
            x = block(x, mask, clicks.tokens, clicks.mask)
        return self.pool(self.norm(x), mask)
