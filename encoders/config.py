"""Typed configs of the encoders: the model, pre-training and embedding, each a frozen dataclass.

A config is passed whole into constructors and saved beside a checkpoint as JSON (``core.records.to_dict``);
``core.records.from_dict`` rebuilds it and rejects any key it does not know (a misspelled ``click_layer``
must fail, not be ignored) and any value of the wrong type. This module imports nothing but the standard
library and ``core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import DuetError
from core.variants import PROPOSED, variant


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a user model. ``dim`` is the width of every token and of each user embedding.

    Every variant hands the ranker ``2 * dim`` numbers: ``duet`` a click and a conversion embedding of
    ``dim`` each, ``shared``, ``merged`` and ``click_only`` one embedding of ``2 * dim``, so that no variant
    wins by width. Layer counts of ``shared`` and ``click_only`` are chosen so that parameter counts match
    within 10%, ``merged``'s so that its FLOPs per user do (``encoders.variants.parameter_report`` prints
    both).
    """

    variant: str = PROPOSED
    dim: int = 64
    heads: int = 4
    ffn_mult: int = 2
    dropout: float = 0.0            # > 0 also leaves the fused attention kernels on CPU (2x slower)
    # Hashed id vocabularies (0 is padding): collisions are the price of an open id space.
    ad_buckets: int = 8192
    advertiser_buckets: int = 1024
    conversion_type_buckets: int = 16
    max_clicks: int = 64
    max_conversions: int = 16
    click_layers: int = 2           # duet's click encoder and the click_only baseline's first layers
    conversion_blocks: int = 2      # duet: cross- then self-attention blocks over conversions
    shared_layers: int = 5          # shared baseline: one transformer over the merged stream
    click_only_layers: int = 5      # click_only baseline
    merged_layers: int = 3          # merged baseline: one transformer (FLOPs per user near duet's) over
    merged_tokens: int = 64         # the most recent merged_tokens events of the merged stream
    pooling: str = "summary"        # "summary": summary token + attention pooling; "mean": masked mean

    def __post_init__(self) -> None:
        variant(self.variant)
        if self.dim % self.heads:
            raise DuetError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.pooling not in ("summary", "mean"):
            raise DuetError(f"unknown pooling {self.pooling!r}: use summary or mean")
        for name in ("dim", "heads", "ffn_mult", "ad_buckets", "advertiser_buckets",
                     "conversion_type_buckets", "max_clicks", "max_conversions", "click_layers",
                     "conversion_blocks", "shared_layers", "click_only_layers", "merged_layers",
                     "merged_tokens"):
            if getattr(self, name) < 1:
                raise DuetError(f"{name} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise DuetError("dropout must be in [0, 1)")


def embedding_dims(cfg: ModelConfig) -> tuple[int, int | None]:
    """(click embedding width, conversion embedding width or None) of a variant."""
    return (cfg.dim, cfg.dim) if variant(cfg.variant).two_embeddings else (2 * cfg.dim, None)


@dataclass(frozen=True)
class ObjectiveConfig:
    """What pre-training predicts, and from how far ahead.

    For a snapshot ``T``: the advertisers clicked in ``[T, T + horizon)`` (read from the click sequence
    at ``T + horizon``) and the conversions that happened in ``[T, T + horizon)`` and were reported
    before the label cutoff ``T + horizon + report_grace`` (read from the conversion sequence at the
    cutoff, which holds exactly what was reported before it).
    """

    horizon_days: float = 2.0
    report_grace_days: float = 1.0
    max_targets: int = 32            # distinct advertisers kept per user and target (most recent first)
    temperature: float = 0.1         # of the in-batch sampled softmax
    conversion_weight: float = 1.0   # weight of the conversion losses beside the click loss


@dataclass(frozen=True)
class TrainConfig:
    """The pre-training budget; every variant gets the same one."""

    seed: int = 0
    epochs: int = 8
    patience: int = 2               # epochs without a better validation loss before stopping
    batch_size: int = 256
    lr: float = 5e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    valid_snapshots: int = 1        # the latest eligible snapshots, held out for early stopping
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    bf16: bool = True               # autocast on CUDA (never on CPU: determinism and speed)
    compile: bool = False           # torch.compile the model on CUDA
    shard_rows: int = 16384         # tensorised examples per on-disk shard (bounds memory)
    threads: int = 0                # torch CPU threads (0 = torch's default)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything ``duet pretrain`` needs besides the lake."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class EmbedConfig:
    """Batch inference settings (``duet embed``)."""

    batch_size: int = 512
    chunk_rows: int = 65536         # joined rows held at once; larger snapshots are spilled by user hash
    device: str = "auto"
    bf16: bool = False              # off by default: embeddings must match across engines
    threads: int = 0
