"""Importance weights for delayed feedback: learning the eventual conversion rate while labels still arrive.

When a ranker is trained at an instant ``C``, a click ``e`` seconds old (``e = C - click_ts``) shows label
1 only if a conversion it led to has been *reported* by ``C``. With ``p = P(converts | x)`` and
``F(e) = P(first report within e | converts)`` (the observation-delay distribution, taken to be the same
for every click and estimated on the clicks that had matured by ``C``), the label seen at ``C`` is 1 with
probability ``p F(e)``. Weighting an observed positive by ``w1 = 1 / F(e)`` and an observed negative by
``w0 = (1 - p) / (1 - p F(e))`` makes the expected weighted loss the loss on the eventual labels::

    E[w(y_seen) l(y_seen)] = p F(e) w1 l(1) + (1 - p F(e)) w0 l(0) = p l(1) + (1 - p) l(0)

``p`` is the prediction of the model being trained, with its gradient stopped (the device of FNW, Ktena
et al. 2019); what may still arrive is read from the elapsed time, as in ES-DFM (Yang et al. 2021). A
matured click has ``F = 1`` and both weights 1: its loss is the plain one. ``F`` is floored
(``min_observed``) so that a very fresh positive cannot get an unbounded weight.

Standard numpy and torch only; ``ranker.train`` applies the weights when a batch carries ``observed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import DuetError


@dataclass(frozen=True)
class ObservationCDF:
    """The empirical ``F(e)``: ``delays_s`` are the first-report delays (seconds) of clicks that were
    positive and matured at the training instant, ``horizon_s`` the maturity (attribution window plus
    report grace), beyond which ``F = 1``."""

    delays_s: np.ndarray
    horizon_s: float
    min_observed: float = 0.05

    def __post_init__(self) -> None:
        if len(self.delays_s) == 0:
            raise DuetError("delayed feedback needs positive matured clicks to learn how labels arrive; "
                            "there are none before the training instant")
        if not 0 < self.min_observed <= 1:
            raise DuetError("min_observed must be in (0, 1]")
        object.__setattr__(self, "delays_s", np.sort(np.asarray(self.delays_s, np.float64)))

    @classmethod
    def from_delays(cls, delays_s: np.ndarray, horizon_s: float, min_observed: float = 0.05
                    ) -> ObservationCDF:
        return cls(np.asarray(delays_s, np.float64), float(horizon_s), min_observed)

    def __call__(self, elapsed_s: np.ndarray) -> np.ndarray:
        """``F(elapsed)`` per click, (n,) float32, in ``[min_observed, 1]``; 1 from the horizon on."""
        elapsed_s = np.asarray(elapsed_s, np.float64)
        share = np.searchsorted(self.delays_s, elapsed_s, side="right") / len(self.delays_s)
        share = np.where(elapsed_s >= self.horizon_s, 1.0, share)
        return np.clip(share, self.min_observed, 1.0).astype(np.float32)

    def quantiles(self) -> dict[str, float]:
        """Hours to the first report: median and 90th percentile of the matured positives."""
        q50, q90 = np.percentile(self.delays_s, [50, 90]) / 3600
        return {"median_hours": float(q50), "p90_hours": float(q90)}


def importance_weights(p: torch.Tensor, label: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-row weights (n,): ``1 / F`` for a seen positive, ``(1 - p) / (1 - p F)`` for a seen negative.
    ``p``: the model's probabilities (no gradient flows through them), ``observed``: ``F(e)`` per row."""
    p = p.detach()
    positive = 1.0 / observed
    negative = (1.0 - p) / (1.0 - p * observed).clamp_min(1e-6)
    return torch.where(label > 0.5, positive, negative)
