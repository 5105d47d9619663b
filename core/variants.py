"""The variants the ablation compares, declared once: every reader (the encoders, the checkpoint names,
the CLI, the ranker, the report, the tests) takes them from here.

Standard library only, and in ``core`` so that the command line's parser and the report page can read it
without loading a stage; an encoder class is named (``module:Class``), never imported, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DuetError


@dataclass(frozen=True)
class Variant:
    """One user model of the ablation: the one place a variant is declared.

    ``encoder`` is the ``module:Class`` of its encoder, an ``nn.Module`` built from a ``ModelConfig`` whose
    ``forward(UserBatch)`` returns ``UserEmbeddings`` (``encoders.variants.build_encoder``);
    ``two_embeddings``: a click and a conversion embedding of ``dim`` each (else one of
    ``2 * dim``, so that no variant wins by width); ``color``: its colour in the report. The checkpoint
    names, the CLI's choices, the ranker's variants, the report's order and colours all read this list.
    """

    name: str
    encoder: str
    two_embeddings: bool
    color: str
    about: str


REGISTRY: tuple[Variant, ...] = (
    Variant("shared", "encoders.variants:SharedBaseline", False, "#1f77b4",
            "one transformer over both streams, each under its own cap (64 clicks + 16 conversions)"),
    Variant("merged", "encoders.variants:MergedBaseline", False, "#d62728",
            "one transformer over the merged stream under one token budget (the most recent events of "
            "either kind), its layers sized to duet's FLOPs per user: the paper's undifferentiated encoder"),
    Variant("click_only", "encoders.variants:ClickOnlyBaseline", False, "#ff7f0e",
            "the click encoder alone, deeper"),
    Variant("duet", "encoders.variants:DuetEncoder", True, "#2ca02c",
            "a click encoder and a conversion encoder reading the click tokens (cross-attention)"),
)
VARIANTS = tuple(v.name for v in REGISTRY)


def variant(name: str) -> Variant:
    """The registry's entry for ``name``; a ``DuetError`` naming the known ones otherwise."""
    for v in REGISTRY:
        if v.name == name:
            return v
    raise DuetError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)}")
