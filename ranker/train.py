"""Training one ranker: BCE, AdamW, early stopping on the validation log loss, best weights restored.

Deterministic for a seed on CPU (one thread order: the data are shuffled by a seeded generator and the
model has no scatter-add in its backward pass). Runs on the GPU when one is present.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.nn import functional as F

from ranker.config import RankerConfig
from ranker.data import Batch
from ranker.metrics import logloss
from ranker.model import Ranker


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.ad.to(device), batch.advertiser.to(device), batch.summary.to(device),
                 batch.user.to(device), batch.user_missing.to(device), batch.label.to(device), batch.user_ids)


@torch.no_grad()
def predict(model: Ranker, batch: Batch, chunk: int = 65_536) -> torch.Tensor:
    """Probabilities for every row of ``batch``, (n,) float64 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(batch), chunk):
        rows = _to(batch.rows(torch.arange(start, min(start + chunk, len(batch)))), device)
        out.append(torch.sigmoid(model(rows).double()).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def train_ranker(cfg: RankerConfig, train: Batch, valid: Batch, device: torch.device | None = None
                 ) -> tuple[Ranker, dict]:
    """Train on ``train``, stop on ``valid``; returns the best model and ``{"best_epoch", "history"}``
    (per epoch: mean training loss, validation log loss)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = Ranker(cfg, train.user.shape[1])
    # Start at the training base rate, as CTR/CVR models do: from a logit of 0 (p = 0.5) the first epoch
    # is spent learning the rate, and a model stopped early stays miscalibrated.
    rate = float(train.label.double().mean().clamp(1e-6, 1 - 1e-6))
    with torch.no_grad():
        model.mlp[-1].bias.fill_(math.log(rate / (1 - rate)))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, best, best_state, since = [], float("inf"), None, 0
    valid_y = valid.label.double().numpy()
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            rows = _to(train.rows(order[start:start + cfg.batch_size]), device)
            loss = F.binary_cross_entropy_with_logits(model(rows), rows.label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        valid_loss = logloss(predict(model, valid).numpy(), valid_y)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "valid_loss": valid_loss})
        if valid_loss < best - 1e-6:
            best, best_state, since = valid_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    best_epoch = min(history, key=lambda h: h["valid_loss"])["epoch"]
    return model, {"best_epoch": best_epoch, "history": history}
