"""The ranker's configuration: one typed, frozen config (unknown keys are refused by ``from_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from core.errors import DuetError

VARIANTS = ("none", "shared", "click_only", "duet")


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

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden), "ridge": list(self.ridge)}

    @classmethod
    def from_dict(cls, data: dict) -> RankerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DuetError(f"ranker config: unknown key(s) {', '.join(sorted(unknown))}")
        tuples = {k: tuple(data[k]) for k in ("hidden", "ridge") if k in data}
        return cls(**{**data, **tuples})
