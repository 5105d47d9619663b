"""Ridge logistic regression, fitted exactly: the ranker's wide part and the floor every ranker must beat.

``fit_ridge`` minimises ``mean BCE(x w + b, y) + lam / (2 n) |w|^2`` (the bias is not penalised) by
L-BFGS in float64 for each ``lam`` of a grid, from the strongest penalty down (each fit starts from the
previous one), and keeps the ``lam`` with the lowest validation log loss. Inputs are expected to be
standardised (``ranker.model.Ranker.inputs``), so one penalty suits every column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class RidgeFit:
    weight: torch.Tensor          # (d,) float64
    bias: float
    lam: float                    # the chosen penalty
    valid_loss: float             # its validation log loss
    path: dict[float, float]      # every penalty tried -> validation log loss


def fit_ridge(x: torch.Tensor, y: torch.Tensor, x_valid: torch.Tensor, y_valid: torch.Tensor,
              lams: tuple[float, ...], max_iter: int = 500) -> RidgeFit:
    x, y = x.double(), y.double()
    x_valid, y_valid = x_valid.double(), y_valid.double()
    n = len(y)
    rate = float(y.mean().clamp(1e-6, 1 - 1e-6))
    w = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.tensor([math.log(rate / (1 - rate))], dtype=torch.float64, device=x.device, requires_grad=True)
    best: RidgeFit | None = None
    path = {}
    for lam in sorted(lams, reverse=True):
        optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure(lam=lam, optimizer=optimizer):
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + lam / (2 * n) * (w * w).sum()
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
