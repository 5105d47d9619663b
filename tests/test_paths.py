"""Paths: a checkout or a lake whose path has a space or a backtick; spark-submit runs only duet's jobs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from tests.conftest import REPO, SHORT_RUN_ENV
from tests.test_submit import CLICKS, CONVERSIONS

SCRIPT = """
import sys
import core.spark
from duet.cli import main
print("checkout:", core.spark.__file__)
lake, clicks, conversions = sys.argv[1:]
spark = ["--master", "local[1]", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.sql.shuffle.partitions=1"]
assert main(["ingest", "--lake", lake, "--clicks", clicks, "--conversions", conversions, *spark]) == 0
assert main(["sequences", "--lake", lake, "--snapshot", "2026-01-07", "--max-clicks", "1", *spark]) == 0
"""


@pytest.mark.integration
def test_a_checkout_and_a_lake_whose_paths_have_a_space_and_a_backtick(tmp_path):
    checkout = tmp_path / "check out `x`"
    for package in ("core", "duet", "spark_jobs", "encoders"):
        shutil.copytree(REPO / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / ".jars").symlink_to(REPO / ".jars")  # the jars' paths have the space and backtick too
    data = tmp_path / "in `put` s"
    data.mkdir()
    (data / "clicks.csv").write_text(CLICKS)
    (data / "conversions.csv").write_text(CONVERSIONS)
    lake = tmp_path / "la`ke dir"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(lake), str(data / "clicks.csv"),
                             str(data / "conversions.csv")],
                            cwd=checkout, capture_output=True, text=True, timeout=300, env=SHORT_RUN_ENV)
    assert f"checkout: {checkout}" in result.stdout, result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = DeltaTable(str(lake / "features/click_sequences")).to_pyarrow_table().to_pylist()
    assert [(r["user_id"], r["ad_ids"]) for r in rows] == [("u1", ["a2"])]  # the latest of 2 (--max-clicks 1)


def test_submit_runs_nothing_but_a_duet_job(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "other.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    # A stray argument before `--` would become spark-submit's application, run instead of duet's.
    result = subprocess.run([str(REPO / "infra/submit.sh"), "--master", "local[1]", str(script), "--",
                             "validate", "--lake", str(tmp_path / "lake")],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2 and not marker.exists(), result.stderr[-2000:]
    assert "only spark-submit options" in result.stderr
