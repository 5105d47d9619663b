"""The training loop the encoders and the ranker share (``core.training``): AdamW's groups decay weight
matrices only; early stopping keeps the best epoch's state and stops once patience runs out."""

from __future__ import annotations

import math

import torch

from core.training import EarlyStopping, decay_groups


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3),
                               torch.nn.Linear(3, 1))


def test_weight_matrices_decay_and_biases_and_norms_do_not():
    model = _model()
    model[3].requires_grad_(False)                     # frozen parameters are left out
    decay, no_decay = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}       # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[1].weight])
    assert ids(no_decay["params"]) == ids([model[1].bias, model[2].weight, model[2].bias])


def test_under_adamw_a_bias_and_a_norm_keep_their_value_when_their_gradient_is_zero():
    model = _model()
    optimizer = torch.optim.AdamW(decay_groups(model, 0.5), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    for name in ("1.bias", "2.weight", "2.bias", "3.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("0.weight", "1.weight", "3.weight"):          # decayed: shrunk by lr x decay
        torch.testing.assert_close(after[name], before[name] * (1 - 0.1 * 0.5))


def _run(losses: list[float], patience: int, **kwargs) -> tuple[EarlyStopping, torch.nn.Module, list[int]]:
    """Each epoch sets the model's weights to its number, and reports ``losses[epoch]``."""
    model = torch.nn.Linear(1, 1, bias=False)
    ran = []

    def epoch(n: int) -> float:
        ran.append(n)
        with torch.no_grad():
            model.weight.fill_(n)
        return losses[n]

    return EarlyStopping(model, patience, **kwargs).run(range(len(losses)), epoch), model, ran


def test_early_stopping_keeps_the_best_epochs_state_and_stops_after_patience():
    stopping, model, ran = _run([5.0, 3.0, 4.0, 2.0, 2.5, 2.1, 1.0, 0.5], patience=2)
    assert ran == [0, 1, 2, 3, 4, 5]                   # two epochs without a better loss after epoch 3
    assert (stopping.best_epoch, stopping.best_loss, stopping.stopped_early) == (3, 2.0, True)
    assert model.weight.item() == 3.0                  # the model holds epoch 3's weights


def test_a_run_that_ends_with_patience_left_did_not_stop_early():
    stopping, model, ran = _run([3.0, 2.0, 2.5, 1.0], patience=2)
    assert ran == [0, 1, 2, 3] and not stopping.stopped_early
    assert stopping.best_epoch == 3 and model.weight.item() == 3.0


def test_an_improvement_must_exceed_min_delta():
    stopping, model, _ = _run([1.0, 1.0 - 1e-7, 1.0 - 2e-7], patience=2, min_delta=1e-6)
    assert stopping.best_epoch == 0 and stopping.stopped_early and model.weight.item() == 0.0


def test_a_state_recorded_before_the_first_epoch_is_kept_unless_an_epoch_beats_it():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-1.0)
    stopping = EarlyStopping(model, patience=1)
    stopping.update(-1, 1.0)

    def epoch(n: int) -> float:
        with torch.no_grad():
            model.weight.fill_(n)
        return 2.0

    stopping.run(range(5), epoch)
    assert (stopping.best_epoch, stopping.stopped_early, model.weight.item()) == (-1, True, -1.0)


def test_without_any_finite_loss_the_initial_weights_are_kept_only_when_asked():
    nan = [math.nan] * 3
    kept, model, _ = _run(nan, patience=5, keep_initial=True)
    assert kept.best_epoch == -1 and kept.best_loss == math.inf and not kept.stopped_early
    assert model.weight.item() not in (0.0, 1.0, 2.0)  # torch's initialisation, not an epoch's weights
    _, model, _ = _run(nan, patience=5)
    assert model.weight.item() == 2.0                  # nothing kept: the last epoch's weights stay
