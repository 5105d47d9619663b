"""Stages as objects (duet.stages): what a stage may read, what its cache key is made of, what is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from core.errors import ValidationFailed
from core.lake import Lake
from duet.stage_cache import StageCache
from duet.stages import Stage, StageClock, StageContext, run_stages


@dataclass(frozen=True)
class Count:
    rows: int


@dataclass
class Run:
    seed: int = 0
    first: Count | None = None
    second: Count | None = None
    reused: list[str] = field(default_factory=list)


RUNS: list[int] = []


@dataclass(frozen=True)
class CountRows(Stage[Count]):
    """Counts the rows of the table ``in`` (plus ``extra``), cached."""

    name: ClassVar[str] = "count rows"
    output: ClassVar[str] = "first"
    result_type: ClassVar[type] = Count
    cached: ClassVar[bool] = True
    extra: int = 0

    def reads(self, lake: Lake) -> list[str]:
        return [f"{lake.root}/in"]

    def run(self, ctx: StageContext, inputs: Run) -> Count:
        from deltalake import DeltaTable

        RUNS.append(self.extra)
        return Count(DeltaTable(f"{ctx.lake.root}/in").to_pyarrow_table().num_rows + self.extra)


@dataclass(frozen=True)
class Peek(Stage[Count]):
    """Reads ``first`` only when it declares it."""

    name: ClassVar[str] = "peek"
    output: ClassVar[str] = "second"
    declared: bool = True
    fail: bool = False

    @property
    def needs(self) -> tuple[str, ...]:   # type: ignore[override]
        return ("first",) if self.declared else ()

    def run(self, ctx: StageContext, inputs: Run) -> Count:
        return Count(-1 if inputs.first is None else inputs.first.rows)

    def check(self, result: Count) -> None:
        if self.fail:
            raise ValidationFailed("the peek failed")


def _lake(tmp_path) -> Lake:
    write_deltalake(str(tmp_path / "in"), pa.table({"x": [1, 2, 3]}))
    return Lake(str(tmp_path))


def _run(lake: Lake, stages, force: bool = False) -> Run:
    ctx = StageContext(lake, lambda: None, StageClock())
    return run_stages(stages, ctx, Run(), StageCache(lake, force=force))


def test_a_stage_sees_only_the_results_it_declares(tmp_path):
    lake = _lake(tmp_path)
    assert _run(lake, [CountRows(), Peek()]).second == Count(3)
    assert _run(lake, [CountRows(), Peek(declared=False)]).second == Count(-1)


def test_a_cached_stage_is_keyed_on_its_config_and_its_declared_reads(tmp_path):
    lake = _lake(tmp_path)
    RUNS.clear()
    assert _run(lake, [CountRows()]).reused == [] and RUNS == [0]
    again = _run(lake, [CountRows()])
    assert again.reused == ["count rows"] and again.first == Count(3) and RUNS == [0]
    assert _run(lake, [CountRows(extra=1)]).first == Count(4)              # another config: runs
    assert _run(lake, [CountRows(extra=1)]).reused == ["count rows"]
    write_deltalake(str(tmp_path / "in"), pa.table({"x": [4]}), mode="append")   # its read changed: runs
    assert _run(lake, [CountRows(extra=1)]) == Run(first=Count(5))
    assert _run(lake, [CountRows(extra=1)], force=True).reused == []


def test_a_failed_check_keeps_the_result_and_records_nothing(tmp_path):
    lake = _lake(tmp_path)
    run = Run()
    ctx = StageContext(lake, lambda: None, StageClock())
    with pytest.raises(ValidationFailed):
        run_stages([CountRows(), Peek(fail=True)], ctx, run, StageCache(lake))
    assert run.second == Count(3)          # what failed is there for the report
    assert lake.stage_record("count rows").is_file() and not lake.stage_record("peek").exists()
