"""The OCVR ranker: candidate ids, the user's sequence summary and (optionally) user embeddings -> logit.

::

    ad (n,) -> E_ad (n, id_dim)        advertiser (n,) -> E_adv (n, id_dim)
    summary (n, 8)
    user (n, w) -> LayerNorm -> Linear -> u (n, user_dim); u <- u * (1 - user_missing)
    interactions: u * P(E_adv) (n, user_dim)   (which advertisers this user converts with)
    concat [E_ad, E_adv, summary, u, u * P(E_adv), user_missing] -> MLP(hidden) -> logit (n,)

The same module serves every variant; ``none`` has w = 0 and no user branch. The embedding-candidate
product lets a user vector say "converts with advertisers like this one" without the MLP having to
discover multiplicative structure from concatenation alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ranker.config import RankerConfig
from ranker.data import SUMMARY_WIDTH, Batch


class Ranker(nn.Module):
    def __init__(self, cfg: RankerConfig, user_width: int):
        super().__init__()
        self.user_width = user_width
        self.ad = nn.Embedding(cfg.ad_buckets, cfg.id_dim)
        self.advertiser = nn.Embedding(cfg.advertiser_buckets, cfg.id_dim)
        width = 2 * cfg.id_dim + SUMMARY_WIDTH
        if user_width:
            self.user_norm = nn.LayerNorm(user_width)
            self.user = nn.Linear(user_width, cfg.user_dim)
            self.candidate = nn.Linear(cfg.id_dim, cfg.user_dim, bias=False)
            width += 2 * cfg.user_dim + 1
        layers: list[nn.Module] = []
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        for table in (self.ad, self.advertiser):
            nn.init.normal_(table.weight, std=0.05)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits, (n,)."""
        ad, advertiser = self.ad(batch.ad), self.advertiser(batch.advertiser)
        parts = [ad, advertiser, batch.summary]
        if self.user_width:
            present = (1 - batch.user_missing).unsqueeze(1)
            u = self.user(self.user_norm(batch.user)) * present
            parts += [u, u * self.candidate(advertiser), batch.user_missing.unsqueeze(1)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)
