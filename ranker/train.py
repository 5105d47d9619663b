"""Training one ranker: BCE, AdamW, early stopping on the validation log loss, best weights restored.

A batch that carries ``observed`` (delayed feedback: labels read before every conversion was reported)
trains and validates on the importance-weighted loss of ``ranker.delay_weights``, whose expectation is
the loss on the eventual labels; otherwise both are the plain mean.

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
from ranker.delay_weights import importance_weights
from ranker.metrics import logloss
from ranker.model import Ranker


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.ad.to(device), batch.advertiser.to(device), batch.summary.to(device),
                 batch.user.to(device), batch.user_missing.to(device), batch.label.to(device), batch.user_ids,
                 None if batch.observed is None else batch.observed.to(device))


def batch_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean BCE, importance-weighted when ``batch.observed`` is set."""
    losses = F.binary_cross_entropy_with_logits(logits, batch.label, reduction="none")
    if batch.observed is None:
        return losses.mean()
    return (importance_weights(torch.sigmoid(logits), batch.label, batch.observed) * losses).mean()


def validation_loss(p: torch.Tensor, batch: Batch) -> float:
    """The log loss early stopping minimises: plain, or importance-weighted (mean of weight x loss, the
    estimate of the eventual labels' log loss) when ``batch.observed`` is set."""
    y = batch.label.double().numpy()
    if batch.observed is None:
        return logloss(p.numpy(), y)
    w = importance_weights(p, batch.label.double(), batch.observed.double()).numpy()
    return logloss(p.numpy(), y, w) * float(w.mean())


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
    # With delayed feedback the seen labels understate the rate; mean(y / F) estimates the eventual one.
    seen = train.label.double()
    rate = seen / train.observed.double() if train.observed is not None else seen
    rate = float(rate.mean().clamp(1e-6, 1 - 1e-6))
    with torch.no_grad():
        model.mlp[-1].bias.fill_(math.log(rate / (1 - rate)))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, best, best_state, since = [], float("inf"), None, 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            rows = _to(train.rows(order[start:start + cfg.batch_size]), device)
            loss = batch_loss(model(rows), rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        valid_loss = validation_loss(predict(model, valid), valid)
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
