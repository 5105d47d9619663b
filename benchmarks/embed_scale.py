"""`duet embed` at scale: a million users, local and Spark engines, peak memory, against bare inference.

    .venv/bin/python -m benchmarks.embed_scale [--users 1000000] [--engines local spark] [--workdir DIR]

One snapshot of synthetic click and conversion sequence tables (``benchmarks.synthetic_sequences``, the
demo's shape: heavy-tailed click counts up to 64, 40% of users with conversions) is written with
``deltalake`` in chunks, and a duet checkpoint of the default size (random weights: throughput does not
depend on training) is saved. Then ``duet embed`` runs as a fresh process per engine, timed, with the
peak resident set of the whole process tree (Python, the JVM and Spark's Python workers) sampled every
0.2 s. The reference in the same run is bare inference: the same model embedding synthetic users already
in memory as tensors, in this process (no Delta, no Arrow, no write). Both engines' vectors are compared
on a sample of users. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from deltalake import DeltaTable, write_deltalake

from benchmarks.ingest_throughput import _measure
from benchmarks.synthetic_sequences import sequence_tables, synthetic_rows
from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from encoders import checkpoint
from encoders.config import ModelConfig, ObjectiveConfig, PretrainConfig
from encoders.inference import embed_rows
from encoders.variants import UserModel

SNAPSHOT = datetime(2026, 2, 1, tzinfo=UTC)
CHUNK = 100_000


def write_lake(lake: Path, users: int) -> dict[str, int]:
    """Sequence tables for ``users`` users at ``SNAPSHOT``, appended in chunks (as Spark would write them:
    partitioned by snapshot_ts)."""
    rows = {"clicks": 0, "conversions": 0}
    for first in range(0, users, CHUNK):
        clicks, conversions = sequence_tables(min(CHUNK, users - first), seed=first, snapshot=SNAPSHOT,
                                              first_user=first)
        for table, name, contract in ((clicks, "clicks", CLICK_SEQUENCES),
                                      (conversions, "conversions", CONVERSION_SEQUENCES)):
            table = table.cast(contract.arrow_schema())
            write_deltalake(contract.location(lake), table, mode="append", partition_by=["snapshot_ts"])
            rows[name] += table.num_rows
    return rows


def bare_inference(model: UserModel, users: int, batch_size: int = 512) -> float:
    """Users/s of the model alone on rows already tensorised in memory (the same code path's core)."""
    rows = synthetic_rows(users, seed=99)
    created = datetime.now(UTC)
    embed_rows(model, rows.slice(0, batch_size), "duet-0000000", created, batch_size)  # warm-up
    started = time.perf_counter()
    embed_rows(model, rows, "duet-0000000", created, batch_size)
    return users / (time.perf_counter() - started)


def _vectors(lake: Path, users: list[str]) -> dict[str, np.ndarray]:
    table = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(filters=[("user_id", "in", users)])
    return {u: np.concatenate([c, v]) for u, c, v in zip(
        table.column("user_id").to_pylist(), table.column("click_embedding").to_pylist(),
        table.column("conversion_embedding").to_pylist(), strict=True)}


def run(users: int, engines: list[str], workdir: Path) -> dict:
    root = workdir / f"embed-{users}"
    shutil.rmtree(root, ignore_errors=True)
    lake = root / "lake"
    started = time.perf_counter()
    counts = write_lake(lake, users)
    out: dict = {"users": users, "rows": counts, "write_seconds": round(time.perf_counter() - started, 1),
                 "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                 "torch": torch.__version__}
    torch.manual_seed(0)
    model = UserModel(ModelConfig(), ObjectiveConfig()).eval()
    version = checkpoint.save(str(lake), model, PretrainConfig(), {"trained_at": "benchmark"}).model_version
    reference = bare_inference(model, min(users, 100_000))
    out["reference_bare_inference_users_per_s"] = round(reference)
    sample = sorted({f"u{i}" for i in np.random.default_rng(0).integers(0, users, 200)})
    seen = {}
    for engine in engines:
        cmd = [sys.executable, "-m", "duet.cli", "embed", "--lake", str(lake), "--snapshot",
               SNAPSHOT.isoformat(), "--model-version", version, "--engine", engine]
        seconds, peak_mib, stdout = _measure(cmd)
        embedded = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(columns=["user_id"]).num_rows
        seen[engine] = _vectors(lake, sample)
        out[engine] = {"seconds": round(seconds, 1), "users_per_s": round(users / seconds),
                       "peak_rss_mib": round(peak_mib),
                       "peak_rss_mib_per_million_users": round(peak_mib * 1e6 / users),
                       "rows_written": embedded,
                       "ratio_to_bare_inference": round(users / seconds / reference, 3),
                       "output": stdout.strip().splitlines()[-1:]}
    if len(seen) == 2:
        a, b = seen.values()
        out["max_abs_difference_local_vs_spark"] = float(max(np.abs(a[u] - b[u]).max() for u in a))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--engines", nargs="+", default=["local", "spark"], choices=["local", "spark"])
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    args = parser.parse_args()
    print(json.dumps(run(args.users, args.engines, args.workdir), indent=1))


if __name__ == "__main__":
    main()
