"""The user models compared, and the pre-training heads on top of them.

* ``duet``: a click encoder and a conversion encoder (which reads the click encoder's tokens); two
  embeddings of ``dim``. The click head trains the click embedding, the conversion heads the conversion
  embedding, so each embedding is shaped by its own stream's future.
* ``shared``: one transformer over the merged stream; one embedding of ``2 * dim`` trained by both heads.
  Each stream has its own cap (64 clicks, 16 conversions); parameters matched to duet's.
* ``merged``: one transformer over the merged stream under one token budget (the most recent
  ``merged_tokens`` events of either kind), its layers sized so that its FLOPs per user match duet's:
  the paper's single, undifferentiated encoder (``encoders.merged_encoder``).
* ``click_only``: the click encoder alone (deeper, to match parameters); one embedding of ``2 * dim``
  trained by both heads.

The variants are declared once, in ``core.variants``; ``build_encoder`` builds one from its entry.
Every variant gets the same objectives, the same token modules and the same budget; only the encoder
differs. ``parameter_report`` prints the encoders' sizes and FLOPs per embedded user: the defaults keep
``shared`` and ``click_only`` within 10% of duet's parameters and ``merged`` near duet's FLOPs.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import torch
from torch import nn

from core.variants import variant, variant_names
from encoders.batch import Targets, UserBatch
from encoders.click_encoder import ClickEncoder
from encoders.config import ModelConfig, ObjectiveConfig, embedding_dims
from encoders.conversion_encoder import ConversionEncoder
from encoders.merged_encoder import MergedEncoder
from encoders.objectives import AdvertiserRetrieval, ConversionObjective
from encoders.shared_encoder import SharedEncoder
from encoders.tokens import Vocabulary


class UserEmbeddings(NamedTuple):
    """``click`` (B, E1): the click (or only) embedding; ``conversion`` (B, E2) or None for variants
    with one embedding."""

    click: torch.Tensor
    conversion: torch.Tensor | None


class DuetEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab = vocab = Vocabulary(cfg)
        self.click = ClickEncoder(cfg, vocab, cfg.click_layers, cfg.dim)
        self.conversion = ConversionEncoder(cfg, vocab, cfg.conversion_blocks, cfg.dim, click_dim=cfg.dim)

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        clicks = self.click(batch)
        return UserEmbeddings(clicks.embedding, self.conversion(batch, clicks))


class SharedBaseline(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab = Vocabulary(cfg)
        self.shared = SharedEncoder(cfg, self.vocab, cfg.shared_layers, 2 * cfg.dim)

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        return UserEmbeddings(self.shared(batch), None)


class ClickOnlyBaseline(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab = Vocabulary(cfg)
        self.click = ClickEncoder(cfg, self.vocab, cfg.click_only_layers, 2 * cfg.dim)

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        return UserEmbeddings(self.click(batch).embedding, None)


class MergedBaseline(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab = Vocabulary(cfg)
        self.merged = MergedEncoder(cfg, self.vocab, cfg.merged_layers, 2 * cfg.dim)

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        return UserEmbeddings(self.merged(batch), None)


def build_encoder(cfg: ModelConfig) -> nn.Module:
    """The encoder of ``cfg.variant``, the class its registry entry names (``core.variants.variant``)."""
    module, name = variant(cfg.variant).encoder.split(":")
    return getattr(importlib.import_module(module), name)(cfg)


class UserModel(nn.Module):
    """A variant's encoder plus its pre-training heads. ``forward`` gives the embeddings only."""

    def __init__(self, cfg: ModelConfig, objective: ObjectiveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        click_dim, conversion_dim = embedding_dims(cfg)
        advertisers, temperature = self.encoder.vocab.advertiser, objective.temperature
        self.click_head = AdvertiserRetrieval(click_dim, advertisers, temperature)
        self.conversion_head = ConversionObjective(conversion_dim or click_dim, advertisers, temperature)
        self.conversion_weight = objective.conversion_weight

    def forward(self, batch: UserBatch) -> UserEmbeddings:
        """batch: B users -> their embeddings."""
        return self.encoder(batch)

    def conversion_input(self, emb: UserEmbeddings) -> torch.Tensor:
        """The embedding the conversion heads read: duet's conversion embedding, else the only one."""
        return emb.conversion if emb.conversion is not None else emb.click

    def losses(self, emb: UserEmbeddings, targets: Targets) -> dict[str, torch.Tensor]:
        """-> {"click", "converts", "conversion_advertisers", "total"} scalar losses."""
        click = self.click_head.loss(emb.click, targets.click_advertisers)
        converts, advertisers = self.conversion_head.losses(self.conversion_input(emb), targets)
        total = click + self.conversion_weight * (converts + advertisers)
        return {"click": click, "converts": converts, "conversion_advertisers": advertisers, "total": total}


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (a table shared by several modules counts once)."""
    return sum(p.numel() for p in module.parameters())


def full_batch(cfg: ModelConfig, users: int = 4, seed: int = 0) -> UserBatch:
    """``users`` users with every click and conversion slot filled (random ids and times): the most a user
    costs to embed under ``cfg``'s caps."""
    g = torch.Generator().manual_seed(seed)
    n, m = cfg.max_clicks, cfg.max_conversions

    def ids(buckets: int, width: int) -> torch.Tensor:
        return torch.randint(1, buckets, (users, width), generator=g)

    return UserBatch(
        click_ad=ids(cfg.ad_buckets, n), click_advertiser=ids(cfg.advertiser_buckets, n),
        click_time=torch.rand(users, n, 2, generator=g) * 6,
        click_mask=torch.ones(users, n, dtype=torch.bool), click_stats=torch.rand(users, 3, generator=g),
        conversion_advertiser=ids(cfg.advertiser_buckets, m),
        conversion_type=ids(cfg.conversion_type_buckets, m),
        conversion_attributed=torch.randint(1, 3, (users, m), generator=g),
        conversion_time=torch.rand(users, m, 1, generator=g) * 6,
        conversion_mask=torch.ones(users, m, dtype=torch.bool),
        conversion_stats=torch.rand(users, 4, generator=g))


def flops_per_user(encoder: nn.Module, cfg: ModelConfig) -> int:
    """Floating-point operations (a multiply-add counts 2) of embedding one user with full caps, counted
    by ``torch.utils.flop_counter`` on the encoder's forward pass (matrix products and attention; the
    element-wise rest is small beside them)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = full_batch(cfg)
    counter = FlopCounterMode(display=False)
    with counter:   # not under no_grad: the counter's module tracker needs autograd on
        encoder.eval()(batch)
    return int(counter.get_total_flops() // len(batch))


def parameter_report(cfg: ModelConfig, objective: ObjectiveConfig | None = None) -> dict[str, dict[str, int]]:
    """Per variant under ``cfg``'s sizes: encoder and total (with heads) parameter counts, and the
    encoder's FLOPs per embedded user (``flops_per_user``)."""
    from dataclasses import replace

    objective = objective or ObjectiveConfig()
    report = {}
    for name in variant_names():
        vcfg = replace(cfg, variant=name)
        model = UserModel(vcfg, objective)
        report[name] = {"encoder": count_parameters(model.encoder), "total": count_parameters(model),
                        "flops_per_user": flops_per_user(model.encoder, vcfg)}
    return report
