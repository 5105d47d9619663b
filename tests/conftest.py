"""Shared fixtures: one SparkSession for the whole run, paths to the shared sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DUET_SHARED_DATA", REPO.parent / "shared" / "data"))
TAOBAO_SAMPLE = SHARED_DATA / "taobao_userbehavior_10k.csv"

# Spark on the tests' tiny tables: interpreted, not compiled. For every new query plan Spark generates Java
# source and compiles it with Janino (whole-stage code generation, and each expression's evaluator); on a
# few thousand rows the compiling costs more CPU than it saves. Off, `tests/test_validate.py` took 134 s
# against 163 and 176 s with it on (2026-12-07, one after another). Nothing computed changes: Spark keeps
# an interpreted path for every expression and falls back to it whenever compiling fails. The compiled
# path stays tested where the product's defaults run: `make demo` (the shared demo below: every stage).
SMALL_DATA_SPARK = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}

# The environment for a test's short command-line runs (a `duet` command on a few rows, spark-submit):
# their driver JVM lives under a minute, too short for the JIT's second tier (C2) to pay back the CPU it
# compiles with on 2 cores, so it stops at the first (C1): a cold `duet ingest` of three rows 48 -> 31 s,
# a cold `duet validate` 44 -> 36 s (BENCHMARKS.md, "The driver JVM's start"). Nothing computed changes.
# The session's own JVM and `make demo` run for minutes and keep the JVM's defaults (C1 alone made the
# small demo 7% slower). The driver also takes SMALL_DATA_SPARK, as `spark.*` system properties (which a
# SparkConf reads).
SHORT_RUN_ENV = {**os.environ, "SPARK_SUBMIT_OPTS": " ".join(
    filter(None, [os.environ.get("SPARK_SUBMIT_OPTS"), "-XX:TieredStopAtLevel=1",
                  *(f"-D{key}={value}" for key, value in SMALL_DATA_SPARK.items())]))}


@pytest.fixture(scope="session")
def spark():
    """local[2] with few shuffle partitions, no UI, no code generation: every Spark test shares it."""
    from core.spark import spark_session

    session = spark_session(
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
            **SMALL_DATA_SPARK,
        },
        app_name="duet-tests",
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def taobao_sample() -> Path:
    if not TAOBAO_SAMPLE.exists():
        pytest.fail(f"shared sample data missing: {TAOBAO_SAMPLE} (CI has ../shared/data beside the repo; "
                    "set DUET_SHARED_DATA to point elsewhere)")
    return TAOBAO_SAMPLE


# One small demo for every test that needs a finished pipeline (tests/test_demo.py: the README's
# `make demo`, the ranker's leakage and ASOF checks, the report, online scoring, delayed feedback, the
# idempotent re-run): the demo is the most expensive thing the suite runs, so it runs once per test run,
# whatever the number of pytest-xdist workers: the first worker that needs it runs it under a file lock in
# the run's shared temporary folder; the others wait for it and read what it left (its report, its
# output). The README's command with smaller data (DEMO_ARGS). tests/test_byo_embedding.py,
# tests/test_daily.py and tests/test_variant_registry.py start from a copy of its lake (demo_lake).
SMALL_DEMO_ARGS = "--users 300 --days 20 --seed 5"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, worker_id):
    """(workdir, lake, demo.json as a dict, the finished `make demo` process)."""
    import fcntl
    import json
    import shutil
    import subprocess

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":                # under xdist each worker's folder is in the run's folder
        shared = shared.parent
    work = shared / "demo-run" / "demo"
    output = shared / "demo-run" / "make-demo.json"
    with open(shared / "demo-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # released when the file closes
        if not output.exists():
            work.parent.mkdir(exist_ok=True)
            # A relative WORKDIR, as in the README's default (demo-work): paths resolve against make's
            # directory.
            workdir = os.path.relpath(work, REPO)
            result = subprocess.run(["make", "demo", f"WORKDIR={workdir}", f"DEMO_ARGS={SMALL_DEMO_ARGS}"],
                                    cwd=REPO, capture_output=True, text=True, timeout=1200)
            if result.returncode == 0:
                shutil.copytree(work / "lake", work.parent / "lake-as-built")     # demo_lake
            output.write_text(json.dumps({"args": result.args, "returncode": result.returncode,
                                          "stdout": result.stdout, "stderr": result.stderr}))
    result = subprocess.CompletedProcess(**json.loads(output.read_text()))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((work / "report" / "demo.json").read_text())
    return work, str(work / "lake"), report, result


@pytest.fixture(scope="session")
def demo_lake(demo_run) -> Path:
    """The shared demo's lake as `make demo` left it: a copy made before any test ran. The tests that start
    from the demo's lake copy this one, since tests/test_demo.py re-runs the demo on its own lake, perhaps
    at the same moment on another worker."""
    return demo_run[0].parent / "lake-as-built"


# The files that take longest, longest first: under --dist loadfile a worker takes the next file in
# collection order, so starting with these keeps one long file from running alone at the end.
LONGEST_FIRST = ("test_demo.py", "test_readme.py", "test_sequences.py", "test_embed.py", "test_paths.py",
                 "test_submit.py", "test_feature_store.py", "test_validate.py", "test_timezones.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: order within a file kept
