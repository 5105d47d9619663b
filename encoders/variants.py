"""The three user models compared, and the pre-training heads on top of them.

* ``duet``: a click encoder and a conversion encoder (which reads the click encoder's tokens); two
  embeddings of ``dim``. The click head trains the click embedding, the conversion heads the conversion
  embedding, so each embedding is shaped by its own stream's future.
* ``shared``: one transformer over the merged stream; one embedding of ``2 * dim`` trained by both heads.
* ``click_only``: the click encoder alone (deeper, to match parameters); one embedding of ``2 * dim``
  trained by both heads.

Every variant gets the same objectives, the same token modules and the same budget; only the encoder
differs. ``parameter_report`` prints the encoders' sizes, which the defaults keep within 10% of duet's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from encoders.batch import Targets, UserBatch
from encoders.click_encoder import ClickEncoder
from encoders.config import VARIANTS, ModelConfig, ObjectiveConfig, embedding_dims
from encoders.conversion_encoder import ConversionEncoder
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


ENCODERS = {"duet": DuetEncoder, "shared": SharedBaseline, "click_only": ClickOnlyBaseline}


class UserModel(nn.Module):
    """A variant's encoder plus its pre-training heads. ``forward`` gives the embeddings only."""

    def __init__(self, cfg: ModelConfig, objective: ObjectiveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ENCODERS[cfg.variant](cfg)
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


def parameter_report(cfg: ModelConfig, objective: ObjectiveConfig | None = None) -> dict[str, dict[str, int]]:
    """Encoder and total (with heads) parameter counts of every variant under ``cfg``'s sizes."""
    from dataclasses import replace

    objective = objective or ObjectiveConfig()
    report = {}
    for variant in VARIANTS:
        model = UserModel(replace(cfg, variant=variant), objective)
        report[variant] = {"encoder": count_parameters(model.encoder), "total": count_parameters(model)}
    return report
