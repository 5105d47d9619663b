"""Synthetic rows in the encoders' input layout, shaped like the demo's sequences, without Spark.

Click counts follow the generator's heavy tail (Poisson of 4 clicks a day over a 30-day window times a
log-normal activity, capped at 64); about 40% of users have conversions (1 to 16). Ids come from the
generator's catalogue sizes (5,000 ads, 200 advertisers). Used by the encoder benchmarks so that they
run on a machine with only torch, safetensors and pyarrow (and numpy), and to write large sequence
tables quickly for the embedding benchmark.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoders.batch import INPUT_SCHEMA

SNAPSHOT = datetime(2026, 2, 1, tzinfo=UTC)


def _lists(lengths: np.ndarray, values: pa.Array) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _times(rng: np.random.Generator, lengths: np.ndarray, window_s: float, snapshot: datetime) -> pa.Array:
    """Ascending instants within ``window_s`` before ``snapshot`` for each row."""
    total = int(lengths.sum())
    ages = rng.random(total) * window_s
    rows = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((-ages, rows))  # per row, oldest first
    micros = int(snapshot.timestamp() * 1e6) - (ages[order] * 1e6).astype(np.int64) - 1
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pa.array(np.char.add(prefix, numbers.astype(str)))


def synthetic_rows(users: int, seed: int = 0, snapshot: datetime = SNAPSHOT, first_user: int = 0) -> pa.Table:
    """``users`` rows in ``encoders.batch.INPUT_SCHEMA`` (user ids ``u<first_user + i>``)."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(-0.5, 1.0, users)
    n_clicks = np.minimum(rng.poisson(4 * 30 * activity * 0.35), 64).astype(np.int64)
    n_conv = np.where(rng.random(users) < 0.4, np.minimum(rng.geometric(0.5, users), 16), 0).astype(np.int64)
    tc, tv = int(n_clicks.sum()), int(n_conv.sum())
    adv = rng.zipf(1.3, tc) % 200
    ads = adv * 25 + rng.integers(0, 25, tc)
    return pa.table({
        "user_id": _ids("u", np.arange(first_user, first_user + users)),
        "snapshot_ts": pa.array([snapshot] * users, pa.timestamp("us", tz="UTC")),
        "click_ad_ids": _lists(n_clicks, _ids("ad", ads)),
        "click_advertiser_ids": _lists(n_clicks, _ids("adv", adv)),
        "click_ts": _lists(n_clicks, _times(rng, n_clicks, 30 * 86400, snapshot)),
        "conversion_advertiser_ids": _lists(n_conv, _ids("adv", rng.zipf(1.3, tv) % 200)),
        "conversion_types": _lists(n_conv, pa.array(rng.choice(["purchase", "add_to_cart", "lead"], tv))),
        "conversion_ts": _lists(n_conv, _times(rng, n_conv, 90 * 86400, snapshot)),
        "conversion_attributed": _lists(n_conv, pa.array(rng.random(tv) < 0.7)),
    }).cast(INPUT_SCHEMA)


def synthetic_targets(users: int, seed: int = 0) -> pa.Table:
    """Target columns (``encoders.batch.TARGET_SCHEMA``) for ``users`` rows."""
    rng = np.random.default_rng(seed + 1)
    n_click = rng.integers(0, 12, users)
    n_conv = np.where(rng.random(users) < 0.2, rng.integers(1, 3, users), 0)
    return pa.table({
        "target_click_advertisers": _lists(n_click, _ids("adv", rng.integers(0, 200, int(n_click.sum())))),
        "target_conversion_advertisers": _lists(n_conv, _ids("adv", rng.integers(0, 200, int(n_conv.sum())))),
        "target_converts": pa.array(n_conv > 0),
    })


def sequence_tables(users: int, seed: int = 0, snapshot: datetime = SNAPSHOT,
                    first_user: int = 0) -> tuple[pa.Table, pa.Table]:
    """The same users as click and conversion sequence table rows (contract columns), users without
    events left out like the Spark job does."""
    rows = synthetic_rows(users, seed, snapshot, first_user)
    n_clicks = pc.list_value_length(rows.column("click_ad_ids"))
    n_conv = pc.list_value_length(rows.column("conversion_types"))
    clicks = pa.table({"user_id": rows.column("user_id"), "snapshot_ts": rows.column("snapshot_ts"),
                       "ad_ids": rows.column("click_ad_ids"),
                       "advertiser_ids": rows.column("click_advertiser_ids"),
                       "click_ts": rows.column("click_ts"), "length": n_clicks.cast(pa.int32())})
    conversions = pa.table({"user_id": rows.column("user_id"), "snapshot_ts": rows.column("snapshot_ts"),
                            "advertiser_ids": rows.column("conversion_advertiser_ids"),
                            "conversion_types": rows.column("conversion_types"),
                            "conversion_ts": rows.column("conversion_ts"),
                            "attributed": rows.column("conversion_attributed"),
                            "length": n_conv.cast(pa.int32())})
    return (clicks.filter(pc.greater(n_clicks, 0)), conversions.filter(pc.greater(n_conv, 0)))

