"""Benchmark: loading Redis with one snapshot of a model version's online views, Feast's ``materialize``
against the executor loader (``serving.spark_loader.load_views``), in the same run (issue 26, acceptance 5).

A lake of ``--users`` users with 64-d click and conversion vectors at one snapshot is written directly with
deltalake (numpy vectors, one commit; a checkpoint record for the version, no sequences); when
``--feast-users`` is smaller, a second snapshot holds that many users (the first ones), for Feast. The
registry is applied (``serving.store.apply``), then, each into a fresh database of one real Redis
(``tests/redis_server.py``: Debian's redis-server on a loopback port, no persistence):

1. Feast: ``store.materialize(T, T)`` of the version's two online views
   (``serving.versions.feast_materialize``: Feast's local engine, the Spark offline store's query, every
   row through the driver), at the snapshot of ``--feast-users`` users;
2. the loader at the same snapshot (so the ratio compares the same rows), and, when it differs, at the
   snapshot of ``--users`` users: one pass (both views read the same source), ``mapInArrow`` on the
   partitions Spark's scan gives, one redis-py pipeline per ``--batch-rows`` rows.

Measured: wall seconds of each call (the Spark jobs included: reading Delta, the loader's duplicate check),
users/s = users / seconds, ratio = loader users/s / Feast users/s at the same snapshot. After each load a
seeded sample of 1,000 of its users is read back through Feast's SDK (``get_online_features``) and
compared with the vectors written to the lake; a mismatch fails the run. One count of the table before
the timed calls warms the JVM's Delta read for both. The session is ``local[2]``
(driver memory 6g, result size 4g: Feast collects a whole view to the driver). The machine's load
average before and after is recorded (the machine may be shared). Prints one JSON object.

    .venv/bin/python -m benchmarks.online_load [--users 1000000] [--feast-users N] [--batch-rows 2000] \\
        [--workdir bench-work]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

SNAPSHOT, FEAST_SNAPSHOT = datetime(2026, 1, 13, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)
VERSION, DIM = "duet-1234567", 64
SAMPLE = 1_000


def user_ids(n: int) -> list[str]:
    return [f"u{i:07d}" for i in range(n)]


def vectors(n: int, snapshot: datetime) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(int(snapshot.timestamp()))
    return (rng.standard_normal((n, DIM), dtype=np.float32), rng.standard_normal((n, DIM), dtype=np.float32))


def write_snapshot(lake: str, n: int, snapshot: datetime) -> None:
    """``n`` users' rows of ``VERSION`` at ``snapshot``, one append."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from core.contracts import USER_EMBEDDINGS

    click, conversion = vectors(n, snapshot)
    offsets = pa.array(np.arange(0, n * DIM + 1, DIM, dtype=np.int32))

    def lists(matrix: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))

    def instants(at: datetime) -> pa.Array:
        return pa.array(np.full(n, int(at.timestamp() * 1e6)), pa.int64()).cast(pa.timestamp("us", "UTC"))

    table = pa.Table.from_arrays(
        [pa.array(user_ids(n)), instants(snapshot), instants(snapshot + timedelta(hours=1)), lists(click),
         lists(conversion), pa.array([VERSION] * n)], schema=USER_EMBEDDINGS.arrow_schema())
    write_deltalake(USER_EMBEDDINGS.location(lake), table, mode="append", partition_by=["model_version"])


