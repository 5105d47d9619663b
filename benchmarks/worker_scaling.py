"""Sequences and embedding on a Spark standalone cluster of 1 and of 2 workers (issue 25).

    .venv/bin/python -m benchmarks.worker_scaling [--users 6000] [--days 42] [--work DIR]
        [--model-users N] [--shuffle-partitions 8]

Protocol: ``duet generate`` writes ``--days`` days of events (about 4 clicks per user and day: the
defaults are about a million clicks, ``--users 24000`` about 4 million, ``--users 96000`` about 16
million). They are ingested once, and a model is pre-trained for one epoch on a week of snapshots of a
separate generation of ``--model-users`` users (``benchmarks.daily_incremental.pretrained_models``;
neither timed). Then for W = 1 and W = 2 workers of 1 core and 2 GiB each, on a
loopback cluster started by ``infra/spark/standalone.sh`` and on a fresh copy of the ingested lake, each
job as its own ``infra/submit.sh`` run (driver start included, as a scheduler pays it):

1. **sequences**: ``duet sequences`` for the last 7 daily snapshots (one job);
2. **embedding**: ``duet embed --engine spark`` of the last of them on the executors.

Reported: seconds per job and W, and the speed-up t(1) / t(2). This host has 2 cores, shared by the
driver and the workers, so 2 is the most it can show and less than 2 is expected; the figures are for the
shape of the curve, not for a cluster's. Prints one JSON document.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from datetime import timedelta

from benchmarks.daily_incremental import DUET, REPO, START, arguments, pretrained_models, spark_args
from benchmarks.daily_incremental import timed as run

SUBMIT = str(REPO / "infra" / "submit.sh")
STANDALONE = str(REPO / "infra" / "spark" / "standalone.sh")


def main(argv: list[str] | None = None) -> int:
    args, work = arguments(argv, __doc__, "worker-scaling")
    local = spark_args(args.shuffle_partitions)
    _, out = run(DUET, "generate", "--out", str(work / "gen"), "--users", str(args.users), "--days",
                 str(args.days), "--start", START.isoformat())
    generated = json.loads(out)
    base = work / "base"
    run(DUET, "ingest", "--lake", str(base), "--clicks", generated["clicks_path"], "--conversions",
        generated["conversions_path"], *local)
    from core.lake import Lake

    shutil.copytree(pretrained_models(work, args.model_users, local), Lake(str(base)).models)
    last = START + timedelta(days=args.days - 1)
    week = (last - timedelta(days=6)).isoformat(), last.isoformat()

    timings: dict[str, dict[str, float]] = {"sequences": {}, "embed": {}}
    for workers in (1, 2):
        cluster = work / f"cluster-{workers}"
        _, out = run(STANDALONE, "start", "--dir", str(cluster), "--workers", str(workers), "--cores", "1",
                     "--memory", "2g")
        master = out.strip().splitlines()[-1]
        try:
            lake = work / f"lake-{workers}"
            shutil.copytree(base, lake)
            spark = ["--conf", f"spark.sql.shuffle.partitions={args.shuffle_partitions}",
                     "--conf", "spark.executor.memory=1500m"]
            timings["sequences"][str(workers)], _ = run(
                SUBMIT, "--master", master, "--", "sequences", "--lake", str(lake), "--from", week[0],
                "--to", week[1], *spark)
            timings["embed"][str(workers)], _ = run(
                SUBMIT, "--master", master, "--", "embed", "--lake", str(lake), "--snapshot", week[1],
                "--engine", "spark", *spark)
        finally:
            subprocess.run([STANDALONE, "stop", "--dir", str(cluster)], capture_output=True, timeout=180)

    print(json.dumps({
        "benchmark": "worker_scaling", "machine": f"{platform.node()} {platform.machine()}",
        "users": args.users, "days": args.days, "clicks": generated["clicks"], "snapshots": list(week),
        "model_users": args.model_users, "shuffle_partitions": args.shuffle_partitions,
        "seconds": timings,
        "speedup_2_over_1": {job: round(t["1"] / t["2"], 2) for job, t in timings.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
