"""Measures of what the embeddings know: retrieval against popularity and history baselines, AUC, and
a logistic probe. Torch (and numpy, through ``core.metrics``).

* ``retrieval_report``: on validation examples, recall@k of the advertisers a user clicks (and converts
  with) in the next horizon, for the model's heads (ranking the advertisers seen as targets in
  training), for global popularity (the most frequent targets of the training examples) and for the
  user's own history (their most clicked advertisers); the AUC of the "converts" head next to the AUC of
  the number of past conversions.
* ``logistic_probe``: a ridge-regularised logistic regression fitted on one set of users' embeddings and
  scored on another (AUC, log loss, normalized entropy: ``core.metrics``).

Advertisers are compared as hash buckets, like the model sees them.
"""

from __future__ import annotations

import math

import torch

from core.linear import fit_ridge
from core.metrics import auc, logloss, normalized_entropy
from encoders.shards import ShardSet
from encoders.variants import UserModel


def _recall(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """top: (B, k) predicted buckets; targets: (B, K) buckets, 0 = none -> (B,) recall (NaN: no targets)."""
    valid = targets > 0
    hits = ((targets[:, :, None] == top[:, None, :]).any(-1) & valid).sum(1).double()
    n = valid.sum(1).double()
    return torch.where(n > 0, hits / n.clamp_min(1), torch.full_like(n, math.nan))


def _history_top(advertisers: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """A user's own most frequent advertisers (ties and blanks filled by global popularity) -> (B, k)."""
    counts = torch.zeros(advertisers.shape[0], popularity.numel(), dtype=torch.float64)
    counts.scatter_add_(1, advertisers, torch.ones_like(advertisers, dtype=torch.float64))
    counts[:, 0] = 0
    tie_break = popularity.double() / (popularity.double().max() + 1)
    return torch.topk(counts + tie_break, k, dim=1).indices


def popularity(shards: ShardSet, buckets: int) -> dict[str, torch.Tensor]:
    """How often each advertiser bucket is a click / conversion target in ``shards``."""
    click = torch.zeros(buckets, dtype=torch.float64)
    conversion = torch.zeros(buckets, dtype=torch.float64)
    for _, targets in shards.batches(4096):
        for counts, t in ((click, targets.click_advertisers), (conversion, targets.conversion_advertisers)):
            counts += torch.bincount(t.flatten(), minlength=buckets).double()
    click[0] = conversion[0] = 0
    return {"click": click, "conversion": conversion}


@torch.no_grad()
def retrieval_report(model: UserModel, valid: ShardSet, counts: dict[str, torch.Tensor], k: int = 10,
                     batch_size: int = 1024) -> dict[str, float]:
    """Recall@k of next-horizon advertisers (model, popularity, history) and AUC of converting."""
    model.eval()
    device = next(model.parameters()).device
    # The catalogue: advertisers seen as a target in training. In-batch negatives never push down an
    # advertiser that was never sampled, so scoring unseen hash buckets would rank noise.
    unseen = ((counts["click"] + counts["conversion"]) == 0).to(device)
    click_pop = torch.topk(counts["click"], k).indices
    conv_pop = torch.topk(counts["conversion"], k).indices
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in (
        "click_model", "click_popularity", "click_history", "conversion_model", "conversion_popularity",
        "conversion_history", "converts_logit", "converts", "past_conversions")}
    for inputs, targets in valid.batches(batch_size):
        emb = model(inputs.to(device))
        conv_in = model.conversion_input(emb)
        b = len(inputs)
        history = _history_top(inputs.click_advertiser, counts["click"], k)
        conv_history = _history_top(torch.cat([inputs.conversion_advertiser, inputs.click_advertiser], 1),
                                    counts["conversion"], k)
        click_scores = model.click_head.scores(emb.click).masked_fill(unseen, float("-inf"))
        click_top = torch.topk(click_scores, k).indices.cpu()
        parts["click_model"].append(_recall(click_top, targets.click_advertisers))
        parts["click_popularity"].append(_recall(click_pop.expand(b, k), targets.click_advertisers))
        parts["click_history"].append(_recall(history, targets.click_advertisers))
        conv_scores = model.conversion_head.advertisers.scores(conv_in).masked_fill(unseen, float("-inf"))
        parts["conversion_model"].append(_recall(torch.topk(conv_scores, k).indices.cpu(),
                                                 targets.conversion_advertisers))
        parts["conversion_popularity"].append(_recall(conv_pop.expand(b, k), targets.conversion_advertisers))
        parts["conversion_history"].append(_recall(conv_history, targets.conversion_advertisers))
        parts["converts_logit"].append(model.conversion_head.logit(conv_in).cpu())
        parts["converts"].append(targets.converts)
        parts["past_conversions"].append(inputs.conversion_stats[:, 0])
    cat = {name: torch.cat(v) for name, v in parts.items()}
    report = {f"{name}_recall@{k}": float(torch.nanmean(cat[name])) for name in (
        "click_model", "click_popularity", "click_history", "conversion_model", "conversion_popularity",
        "conversion_history")}
    report["converts_auc_model"] = auc(cat["converts_logit"], cat["converts"])
    report["converts_auc_past_conversions"] = auc(cat["past_conversions"], cat["converts"])
    report["converts_rate"] = float(cat["converts"].mean())
    report["examples"] = int(cat["converts"].numel())
    return report


def logistic_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   l2: float = 1e-3, steps: int = 200) -> dict[str, float]:
    """Fit a logistic regression on standardised ``train_x`` (L-BFGS, ridge ``l2``); score ``test_x``.

    -> {"auc", "logloss", "ne"} on the test set.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x, xt = ((train_x - mean) / std).double(), ((test_x - mean) / std).double()
    # core.linear's penalty is lam / (2 n) |w|^2: lam = 2 n l2 is this probe's l2 |w|^2; one lam, so
    # the validation set only reports.
    fit = fit_ridge(x, train_y, x, train_y, (2 * len(x) * l2,), max_iter=steps)
    with torch.no_grad():
        p = torch.sigmoid(xt @ fit.weight + fit.bias)
    p_test, y_test = p.numpy(), test_y.double().numpy()
    return {"auc": auc(p, test_y), "logloss": logloss(p_test, y_test),
            "ne": normalized_entropy(p_test, y_test)}
