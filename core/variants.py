"""The variants the ablation compares, declared once: every reader (the encoders, the checkpoint names,
the feature views' widths, publishing, the CLI, the ranker, the report, the tests) asks this module when it
needs them.

Standard library only, and in ``core`` so that the command line's parser and the report page can read it
without loading a stage; an encoder class is named (``module:Class``), never imported, here.

``REGISTRY`` declares the variants duet ships. ``register`` adds one more for the length of a ``with``
block: that is how a test runs a toy variant through every stage without editing a project file
(tests/test_variant_registry.py). So a reader calls ``variants()``, ``variant_names()`` or
``variant(name)`` each time; a copy taken at import would miss a registered variant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import DuetError

# A variant's name starts its model versions' names (``<name>-<7 hex digits>``), which become folders,
# Delta partition values, SQL literals and (``-`` -> ``_``) Feast names: lower case, digits and ``_`` only.
NAME_PATTERN = r"[a-z][a-z0-9_]*"
# The paper's model: what `duet pretrain` trains by default, what the demo publishes, and the variant the
# ablation's NE reductions are measured for.
PROPOSED = "duet"
# The baseline of the headline reduction: the first of these that the ablation ran (else the best other).
COMPARATORS = ("shared", "merged")
# Names that are not registry entries, reserved here so that no variant takes them: the ranker's floor
# with no user vector, and the prefix of imported embeddings' versions (ext-NAME, encoders.model_store).
NO_VECTOR = "none"
EXTERNAL = "ext"


@dataclass(frozen=True)
class Variant:
    """One user model of the ablation: the one place a variant is declared.

    ``encoder`` is the ``module:Class`` of its encoder, an ``nn.Module`` built from a ``ModelConfig``, with
    a ``vocab`` (``encoders.tokens.Vocabulary``: the pre-training heads score advertisers against its
    table) and a ``forward(UserBatch)`` that returns ``UserEmbeddings`` (``encoders.variants``);
    ``two_embeddings``: a click and a conversion embedding of ``dim`` each (else one of ``2 * dim``, so
    that no variant wins by width; ``encoders.config.embedding_dims``); the served views hold both
    embeddings, so only a two-embedding variant can be published. ``color``: its colour in the report.
    """

    name: str
    encoder: str
    two_embeddings: bool
    color: str
    about: str

    def __post_init__(self) -> None:
        if not re.fullmatch(NAME_PATTERN, self.name) or self.name in (NO_VECTOR, EXTERNAL):
            raise DuetError(f"variant name {self.name!r}: use lower-case letters, digits and '_', starting "
                            f"with a letter, and neither {NO_VECTOR} nor {EXTERNAL} (names the ranker and "
                            "imported embeddings use)")
        if self.encoder.count(":") != 1:
            raise DuetError(f"variant {self.name}: encoder {self.encoder!r} must be module:Class")


# The variants duet ships, in the report's order.
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

_registered: list[Variant] = []   # what register() added, while its with block runs


def variants() -> tuple[Variant, ...]:
    """Every variant now: the shipped ones in the report's order, then any registered, in turn."""
    return (*REGISTRY, *_registered)


def variant_names() -> tuple[str, ...]:
    return tuple(v.name for v in variants())


def variant(name: str) -> Variant:
    """The registry's entry for ``name``; a ``DuetError`` naming the known ones otherwise."""
    for v in variants():
        if v.name == name:
            return v
    raise DuetError(f"unknown variant {name!r}: use one of {', '.join(variant_names())}")


@contextmanager
def register(new: Variant) -> Iterator[Variant]:
    """``with register(Variant(...)):`` every stage knows ``new`` inside the block, and forgets it after
    (even on an error), so a test's variant never leaks into another test. A taken name is refused."""
    if new.name in variant_names():
        raise DuetError(f"variant {new.name!r} is already registered")
    _registered.append(new)
    try:
        yield new
    finally:
        _registered.remove(new)
