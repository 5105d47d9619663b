"""`duet daily` on a real Spark standalone cluster (issue 25): a master and two workers started on loopback
from the pyspark installation (``infra/spark/standalone.sh``), two consecutive dates run through
``infra/submit.sh`` (the project shipped to the executors as a zip, the Delta jars with ``--jars``) with
the embedding on the executors (``--engine spark``), and every table equal to a local run's.

Marked ``cluster``: ``make test-cluster`` runs it, ``make test`` does not (it takes minutes: a cluster, a
small lake built with ``duet backfill`` and ``duet pretrain``, four daily runs); its latest run is in
BENCHMARKS.md. Vectors are compared with a tolerance (the engines batch users differently); every other
table exactly, on its rows without the columns that say when they were written
(``benchmarks.daily_faults.digest``).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from deltalake import DeltaTable

from benchmarks.daily_faults import digest
from core.contracts import USER_EMBEDDINGS
from core.lake import Lake
from tests.conftest import REPO, SHORT_RUN_ENV

DATES = ("2026-01-12", "2026-01-13")
SPARK = ("--conf", "spark.sql.shuffle.partitions=4")


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO, timeout=timeout,
                            env=SHORT_RUN_ENV)
    assert result.returncode == 0, f"{args[:3]}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    script = str(REPO / "infra" / "spark" / "standalone.sh")
    started = _run(script, "start", "--dir", str(folder), "--workers", "2", "--cores", "1", "--memory", "1g")
    yield started.stdout.strip().splitlines()[-1]
    subprocess.run([script, "stop", "--dir", str(folder)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A lake a week old with a pre-trained model (no snapshot served yet), and its landing folder."""
    root = tmp_path_factory.mktemp("base")
    duet = str(REPO / ".venv" / "bin" / "duet")
    landing, lake = root / "landing", root / "lake"
    _run(duet, "generate", "--out", str(root / "gen"), "--users", "120", "--days", "12", "--start",
         "2026-01-03", "--landing", str(landing))
    _run(duet, "backfill", "--lake", str(lake), "--landing", str(landing), "--from", "2026-01-05",
         "--to", "2026-01-11", "--master", "local[2]", *SPARK)
    _run(duet, "pretrain", "--lake", str(lake), "--epochs", "1")
    return lake, landing


def _vectors(lake) -> dict:
    rows = DeltaTable(Lake(str(lake)).table(USER_EMBEDDINGS)).to_pyarrow_table().to_pylist()
    return {(r["user_id"], r["event_timestamp"], r["model_version"]):
            np.array(r["click_embedding"] + (r["conversion_embedding"] or [])) for r in rows}


@pytest.mark.cluster
def test_two_days_on_a_standalone_cluster_equal_a_local_run(cluster, base, tmp_path):
    lake, landing = base
    on_cluster, local = tmp_path / "cluster-lake", tmp_path / "local-lake"
    shutil.copytree(lake, on_cluster)
    shutil.copytree(lake, local)
    for day in DATES:
        submitted = _run(str(REPO / "infra" / "submit.sh"), "--master", cluster, "--", "daily",
                         "--lake", str(on_cluster), "--landing", str(landing), "--date", day,
                         "--engine", "spark", *SPARK)
        assert f'"date": "{day}"' in submitted.stdout.splitlines()[-1]
        _run(str(REPO / ".venv" / "bin" / "duet"), "daily", "--lake", str(local), "--landing", str(landing),
             "--date", day, "--master", "local[2]", *SPARK)

    ours, theirs = digest(on_cluster), digest(local)
    assert ours.keys() == theirs.keys()
    differ = [t for t in ours if t != USER_EMBEDDINGS.path and ours[t]["sha"] != theirs[t]["sha"]]
    assert not differ, differ
    a, b = _vectors(on_cluster), _vectors(local)
    assert a.keys() == b.keys() and len(a) > 0
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
