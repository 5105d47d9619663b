"""Pre-training from the lake (``duet pretrain``): choose snapshots, build examples, train, measure, save.

Time split (nothing after ``train_until`` is read, and validation never overlaps training targets):

* a snapshot ``T`` is *eligible* when its targets are fully known by ``train_until``:
  ``T + horizon + grace <= train_until``, and the sequence snapshots ``T + horizon`` and
  ``T + horizon + grace`` exist (the targets are read from them);
* validation: the latest ``valid_snapshots`` eligible snapshots;
* training: the eligible snapshots whose target window ends by the first validation snapshot
  (``T + horizon <= V``), so no training label comes from the validation period.

Examples are written to safetensors shards in a scratch folder ``<lake>/_models/.examples-*`` (bounded
memory; locked while in use, and a killed run's folder is removed by the next pre-training:
``encoders.scratch``), the model trains with early stopping on the validation loss, the retrieval report
is measured on the validation snapshots, and the checkpoint is saved under
``<lake>/_models/<model_version>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import torch

from core.errors import DuetError
from core.lake import Lake
from core.variants import PROPOSED
from encoders import checkpoint, scratch
from encoders.batch import tensorize, tensorize_targets
from encoders.config import PretrainConfig
from encoders.evaluate import popularity, retrieval_report
from encoders.examples import add_targets, join_sequences
from encoders.lake import click_source, co_partitioned, conversion_source, sequence_snapshots
from encoders.shards import ShardSet, ShardWriter
from encoders.train import fit, select_device
from encoders.variants import UserModel, parameter_report

_TENSORIZE_ROWS = 16384  # rows tensorised at once (padded to the caps)
EXAMPLES = "examples"    # the scratch folders' prefix: _models/.examples-*


@dataclass(frozen=True)
class Split:
    train: tuple[datetime, ...]
    valid: tuple[datetime, ...]
    train_until: datetime

    def to_dict(self) -> dict:
        return {"train": [t.isoformat() for t in self.train], "valid": [t.isoformat() for t in self.valid],
                "train_until": self.train_until.isoformat()}


def choose_split(snapshots: list[datetime], train_until: datetime, horizon: timedelta, grace: timedelta,
                 valid_snapshots: int) -> Split:
    """The training and validation snapshots (see the module docstring)."""
    have = set(snapshots)
    eligible = [t for t in sorted(have)
                if t + horizon + grace <= train_until and t + horizon in have and t + horizon + grace in have]
    if len(eligible) <= valid_snapshots:
        raise DuetError(
            f"not enough snapshots to pre-train with a {horizon} horizon and {grace} report grace up to "
            f"{train_until.isoformat()}: {len(eligible)} snapshot(s) have their targets built "
            f"(need more than {valid_snapshots}): build more daily snapshots of the sequences, or train "
            "until a later instant", fields=("train_until",))
    valid = eligible[-valid_snapshots:]
    train = [t for t in eligible if t + horizon <= valid[0]]
    if not train:
        raise DuetError(f"no training snapshot ends its {horizon} target window before the first validation "
                        f"snapshot {valid[0].isoformat()}: build earlier snapshots or train until a later "
                        "instant", fields=("train_until",))
    return Split(tuple(train), tuple(valid), train_until)


def write_examples(lake: str, snapshots: tuple[datetime, ...], cfg: PretrainConfig, writer: ShardWriter,
                   chunk_rows: int = 65536) -> ShardSet:
    """Tensorise the examples of ``snapshots`` into ``writer``'s shards."""
    horizon = timedelta(days=cfg.objective.horizon_days)
    cutoff = horizon + timedelta(days=cfg.objective.report_grace_days)
    for t in snapshots:
        future_clicks = click_source(t + horizon, ("advertiser_ids", "click_ts"))
        reported = conversion_source(t + cutoff, ("advertiser_ids", "conversion_ts"))
        for clicks, conversions, later_clicks, later_conversions in co_partitioned(
                lake, [click_source(t), conversion_source(t), future_clicks, reported], chunk_rows):
            examples = add_targets(join_sequences(clicks, conversions, t), later_clicks, later_conversions, t,
                                   horizon)
            for start in range(0, examples.num_rows, _TENSORIZE_ROWS):
                part = examples.slice(start, _TENSORIZE_ROWS)
                writer.add(tensorize(part, cfg.model, pad_to_caps=True),
                           tensorize_targets(part, cfg.model, cfg.objective.max_targets))
    return writer.close()


