"""What a day costs against a rebuild (issue 25): `duet daily` for the next day / `duet backfill` of the
whole lake, and a re-ingest of unchanged files / their first ingest.

    .venv/bin/python -m benchmarks.daily_incremental [--users 25000] [--days 12] [--work DIR]

Protocol: ``duet generate --landing`` writes ``--days`` days of events (``--users 25000 --days 10`` is
about a million clicks) in day folders. A model is pre-trained once on a first lake (not timed). Then, on
a fresh lake holding only that model, with the same Spark settings, each as a fresh process:

1. **rebuild**: ``duet backfill`` of every day but the last two: ingest every landed file, build every
   snapshot (one job), embed each, validate, publish the newest, label at it;
2. **next day**: ``duet daily`` for the day after (its day of files ingested, one snapshot);
3. **no-op**: the same ``duet daily`` again (goal: changes no table; how long it takes);
4. **re-ingest**: ``duet ingest`` of every landed file already ingested, against **first ingest**: the
   same files into an empty lake.

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
SPARK = ["--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=8",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.memory=6g"]
START = date(2026, 1, 5)


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return round(seconds, 1), result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=25000)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--work", default=str(REPO / "bench-work" / "daily-incremental"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    _, out = timed(DUET, "generate", "--out", str(work / "gen"), "--users", str(args.users), "--days",
                   str(args.days), "--start", START.isoformat(), "--landing", str(landing))
    generated = json.loads(out)
    first, last = START + timedelta(days=1), START + timedelta(days=args.days - 2)

    # the model (not timed): pre-trained on a first lake's sequences
    model_lake = work / "model-lake"
    timed(DUET, "ingest", "--lake", str(model_lake), "--clicks", generated["clicks_path"],
          "--conversions", generated["conversions_path"], *SPARK)
    timed(DUET, "sequences", "--lake", str(model_lake), "--from", first.isoformat(), "--to", last.isoformat(),
          *SPARK)
    timed(DUET, "pretrain", "--lake", str(model_lake), "--epochs", "1")

    from core.lake import Lake

    lake = work / "lake"
    shutil.copytree(Lake(str(model_lake)).models, Lake(str(lake)).models)
    rebuild, _ = timed(DUET, "backfill", "--lake", str(lake), "--landing", str(landing), "--from",
                       first.isoformat(), "--to", last.isoformat(), *SPARK)
    nxt = (last + timedelta(days=1)).isoformat()
    day = (DUET, "daily", "--lake", str(lake), "--landing", str(landing), "--date", nxt, *SPARK)
    next_day, out = timed(*day)
    next_record = json.loads(out.strip().splitlines()[-1])
    noop, out = timed(*day)
    noop_record = json.loads(out.strip().splitlines()[-1])

    files = sorted(str(p) for p in landing.glob("*/clicks.parquet"))
    ingest_lake = work / "ingest-lake"
    first_ingest = reingest = 0.0
    for path in files:     # the same files into an empty lake, then again
        first_ingest += timed(DUET, "ingest", "--lake", str(ingest_lake), "--clicks", path, *SPARK)[0]
    for path in files:
        reingest += timed(DUET, "ingest", "--lake", str(ingest_lake), "--clicks", path, *SPARK)[0]

    print(json.dumps({
        "benchmark": "daily_incremental", "machine": f"{platform.node()} {platform.machine()}",
        "users": args.users, "days": args.days, "clicks": generated["clicks"],
        "rebuild_s": rebuild, "next_day_s": next_day, "noop_s": noop,
        "next_over_rebuild": round(next_day / rebuild, 3),
        "next_day_steps": {s["step"]: s["why"] for s in next_record["steps"]},
        "noop_status": noop_record["status"], "noop_tables_changed": noop_record["tables_changed"],
        "first_ingest_s": round(first_ingest, 1), "reingest_s": round(reingest, 1), "files": len(files),
        "reingest_over_first": round(reingest / first_ingest, 4),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
