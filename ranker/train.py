"""Training one ranker: the wide part fitted exactly, then the deep part by AdamW with early stopping.

1. ``Ranker.fit_inputs``: the standardisation and the candidate tables from the training split.
2. With plain labels, the wide part (a logistic regression over the fixed inputs) is fitted exactly with
   two ridge penalties chosen on the validation log loss (``fit_wide``, ``core.linear``) and frozen, the
   same fit for every seed (``wide``); the deep part's output
   starts at zero, so the model at "epoch 0" is that regression, and early stopping keeps it unless an
   epoch of the deep part does better on validation. So on validation no ranker is worse than the ridge
   regression on the same rows and inputs (issue 22's floor; ``benchmarks/ranker_ceiling.py`` measures it
   on test).
3. A batch that carries ``observed`` (delayed feedback, labels read before every conversion was
   reported) or ``fake_negatives`` (FNW's duplicated rows) trains and validates on its weighted loss
   (``ranker.delay_weights``); the wide part then trains with the rest, from the base rate.
4. AdamW decays the weight matrices and embedding tables only, never a bias (``core.training``, as the
   encoders' pre-training; before issue 24 every parameter was decayed); early stopping keeps the epoch of
   the lowest validation loss, an epoch counting as better only by more than 1e-6.

Deterministic for a seed on CPU (one thread order: the data are shuffled by a seeded generator and the
model's backward pass has no scatter-add unless the optional id tables are on). Runs on the GPU when one
is present.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from core.linear import EXCLUDED, RidgeFit, fit_ridge
from core.metrics import logloss
from core.training import EarlyStopping, decay_groups
from ranker.config import RankerConfig
from ranker.data import Batch
from ranker.delay_weights import elapsed_weights, fnw_weights
from ranker.model import Ranker


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.ad.to(device), batch.advertiser.to(device), batch.summary.to(device),
                 batch.user.to(device), batch.user_missing.to(device), batch.label.to(device), batch.user_ids,
                 None if batch.observed is None else batch.observed.to(device), batch.fake_negatives)


def batch_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean BCE over the rows, weighted (``ranker.delay_weights``, the model's own prediction with its
    gradient stopped) with FNW's weights when ``batch.fake_negatives``, with the elapsed-time weights when
    ``batch.observed`` is set."""
    losses = F.binary_cross_entropy_with_logits(logits, batch.label, reduction="none")
    if batch.fake_negatives:
        return (fnw_weights(torch.sigmoid(logits), batch.label) * losses).mean()
    if batch.observed is not None:
        return (elapsed_weights(torch.sigmoid(logits), batch.label, batch.observed) * losses).mean()
    return losses.mean()


def validation_loss(p: torch.Tensor, batch: Batch) -> float:
    """The loss early stopping minimises, the training loss on ``batch``'s rows: the plain log loss, or the
    mean of weight x log loss with the weights of ``batch_loss`` (FNW's or the elapsed-time ones; the
    elapsed-time mean estimates the eventual labels' log loss)."""
    y = batch.label.double().numpy()
    if batch.fake_negatives:
        w = fnw_weights(p, batch.label.double()).numpy()
    elif batch.observed is not None:
        w = elapsed_weights(p, batch.label.double(), batch.observed.double()).numpy()
    else:
        return logloss(p.numpy(), y)
    return logloss(p.numpy(), y, w) * float(w.mean())


