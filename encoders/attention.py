"""Multi-head attention with a key padding mask, on ``scaled_dot_product_attention``.

``SelfAttention`` projects queries, keys and values from one sequence in a single matmul;
``CrossAttention`` takes queries from one sequence and keys/values from another (conversion tokens
reading click tokens). Both use ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused
kernel (flash or memory-efficient on CUDA, a fused CPU kernel otherwise); the tests compare it with a
naive softmax(QK^T)V reference.

Every sequence the encoders attend over starts with a summary token that is never masked, so no query
row ever sees only padding (which would make softmax produce NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
           dropout: float) -> torch.Tensor:
    """q: (B, H, Nq, Dh), k/v: (B, H, Nk, Dh), key_mask: (B, Nk) bool, True = real -> (B, H, Nq, Dh)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=dropout)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    b, h, n, dh = y.shape
    return y.transpose(1, 2).reshape(b, n, h * dh)


class SelfAttention(nn.Module):
    """Tokens attend to the real tokens of the same sequence."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D); mask: (B, N) bool, True = real -> (B, N, D)."""
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.out(_merge(attend(q, k, v, mask, self.dropout if self.training else 0.0)))


class CrossAttention(nn.Module):
    """Queries from ``x`` attend to the real tokens of ``context``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, Nq, D); context: (B, Nk, D); context_mask: (B, Nk) bool -> (B, Nq, D)."""
        q = _heads(self.q(x), self.heads)
        k, v = (_heads(t, self.heads) for t in self.kv(context).chunk(2, dim=-1))
        return self.out(_merge(attend(q, k, v, context_mask, self.dropout if self.training else 0.0)))
