"""Arrow rows of users' sequences -> padded tensors, with no per-row Python.

The encoders read one row per (user, snapshot) in the *input layout* below: a user's click sequence and
conversion sequence side by side (either may be null: a user with clicks and no conversion, or the
reverse). ``encoders.lake`` (deltalake) and ``encoders.spark_embed`` (Spark) both produce it from the
sequence tables. Lists are flattened once, ids hashed per distinct value (``encoders.hashing``), and
values scattered into padded ``(users, events)`` arrays with numpy.

Layout of a ``UserBatch`` (B users, N click slots, M conversion slots; events ascending by time, real
events first and padding after them, so that the most recent event is the last real one):

* clicks: ``click_ad``, ``click_advertiser`` (B, N) int64 hashed ids, 0 = padding; ``click_time``
  (B, N, 2) float32 = ``log1p`` of the hours before the snapshot and of the hours since the previous
  click; ``click_mask`` (B, N) bool, True = real; ``click_stats`` (B, 3) = ``log1p(count)``,
  ``log1p(hours since the last click)``, has clicks.
* conversions: ``conversion_advertiser``, ``conversion_type`` (B, M) int64 hashed ids;
  ``conversion_attributed`` (B, M) int64 (1 = unattributed, 2 = attributed, 0 = padding);
  ``conversion_time`` (B, M, 1) float32 = ``log1p`` of the hours before the snapshot (when it happened;
  the contract's sequence table has no report time); ``conversion_mask`` (B, M) bool;
  ``conversion_stats`` (B, 4) = ``log1p(count)``, attributed share, ``log1p(hours since the last)``,
  has conversions.

Longer sequences than the model's caps keep their most recent events. This module never reads a table.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.times import arrow_micros
from encoders.config import ModelConfig
from encoders.hashing import bucketize

TS = pa.timestamp("us", tz="UTC")

# The input layout: what every reader hands to the encoders.
INPUT_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("snapshot_ts", TS),
    ("click_ad_ids", pa.list_(pa.string())),
    ("click_advertiser_ids", pa.list_(pa.string())),
    ("click_ts", pa.list_(TS)),
    ("conversion_advertiser_ids", pa.list_(pa.string())),
    ("conversion_types", pa.list_(pa.string())),
    ("conversion_ts", pa.list_(TS)),
    ("conversion_attributed", pa.list_(pa.bool_())),
])
# Sequence table column -> input layout column.
CLICK_COLUMNS = {"ad_ids": "click_ad_ids", "advertiser_ids": "click_advertiser_ids", "click_ts": "click_ts"}
CONVERSION_COLUMNS = {"advertiser_ids": "conversion_advertiser_ids", "conversion_types": "conversion_types",
                      "conversion_ts": "conversion_ts", "attributed": "conversion_attributed"}
# Pre-training targets (``encoders.examples``), beside the input columns.
TARGET_SCHEMA = pa.schema([
    ("target_click_advertisers", pa.list_(pa.string())),
    ("target_conversion_advertisers", pa.list_(pa.string())),
    ("target_converts", pa.bool_()),
])

_US_PER_HOUR = 3_600_000_000.0


@dataclass(frozen=True)
class UserBatch:
    """Padded tensors of B users' sequences (see the module docstring for every field)."""

    click_ad: torch.Tensor
    click_advertiser: torch.Tensor
    click_time: torch.Tensor
    click_mask: torch.Tensor
    click_stats: torch.Tensor
    conversion_advertiser: torch.Tensor
    conversion_type: torch.Tensor
    conversion_attributed: torch.Tensor
    conversion_time: torch.Tensor
    conversion_mask: torch.Tensor
    conversion_stats: torch.Tensor

    def __len__(self) -> int:
        return self.click_ad.shape[0]

    def to(self, device: torch.device | str) -> UserBatch:
        return UserBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True)
                            for f in fields(self)})

    def trimmed(self) -> UserBatch:
        """The same batch with padding columns beyond its longest sequences removed (at least one)."""
        n = max(int(self.click_mask.sum(1).max()) if len(self) else 0, 1)
        m = max(int(self.conversion_mask.sum(1).max()) if len(self) else 0, 1)
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if f.name.startswith("click_") and f.name != "click_stats":
                t = t[:, :n]
            elif f.name.startswith("conversion_") and f.name != "conversion_stats":
                t = t[:, :m]
            out[f.name] = t
        return UserBatch(**out)

    def select(self, index: torch.Tensor) -> UserBatch:
        return UserBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor]) -> UserBatch:
        return UserBatch(**{f.name: tensors[f.name] for f in fields(UserBatch)})

    @staticmethod
    def concat(batches: list[UserBatch]) -> UserBatch:
        """Concatenate batches padded to the same widths."""
        return UserBatch(**{f.name: torch.cat([getattr(b, f.name) for b in batches])
                            for f in fields(UserBatch)})


