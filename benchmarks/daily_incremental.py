"""What a day costs against a rebuild (issue 25): `duet daily` for the next day / `duet backfill` of the
whole lake, and a re-ingest of unchanged files / their first ingest.

    .venv/bin/python -m benchmarks.daily_incremental [--users 6000] [--days 42] [--work DIR]
        [--model-users N] [--shuffle-partitions 8]

Protocol: ``duet generate --landing`` writes ``--days`` days of events in day folders (about 4 clicks per
user and day: ``--users 6000 --days 42`` is about a million clicks, ``--users 96000`` about 16 million; a
long history, because what a day costs against a rebuild depends on how many days the rebuild holds). A
model is pre-trained once, for one epoch on a week of snapshots of a separate generation of
``--model-users`` users (default: 6,000) with the same settings (not timed; the encoders hash their ids,
so a model trained on fewer users embeds any of them). Then, on a fresh lake holding only that model,
with the same Spark settings (``local[2]``, driver 6g, ``--shuffle-partitions``), each as a fresh
process:

1. **rebuild**: ``duet backfill`` of every day but the last two: ingest every landed file, build every
   snapshot (one job), embed each, validate, publish the newest, label at it;
2. **next day**: ``duet daily`` for the day after (its day of files ingested, one snapshot);
3. **no-op**: the same ``duet daily`` again (goal: changes no table; how long it takes);
4. **re-ingest**: every landed clicks file ingested again into a lake that holds them, against **first
   ingest**: the same files into an empty lake; both passes in one process with one Spark session started
   before either is timed (``ingest_file`` per file, as ``duet daily`` does), so neither pays a JVM start.

Ratios are within this run (the machine's speed varies by day). Goals: next day / rebuild <= 0.1,
re-ingest / first ingest <= 0.05. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DUET = str(REPO / ".venv" / "bin" / "duet")


def spark_args(shuffle_partitions: int) -> list[str]:
    """The Spark settings of every timed command: two local cores, a 6g driver."""
    return ["--master", "local[2]", "--conf", f"spark.sql.shuffle.partitions={shuffle_partitions}",
            "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.memory=6g"]

START = date(2026, 1, 5)


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return round(seconds, 1), result.stdout


# Both ingest passes in one process: the session is started before either is timed.
INGEST_PASSES = """
import json, sys, time
from core.spark import spark_session
from spark_jobs.ingest import IngestConfig, ingest_file
spark = spark_session("local[2]", {"spark.sql.shuffle.partitions": sys.argv[2], "spark.ui.enabled": "false",
                                   "spark.driver.memory": "6g"})
cfg = IngestConfig(lake=sys.argv[1])
seconds = []
for _ in range(2):
    started = time.perf_counter()
    for path in sys.argv[3:]:
        ingest_file(spark, cfg, "clicks", path)
    seconds.append(round(time.perf_counter() - started, 2))
print(json.dumps(seconds))
"""


def arguments(argv: list[str] | None, doc: str, folder: str) -> tuple[argparse.Namespace, Path]:
    """--users, --days (about a million clicks by default), --model-users, --shuffle-partitions and
    --work (emptied): this benchmark's and ``benchmarks.worker_scaling``'s."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--model-users", type=int, default=6000,
                        help="users of the separate generation the model is pre-trained on (not timed)")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--work", default=str(REPO / "bench-work" / folder))
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    return args, Path(args.work)


def pretrained_models(work: Path, users: int, spark: list[str]) -> Path:
    """The models folder of a lake whose duet model was pre-trained for one epoch on the first week of
    snapshots of a generation of ``users`` users over 10 days (not timed by either benchmark)."""
    from core.lake import Lake

    _, out = timed(DUET, "generate", "--out", str(work / "model-gen"), "--users", str(users),
                   "--days", "10", "--start", START.isoformat())
    generated = json.loads(out)
    model_lake = work / "model-lake"
    first = START + timedelta(days=1)
    timed(DUET, "ingest", "--lake", str(model_lake), "--clicks", generated["clicks_path"],
          "--conversions", generated["conversions_path"], *spark)
    timed(DUET, "sequences", "--lake", str(model_lake), "--from", first.isoformat(),
          "--to", (first + timedelta(days=6)).isoformat(), *spark)
    timed(DUET, "pretrain", "--lake", str(model_lake), "--epochs", "1")
    return Path(Lake(str(model_lake)).models)


def main(argv: list[str] | None = None) -> int:
    args, work = arguments(argv, __doc__, "daily-incremental")
    spark = spark_args(args.shuffle_partitions)
    landing = work / "landing"
    _, out = timed(DUET, "generate", "--out", str(work / "gen"), "--users", str(args.users), "--days",
                   str(args.days), "--start", START.isoformat(), "--landing", str(landing))
    generated = json.loads(out)
    first, last = START + timedelta(days=1), START + timedelta(days=args.days - 2)

    from core.lake import Lake

    lake = work / "lake"
    shutil.copytree(pretrained_models(work, args.model_users, spark), Lake(str(lake)).models)
    rebuild, out = timed(DUET, "backfill", "--lake", str(lake), "--landing", str(landing), "--from",
                         first.isoformat(), "--to", last.isoformat(), *spark)
    rebuild_record = json.loads(out.strip().splitlines()[-1])
    nxt = (last + timedelta(days=1)).isoformat()
    day = (DUET, "daily", "--lake", str(lake), "--landing", str(landing), "--date", nxt, *spark)
    next_day, out = timed(*day)
    next_record = json.loads(out.strip().splitlines()[-1])
    noop, out = timed(*day)
    noop_record = json.loads(out.strip().splitlines()[-1])

    files = sorted(str(p) for p in landing.glob("*/clicks.parquet"))
    _, out = timed(sys.executable, "-c", INGEST_PASSES, str(work / "ingest-lake"),
                   str(args.shuffle_partitions), *files)
    first_ingest, reingest = json.loads(out.strip().splitlines()[-1])

    print(json.dumps({
        "benchmark": "daily_incremental", "machine": f"{platform.node()} {platform.machine()}",
        "users": args.users, "days": args.days, "clicks": generated["clicks"],
        "model_users": args.model_users, "shuffle_partitions": args.shuffle_partitions,
        "rebuild_s": rebuild, "next_day_s": next_day, "noop_s": noop,
        "next_over_rebuild": round(next_day / rebuild, 3),
        "next_day_steps": {s["step"]: s["why"] for s in next_record["steps"]},
        "next_day_step_seconds": next_record.get("step_seconds"),
        "rebuild_step_seconds": rebuild_record.get("step_seconds"),
        "next_day_raw_files_read": next(s["result"].get("raw_files_read") for s in next_record["steps"]
                                        if s["step"] == "sequences"),
        "noop_status": noop_record["status"], "noop_tables_changed": noop_record["tables_changed"],
        "first_ingest_s": round(first_ingest, 1), "reingest_s": round(reingest, 1), "files": len(files),
        "reingest_over_first": round(reingest / first_ingest, 4),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
