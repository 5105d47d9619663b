"""Kill trials of `duet publish` and `duet promote` (issue 26, acceptance 2): the alias serves one whole
version and one snapshot of it whenever a run is killed, and a re-run makes the store consistent.

    .venv/bin/python -m benchmarks.publish_faults [--work DIR] [--trials 5] [--users 300] [--seed 0] \
        [--store sqlite|redis]

Set-up (no Spark job of ours): a lake written directly (``tests/feature_lake.py``): two model versions N
and N1 (8 + 8 values), ``--users`` users active at three daily snapshots S1..S3, every user at every
snapshot (what ``duet embed`` writes, ``--changed-only`` included) but the last 10, who have no sequence
at S3. The *base*: ``duet publish`` of N at S1 (served, slot a), then of N1 at S2 (not served). The
stability gates run with ``--allow-drift`` (the vectors are independent draws per snapshot: the gate
would refuse them, which is not what is tested here). SQLite online store, or with ``--store redis`` a real
redis-server (``tests/redis_server.py``): the base's rows are saved to an RDB file, and each trial starts
a fresh server from a copy of it (on Redis, publish and promote write from the Spark executors:
``serving.spark_loader``).

Clean runs, each on a fresh copy of the base, timed: ``duet publish --model-version N --snapshot S2``
(the served version's next snapshot: the daily case) and ``duet promote --model-version N1``.

Each **kill** trial, on a fresh copy of the base: the real command line (``.venv/bin/duet``) is started,
and SIGKILLed with its whole process group (Python, the driver JVM) at an instant drawn uniformly in
``[0, clean seconds]`` of that command. Then, before anything else runs:

- *phase*: how far the run got, from the serving record: ``before flip`` (unchanged), ``contract views
  stale`` (the alias's new slot or version is recorded, the contract views are marked stale) or ``done``;
- *alias*: readers built now through the alias (``serving.online.online_config`` without a version: the
  version the record names, the slot it names for it), the fast path and the SDK, read every user of the
  lake and one id no table holds, raw (no ttl); each path is classified by ``serving.consistency.classify``
  against the Delta rows of the (version, snapshot) the record names: a row of another snapshot is a
  mismatch, a user of the snapshot without a row is missing, a row for a user outside it is extra. The
  trial's alias is *whole* when both paths have 0 mismatched, 0 missing, 0 extra, no error; and every row
  of the slot's summary view (read through the SDK) is at that same snapshot, for exactly the snapshot's
  users;
- *contract views*: the same classification of the contract views (the copy raw Feast clients read), and
  whether the record marks them stale; they are *honest* when consistent or marked stale.

Then the same command is run again (no fault; must exit 0) and ``duet consistency --sample <users>`` must
exit 0 with 0 mismatched, missing and extra rows on every path.

**Concurrent**: on a fresh copy of the base, ``duet publish`` of N at S2 and of N at S3 started together:
exactly one must exit 0 and the other non-zero saying it "lost"; ``duet consistency`` must then pass.

Prints one JSON line per trial, then a summary JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))          # tests.feature_lake: the lake writer the feature-store tests use

DUET = str(REPO / ".venv" / "bin" / "duet")
SPARK = ["--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=4",
         "--conf", "spark.ui.enabled=false"]
N, N1 = "duet-aaaaaaa", "duet-ccccccc"
DIMS = (8, 8)
S1, S2, S3 = (datetime(2026, 1, d, tzinfo=UTC) for d in (10, 11, 12))
DROPPED = 10                     # users without a sequence at S3


# The Redis server of the lake being tried (``--store redis``); None: SQLite, in the lake's home.
REDIS: dict[str, str | None] = {"url": None}


def _store_flags() -> list[str]:
    return ["--redis", REDIS["url"]] if REDIS["url"] else []


def _iso(t: datetime) -> str:
    return t.isoformat()


PUBLISH = ["publish", "--model-version", N, "--snapshot", _iso(S2), "--allow-drift"]
PROMOTE = ["promote", "--model-version", N1, "--allow-drift"]


def build_base(base: Path, users: int) -> None:
    from tests import feature_lake as fl

    shutil.rmtree(base, ignore_errors=True)
    lake = str(base)
    active = {S1: list(range(users)), S2: list(range(users)), S3: list(range(users - DROPPED))}
    for i, version in enumerate((N, N1)):
        fl.write_checkpoint(lake, version, DIMS[0], datetime(2026, 1, 1, i, tzinfo=UTC))
    fl.write_sequences(lake, active)
    fl.write_embeddings(lake, [row for snapshot, ids in active.items() for version in (N, N1)
                               for row in fl.embedding_rows(ids, snapshot, version, DIMS)])
    for version, snapshot in ((N, S1), (N1, S2)):
        done = run(lake, "publish", "--model-version", version, "--snapshot", _iso(snapshot), "--allow-drift")
        assert done["rc"] == 0, done


def run(lake: str, *command: str, kill_at: float | None = None) -> dict:
    """One ``duet`` process on ``lake``; with ``kill_at``, its process group SIGKILLed that many seconds
    after the start (unless it ended before). Returns rc, seconds, whether it was killed, its last lines."""
    spark = SPARK + _store_flags() if command[0] in ("publish", "promote") else []
    started = time.perf_counter()
    process = subprocess.Popen([DUET, *command, "--lake", lake, *spark], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed = False
    if kill_at is not None:
        try:
            process.wait(timeout=kill_at)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
    out, _ = process.communicate()
    if killed:
        _reap(process.pid)
    return {"rc": process.returncode, "seconds": round(time.perf_counter() - started, 1), "killed": killed,
            "tail": out.strip().splitlines()[-3:]}


def _reap(group: int) -> None:
    """Wait until no process of the killed group is left (the JVM may take a moment to go)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def phase(before: dict, after: dict) -> str:
    if after == before:
        return "before flip"
    from serving.versions import contract_views_stale

    return "contract views stale" if contract_views_stale(after) else "done"


