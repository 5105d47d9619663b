"""Fault trials of `duet daily` (issue 25): SIGKILLs in every step, two runs at once, Redis gone mid-publish.

    .venv/bin/python -m benchmarks.daily_faults [--work DIR] [--trials 12] [--seed 0]

Set-up: ``duet generate --landing`` (small data), ``duet backfill`` of the first week with no model, then
``duet pretrain``: the *base* lake. The *clean* run is ``duet daily --date D`` on a copy of it, with no
fault: it catches up three days (ingest of the days' files, three snapshots, embedding, validation,
publishing, labels). Each trial then runs on a fresh copy of the base:

- **kill**: ``duet daily`` is started and, a random delay (0-8 s) after the log says a given step began
  (the steps in turn; one trial at a uniformly random instant of the whole run), SIGKILLed with its whole
  process group (driver JVM and Python workers); every Delta table must then open and read at its latest
  committed version; a second ``duet daily`` (no fault) must exit 0; its tables must equal the clean
  run's (the digest below), with no key lost and none twice.
- **concurrent**: two ``duet daily`` of the same date started together; both must exit 0 (the second
  waits for the lake's daily lock, then finds the work done), with the clean run's content.
- **redis**: the clean run's steps against a Redis online store (``--redis``), whose server is stopped
  when the publish step begins: the run must exit 1 with a one-line reason; with Redis back (a new
  server), a re-run must exit 0 and serve the snapshot.

Content is compared per table on the rows with the columns that record *when* something was written left
out (``created_timestamp``, ``ingested_at``, ``updated_at``, the ingest log's per-run fields); vectors
rounded to 1e-5; the snapshot log by each snapshot's current record. Rows lost = keys of the clean table
(without those columns) missing after the re-run; written twice = keys held more than once. Prints one
JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DUET = str(REPO / ".venv" / "bin" / "duet")
START, DAYS, USERS = "2026-01-05", 14, 150
BASE_FROM, BASE_TO, DATE = "2026-01-06", "2026-01-11", "2026-01-14"
STEPS = ("ingest", "sequences", "embed", "validate", "publish", "labels")
# Columns that differ between two lakes given the same commands: when rows were written, and which raw
# table versions a sequence build read (``features/_snapshots``: commit stamps, and versions after a re-run).
VOLATILE = {"created_timestamp", "ingested_at", "updated_at", "raw_clicks_version", "raw_clicks_stamp",
            "raw_conversions_version", "raw_conversions_stamp"}
SPARK = ["--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=4",
         "--conf", "spark.ui.enabled=false"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


def prepare(work: Path) -> tuple[Path, Path]:
    landing, base = work / "landing", work / "base"
    from core.lake import Lake

    if Lake(str(base)).models.is_dir():
        return landing, base
    shutil.rmtree(work, ignore_errors=True)
    sh(DUET, "generate", "--out", str(work / "gen"), "--users", str(USERS), "--days", str(DAYS),
       "--start", START, "--landing", str(landing))
    sh(DUET, "backfill", "--lake", str(base), "--landing", str(landing), "--from", BASE_FROM, "--to", BASE_TO,
       *SPARK)
    sh(DUET, "pretrain", "--lake", str(base), "--epochs", "1")
    return landing, base


def daily(lake: Path, landing: Path, *extra: str, kill_step: str | None = None, kill_after: float = 0.0,
          kill_at: float | None = None, on_line=None) -> dict:
    """One ``duet daily`` process; SIGKILL its process group ``kill_after`` s after the line ``== kill_step``
    (or ``kill_at`` s after the start). Returns rc, seconds, whether it was killed, the last lines."""
    started = time.perf_counter()
    process = subprocess.Popen([DUET, "daily", "--lake", str(lake), "--landing", str(landing), "--date", DATE,
                                *SPARK, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    killed = threading.Event()

    def kill() -> None:
        if process.poll() is None:
            killed.set()
            os.killpg(process.pid, signal.SIGKILL)

    timers = [threading.Timer(kill_at, kill)] if kill_at is not None else []
    for t in timers:
        t.start()
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if kill_step and line.strip() == f"== {kill_step}":
            timers.append(threading.Timer(kill_after, kill))
            timers[-1].start()
        if on_line:
            on_line(line.strip())
    process.wait()
    for t in timers:
        t.cancel()
    return {"rc": process.returncode, "seconds": round(time.perf_counter() - started, 1),
            "killed": killed.is_set(), "tail": lines[-3:]}


def digest(lake: Path | str) -> dict:
    """Per table: (sha256 of the canonical rows, rows, distinct keys, the keys themselves' hash set). The
    lake may be on S3."""
    from deltalake.exceptions import TableNotFoundError

    from core.contracts import INGEST_LOG, SEQUENCE_SNAPSHOTS, TABLES
    from core.lake import Lake
    from core.object_storage import delta_table

    out = {}
    for table in TABLES:
        try:
            rows = delta_table(Lake(str(lake)).table(table)).to_pyarrow_table().to_pylist()
        except TableNotFoundError:
            continue
        if table is SEQUENCE_SNAPSHOTS:    # each snapshot's current record
            latest = {}
            for r in sorted(rows, key=lambda r: r["updated_at"]):
                latest[r["snapshot_ts"]] = r
            rows = list(latest.values())
        # a key column that says when a row was written (the snapshot log's updated_at) is no identity
        key_columns = tuple(k for k in table.key if k not in VOLATILE)
        if table is INGEST_LOG:
            rows = [{k: r[k] for k in key_columns} for r in rows]
            rows = [dict(t) for t in {tuple(sorted(r.items())) for r in rows}]   # logged twice is allowed
        canonical = []
        for r in rows:
            kept = {k: (_rounded(v) if isinstance(v, list) else v) for k, v in r.items() if k not in VOLATILE}
            canonical.append(json.dumps(kept, sort_keys=True, default=str))
        keys = [json.dumps([str(r[k]) for k in key_columns]) for r in rows]
        out[table.path] = {"sha": hashlib.sha256("\n".join(sorted(canonical)).encode()).hexdigest(),
                           "rows": len(rows), "keys": sorted(set(keys)), "twice": len(keys) - len(set(keys))}
    return out


def _rounded(values: list) -> list:
    return [round(v, 5) if isinstance(v, float) else v for v in values]


def committed(lake: Path) -> bool:
    """Every Delta table opens and reads whole at its latest committed version."""
    try:
        digest(lake)
        return True
    except Exception as e:  # noqa: BLE001 - any failure to read is the finding
        print(f"unreadable after the kill: {e}", file=sys.stderr)
        return False


def compare(clean: dict, got: dict) -> dict:
    lost = sum(len(set(clean[t]["keys"]) - set(got.get(t, {}).get("keys", []))) for t in clean)
    twice = sum(v["twice"] for v in got.values())
    differ = sorted(t for t in clean if clean[t]["sha"] != got.get(t, {}).get("sha"))
    return {"rows_lost": lost, "written_twice": twice, "tables_differ": differ, "converged": not differ}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(REPO / "bench-work" / "daily-faults"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["kill", "concurrent", "redis"])
    parser.add_argument("--first", type=int, default=0,
                        help="resume at this kill trial (the earlier trials' random draws are taken and "
                             "dropped, so every trial keeps its fault)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work)
    landing, base = prepare(work)

    def fresh(name: str) -> Path:
        lake = work / name
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(base, lake, symlinks=True)
        return lake

    clean_lake = fresh("clean")
    clean_run = daily(clean_lake, landing)
    assert clean_run["rc"] == 0, clean_run
    clean = digest(clean_lake)
    report = {"clean": {"seconds": clean_run["seconds"], "tables": {t: v["rows"] for t, v in clean.items()}},
              "trials": []}

    if "kill" not in args.skip:
        for i in range(args.trials):
            if i == args.trials - 1:
                where = {"kill_at": round(rng.uniform(1, clean_run["seconds"]), 1)}
            else:
                where = {"kill_step": STEPS[i % len(STEPS)], "kill_after": round(rng.uniform(0, 8), 1)}
            if i < args.first:
                continue
            lake = fresh("trial")
            killed = daily(lake, landing, **where)
            ok = committed(lake)
            rerun = daily(lake, landing)
            row = {"trial": i, "fault": "SIGKILL", **where, "killed": killed["killed"],
                   "killed_rc": killed["rc"], "committed_after_kill": ok, "rerun_rc": rerun["rc"],
                   **compare(clean, digest(lake))}
            print(json.dumps(row), flush=True)
            report["trials"].append(row)

    if "concurrent" not in args.skip:
        lake = fresh("trial")
        results = [None, None]
        threads = [threading.Thread(target=lambda j=j: results.__setitem__(j, daily(lake, landing)))
                   for j in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row = {"trial": "concurrent", "fault": "two runs of the same date at once",
               "rcs": [r["rc"] for r in results], "tails": [r["tail"][-2][:160] for r in results],
               **compare(clean, digest(lake))}
        print(json.dumps(row), flush=True)
        report["trials"].append(row)

    if "redis" not in args.skip:
        from tests.redis_server import redis_server

        lake = fresh("trial")
        with redis_server(work / "redis-a") as address:
            stopper = {}

            def stop_redis(line: str) -> None:
                if line == "== publish" and "done" not in stopper:
                    stopper["done"] = True
                    import socket

                    host, port = address.split(":")
                    with socket.create_connection((host, int(port)), timeout=2) as s:
                        s.sendall(b"SHUTDOWN NOSAVE\r\n")
            first = daily(lake, landing, "--redis", address, on_line=stop_redis)
        with redis_server(work / "redis-b") as address:
            second = daily(lake, landing, "--redis", address)
            from feature_repo.catalog import read_serving

            served = read_serving(str(lake))
        row = {"trial": "redis", "fault": "Redis stopped when publish began", "first_rc": first["rc"],
               "first_reason": next((t for t in first["tail"] if t.startswith("daily ")),
                                    first["tail"][-1])[:300],
               "rerun_rc": second["rc"], "served_snapshot": served.get("snapshot"),
               "online_store": served.get("online_store")}
        print(json.dumps(row), flush=True)
        report["trials"].append(row)

    kills = [t for t in report["trials"] if t.get("fault") == "SIGKILL"]
    report["summary"] = {"kill_trials": len(kills), "killed": sum(t["killed"] for t in kills),
                         "rows_lost": sum(t.get("rows_lost", 0) for t in report["trials"]),
                         "written_twice": sum(t.get("written_twice", 0) for t in report["trials"]),
                         "converged": sum(bool(t.get("converged")) for t in report["trials"])}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
