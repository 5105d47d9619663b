"""A duet job under spark-submit (infra/submit.sh), as it would run on a cluster."""

from __future__ import annotations

import subprocess

import pytest
from deltalake import DeltaTable

from spark_jobs.ingest import IngestConfig, ingest
from tests.conftest import REPO, SHORT_RUN_ENV

CLICKS = """click_id,user_id,ad_id,advertiser_id,click_ts
c1,u1,a1,v1,2026-01-05T10:00:00Z
c2,u1,a2,v1,2026-01-06T10:00:00Z
c3,u2,a1,v2,not-a-time
"""
CONVERSIONS = (
    "conversion_id,user_id,advertiser_id,conversion_type,conversion_ts,report_ts,attributed_click_id,value\n"
    "v1,u1,v1,purchase,2026-01-06T11:00:00Z,2026-01-06T12:00:00Z,c2,9.5\n"
)


def _submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "infra/submit.sh"), "--master", "local[1]", "--", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=SHORT_RUN_ENV)


@pytest.mark.integration
def test_sequences_run_under_spark_submit(spark, tmp_path):
    """One job under spark-submit: sequences, the job that needs most of what the submit sets up (Delta's
    SQL extension for its MERGE, the change feed, the snapshot log), on a lake ingested in this process
    (every job goes through the same entry point, so one cold submission shows the wiring)."""
    (tmp_path / "clicks.csv").write_text(CLICKS)
    (tmp_path / "conversions.csv").write_text(CONVERSIONS)
    lake = tmp_path / "lake"
    [clicks, _] = ingest(spark, IngestConfig(lake=str(lake)), str(tmp_path / "clicks.csv"),
                         str(tmp_path / "conversions.csv"))
    assert (clicks.ingested, clicks.quarantined) == (2, 1)
    result = _submit("sequences", "--lake", str(lake), "--snapshot", "2026-01-07")
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("features/click_sequences: 1 rows for 1 snapshot(s) (append; from the raw tables: no complete "
            "snapshot before 2026-01-07 00:00 built with these settings; read 2 of 2 raw files)"
            ) in result.stdout
    rows = DeltaTable(str(lake / "features/click_sequences")).to_pyarrow_table().to_pylist()
    assert [(r["user_id"], r["ad_ids"]) for r in rows] == [("u1", ["a1", "a2"])]
    conv = DeltaTable(str(lake / "features/conversion_sequences")).to_pyarrow_table().to_pylist()
    assert [(r["user_id"], r["attributed"]) for r in conv] == [("u1", [True])]


def test_unknown_job_is_refused():
    result = _submit("nope")
    assert result.returncode == 2 and "no such job" in result.stderr