def alias_check(lake: str, users: int) -> dict:
    """What readers built now through the alias read (module docstring)."""
    from serving.consistency import ABSENT_USER, _Sample, _vectors, classify
    from serving.online import OnlineConfig, SdkReader, online_config
    from serving.readers import fast_reader
    from serving.store import StoreConfig, feature_store
    from serving.versions import contract_views_stale, published_versions, record, slot_of

    cfg = StoreConfig(lake, redis=REDIS["url"])
    store = feature_store(cfg)
    current = record(lake)
    online = online_config(store)                       # the alias: the version the record names now
    version = online.model_version
    snapshot = datetime.fromisoformat(published_versions(current)[version]["snapshot"])
    slot = slot_of(current, version)
    sample = _delta_sample(lake, version, snapshot, users, _Sample, _vectors, ABSENT_USER)
    raw = replace(online, ttl=timedelta(0))
    paths = {"fast": fast_reader(cfg, raw), "sdk": SdkReader(store, raw)}
    results = {name: classify(name, reader, sample, snapshot, online.ttl, 1e-6) for name, reader in
               paths.items()}
    contract = classify("contract", fast_reader(cfg, OnlineConfig(online.click_dim, online.conversion_dim,
                                                                  timedelta(0))),
                        sample, snapshot, online.ttl, 1e-6)
    summary_ok = _summary_at(store, online.at(slot).summary, sample, snapshot)
    whole = all(r.ok for r in results.values()) and summary_ok
    stale = contract_views_stale(current)
    return {"version": version, "snapshot": _iso(snapshot), "slot": slot, "whole": whole,
            "summary_at_snapshot": summary_ok,
            "paths": {n: [r.matched, r.mismatched, r.missing, r.extra, r.error] for n, r in results.items()},
            "contract_consistent": contract.ok, "contract_marked_stale": stale,
            "contract_honest": contract.ok or stale}


def _delta_sample(lake, version, snapshot, users, sample_type, vectors, absent):
    """Every user of ``(version, snapshot)`` and every other user of the lake, with ``version``'s rows."""
    from core.contracts import USER_EMBEDDINGS
    from core.object_storage import delta_table
    from tests import feature_lake as fl

    table = delta_table(USER_EMBEDDINGS.location(lake))
    rows = table.to_pyarrow_table(
        columns=["user_id", "event_timestamp", "click_embedding", "conversion_embedding"],
        filters=[("model_version", "=", version)])
    at = {r["user_id"] for r in rows.to_pylist() if r["event_timestamp"] == snapshot}
    everyone = [fl.user_id(i) for i in range(users)]
    return sample_type(sorted(at), [u for u in everyone if u not in at] + [absent], vectors(rows), len(at))


def _summary_at(store, view: str, sample, snapshot: datetime) -> bool:
    """Every row of the slot's summary view is at ``snapshot``, for exactly the snapshot's users."""
    from feature_repo.views import SUMMARY_FEATURES

    users = sample.users + sample.others
    proto = store.get_online_features(features=[f"{view}:{SUMMARY_FEATURES[0]}"],
                                      entity_rows={"user_id": users}).proto
    names = list(proto.metadata.feature_names.val)
    vector = proto.results[names.index(SUMMARY_FEATURES[0])]
    stamps = [t.seconds if v.WhichOneof("val") else 0 for v, t in zip(vector.values, vector.event_timestamps,
                                                                        strict=True)]
    expected = [int(snapshot.timestamp())] * len(sample.users) + [0] * len(sample.others)
    return stamps == expected


