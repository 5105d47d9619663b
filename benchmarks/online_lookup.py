"""Benchmark: online lookups of both embeddings (SDK, feature server over HTTP, fast path) on SQLite and
Redis, each next to a raw read of the same keys in the same run, and materialization throughput.

A lake of ``--users`` users with 64-d click and conversion vectors at one snapshot is written directly
(``tests/feature_lake.py``), published with ``duet publish`` (gate, apply, ``materialize(T, T)``) to SQLite
and to a real Redis (``tests/redis_server.py``: Debian's redis-server on a free loopback port). Then, per
batch size, ``--repeats`` lookups of random users (all of them published) through each path, timed one
by one (wall clock, ms), p50 and p99; the raw references fetch the same rows and nothing more: one
``sqlite3`` query of both tables' rows (bytes, not decoded) and one redis-py pipeline of ``HMGET`` (the
same four hash fields per user), of the slot the publish flipped to. Every reader names the published
version and re-resolves its slot at each read (one ``os.stat`` of the serving record: part of what is
timed; the raw reads resolve it once). The paths take turns batch by batch. Ratios are path / raw at the same
percentile. Prints one JSON line per (store, batch size), then one JSON object with everything.

    .venv/bin/python -m benchmarks.online_lookup [--users 100000] [--repeats 300] [--workdir bench-work]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SNAPSHOT = datetime(2026, 1, 13, tzinfo=UTC)
VERSION, DIMS = "duet-1234567", (64, 64)
BATCHES = (1, 10, 100)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 99)}


def _time_interleaved(paths: dict, batches: list[list[str]]) -> dict[str, dict[str, float]]:
    """Every path reads every batch, the paths taking turns per batch, so that a pause of the machine
    (GC, another process) falls on all of them alike; p50 and p99 per path."""
    for ids in batches[:10]:
        for call in paths.values():
            call(ids)  # warm-up: connections, registry cache, first-call imports
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for ids in batches:
        for name, call in paths.items():
            started = time.perf_counter()
            call(ids)
            samples[name].append(time.perf_counter() - started)
    return {name: _percentiles(values) for name, values in samples.items()}


def _raw_sqlite(path: str, views: list[str]):
    """The rows of ``views`` (the slot the fast path reads) for the batch's keys, undecoded."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    from serving.fast import entity_key

    def read(ids: list[str]) -> list:
        keys = [entity_key(u) for u in ids]
        marks = ",".join("?" * len(keys))
        query = " UNION ALL ".join(
            f'SELECT entity_key, feature_name, value, event_ts FROM "duet_{view}" '
            f"WHERE entity_key IN ({marks})"
            for view in views)
        return conn.execute(query, keys * len(views)).fetchall()
    return read


def _raw_redis(client, fields: list[bytes]):
    """The same hash fields the fast path asks for (the slot it reads), undecoded."""
    from serving.fast import entity_key

    def read(ids: list[str]) -> list:
        pipe = client.pipeline(transaction=False)
        for u in ids:
            pipe.hmget(entity_key(u) + b"duet", fields)
        return pipe.execute()
    return read


def run(users: int, repeats: int, workdir: Path) -> dict:
    from core.spark import spark_session
    from serving.fast import RedisReader, SqliteReader
    from serving.online import HttpReader, SdkReader, SlotWatch, online_config
    from serving.publish import PublishConfig, publish
    from serving.store import StoreConfig, feature_store, repo_config
    from tests import feature_lake as fl
    from tests.redis_server import redis_server
    from tests.test_feature_store import FeatureServer

    root = workdir / "online_lookup"
    shutil.rmtree(root, ignore_errors=True)
    lake = str(root / "lake")
    started = time.perf_counter()
    fl.build(lake, {SNAPSHOT: list(range(users))}, {VERSION: DIMS})
    out: dict = {"users": users, "dims": DIMS, "repeats": repeats,
                 "lake_seconds": round(time.perf_counter() - started, 1),
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}}
    spark = spark_session(master="local[2]", conf={"spark.ui.enabled": "false"}, app_name="bench-online")
    rng = random.Random(7)
    ids = [fl.user_id(i) for i in range(users)]
    with redis_server(root / "redis") as url:
        import redis

        for backend, cfg in (("sqlite", StoreConfig(lake)), ("redis", StoreConfig(lake, redis=url))):
            report = publish(spark, PublishConfig(cfg), log=lambda _: None)
            out[f"publish_{backend}"] = {**report.seconds,
                                         "users_per_s_materialize": users / report.seconds["materialize"]}
            store = feature_store(cfg)
            online = online_config(store)
            server = FeatureServer(cfg, root / f"serve-{backend}")
            try:
                slot = SlotWatch(online).slot()        # the slot the publish flipped to
                if backend == "sqlite":
                    path = str(repo_config(cfg).online_store.path)
                    fast = SqliteReader(path, online)
                    raw = _raw_sqlite(path, [view for view, _ in online.views(slot)])
                else:
                    host, port = url.split(":")
                    client = redis.Redis(host=host, port=int(port))
                    fast = RedisReader(client, online)
                    raw = _raw_redis(client, fast.fields(slot))
                out[f"slot_{backend}"] = slot
                paths = {"sdk": SdkReader(store, online).read, "http": HttpReader(server.url, online).read,
                         "fast": fast.read, "raw": raw}
                for n in BATCHES:
                    batches = [rng.sample(ids, n) for _ in range(repeats)]
                    figures = _time_interleaved(paths, batches)
                    for name in ("sdk", "http", "fast"):
                        for q in ("p50", "p99"):
                            figures[name][f"{q}_ratio"] = round(
                                figures[name][f"{q}_ms"] / figures["raw"][f"{q}_ms"], 2)
                    out[f"{backend}_{n}"] = figures
                    print(json.dumps({f"{backend}_{n}": figures}), flush=True)
            finally:
                server.stop()
    spark.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--workdir", default="bench-work")
    args = parser.parse_args()
    print(json.dumps(run(args.users, args.repeats, Path(args.workdir)), indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
