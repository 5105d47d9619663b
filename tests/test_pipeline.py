"""duet demo: the stages that exist, end to end, idempotent on a re-run."""

from __future__ import annotations

import json

from deltalake import DeltaTable

from duet.cli import main as duet


def test_demo_runs_and_reruns_idempotently(spark, tmp_path, capsys):
    args = ["demo", "--workdir", str(tmp_path), "--users", "200", "--days", "5", "--seed", "3"]
    assert duet(args) == 0
    report = json.loads((tmp_path / "report" / "demo.json").read_text())
    generated = report["generated"]
    clicks = report["ingest"][0]
    assert clicks["read"] == generated["clicks"] == clicks["ingested"]
    assert report["validation"]["success"] is True
    assert "sequences" in report["not_built_yet"]
    assert DeltaTable(str(tmp_path / "lake/raw/conversions")).to_pyarrow_table().num_rows == \
        generated["conversions"]
    tables = ("raw/clicks", "raw/conversions")
    versions = {t: DeltaTable(str(tmp_path / "lake" / t)).version() for t in tables}
    capsys.readouterr()

    assert duet(args) == 0
    again = json.loads((tmp_path / "report" / "demo.json").read_text())
    assert again["ingest"][0]["ingested"] == 0
    assert again["ingest"][0]["already_present"] == generated["clicks"]
    # Nothing new: no commit at all on the raw tables.
    assert versions == {t: DeltaTable(str(tmp_path / "lake" / t)).version() for t in versions}
