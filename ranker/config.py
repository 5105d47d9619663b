"""The ranker's configuration: one typed, frozen config (saved beside a ranker by ``core.records.to_dict``,
read back by ``core.records.from_dict``, which refuses unknown keys), and the variants an ablation compares.

A variant is a name for a set of user features: ``none`` (``core.variants.NO_VECTOR``: no user vector), an
encoder variant (a name in ``core.variants``, asked at each call: the lake's newest model version of that
variant) or a model version by its own name (``duet-3f2a9c1``, or an imported embedding ``ext-<name>``):
``variant_versions`` maps names to model versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DuetError
from core.lake import Lake
from core.variants import NO_VECTOR, variant_names


def is_variant(name: str) -> bool:
    """``none``, an encoder variant, or a model version's name (``<variant>-<7 hex>``, ``ext-<name>``)."""
    from encoders.model_store import is_version

    return name == NO_VECTOR or name in variant_names() or is_version(name)


def check_variants(names: list[str] | tuple[str, ...]) -> None:
    """Refuse a name that cannot be a variant, or one given twice (before anything is read)."""
    bad = [n for n in names if not is_variant(n)]
    if bad:
        raise DuetError(f"not a variant: {', '.join(bad)} (a variant is {NO_VECTOR}, "
                        f"{', '.join(variant_names())} or a model version such as duet-3f2a9c1 or ext-NAME)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DuetError(f"variant(s) given twice: {', '.join(twice)}")


def variant_versions(lake: str, names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Variant name -> model version for every name but ``none``, in the order given: an encoder variant
    is its newest model version under the lake; a model version (``duet-3f2a9c1``, ``ext-<name>``) is
    itself, and must be in the lake."""
    from encoders.model_store import latest_version, list_versions

    check_variants(names)
    known = list_versions(lake)
    out = {}
    for name in names:
        if name == NO_VECTOR:
            continue
        if name in variant_names():
            out[name] = latest_version(lake, name)
        elif name in known:
            out[name] = name
        else:
            raise DuetError(f"no model version {name!r} under {Lake(lake).models} (known: "
                            f"{', '.join(known) or 'none'}); `duet pretrain` or `duet embeddings import` "
                            "makes one")
    return out


@dataclass(frozen=True)
class RankerConfig:
    """Model and training settings. Every variant gets the same config: only the user features differ."""

    ad_buckets: int = 1 << 14          # hashed ad_id table
    advertiser_buckets: int = 1 << 10  # hashed advertiser_id table
    id_dim: int = 8                    # width of the ad and advertiser embeddings (when on)
    ad_ids: bool = False               # a learned ad id table (off: an ad says no more than its advertiser)
    advertiser_ids: bool = False       # a learned advertiser id table beside the fixed candidate table
    candidate_dim: int = 16            # width of the fixed advertiser table (ranker.model.advertiser_factors)
    kernel_width: float = 0.1          # how far the converter table pools over alike advertisers (cosine)
    folds: int = 5                     # the training rows' converter features are computed out of fold
    user_dim: int = 32                 # width of the user x candidate interaction
    hidden: tuple[int, ...] = (64,)
    ridge: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # penalties tried for the wide part
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 512
    max_epochs: int = 20
    patience: int = 3                  # epochs without a better validation log loss before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ad_buckets < 2 or self.advertiser_buckets < 2 or min(self.id_dim, self.user_dim,
                                                                     self.candidate_dim) < 1:
            raise DuetError("ranker: bucket counts must be >= 2 and widths >= 1")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise DuetError("ranker: max_epochs, patience and batch_size must be >= 1")
