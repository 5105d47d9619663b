"""A small lake for the feature store's tests and benchmarks, written directly with deltalake: sequence
tables, checkpoints (a real config.json; the weights file is a placeholder, nothing here loads it) and
embeddings of several model versions, with known values. No Spark job and no training: seconds.

Users ``u000``... are active (have a sequence) on the snapshots ``active`` says; each active
(user, snapshot) has an embedding row per model version, as ``duet embed`` would write.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake
from safetensors.numpy import save_file

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, SUMMARY_WINDOW, USER_EMBEDDINGS
from core.records import to_dict
from encoders.config import ModelConfig, PretrainConfig


def user_id(i: int) -> str:
    return f"u{i:03d}"


def write_checkpoint(lake: str, version: str, dim: int, trained_at: datetime) -> None:
    variant = version.split("-")[0]
    cfg = PretrainConfig(model=ModelConfig(variant=variant, dim=dim, heads=2))
    folder = Path(lake) / "_models" / version
    folder.mkdir(parents=True, exist_ok=True)
    document = {"model_version": version, "config": to_dict(cfg),
                "info": {"trained_at": trained_at.isoformat()}}
    (folder / "config.json").write_text(json.dumps(document, indent=1, default=str))
    save_file({"placeholder": np.zeros(1, dtype=np.float32)}, str(folder / "model.safetensors"))


def sequence_rows(user: int, snapshot: datetime) -> tuple[dict, dict | None]:
    """The click row (always) and the conversion row (every third user) of an active user."""
    clicks = 1 + user % 5
    click_ts = [snapshot - timedelta(hours=3 * (clicks - k) + user % 7) for k in range(clicks)]
    click = {"user_id": user_id(user), "snapshot_ts": snapshot, "ad_ids": [f"ad{k}" for k in range(clicks)],
             "advertiser_ids": [f"adv{k}" for k in range(clicks)], "click_ts": click_ts, "length": clicks}
    if user % 3:
        return click, None
    conversions = 1 + user % 4
    conversion = {"user_id": user_id(user), "snapshot_ts": snapshot,
                  "advertiser_ids": ["adv0"] * conversions, "conversion_types": ["purchase"] * conversions,
                  # 50 hours apart: a user's fourth conversion is older than the summary's 7-day window
                  "conversion_ts": [snapshot - timedelta(hours=50 * (conversions - k))
                                    for k in range(conversions)],
                  "attributed": [k % 2 == 0 for k in range(conversions)], "length": conversions}
    return click, conversion


def summary(user: int, snapshot: datetime) -> dict:
    """What the summary view should hold for an active user (the reference for the Spark SQL)."""
    click, conversion = sequence_rows(user, snapshot)
    hours = lambda ts: (snapshot - ts[-1]).total_seconds() / 3600  # noqa: E731
    recent = lambda ts: sum(snapshot - t <= SUMMARY_WINDOW for t in ts)  # noqa: E731
    return {"click_count": click["length"], "conversion_count": conversion["length"] if conversion else 0,
            "clicks_7d": recent(click["click_ts"]),
            "conversions_7d": recent(conversion["conversion_ts"]) if conversion else 0,
            "hours_since_click": hours(click["click_ts"]),
            "hours_since_conversion": hours(conversion["conversion_ts"]) if conversion else -1.0,
            "attributed_share": sum(conversion["attributed"]) / conversion["length"] if conversion else 0.0}


def vector(user: int, snapshot: datetime, version: str, which: str, dim: int,
           revision: int = 0) -> list[float]:
    seed = zlib.crc32(f"{user}|{snapshot.isoformat()}|{version}|{which}|{revision}".encode())
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32).tolist()


def embedding_rows(users: list[int], snapshot: datetime, version: str, dims: tuple[int, int | None],
                   revision: int = 0) -> list[dict]:
    created = snapshot + timedelta(hours=1, minutes=revision)
    return [{"user_id": user_id(u), "event_timestamp": snapshot, "created_timestamp": created,
             "click_embedding": vector(u, snapshot, version, "click", dims[0], revision),
             "conversion_embedding": vector(u, snapshot, version, "conversion", dims[1], revision)
             if dims[1] else None, "model_version": version} for u in users]


def write_sequences(lake: str, active: dict[datetime, list[int]]) -> None:
    clicks, conversions = [], []
    for snapshot, users in active.items():
        for u in users:
            click, conversion = sequence_rows(u, snapshot)
            clicks.append(click)
            if conversion:
                conversions.append(conversion)
    for table, rows in ((CLICK_SEQUENCES, clicks), (CONVERSION_SEQUENCES, conversions)):
        write_deltalake(table.location(lake), pa.Table.from_pylist(rows, schema=table.arrow_schema()),
                        mode="overwrite")


def write_embeddings(lake: str, rows: list[dict], predicate: str | None = None) -> None:
    """Append rows, or replace the rows ``predicate`` selects (a re-run of a snapshot)."""
    table = pa.Table.from_pylist(rows, schema=USER_EMBEDDINGS.arrow_schema())
    if predicate:
        write_deltalake(USER_EMBEDDINGS.location(lake), table, mode="overwrite", predicate=predicate)
    else:
        write_deltalake(USER_EMBEDDINGS.location(lake), table, mode="append", partition_by=["model_version"])


def build(lake: str, active: dict[datetime, list[int]], versions: dict[str, tuple[int, int | None]]) -> None:
    """Sequences for ``active``, a checkpoint per version, and every version's embeddings."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (version, dims) in enumerate(versions.items()):
        write_checkpoint(lake, version, dims[0] if dims[1] else dims[0] // 2, base + timedelta(hours=i))
    write_sequences(lake, active)
    rows = [r for snapshot, users in active.items() for version, dims in versions.items()
            for r in embedding_rows(users, snapshot, version, dims)]
    write_embeddings(lake, rows)
