"""The pre-training loop: AdamW, warm-up then cosine decay, early stopping on validation loss (the
parameter groups and the early stopping: ``core.training``).

Every variant goes through this same loop with the same ``TrainConfig`` (the baselines get the same
budget). On CUDA, bf16 autocast and optionally ``torch.compile``; on CPU, float32 and deterministic for a
seed (shuffling, dropout and initialisation all draw from seeded generators). The best epoch's weights
(lowest validation loss) are what the caller saves.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from core.training import EarlyStopping, decay_groups
from encoders.config import TrainConfig
from encoders.shards import ShardSet
from encoders.variants import UserModel


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; a no-op elsewhere (CPU stays float32 and deterministic)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid: dict[str, float]
    seconds: float
    sequences_per_s: float


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_loss: float
    stopped_early: bool
    device: str
    history: list[EpochLog] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_losses(model: UserModel, shards: ShardSet, batch_size: int, device: torch.device,
                    bf16: bool = False) -> dict[str, float]:
    """Mean of each loss over ``shards`` (weighted by batch size), in eval mode."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    rows = 0
    for inputs, targets in shards.batches(batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, bf16):
            losses = model.losses(model(inputs), targets)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(inputs)
        rows += len(inputs)
    model.train(was_training)
    return {name: total / max(rows, 1) for name, total in sums.items()}


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def fit(model: UserModel, train: ShardSet, valid: ShardSet, cfg: TrainConfig,
        log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` in place; leave it holding its best epoch's weights; return the history."""
    if train.rows == 0 or valid.rows == 0:
        raise ValueError("pre-training needs training and validation examples")
    device = select_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    step_fn = torch.compile(model, dynamic=True) if cfg.compile and device.type == "cuda" else model
    optimizer = torch.optim.AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  fused=device.type in ("cpu", "cuda"))
    steps_per_epoch = math.ceil(train.rows / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, cfg.warmup_steps, cfg.epochs * steps_per_epoch))

    result = TrainResult(best_epoch=-1, best_valid_loss=math.inf, stopped_early=False, device=str(device))

    def epoch(number: int) -> float:
        started, total, rows = time.perf_counter(), 0.0, 0
        for inputs, targets in train.batches(cfg.batch_size, shuffle=True, generator=generator):
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast(device, cfg.bf16):
                loss = model.losses(step_fn(inputs), targets)["total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(inputs)
            rows += len(inputs)
        seconds = time.perf_counter() - started
        valid_losses = evaluate_losses(model, valid, cfg.batch_size, device, cfg.bf16)
        entry = EpochLog(number, total / rows, valid_losses, seconds, rows / seconds)
        result.history.append(entry)
        log(f"  epoch {number}: train {entry.train_loss:.4f}  valid {valid_losses['total']:.4f} "
            f"(click {valid_losses['click']:.4f}, converts {valid_losses['converts']:.4f}, "
            f"conversion advertisers {valid_losses['conversion_advertisers']:.4f})  "
            f"{entry.sequences_per_s:,.0f} seq/s")
        return valid_losses["total"]

    # Early stopping on the total validation loss; with no epoch better than inf, the initial weights.
    stopping = EarlyStopping(model, cfg.patience, keep_initial=True).run(range(cfg.epochs), epoch)
    result.best_epoch, result.best_valid_loss = stopping.best_epoch, stopping.best_loss
    result.stopped_early = stopping.stopped_early
    model.eval()
    return result
