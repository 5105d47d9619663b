"""Loss weights for delayed feedback: learning the eventual conversion rate while labels still arrive.

Two weightings, one per delayed-feedback mode of ``ranker.delayed`` that weights its loss. In both, ``p`` is
the prediction of the model being trained with its gradient stopped (a constant in each step's loss), and
the weighted loss is binary cross-entropy on the rows' labels.

**Elapsed-time weights** (mode ``elapsed_weighted``; this project's own estimator, not a published one).
When a ranker is trained at an instant ``C``, a click ``e`` seconds old (``e = C - click_ts``) shows label
1 only if a conversion it led to has been *reported* by ``C``. With ``p = P(converts | x)`` and
``F(e) = P(first report within e | converts)`` (the observation-delay distribution, taken to be the same
for every click and estimated on the clicks that had matured by ``C``), the label seen at ``C`` is 1 with
probability ``p F(e)``. Each click is one row with its seen label. Weighting a seen positive by
``w1 = 1 / F(e)`` and a seen negative by ``w0 = (1 - p) / (1 - p F(e))`` makes the expected weighted loss
the loss on the eventual labels::

    E[w(y_seen) l(y_seen)] = p F(e) w1 l(1) + (1 - p F(e)) w0 l(0) = p l(1) + (1 - p) l(0)

These are the importance weights ``P(y) / P(y_seen)`` of the seen label against the eventual one, with
the observation probability read from the elapsed time (as ES-DFM, Yang et al. 2021, reads what may still
arrive from the elapsed time, though ES-DFM learns it per click and this uses one ``F``). A matured click
has ``F = 1`` and both weights 1: its loss is the plain one. ``F`` is floored (``min_observed``) so that
a very fresh positive cannot get an unbounded weight.

**FNW, the fake negative weighted loss** (mode ``fnw``; Ktena et al. 2019, "Addressing Delayed Feedback
for Continuous Training with Neural Networks in CTR prediction", RecSys 2019, arXiv:1907.06558, the
"fake negative weighted" loss). The data are a stream: every click enters at click time as a negative,
and a click whose conversion is reported enters once more, as a positive (a duplicate row, label 1).
With ``p(x) = p(y=1|x)`` the true rate and the paper's assumptions ``b(x|y=0) = p(x)`` (every click is a
negative row) and ``b(x|y=1) = p(x|y=1)`` (the duplicates are the converting clicks), the rows' label
distribution is ``b(y=1|x) = p/(1+p)``, ``b(y=0|x) = 1/(1+p)``, and the importance weights ``p(y|x)/b(y|x)``
give the paper's loss::

    L_IS(theta) = - sum_{x,y} [ y (1 + p(y=1|x)) log f_theta(x)
                                + (1 - y) p(y=0|x) (1 + p(y=1|x)) log(1 - f_theta(x)) ]

that is a positive row weighted ``1 + p``, a negative row ``(1 - p)(1 + p)``; ``p``, unknown, is the
model's own prediction ``f_theta(x)`` with its gradient stopped (as in the FNW reference implementation
of the ES-DFM authors, github.com/ThyrixYang/es_dfm ``src/loss.py`` ``fake_negative_weighted_loss``:
``p = sigmoid(stop_gradient(logits))``, the mean over rows). The network is trained on the biased rows
but, through the weights, its output ``f_theta(x)`` estimates the true ``p(y=1|x)``, not ``b(y=1|x)``:
at test time it is used as it is (no calibration; FNC, the paper's other variant, trains unweighted on
the same rows and maps ``b`` to ``p = b / (1 - b)`` afterwards). Per click the expected gradient on the
logit is ``(1 + f)(1 - f)(f - p)``: its fixed point is ``f = p``.

What FNW corrects is the duplication, not the wait: its derivation assumes every conversion's duplicate is
in the data. Trained at an instant ``C``, a click whose conversion is not reported yet has its negative
row and no positive one; with ``q(x) = P(converted and reported by C | x)`` the fixed point becomes
``f = q`` (the expected gradient is ``(1 + f)(1 - f)(f - q)``), the rate the naive model also converges
to. In the paper's continuous training the stream keeps arriving, so the deficit is that of the freshest
clicks only; in a replay at one instant it is that of every click younger than the report delays.

Standard numpy and torch only; ``ranker.train`` applies the elapsed-time weights when a batch carries
``observed`` and the FNW weights when it has ``fake_negatives`` set.
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


def elapsed_weights(p: torch.Tensor, label: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-row elapsed-time weights (n,): ``1 / F`` for a seen positive, ``(1 - p) / (1 - p F)`` for a seen
    negative. ``p``: the model's probabilities (no gradient flows through them), ``observed``: ``F(e)``."""
    p = p.detach()
    positive = 1.0 / observed
    negative = (1.0 - p) / (1.0 - p * observed).clamp_min(1e-6)
    return torch.where(label > 0.5, positive, negative)


def fnw_weights(p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-row FNW weights (n,), Ktena et al. 2019: ``1 + p`` for a positive (duplicate) row,
    ``(1 - p)(1 + p)`` for a negative row. ``p``: the model's probabilities, no gradient through them."""
    p = p.detach()
    return torch.where(label > 0.5, 1.0 + p, (1.0 - p) * (1.0 + p))
