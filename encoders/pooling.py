"""Sequence of tokens -> one user embedding.

``SummaryPooling`` (the default) concatenates the summary token's output with an attention pooling of
all tokens (a learned query), normalises and projects: the summary keeps counts and recency, the
attention pooling picks the events that matter. ``MeanPooling`` (a masked mean) is the straightforward
choice, kept for ablations: a mean loses how many events there were.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.attention import CrossAttention


class SummaryPooling(nn.Module):
    def __init__(self, dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.attn = CrossAttention(dim, heads, dropout=0.0)
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, out_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, D) with the summary token first; mask: (B, N) bool -> (B, out_dim)."""
        query = self.query.expand(tokens.shape[0], 1, -1)
        pooled = self.attn(query, tokens, mask)[:, 0]
        return self.proj(self.norm(torch.cat([tokens[:, 0], pooled], dim=-1)))


class MeanPooling(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, D); mask: (B, N) bool -> (B, out_dim)."""
        weights = mask.to(tokens.dtype)[..., None]
        mean = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.proj(self.norm(mean))


def make_pooling(kind: str, dim: int, heads: int, out_dim: int) -> nn.Module:
    return SummaryPooling(dim, heads, out_dim) if kind == "summary" else MeanPooling(dim, out_dim)
