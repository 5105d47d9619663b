"""What an embedding knows, beside what the ranker gets from it: a linear probe per variant.

The ranker's NE says what a user vector is worth to *this* ranker; a probe says what the vector holds about
a user's conversions, with no candidate at all. On the ranker's own rows (each click with the sequence
summary and the user vector its point-in-time join found), a ridge logistic regression
(``core.linear``, penalty chosen on the validation split) is fitted on the training split twice, on the
summary alone and on the summary and the user vector, and both are measured on the test split. The
probe's gain is ``(NE_summary - NE_with_vector) / NE_summary``: positive when the vector tells which users
convert beyond what the summary says. A ranker that gains less than its probe leaves knowledge unused
(the candidate side decides how much of it a ranker can use). Inputs are standardised on the training
split.

Standard numpy and torch; the rows come from ``ranker.data`` batches.
"""

from __future__ import annotations

import torch

from core.linear import fit_ridge
from core.metrics import normalized_entropy
from ranker.data import Batch

PENALTIES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def probe(splits: dict[str, Batch], with_user: bool) -> dict:
    """The probe's test NE on the summary alone and (``with_user``) with the user vector, and the gain."""
    def features(batch: Batch, vector: bool) -> torch.Tensor:
        parts = [batch.summary]
        if vector:
            parts += [batch.user * (1 - batch.user_missing).unsqueeze(1), batch.user_missing.unsqueeze(1)]
        return torch.cat(parts, dim=1).double()

    out: dict = {}
    for key, vector in (("summary", False), ("with_vector", True)):
        if vector and not with_user:
            continue
        x = {name: features(b, vector) for name, b in splits.items()}
        mean, sd = x["train"].mean(0), x["train"].std(0)
        sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
        x = {name: (v - mean) / sd for name, v in x.items()}
        fit = fit_ridge(x["train"], splits["train"].label, x["valid"], splits["valid"].label, PENALTIES)
        p = torch.sigmoid(x["test"] @ fit.weight + fit.bias).numpy()
        out[f"ne_{key}"] = normalized_entropy(p, splits["test"].label.double().numpy())
    if with_user:
        out["gain"] = (out["ne_summary"] - out["ne_with_vector"]) / out["ne_summary"]
    return out
