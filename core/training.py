"""What every training loop of the project shares (torch only): AdamW's parameter groups and early stopping.

* ``decay_groups``: weight decay on the weight matrices and embedding tables (trainable parameters with
  ``ndim >= 2``), none on biases and normalisation scales (``ndim < 2``), which decay would only pull
  towards zero.
* ``EarlyStopping``: an epoch loop with validation after each epoch. The caller's ``epoch(n)`` trains one
  epoch its own way (batches, loss, schedule) and returns its validation loss; the model state of the
  lowest loss is kept, the loop stops after ``patience`` epochs in a row that did not improve on it by
  more than ``min_delta``, and the model is left holding the kept state.

The encoders' pre-training (``encoders.train``) and the ranker (``ranker.train``) both train this way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of ``model``'s trainable parameters: ``weight_decay`` on those with
    ``ndim >= 2``, none on the rest (biases, LayerNorm weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


class EarlyStopping:
    """The best validation loss so far (``best_loss``, at ``best_epoch``; -1 before any), the model state
    that gave it, and when to stop.

    ``keep_initial``: the state before training counts as kept, so a run whose every epoch fails to beat
    ``inf`` (NaN losses) ends with the initial weights, not the last epoch's. ``update`` may be called
    before ``run`` for a state evaluated before the first epoch (the ranker's "epoch 0")."""

    def __init__(self, model: torch.nn.Module, patience: int, min_delta: float = 0.0,
                 keep_initial: bool = False):
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best_loss, self.best_epoch = math.inf, -1
        self.stopped_early = False
        self._since = 0   # epochs since the last improvement
        self._state = copy.deepcopy(model.state_dict()) if keep_initial else None

    def update(self, epoch: int, loss: float) -> bool:
        """Record ``epoch``'s validation loss (keeping the model's state if it improves on the best by
        more than ``min_delta``); True when training should stop."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self._since = loss, epoch, 0
            self._state = copy.deepcopy(self.model.state_dict())
            return False
        self._since += 1
        self.stopped_early = self._since >= self.patience
        return self.stopped_early

    def restore(self) -> None:
        """Load the kept state into the model (nothing kept: the model stays as it is)."""
        if self._state is not None:
            self.model.load_state_dict(self._state)

    def run(self, epochs: Iterable[int], epoch: Callable[[int], float]) -> EarlyStopping:
        """``epoch(n)`` (train one epoch, return the validation loss) for each of ``epochs`` until patience
        runs out, then restore the kept state."""
        for n in epochs:
            if self.update(n, epoch(n)):
                break
        self.restore()
        return self
