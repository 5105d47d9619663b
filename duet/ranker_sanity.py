"""The ranker's sanity check against the generator's own ceiling, with no Spark.

Can the ranker use a user vector at all? Generated data knows the answer: ``duet generate --truth`` keeps
each user's latents, and ``duet.ceiling`` turns them into the oracle and the Bayes NE. This module builds
the ranker's inputs from a generator's files directly, as the pipeline would (``duet.ceiling``'s
contract labels, the demo's periods, the sequence summary at the click's daily snapshot: the columns
``ranker.data.summary_features`` reads, computed here in numpy), and hands the ranker a user vector:

* ``none``: no user vector (the summary and the candidate only);
* ``latents``: the generator's latents of the user (``theta``, ``eta``, the propensity ``s``: 2K + 1
  numbers), the best embedding an encoder could ever produce;
* ``ridge``: a ridge logistic regression on the same rows and inputs (``core.linear``), the floor every
  ranker must beat.

``benchmarks/ranker_ceiling.py`` runs it at the demo's scale; ``tests/test_ranker_sanity.py`` a smaller
version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.contracts import SUMMARY_WINDOW
from core.times import arrow_micros
from duet.ceiling import contract_labels
from duet.generate import read_truth
from ranker import data
from ranker.config import RankerConfig
from ranker.data import Batch
from ranker.splits import Splits, demo_periods

_US = 1_000_000
_DAY_US = 86_400 * _US


@dataclass(frozen=True)
class GeneratedRows:
    """The ranker's rows per split (``user_id``, ``advertiser_id``, ``ad_id``, ``click_ts``, ``label``,
    ``snapshot_us`` and the summary columns), the label cutoff and the periods."""

    splits: dict[str, pa.Table]
    label_cutoff: datetime
    periods: Splits


def _summary(rows_user: np.ndarray, rows_snapshot: np.ndarray, clicks: pa.Table, conversions: pa.Table,
             user_index: dict[str, int], max_clicks: int = 64, max_conversions: int = 16) -> dict:
    """Click and conversion counts (capped as the sequences are; all, and those of the summary's window),
    hours since the latest of each, the attributed share, at each row's snapshot (what was reported
    before it)."""
    def keyed(users, ts):
        return np.asarray([user_index[u] for u in users], np.int64) * (1 << 40) + ts // _US

    def in_window(users, first, last) -> np.ndarray:
        # An event counts at the snapshot T iff first < T <= last (microseconds); with last >= first,
        # that is #{first < T} - #{last < T}, both by binary search in the users' sorted keys.
        lo = np.sort(keyed(users, first))
        hi = np.sort(keyed(users, np.maximum(last, first)))
        return np.searchsorted(lo, at, "left") - np.searchsorted(hi, at, "left")

    c_key = np.sort(keyed(clicks.column("user_id").to_pylist(), arrow_micros(clicks.column("click_ts"))))
    report = arrow_micros(conversions.column("report_ts"))
    v_key_raw = keyed(conversions.column("user_id").to_pylist(), report)
    order = np.argsort(v_key_raw, kind="stable")
    v_key = v_key_raw[order]
    v_conv_ts = arrow_micros(conversions.column("conversion_ts"))[order]
    v_att = conversions.column("attributed_click_id").is_valid().to_numpy(zero_copy_only=False)[order]
    att_cum = np.r_[0, np.cumsum(v_att)]
    at = rows_user * (1 << 40) + rows_snapshot // _US
    start = rows_user * (1 << 40)
    n_c = np.searchsorted(c_key, at, "left") - np.searchsorted(c_key, start, "left")
    last_c = c_key[np.maximum(np.searchsorted(c_key, at, "left") - 1, 0)] - start
    hi_v = np.searchsorted(v_key, at, "left")
    lo_v = np.searchsorted(v_key, start, "left")
    n_v = hi_v - lo_v
    last_v_conv = v_conv_ts[np.maximum(hi_v - 1, 0)] // _US
    snap_s = rows_snapshot // _US
    recent = np.maximum(hi_v - max_conversions, lo_v)
    shown = np.minimum(n_v, max_conversions)
    window = int(SUMMARY_WINDOW.total_seconds()) * _US
    click_us = arrow_micros(clicks.column("click_ts"))
    clicks_window = in_window(clicks.column("user_id").to_pylist(), click_us, click_us + window)
    conversions_window = in_window(conversions.column("user_id").to_pylist(), report,
                                   arrow_micros(conversions.column("conversion_ts")) + window)
    return {
        "click_count": np.minimum(n_c, max_clicks).astype(np.float32),
        "conversion_count": shown.astype(np.float32),
        "clicks_7d": np.minimum(clicks_window, max_clicks).astype(np.float32),
        "conversions_7d": np.minimum(conversions_window, max_conversions).astype(np.float32),
        "hours_since_click": np.where(n_c > 0, (snap_s - last_c) / 3600, -1).astype(np.float32),
        "hours_since_conversion": np.where(n_v > 0, (snap_s - last_v_conv) / 3600, -1).astype(np.float32),
        "attributed_share": np.where(shown > 0, (att_cum[hi_v] - att_cum[recent]) / np.maximum(shown, 1), 0)
        .astype(np.float32),
    }


def generated_rows(events_dir: str | Path, truth_dir: str | Path, window: timedelta = timedelta(days=7),
                   grace: timedelta = timedelta(days=1)) -> GeneratedRows:
    """The matured clicks of the ranker's three periods with labels and the summary at their snapshot."""
    cfg, users, _ = read_truth(truth_dir)
    start = datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC)
    plan = demo_periods([start + timedelta(days=d) for d in range(1, cfg.days + 1)], window, grace)
    cutoff, periods = plan.label_cutoff, plan.splits
    labelled = contract_labels(events_dir, cutoff, window, grace)
    events = Path(events_dir)
    clicks = pq.read_table(events / "clicks.parquet")
    conversions = pq.read_table(events / "conversions.parquet")
    user_index = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    ts = arrow_micros(labelled.column("click_ts"))
    start_us = int(start.timestamp()) * _US
    snapshot = start_us + (ts - start_us) // _DAY_US * _DAY_US
    bounds = [int(t.timestamp()) * _US for t in (periods.train_from, periods.valid_from, periods.test_from,
                                                  periods.test_until)]
    out = {}
    for name, lo, hi in zip(("train", "valid", "test"), bounds[:-1], bounds[1:], strict=True):
        keep = (ts >= lo) & (ts < hi)
        part = labelled.filter(pa.array(keep)).append_column("snapshot_us", pa.array(snapshot[keep]))
        row_users = np.asarray([user_index[u] for u in part.column("user_id").to_pylist()], np.int64)
        for column, values in _summary(row_users, snapshot[keep], clicks, conversions, user_index).items():
            part = part.append_column(column, pa.array(values))
        out[name] = part.sort_by("click_id")
    return GeneratedRows(out, cutoff, periods)


def latent_vectors(truth_dir: str | Path, user_ids: list[str]) -> np.ndarray:
    """(n, 2K + 1): each user's ``theta``, ``eta`` and propensity from the generator's truth."""
    _, users, _ = read_truth(truth_dir)
    index = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    rows = np.asarray([index[u] for u in user_ids], np.int64)
    theta = np.stack(users.column("theta").to_numpy(zero_copy_only=False))[rows]
    eta = np.stack(users.column("eta").to_numpy(zero_copy_only=False))[rows]
    s = users.column("propensity").to_numpy()[rows][:, None]
    return np.concatenate([theta, eta, s], axis=1).astype(np.float32)


def to_batch(table: pa.Table, cfg: RankerConfig, user: np.ndarray | None) -> Batch:
    """The rows as the ranker's tensors (``ranker.data.to_batch``), ``user`` (n, w) as the user vector."""
    batch = data.to_batch(table, (cfg.ad_buckets, cfg.advertiser_buckets), with_user=False)
    if user is not None:
        batch.user = torch.from_numpy(np.ascontiguousarray(user, np.float32))
    return batch
