"""Pre-norm transformer blocks: self-attention, and DUET's cross- then self-attention block.

Pre-norm (LayerNorm before each sub-layer, residual around it) trains stably without warm-up tricks at
these depths. ``CrossSelfBlock`` is the conversion encoder's unit: the conversion tokens first read the
click tokens (context from the dense stream), then each other, then a feed-forward layer.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.attention import CrossAttention, SelfAttention


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttentionBlock(nn.Module):
    """x + SelfAttention(LN(x)), then + FeedForward(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D); mask: (B, N) bool, True = real -> (B, N, D)."""
        x = x + self.drop(self.attn(self.norm_attn(x), mask))
        return x + self.ffn(self.norm_ffn(x))


class CrossSelfBlock(nn.Module):
    """x + CrossAttention(LN(x), LN(context)), + SelfAttention(LN(x)), + FeedForward(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_query, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, heads, dropout)
        self.self_block = SelfAttentionBlock(dim, heads, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, M, D) conversion tokens, mask (B, M); context: (B, N, D) click tokens, context_mask
        (B, N) -> (B, M, D)."""
        x = x + self.drop(self.cross(self.norm_query(x), self.norm_context(context), context_mask))
        return self.self_block(x, mask)
