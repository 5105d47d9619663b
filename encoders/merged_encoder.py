"""The merged baseline: one transformer over the merged click and conversion stream under one token budget.

This is the single undifferentiated encoder of the DUET paper. Both streams become one time-ordered
sequence, and the encoder reads its most recent ``merged_tokens`` events whatever their kind, so sparse
conversions compete with dense clicks for the same slots: a user with 64 clicks in the last days has no
room left for last month's conversions. (``shared``, by contrast, gives each stream its own cap.) Its
layer count is set so that its FLOPs per embedded user are close to duet's (``encoders.variants.
flops_per_user``): the two are compared at one serving cost.

The modules are ``shared``'s (``SharedEncoder``: the tokens every variant uses plus an event-type embedding,
one summary token carrying both streams' counts); only what reaches the layers differs. Attention has no
positions (time is a token feature), so keeping the most recent events is the only ordering the budget
needs.
"""

from __future__ import annotations

import torch

from encoders.batch import UserBatch
from encoders.config import ModelConfig
from encoders.shared_encoder import SharedEncoder
from encoders.tokens import Vocabulary


def most_recent(hours: torch.Tensor, mask: torch.Tensor, budget: int) -> torch.Tensor:
    """hours (B, L) before the snapshot (any increasing transform), mask (B, L) True = real -> the indices
    (B, min(budget, L)) of each row's most recent real events first, then padding slots."""
    key = torch.where(mask, hours, torch.full_like(hours, float("inf")))
    return torch.topk(key, min(budget, key.shape[1]), dim=1, largest=False).indices


class MergedEncoder(SharedEncoder):
    def __init__(self, cfg: ModelConfig, vocab: Vocabulary, layers: int, out_dim: int) -> None:
        super().__init__(cfg, vocab, layers, out_dim)
        self.budget = cfg.merged_tokens

    def forward(self, batch: UserBatch) -> torch.Tensor:
        """batch: B users' clicks (N) and conversions (M) -> (B, out_dim), reading at most ``merged_tokens``
        events per user."""
        clicks, conversions = self.click_tokens(batch), self.conversion_tokens(batch)
        events = torch.cat([clicks.events + self.event_type[0], conversions.events + self.event_type[1]], 1)
        mask = torch.cat([clicks.mask, conversions.mask], dim=1)
        hours = torch.cat([batch.click_time[..., 0], batch.conversion_time[..., 0]], dim=1)
        keep = most_recent(hours, mask, self.budget)
        events = torch.gather(events, 1, keep[..., None].expand(-1, -1, events.shape[-1]))
        mask = torch.gather(mask, 1, keep)
        x = torch.cat([(clicks.summary + conversions.summary)[:, None], events], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for layer in self.layers:
            x = layer(x, mask)
        return self.pool(self.norm(x), mask)
