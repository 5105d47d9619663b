"""The training set as tensors: candidate ids, sequence summary, user embeddings, labels, per split.

Read with ``deltalake`` (no Spark): ``training/training_set`` holds one row per (click, model version);
a variant reads its model version's rows, and ``none`` reads the rows of any one version without the
embedding columns (the examples, ids and summary features are the same for every version).

Features (the same for every variant but the user vector):

* ``ad``, ``advertiser``: hashed ids (``encoders.hashing.bucketize``; 0 is never used);
* ``summary`` (8 values), all over the summary's recent window (``core.contracts.SUMMARY_WINDOW``, 7 days):
  log1p of the clicks and conversions in it, log1p of the hours since the latest click and conversion
  (the window's length when there is none in it), flags for "no conversion in the window" and "no click
  in it", the attributed share, and a flag for "no summary row within the ttl". Not the sequences'
  lengths: they grow while a young lake fills its 30- and 90-day lookbacks, so a ranker trained on its
  early days over-predicted its later ones (the demo's calibration 1.10-1.15; 0.97-1.04 with the window);
* ``user``: the click embedding followed by the conversion embedding (zeros and ``user_missing`` when
  the point-in-time join found no row); width 0 for ``none``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.contracts import SUMMARY_WINDOW, TRAINING_SET
from encoders.hashing import bucketize
from ranker.splits import RECORD_KEY

SUMMARY_WIDTH = 8


@dataclass
class Batch:
    """Rows of one split. Shapes: ``ad``, ``advertiser``: (n,) int64; ``summary``: (n, 8); ``user``:
    (n, w) float32 (w = 0 for ``none``); ``user_missing``, ``label``: (n,) float32; ``user_ids``: (n,).
    ``observed`` (n,) float32, only for delayed feedback: the probability that an eventual positive's label
    had been reported when the labels were read (``ranker.delay_weights``); None = every label is final.
    ``fake_negatives``: the rows are the fake-negative stream of delayed feedback (every click once as a 0,
    each reported conversion once more as a 1) and train on the FNW loss (``ranker.delay_weights``)."""

    ad: torch.Tensor
    advertiser: torch.Tensor
    summary: torch.Tensor
    user: torch.Tensor
    user_missing: torch.Tensor
    label: torch.Tensor
    user_ids: np.ndarray
    observed: torch.Tensor | None = None
    fake_negatives: bool = False

    def __len__(self) -> int:
        return len(self.label)

    def rows(self, index: torch.Tensor) -> Batch:
        return Batch(self.ad[index], self.advertiser[index], self.summary[index], self.user[index],
                     self.user_missing[index], self.label[index], self.user_ids[index.numpy()],
                     None if self.observed is None else self.observed[index], self.fake_negatives)


def _float(column: pa.ChunkedArray | pa.Array, fill: float) -> np.ndarray:
    return pc.fill_null(column.cast(pa.float32()), fill).to_numpy(zero_copy_only=False).astype(np.float32)


def summary_features(table: pa.Table) -> np.ndarray:
    """(n, 8) float32 from the training set's summary columns (see the module docstring)."""
    missing = table.column("click_count").is_null().to_numpy(zero_copy_only=False)
    clicks = _float(table.column("clicks_7d"), 0)
    conversions = _float(table.column("conversions_7d"), 0)
    window = SUMMARY_WINDOW.total_seconds() / 3600

    def hours(name: str, count: np.ndarray) -> np.ndarray:   # the window's length when none is in it
        value = _float(table.column(name), -1)
        return np.where(count > 0, np.clip(value, 0, window), window)

    out = np.stack([
        np.log1p(clicks), np.log1p(conversions),
        np.log1p(hours("hours_since_click", clicks)), np.log1p(hours("hours_since_conversion", conversions)),
        (conversions == 0).astype(np.float32), (clicks == 0).astype(np.float32),
        _float(table.column("attributed_share"), 0), missing.astype(np.float32)], axis=1)
    return out.astype(np.float32)


def _vectors(column: pa.ChunkedArray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> column -> (rows, width) float32 with zeros for nulls, and the null mask."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    missing = column.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    widths = set(lengths[~missing].astype(int).tolist())
    if len(widths) > 1:
        raise ValueError(f"embeddings of several widths in one model version: {sorted(widths)}")
    width = widths.pop() if widths else 0
    out = np.zeros((rows, width), np.float32)
    if width:
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
        out[~missing] = flat.reshape(-1, width)
    return out, missing


def to_batch(table: pa.Table, cfg_buckets: tuple[int, int], with_user: bool) -> Batch:
    """One split's rows as tensors. ``cfg_buckets``: (ad buckets, advertiser buckets)."""
    n = table.num_rows
    if with_user:
        click, missing = _vectors(table.column("click_embedding"), n)
        conversion, _ = _vectors(table.column("conversion_embedding"), n)
        user = np.concatenate([click, conversion], axis=1)
    else:
        user, missing = np.zeros((n, 0), np.float32), np.zeros(n, bool)
    return Batch(
        ad=torch.from_numpy(bucketize(table.column("ad_id"), cfg_buckets[0])),
        advertiser=torch.from_numpy(bucketize(table.column("advertiser_id"), cfg_buckets[1])),
        summary=torch.from_numpy(summary_features(table)),
        user=torch.from_numpy(user), user_missing=torch.from_numpy(missing.astype(np.float32)),
        label=torch.from_numpy(table.column("label").to_numpy().astype(np.float32)),
        user_ids=np.asarray(table.column("user_id").to_pylist(), dtype=object))


def read_training_set(lake: str, model_version: str) -> pa.Table:
    """One model version's rows, sorted by click id (a fixed order for every variant and run)."""
    from core.object_storage import delta_table

    table = delta_table(TRAINING_SET.location(lake)).to_pyarrow_table(
        filters=[("model_version", "=", model_version)])
    return table.sort_by("click_id")


def training_set_versions(lake: str) -> list[str]:
    """The model versions ``training/training_set`` holds rows of (empty if there is no table)."""
    from core.object_storage import delta_table, is_delta_table

    location = TRAINING_SET.location(lake)
    if not is_delta_table(location):
        return []
    column = delta_table(location).to_pyarrow_table(columns=["model_version"]).column("model_version")
    return sorted(pc.unique(column).to_pylist())


def training_set_record(lake: str) -> dict | None:
    """What the build of the current ``training/training_set`` recorded (its periods and model versions),
    or None (no table, or a table written otherwise). The newest commit that wrote rows holds it: a
    maintenance commit after it (``duet maintain``'s OPTIMIZE, VACUUM) changes no row and records nothing."""
    from core.object_storage import delta_table, is_delta_table
    from core.table_versions import NO_ROW_OPERATIONS

    location = TRAINING_SET.location(lake)
    if not is_delta_table(location):
        return None
    for commit in delta_table(location).history():     # newest first
        if commit.get("operation") in NO_ROW_OPERATIONS:
            continue
        try:
            return json.loads(commit.get("userMetadata") or "{}").get(RECORD_KEY)
        except (ValueError, AttributeError):
            return None
    return None


def load_splits(lake: str, model_version: str, buckets: tuple[int, int], with_user: bool) -> dict[str, Batch]:
    table = read_training_set(lake, model_version)
    out = {}
    for split in ("train", "valid", "test"):
        part = table.filter(pc.equal(table.column("split"), split))
        out[split] = to_batch(part, buckets, with_user)
    return out
