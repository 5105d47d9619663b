"""Shared fixtures: one SparkSession for the whole run, paths to the shared sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DUET_SHARED_DATA", REPO.parent / "shared" / "data"))
TAOBAO_SAMPLE = SHARED_DATA / "taobao_userbehavior_10k.csv"


@pytest.fixture(scope="session")
def spark():
    """local[2] with few shuffle partitions and no UI: every Spark test shares it."""
    from core.spark import spark_session

    session = spark_session(
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
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