@torch.no_grad()
def predict(model: Ranker, batch: Batch, chunk: int = 65_536, wide_only: bool = False) -> torch.Tensor:
    """Probabilities for every row of ``batch``, (n,) float64 on the CPU; ``wide_only``: the wide part's
    alone (the ridge regression the ranker starts from, its floor)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(batch), chunk):
        rows = _to(batch.rows(torch.arange(start, min(start + chunk, len(batch)))), device)
        logits = model.wide(model.inputs(rows)).squeeze(1) if wide_only else model(rows)
        out.append(torch.sigmoid(logits.double()).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def fit_wide(model: Ranker, x: torch.Tensor, y: torch.Tensor, x_valid: torch.Tensor, y_valid: torch.Tensor,
             lams: tuple[float, ...]) -> RidgeFit:
    """The wide part's ridge regression, its penalties chosen on validation in two steps: one for the
    columns every variant has (the summary, the candidate), the user vector's columns held at 0; then,
    with that one fixed, one for the user vector's columns, "leave them out" among the choices. Under a
    single penalty a vector that says nothing forced a compromise: a penalty strong enough to silence it
    also shrank the summary (a random 64-number vector per user cost 1.2% test NE)."""
    user = model.user_columns().to(x.device)
    if not bool(user.any()):
        return fit_ridge(x, y, x_valid, y_valid, lams)
    base = fit_ridge(x, y, x_valid, y_valid, lams, penalised=~user, fixed=user.double() * EXCLUDED)
    fit = fit_ridge(x, y, x_valid, y_valid, (*lams, EXCLUDED), penalised=user,
                    fixed=(~user).double() * base.lam)
    path = {**{f"base {k:g}": v for k, v in base.path.items()},
            **{f"user {k:g}": v for k, v in fit.path.items()}}
    best = fit if fit.valid_loss <= base.valid_loss else base
    return RidgeFit(best.weight, best.bias, fit.lam if best is fit else EXCLUDED, best.valid_loss, path)


def train_ranker(cfg: RankerConfig, train: Batch, valid: Batch, device: torch.device | None = None,
                 wide: RidgeFit | None = None) -> tuple[Ranker, dict]:
    """Train on ``train``, stop on ``valid``; returns the best model and ``{"best_epoch", "history"}``
    (per epoch: mean training loss, validation log loss). The wide part's fit is kept on the model as
    ``wide_fit``: it depends on the rows and the settings, not on the seed, so the next seed of the same
    rows and settings passes it back as ``wide`` instead of fitting it again."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = Ranker(cfg, train.user.shape[1])
    out_of_fold = model.fit_inputs(train)
    ridge = None
    if train.observed is None and not train.fake_negatives:
        # The wide part: a ridge logistic regression fitted exactly, its penalty chosen on validation, then
        # frozen; the deep part starts at zero, so "epoch 0" is the regression itself.
        with torch.no_grad():
            x_train, x_valid = model.inputs(train, out_of_fold), model.inputs(valid)
        ridge = wide or fit_wide(model, x_train.to(device), train.label.to(device), x_valid.to(device),
                                 valid.label.to(device), cfg.ridge)
        with torch.no_grad():
            model.wide.weight.copy_(ridge.weight.float().unsqueeze(0))
            model.wide.bias.fill_(ridge.bias)
        model.wide.requires_grad_(False)
    else:
        # Delayed-feedback losses are not the plain log loss: the wide part trains with the rest, from the
        # base rate (as CTR/CVR models start: from p = 0.5 the first epoch is spent learning the rate).
        # With delayed feedback the seen labels understate the rate; mean(y / F) estimates the eventual one.
        # FNW's rows hold every click once as a 0 and each reported conversion once more as a 1: the rate
        # per click is positives / (rows - positives).
        seen = train.label.double()
        if train.fake_negatives:
            rate = float(seen.sum() / max(len(seen) - float(seen.sum()), 1.0))
        else:
            rate = float((seen / train.observed.double() if train.observed is not None else seen).mean())
        rate = min(max(rate, 1e-6), 1 - 1e-6)
        with torch.no_grad():
            model.wide.weight.zero_()
            model.wide.bias.fill_(math.log(rate / (1 - rate)))
    model = model.to(device)
    optimizer = torch.optim.AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    stopping = EarlyStopping(model, cfg.patience, min_delta=1e-6)
    if ridge is not None:
        ridge_loss = validation_loss(predict(model, valid), valid)
        stopping.update(0, ridge_loss)
        history.append({"epoch": 0, "train_loss": math.nan, "valid_loss": ridge_loss})

    def epoch(number: int) -> float:
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            rows = _to(train.rows(index), device)
            converters = None if out_of_fold is None else out_of_fold[index].to(device)
            loss = batch_loss(model(rows, converters), rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        valid_loss = validation_loss(predict(model, valid), valid)
        history.append({"epoch": number, "train_loss": total / max(seen, 1), "valid_loss": valid_loss})
        return valid_loss

    stopping.run(range(1, cfg.max_epochs + 1), epoch)
    model.wide_fit = ridge
    best_epoch = min(history, key=lambda h: h["valid_loss"])["epoch"]
    info = {"best_epoch": best_epoch, "history": history}
    if ridge is not None:
        info["ridge"] = {"lambda": ridge.lam, "valid_loss": ridge.valid_loss,
                         "path": {str(k): v for k, v in ridge.path.items()}}
    return model, info
