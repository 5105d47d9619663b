"""`duet daily` (issue 25): one day's work on a copy of the session's small demo lake, the second run of
the same date doing nothing, a day not landed yet, and why a step re-runs.

The lake is a copy of tests/conftest.py ``demo_lake``, the shared demo's lake as built (a served duet model,
snapshots up to 2026-01-25); its input files are split into a landing folder
(``duet.generate.write_landing``) of which only the day before the run's date is kept, as if the earlier
days had been processed and archived.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pytest

from core.contracts import TABLES
from core.lake import Lake
from core.table_versions import table_version
from duet.daily import (
    EXIT_NOT_LANDED,
    SUCCESS_MARKER,
    DailyConfig,
    DayRecords,
    Landing,
    examples_cutoff,
    plan_days,
    run_daily,
    served_model,
)
from duet.generate import write_landing

DAY = date(2026, 1, 26)   # the day after the demo's newest snapshot


@pytest.fixture(scope="module")
def daily_lake(spark, demo_run, demo_lake, tmp_path_factory):
    work, _, report, _ = demo_run
    root = tmp_path_factory.mktemp("daily")
    shutil.copytree(demo_lake, root / "lake")
    landing = root / "landing"
    write_landing(work / "input" / "clicks.parquet", work / "input" / "conversions.parquet", landing)
    for folder in landing.iterdir():
        if folder.name != (DAY - timedelta(days=1)).isoformat():
            shutil.rmtree(folder)
    return Lake(str(root / "lake")), str(landing)


def _versions(lake: Lake) -> dict:
    return {t.path: table_version(lake.table(t)) for t in TABLES}


@pytest.mark.integration
def test_a_day_runs_every_step_and_a_second_run_changes_nothing(spark, daily_lake):
    lake, landing = daily_lake
    # a lake behind by three days catches up from the day after its newest snapshot
    assert plan_days(lake, DAY + timedelta(days=2)) == (DAY, DAY + timedelta(days=1), DAY + timedelta(days=2))
    served = served_model(lake)["model_version"]

    cfg = DailyConfig(lake=lake.root, days=plan_days(lake, DAY), landing=landing)
    first = run_daily(lambda: spark, cfg)
    assert (first.status, first.exit) == ("done", 0), first.reason
    ran = {(s.step, s.day) for s in first.steps if s.ran}
    steps = ("sequences", "embed", "validate", "publish", "labels")
    assert ran >= {(step, DAY.isoformat()) for step in steps}
    assert first.model_version == served
    assert served_model(lake)["snapshot"].startswith(DAY.isoformat())
    assert examples_cutoff(lake).date() == DAY
    assert json.loads(first.to_json())["tables_changed"]

    before = _versions(lake)
    second = run_daily(lambda: spark, cfg)
    assert (second.status, second.exit, second.tables_changed) == ("up to date", 0, {})
    assert _versions(lake) == before
    assert all(s.why == "up to date" for s in second.steps if s.step != "ingest")
    assert all(not s.ran for s in second.steps if s.step != "ingest")


def test_a_day_not_landed_exits_75_before_spark_starts(tmp_path, capsys):
    from duet.cli import main

    landing = tmp_path / "landing"
    (landing / "2026-01-25").mkdir(parents=True)      # a folder still being written: no _SUCCESS yet
    code = main(["daily", "--lake", str(tmp_path / "lake"), "--landing", str(landing), "--date", "2026-01-26",
                 "--master", "no-spark-must-start"])
    out = capsys.readouterr()
    record = json.loads(out.out.strip().splitlines()[-1])
    assert code == EXIT_NOT_LANDED == record["exit"]
    assert record["status"] == "not landed" and SUCCESS_MARKER in record["reason"]
    (landing / "2026-01-25" / SUCCESS_MARKER).touch()
    assert Landing(str(landing)).days() == [date(2026, 1, 25)]


def test_a_step_reruns_and_says_which_part_of_its_key_changed(tmp_path):
    records = DayRecords(Lake(str(tmp_path)))
    key = {"settings": {"max_clicks": 64}, "reads": {"raw/clicks": 3}, "code": "a"}
    nothing_gone = lambda result: None  # noqa: E731
    assert records.why_run(DAY, "sequences", key, nothing_gone) == "not run for this day yet"
    records.store(DAY, "sequences", key, {"built_at": "t"})
    assert records.why_run(DAY, "sequences", key, nothing_gone) is None
    changed = {"settings": {"max_clicks": 32}, "reads": {"raw/clicks": 5}, "code": "b"}
    why = records.why_run(DAY, "sequences", changed, nothing_gone)
    assert why == ("changed: code (the project's code or a library version); reads.raw/clicks: 3 -> 5; "
                   "settings.max_clicks: 64 -> 32")
    rebuilt = lambda result: f"snapshot rebuilt after {result['built_at']}"  # noqa: E731
    assert records.why_run(DAY, "sequences", key, rebuilt) == "output gone: snapshot rebuilt after t"
    forced = DayRecords(Lake(str(tmp_path)), force=True)
    assert forced.why_run(DAY, "sequences", key, nothing_gone) == "--force"
