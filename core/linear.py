"""Ridge logistic regression, fitted exactly (torch only): the encoders' embedding probe
(``encoders.evaluate.logistic_probe``), the ranker's wide part and probe, the floor every ranker must beat.

``fit_ridge`` minimises ``mean BCE(x w + b, y) + lam / (2 n) |w|^2`` (the bias is not penalised) by
L-BFGS in float64 for each ``lam`` of a grid, from the strongest penalty down (each fit starts from the
previous one), and keeps the ``lam`` with the lowest validation log loss. Inputs are expected to be
standardised (``ranker.model.Ranker.inputs``). A penalty may apply to some columns only, the others' fixed:
the ranker chooses one for the columns every variant has, then one for the user vector's (``ranker.train``),
so a vector that says nothing costs the regression nothing on validation.

A column whose penalty reaches ``EXCLUDED`` is left out of the fit: its weight is exactly 0 and it is not
optimised. (Until 2026-12-07 it was held near 0 by that penalty itself, a curvature 1e9 times the others'
that L-BFGS could not converge under: the ranker's first ridge step on a 126-column input stopped at its
evaluation limit for three penalties of five, 80% of the wide part's time.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

EXCLUDED = 1e9   # a penalty this large (or larger) leaves the column out: its weight is 0


@dataclass(frozen=True)
class RidgeFit:
    weight: torch.Tensor          # (d,) float64
    bias: float
    lam: float                    # the chosen penalty
    valid_loss: float             # its validation log loss
    path: dict[float, float]      # every penalty tried -> validation log loss


def fit_ridge(x: torch.Tensor, y: torch.Tensor, x_valid: torch.Tensor, y_valid: torch.Tensor,
              lams: tuple[float, ...], max_iter: int = 500, penalised: torch.Tensor | None = None,
              fixed: torch.Tensor | None = None) -> RidgeFit:
    """``penalised`` (bool per column, default all): the columns ``lam`` applies to; ``fixed`` (per column,
    default 0): a penalty added for every ``lam``, the one already chosen for the other columns. A very
    fixed penalty of ``EXCLUDED`` (or a ``lam`` of it) leaves a column out: its weight is exactly 0."""
    x, y = x.double(), y.double()
    d = x.shape[1]
    penalised = torch.ones(d, dtype=torch.bool) if penalised is None else penalised
    penalised = penalised.to(device=x.device, dtype=torch.float64)
    fixed = torch.zeros(d, dtype=torch.float64) if fixed is None else fixed.double()
    fixed = fixed.to(x.device)
    x_valid, y_valid = x_valid.double(), y_valid.double()
    n = len(y)
    rate = float(y.mean().clamp(1e-6, 1 - 1e-6))
    w = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.tensor([math.log(rate / (1 - rate))], dtype=torch.float64, device=x.device, requires_grad=True)
    best: RidgeFit | None = None
    path = {}
    for lam in sorted(lams, reverse=True):
        penalty = fixed + lam * penalised
        keep = (penalty < EXCLUDED).double()           # the columns left out weigh 0 and get no gradient
        penalty = penalty * keep
        with torch.no_grad():
            w.mul_(keep)
        optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure(penalty=penalty, keep=keep, optimizer=optimizer):
            optimizer.zero_grad()
            kept = w * keep
            loss = F.binary_cross_entropy_with_logits(x @ kept + b, y)
            loss = loss + (penalty * kept * kept).sum() / (2 * n)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            valid = float(F.binary_cross_entropy_with_logits(x_valid @ w + b, y_valid))
        path[lam] = valid
        if best is None or valid < best.valid_loss:
            best = RidgeFit(w.detach().cpu().clone(), float(b.detach()), lam, valid, path)
    assert best is not None
    return RidgeFit(best.weight, best.bias, best.lam, best.valid_loss, dict(sorted(path.items())))
