"""Pre-training objectives: what the user embeddings must predict about the next horizon.

* ``AdvertiserRetrieval``: which advertisers the user will click (or convert with). A sampled softmax
  with in-batch negatives in the spirit of PinnerFormer's dense all-action loss: every (user, future
  advertiser) pair of the batch is a positive; the candidates are the advertisers of all pairs in the
  batch; the user's other positives are masked out; scores are cosine / temperature with the logQ
  correction (minus the log of each candidate's share of the batch's pairs), so popular advertisers are
  not rewarded merely for being frequent negatives.
* ``ConversionObjective``: whether the user converts in the horizon (binary cross-entropy on every user)
  and with which advertisers (the retrieval loss above, on the users who convert).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.batch import Targets


class AdvertiserRetrieval(nn.Module):
    """Scores advertisers for users: cosine(user projection, advertiser) / temperature + a per-advertiser
    bias. ``items`` is the encoders' own advertiser table (tied weights): with little data, an output
    table learned apart from the input one would have to rediscover what the clicks already taught."""

    def __init__(self, in_dim: int, items: nn.Embedding, temperature: float) -> None:
        super().__init__()
        self.user = nn.Linear(in_dim, items.embedding_dim)
        self.items = items
        self.bias = nn.Parameter(torch.zeros(items.num_embeddings))
        self.temperature = temperature

    def loss(self, users: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """users: (B, E) embeddings; targets: (B, K) int64 advertiser buckets, 0 = none -> scalar.

        0 when the batch has no target at all.
        """
        rows, slots = (targets > 0).nonzero(as_tuple=True)
        if rows.numel() == 0:
            return users.sum() * 0.0
        positives = targets[rows, slots]                                   # (P,)
        candidates, own = torch.unique(positives, return_inverse=True)     # (C,), (P,)
        log_q = torch.log(torch.bincount(own, minlength=len(candidates)).float() / len(positives))
        u = F.normalize(self.user(users), dim=-1).index_select(0, rows)   # (P, d)
        v = F.normalize(self.items(candidates), dim=-1)                    # (C, d)
        logits = (u @ v.T).float() / self.temperature + self.bias[candidates][None, :] - log_q[None, :]
        owns = torch.zeros(users.shape[0], len(candidates), dtype=torch.bool, device=users.device)
        owns[rows, own] = True
        others = owns[rows] & (torch.arange(len(candidates), device=users.device)[None, :] != own[:, None])
        return F.cross_entropy(logits.masked_fill(others, float("-inf")), own)

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """users: (B, E) -> (B, buckets) cosine scores over every advertiser bucket (padding: -inf)."""
        u = F.normalize(self.user(users), dim=-1)
        s = (u @ F.normalize(self.items.weight, dim=-1).T).float() / self.temperature + self.bias
        s[:, 0] = float("-inf")
        return s


class ConversionObjective(nn.Module):
    def __init__(self, in_dim: int, items: nn.Embedding, temperature: float) -> None:
        super().__init__()
        dim = items.embedding_dim
        self.converts = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.advertisers = AdvertiserRetrieval(in_dim, items, temperature)

    def logit(self, users: torch.Tensor) -> torch.Tensor:
        """users: (B, E) -> (B,) logit of converting in the horizon."""
        return self.converts(users)[:, 0].float()

    def losses(self, users: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (binary cross-entropy of converting, retrieval loss of the converted-with advertisers)."""
        bce = F.binary_cross_entropy_with_logits(self.logit(users), targets.converts.float())
        return bce, self.advertisers.loss(users, targets.conversion_advertisers)