@dataclass(frozen=True)
class Targets:
    """What pre-training predicts for B users (``encoders.examples`` builds it; K = max_targets, the
    most recent distinct advertisers).

    ``click_advertisers`` (B, K) int64 advertiser buckets clicked in the horizon, 0 = none;
    ``converts`` (B,) float32 1.0 if the user converted in the horizon (reported before the cutoff);
    ``conversion_advertisers`` (B, K) int64 advertiser buckets of those conversions.
    """

    click_advertisers: torch.Tensor
    converts: torch.Tensor
    conversion_advertisers: torch.Tensor

    def __len__(self) -> int:
        return self.converts.shape[0]

    def to(self, device: torch.device | str) -> Targets:
        return Targets(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def select(self, index: torch.Tensor) -> Targets:
        return Targets(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return {f"target_{f.name}": getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor]) -> Targets:
        return Targets(**{f.name: tensors[f"target_{f.name}"] for f in fields(Targets)})


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def _ragged(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """A list column -> (its flattened values, each row's length with null lists as 0)."""
    arr = _combined(column)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(arr), lengths


@dataclass(frozen=True)
class _Slots:
    """Where each flattened element lands in a (rows, width) array, keeping each row's last ``width``."""

    rows: np.ndarray      # row of each kept element
    cols: np.ndarray      # column of each kept element
    keep: np.ndarray      # bool over the flattened elements
    starts: np.ndarray    # first flattened index of each row
    lengths: np.ndarray   # full length of each row (before the cap)
    width: int

    @staticmethod
    def of(lengths: np.ndarray, width: int) -> _Slots:
        n_rows, total = len(lengths), int(lengths.sum())
        starts = np.zeros(n_rows, np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        pos = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
        drop = np.repeat(np.maximum(lengths - width, 0), lengths)
        keep = pos >= drop
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)[keep]
        return _Slots(rows, (pos - drop)[keep], keep, starts, lengths, width)

    def scatter(self, values: np.ndarray, dtype, trailing: tuple[int, ...] = ()) -> np.ndarray:
        out = np.zeros((len(self.lengths), self.width, *trailing), dtype)
        out[self.rows, self.cols] = values[self.keep]
        return out

    def mask(self) -> np.ndarray:
        out = np.zeros((len(self.lengths), self.width), bool)
        out[self.rows, self.cols] = True
        return out

    def last(self, values: np.ndarray) -> np.ndarray:
        """Each non-empty row's last element (0 for empty rows)."""
        out = np.zeros(len(self.lengths), values.dtype)
        has = self.lengths > 0
        out[has] = values[(self.starts + self.lengths - 1)[has]]
        return out


def _width(lengths: np.ndarray, cap: int, pad_to: int | None) -> int:
    if pad_to is not None:
        return pad_to
    return max(1, min(int(lengths.max()) if len(lengths) else 0, cap))


def tensorize(table: pa.Table, cfg: ModelConfig, pad_to_caps: bool = False) -> UserBatch:
    """Rows in the input layout -> a ``UserBatch``.

    Widths are the longest sequence in ``table`` (capped by ``cfg``), or exactly the caps with
    ``pad_to_caps`` (shards of equal widths concatenate).
    """
    snapshot = arrow_micros(_combined(table.column("snapshot_ts")))

    # Clicks
    ads, n_clicks = _ragged(table.column("click_ad_ids"))
    advertisers, _ = _ragged(table.column("click_advertiser_ids"))
    click_ts, _ = _ragged(table.column("click_ts"))
    slots = _Slots.of(n_clicks, _width(n_clicks, cfg.max_clicks, cfg.max_clicks if pad_to_caps else None))
    ts = arrow_micros(click_ts)
    age = (np.repeat(snapshot, n_clicks) - ts) / _US_PER_HOUR
    gap = np.zeros(len(ts))
    if len(ts) > 1:
        gap[1:] = (ts[1:] - ts[:-1]) / _US_PER_HOUR
    gap[slots.starts[n_clicks > 0]] = 0.0  # a row's first click has no previous one
    click_time = np.stack([np.log1p(np.maximum(age, 0)), np.log1p(np.maximum(gap, 0))], axis=1)
    since_last = np.where(n_clicks > 0, (snapshot - slots.last(ts)) / _US_PER_HOUR, 0.0)
    click_stats = np.stack([np.log1p(n_clicks), np.log1p(np.maximum(since_last, 0)),
                            (n_clicks > 0).astype(np.float64)], axis=1)

    # Conversions
    conv_adv, n_conv = _ragged(table.column("conversion_advertiser_ids"))
    conv_type, _ = _ragged(table.column("conversion_types"))
    conv_ts, _ = _ragged(table.column("conversion_ts"))
    attributed, _ = _ragged(table.column("conversion_attributed"))
    cslots = _Slots.of(n_conv, _width(n_conv, cfg.max_conversions,
                                      cfg.max_conversions if pad_to_caps else None))
    cts = arrow_micros(conv_ts)
    cage = (np.repeat(snapshot, n_conv) - cts) / _US_PER_HOUR
    attr = pc.fill_null(attributed, False).to_numpy(zero_copy_only=False).astype(np.int64)
    attributed_share = np.zeros(len(n_conv))
    if len(attr):
        sums = np.bincount(np.repeat(np.arange(len(n_conv)), n_conv), weights=attr, minlength=len(n_conv))
        attributed_share = np.divide(sums, n_conv, out=np.zeros(len(n_conv)), where=n_conv > 0)
    csince = np.where(n_conv > 0, (snapshot - cslots.last(cts)) / _US_PER_HOUR, 0.0)
    conv_stats = np.stack([np.log1p(n_conv), attributed_share, np.log1p(np.maximum(csince, 0)),
                           (n_conv > 0).astype(np.float64)], axis=1)

    t = torch.from_numpy
    return UserBatch(
        click_ad=t(slots.scatter(bucketize(ads, cfg.ad_buckets), np.int64)),
        click_advertiser=t(slots.scatter(bucketize(advertisers, cfg.advertiser_buckets), np.int64)),
        click_time=t(slots.scatter(click_time.astype(np.float32), np.float32, (2,))),
        click_mask=t(slots.mask()),
        click_stats=t(click_stats.astype(np.float32)),
        conversion_advertiser=t(cslots.scatter(bucketize(conv_adv, cfg.advertiser_buckets), np.int64)),
        conversion_type=t(cslots.scatter(bucketize(conv_type, cfg.conversion_type_buckets), np.int64)),
        conversion_attributed=t(cslots.scatter(attr + 1, np.int64)),
        conversion_time=t(cslots.scatter(np.log1p(np.maximum(cage, 0)).astype(np.float32)[:, None],
                                         np.float32, (1,))),
        conversion_mask=t(cslots.mask()),
        conversion_stats=t(conv_stats.astype(np.float32)),
    )


def _target_buckets(column: pa.Array | pa.ChunkedArray, buckets: int, k: int) -> torch.Tensor:
    """Target lists are ordered like the sequences (oldest first): keep each row's last ``k``."""
    values, lengths = _ragged(column)
    return torch.from_numpy(_Slots.of(lengths, k).scatter(bucketize(values, buckets), np.int64))


def tensorize_targets(table: pa.Table, cfg: ModelConfig, max_targets: int) -> Targets:
    """The ``TARGET_SCHEMA`` columns of ``table`` -> ``Targets`` (hashed like the inputs)."""
    converts = pc.fill_null(_combined(table.column("target_converts")), False)
    return Targets(
        click_advertisers=_target_buckets(table.column("target_click_advertisers"), cfg.advertiser_buckets,
                                          max_targets),
        converts=torch.from_numpy(converts.to_numpy(zero_copy_only=False).astype(np.float32)),
        conversion_advertisers=_target_buckets(table.column("target_conversion_advertisers"),
                                               cfg.advertiser_buckets, max_targets),
    )
