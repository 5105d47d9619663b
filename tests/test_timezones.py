"""Time zones: every timestamp is UTC whatever the session or the host says (../shared/CONTRACTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from core.contracts import RAW_CLICKS
from core.errors import DuetError
from core.quality import validate_lake
from core.snapshots import check_snapshots
from core.spark import spark_schema
from duet.validation import validate
from spark_jobs.ingest import IngestConfig, ingest
from spark_jobs.sequences import build_sequences
from spark_jobs.taobao import ingest_taobao
from tests.conftest import REPO, SHORT_RUN_ENV

ZONE = "spark.sql.session.timeZone"


def test_entry_points_refuse_a_session_whose_time_zone_is_not_utc(spark, tmp_path):
    lake = str(tmp_path / "lake")
    calls = {
        "ingest": lambda: ingest(spark, IngestConfig(lake=lake), clicks=str(tmp_path / "clicks.csv")),
        "ingest_taobao": lambda: ingest_taobao(spark, IngestConfig(lake=lake), str(tmp_path / "t.csv")),
        "build_sequences": lambda: build_sequences(spark, lake, [datetime(2026, 1, 10, tzinfo=UTC)]),
        "validate_lake": lambda: validate_lake(spark, lake, lambda present, properties: []),
    }
    spark.conf.set(ZONE, "America/Los_Angeles")
    try:
        for name, call in calls.items():
            with pytest.raises(DuetError, match="spark.sql.session.timeZone=UTC"):
                call()
                pytest.fail(f"{name} ran in a session outside UTC")
    finally:
        spark.conf.set(ZONE, "UTC")


def test_a_snapshot_without_a_time_zone_is_refused(spark, tmp_path):
    with pytest.raises(DuetError, match="no time zone"):
        check_snapshots([datetime(2026, 1, 10)])
    with pytest.raises(DuetError, match="no time zone"):
        build_sequences(spark, str(tmp_path / "lake"), [datetime(2026, 1, 10)])
    paris = datetime.fromisoformat("2026-01-10T01:00:00+01:00")
    assert check_snapshots([paris]) == [datetime(2026, 1, 10, tzinfo=UTC)]


@pytest.mark.integration
def test_validate_gives_the_same_results_on_a_host_outside_utc(spark, tmp_path):
    lake = tmp_path / "lake"
    clicks = [("c1", "u1", "a1", "v1", datetime(2000, 1, 1, 3, tzinfo=UTC)),  # 3 h inside the lower bound
              ("c2", "u1", "a1", "v1", datetime(2026, 1, 5, 10, tzinfo=UTC))]
    spark.createDataFrame(clicks, spark_schema(RAW_CLICKS)).write.format("delta") \
        .save(RAW_CLICKS.location(lake))
    here = validate(spark, str(lake))
    assert here.success, here.summary()

    env = {**SHORT_RUN_ENV, "TZ": "America/Los_Angeles"}  # the lower bound would be 08:00 UTC there
    result = subprocess.run([sys.executable, "-m", "duet.cli", "validate", "--lake", str(lake), "--all",
                             "--master", "local[1]", "--conf", "spark.ui.enabled=false",
                             "--conf", "spark.sql.shuffle.partitions=1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    there = json.loads((lake / "_quality" / "latest.json").read_text())

    def verdicts(tables: list[dict]) -> list[dict]:
        # The suite's fingerprint holds each run's own instant (the "not after now" bounds): not compared.
        return [{k: v for k, v in t.items() if k != "suite"} for t in tables]

    assert verdicts(there["tables"]) == verdicts(here.to_dict()["tables"]), \
        result.stdout + result.stderr[-1000:]
    assert result.returncode == 0