@dataclass
class PretrainReport:
    model_version: str
    variant: str
    split: Split
    examples: dict[str, int]
    parameters: dict[str, dict[str, int]]
    training: dict
    retrieval: dict[str, float]
    seconds: float
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_version": self.model_version, "variant": self.variant, "split": self.split.to_dict(),
                "examples": self.examples, "parameters": self.parameters, "training": self.training,
                "retrieval": self.retrieval, "seconds": self.seconds}


def pretrain(lake: str, cfg: PretrainConfig, train_until: datetime | None = None,
             log: Callable[[str], None] = print) -> PretrainReport:
    """Pre-train ``cfg.model.variant`` on the lake's sequence tables; save and return its report."""
    started = time.perf_counter()
    snapshots = sequence_snapshots(lake)
    if not snapshots:
        raise DuetError(f"no sequence snapshots under {lake}: run `duet sequences` first")
    until = train_until or snapshots[-1]
    split = choose_split(snapshots, until, timedelta(days=cfg.objective.horizon_days),
                         timedelta(days=cfg.objective.report_grace_days), cfg.train.valid_snapshots)
    params = parameter_report(cfg.model, cfg.objective)
    log(f"pretrain {cfg.model.variant}: {len(split.train)} training snapshot(s) "
        f"{split.train[0]:%Y-%m-%d}..{split.train[-1]:%Y-%m-%d}, validation {split.valid[0]:%Y-%m-%d}"
        f"..{split.valid[-1]:%Y-%m-%d}, data up to {until.isoformat()}")
    log("  encoder parameters: " + ", ".join(f"{v} {p['encoder']:,}" for v, p in params.items())
        + f" (within {_spread(params, 'encoder'):.1%} of {PROPOSED}); MFLOPs per user: "
        + ", ".join(f"{v} {p['flops_per_user'] / 1e6:.1f}" for v, p in params.items()))
    root = Lake(lake).models
    stale = scratch.remove_stale(lake, EXAMPLES)
    if stale:
        log(f"  removed {len(stale)} examples folder(s) a stopped pre-training left: {', '.join(stale)}")
    with scratch.scratch_folder(lake, EXAMPLES) as folder:
        train = write_examples(lake, split.train, cfg, ShardWriter(folder, "train", cfg.train.shard_rows))
        valid = write_examples(lake, split.valid, cfg, ShardWriter(folder, "valid", cfg.train.shard_rows))
        log(f"  examples: {train.rows:,} training, {valid.rows:,} validation")
        torch.manual_seed(cfg.train.seed)  # the initial weights, like everything else, follow the seed
        model = UserModel(cfg.model, cfg.objective)
        result = fit(model, train, valid, cfg.train, log)
        model.to("cpu")
        retrieval = retrieval_report(model, valid, popularity(train, cfg.model.advertiser_buckets))
    seconds = time.perf_counter() - started
    info = {"trained_at": datetime.now(UTC).isoformat(), "split": split.to_dict(),
            "examples": {"train": train.rows, "valid": valid.rows}, "parameters": params,
            "training": result.to_dict(), "retrieval": retrieval, "seconds": seconds,
            "torch": torch.__version__, "device": str(select_device(cfg.train.device))}
    saved = checkpoint.save(lake, model, cfg, info)
    log(f"  best epoch {result.best_epoch} (valid loss {result.best_valid_loss:.4f}); "
        f"click recall@10 {retrieval['click_model_recall@10']:.3f} (popularity "
        f"{retrieval['click_popularity_recall@10']:.3f}, "
        f"history {retrieval['click_history_recall@10']:.3f}); "
        f"converts AUC {retrieval['converts_auc_model']:.3f} (past conversions "
        f"{retrieval['converts_auc_past_conversions']:.3f})")
    log(f"  saved {saved.model_version} under {root} in {seconds:.1f} s")
    return PretrainReport(saved.model_version, cfg.model.variant, split, info["examples"], params,
                          result.to_dict(), retrieval, seconds)


def _spread(params: dict[str, dict[str, int]], key: str) -> float:
    proposed = params[PROPOSED][key]
    return max(abs(p[key] - proposed) / proposed for p in params.values())