def verify(store, views, n: int, snapshot: datetime) -> int:
    """Mismatches among a seeded sample of 1,000 users read back through Feast's SDK (0 expected)."""
    click, conversion = vectors(n, snapshot)
    rows = np.random.default_rng(7).choice(n, size=min(SAMPLE, n), replace=False)
    ids = user_ids(n)
    features = [f"{v}:{f.name}" for v in views for f in store.get_feature_view(v).features]
    read = store.get_online_features(features=features, entity_rows=[{"user_id": ids[i]} for i in rows],
                                     full_feature_names=True).to_dict()
    got = {name: read[next(c for c in read if c.endswith(f"__{name}"))]
           for name in ("click_embedding", "conversion_embedding")}
    bad = 0
    for k, i in enumerate(rows):
        for name, want in (("click_embedding", click[i]), ("conversion_embedding", conversion[i])):
            value = got[name][k]
            bad += value is None or not np.array_equal(np.array(value, np.float32), want)
    return bad


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(users: int, feast_users: int, batch_rows: int, workdir: Path) -> dict:
    from core.contracts import USER_EMBEDDINGS
    from core.spark import spark_session
    from feature_repo.catalog import spec_from_lake, version_views
    from serving.spark_loader import load_views
    from serving.store import StoreConfig, apply, feature_store
    from serving.versions import feast_materialize
    from tests import feature_lake as fl
    from tests.redis_server import redis_server

    out: dict = {"users": users, "feast_users": feast_users, "dim": DIM, "batch_rows": batch_rows,
                 "load_average_before": _load_average(),
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}}
    root = workdir / "online_load"
    shutil.rmtree(root, ignore_errors=True)
    lake = str(root / "lake")
    started = time.perf_counter()
    fl.write_checkpoint(lake, VERSION, DIM, datetime(2026, 1, 1, tzinfo=UTC))
    snapshots = {SNAPSHOT: users} if feast_users == users else {FEAST_SNAPSHOT: feast_users, SNAPSHOT: users}
    for snapshot, n in snapshots.items():
        write_snapshot(lake, n, snapshot)
    out["lake_seconds"] = round(time.perf_counter() - started, 1)
    spark = spark_session(master="local[2]", app_name="bench-online-load",
                          conf={"spark.ui.enabled": "false", "spark.driver.memory": "6g",
                                "spark.driver.maxResultSize": "4g"})
    views = version_views(VERSION)
    # One count of the table first, so that neither timed call pays the JVM's first Delta read.
    spark.read.format("delta").load(USER_EMBEDDINGS.location(lake)).count()
    with redis_server(root / "redis") as url:
        feast_store = feature_store(StoreConfig(lake, redis=url))
        apply(feast_store, spec_from_lake(lake), log=lambda _: None)
        snapshot = min(snapshots, key=snapshots.get)
        started = time.perf_counter()
        feast_materialize(feast_store, snapshot, views)
        seconds = time.perf_counter() - started
        out["feast"] = {"users": feast_users, "seconds": round(seconds, 1),
                        "users_per_s": round(feast_users / seconds),
                        "sample_mismatches": verify(feast_store, views, feast_users, snapshot)}
        print(json.dumps({"feast": out["feast"]}), flush=True)
        for db, (snapshot, n) in enumerate(snapshots.items(), start=1):
            store = feature_store(StoreConfig(lake, redis=f"{url},db={db}"))
            report = load_views(spark, store, snapshot, views, batch_rows=batch_rows, log=lambda _: None)
            [done] = report.passes
            assert done.written == n, report.to_dict()
            figures = {"users": n, "seconds": report.seconds, "users_per_s": round(n / report.seconds),
                       "partitions": done.partitions, "sample_mismatches": verify(store, views, n, snapshot)}
            if n == feast_users:
                figures["ratio_to_feast"] = round(figures["users_per_s"] / out["feast"]["users_per_s"], 1)
            out[f"loader_{n}"] = figures
            print(json.dumps({f"loader_{n}": figures}), flush=True)
    spark.stop()
    out["load_average_after"] = _load_average()
    mismatches = [k for k, v in out.items() if isinstance(v, dict) and v.get("sample_mismatches")]
    if mismatches:
        raise SystemExit(f"read-back mismatches in {mismatches}: {json.dumps(out)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--feast-users", type=int, default=None,
                        help="users at Feast's snapshot (default: --users)")
    parser.add_argument("--batch-rows", type=int, default=2_000)
    parser.add_argument("--workdir", default="bench-work")
    args = parser.parse_args()
    print(json.dumps(run(args.users, args.feast_users or args.users, args.batch_rows, Path(args.workdir)),
                     indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