def consistency(lake: str, users: int) -> dict:
    done = subprocess.run([DUET, "consistency", "--lake", lake, "--sample", str(users), *_store_flags()],
                          cwd=REPO,
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"rc": done.returncode, "error": (done.stderr or done.stdout)[-300:]}
    return {"rc": done.returncode, "ok": report["ok"], "slot": report.get("slot"),
            "mismatched": max(p["mismatched"] for p in report["paths"]),
            "missing": max(p["missing"] for p in report["paths"]),
            "extra": max(p["extra"] for p in report["paths"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(REPO / "bench-work" / "publish-faults"))
    parser.add_argument("--trials", type=int, default=5, help="kill trials per command")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite",
                        help="the online store; redis: every trial on a fresh redis-server started from "
                             "the base's saved RDB file")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as servers:
        return _trials(args, argv, servers)


def _trials(args, argv, servers: contextlib.ExitStack) -> int:
    warnings.filterwarnings("ignore", message="The spark data source API", category=RuntimeWarning)
    from serving.versions import record

    rng = random.Random(args.seed)
    work = Path(args.work) / args.store
    base = work / "base"
    started = time.perf_counter()
    trial_server: list[contextlib.ExitStack] = []
    if args.store == "redis":
        import redis

        from tests.redis_server import redis_server

        shutil.rmtree(work / "redis-base", ignore_errors=True)
        with redis_server(work / "redis-base") as url:
            REDIS["url"] = url
            build_base(base, args.users)
            host, port = url.split(":")
            redis.Redis(host=host, port=int(port)).save()      # dump.rdb: every trial starts from it
    else:
        build_base(base, args.users)
    report: dict = {"command": "python -m benchmarks.publish_faults " + " ".join(argv or sys.argv[1:]),
                    "date": datetime.now(UTC).isoformat(timespec="seconds"), "users": args.users,
                    "store": args.store,
                    "base_seconds": round(time.perf_counter() - started, 1), "clean": {}, "trials": []}

    def fresh() -> str:
        """A copy of the base lake and, on Redis, a new server holding the base's online rows."""
        lake = work / "trial"
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(base, lake, symlinks=True)
        if args.store == "redis":
            from tests.redis_server import redis_server

            while trial_server:
                trial_server.pop().close()                    # the previous trial's server
            folder = work / "redis-trial"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            shutil.copy(work / "redis-base" / "dump.rdb", folder / "dump.rdb")
            stack = contextlib.ExitStack()
            REDIS["url"] = stack.enter_context(redis_server(folder))
            trial_server.append(stack)
            servers.callback(stack.close)
        return str(lake)

    for name, command in (("publish", PUBLISH), ("promote", PROMOTE)):
        lake = fresh()
        clean = run(lake, *command)
        assert clean["rc"] == 0, clean
        report["clean"][name] = {"seconds": clean["seconds"], "consistency": consistency(lake, args.users)}
        print(json.dumps({"trial": f"clean {name}", **report["clean"][name]}), flush=True)

    for name, command in (("publish", PUBLISH), ("promote", PROMOTE)):
        for i in range(args.trials):
            lake = fresh()
            at = round(rng.uniform(0, report["clean"][name]["seconds"]), 1)
            before = record(lake)
            killed = run(lake, *command, kill_at=at)
            row = {"trial": f"{name} {i}", "kill_at": at, "killed": killed["killed"],
                   "phase": phase(before, record(lake)), **alias_check(lake, args.users)}
            rerun = run(lake, *command)
            row.update({"rerun_rc": rerun["rc"], "rerun_seconds": rerun["seconds"],
                        "consistency": consistency(lake, args.users)})
            row["ok"] = (row["whole"] and row["contract_honest"] and rerun["rc"] == 0
                         and row["consistency"].get("ok") is True)
            print(json.dumps(row), flush=True)
            report["trials"].append(row)

    lake = fresh()
    pair = [subprocess.Popen([DUET, "publish", "--lake", lake, "--model-version", N, "--snapshot", _iso(s),
                              "--allow-drift", *SPARK, *_store_flags()], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for s in (S2, S3)]
    outputs = [p.communicate()[0] for p in pair]
    rcs = [p.returncode for p in pair]
    lost = [("lost" in out) for out in outputs]
    served = record(lake)
    row = {"trial": "concurrent publishes (S2, S3)", "rcs": rcs, "lost": lost,
           "served": [served.get("model_version"), served.get("snapshot")],
           "consistency": consistency(lake, args.users)}
    winners = [i for i, rc in enumerate(rcs) if rc == 0]
    row["ok"] = (len(winners) == 1 and lost[1 - winners[0]] and not lost[winners[0]]
                 and row["consistency"].get("ok") is True)
    print(json.dumps(row), flush=True)
    report["trials"].append(row)

    kills = [t for t in report["trials"] if "kill_at" in t]
    report["summary"] = {
        "kill_trials": len(kills), "killed_midway": sum(t["killed"] for t in kills),
        "phases": {p: sum(t["phase"] == p for t in kills) for p in ("before flip", "contract views stale",
                                                                     "done")},
        "alias_whole_after_kill": sum(t["whole"] for t in kills),
        "contract_views_honest": sum(t["contract_honest"] for t in kills),
        "contract_views_marked_stale": sum(t["contract_marked_stale"] for t in kills),
        "reruns_ok": sum(t["rerun_rc"] == 0 for t in kills),
        "consistent_after_rerun": sum(t["consistency"].get("ok") is True for t in kills),
        "concurrent_ok": row["ok"], "all_ok": all(t["ok"] for t in report["trials"]),
        "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report["summary"], indent=1))
    shutil.rmtree(work / "trial", ignore_errors=True)
    return 0 if report["summary"]["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
