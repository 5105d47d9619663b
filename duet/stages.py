"""Stages as objects, and the runner that chains them (the demo today, `duet daily` next).

A stage is a frozen dataclass holding its config (nested, never flattened) and declaring:

- ``name``: what the log and the stage records call it;
- ``needs``: the fields of the run's result (``duet.demo.DemoResult``) it reads; the runner hands it a
  copy in which every other field is None, so a stage cannot read what it did not declare;
- ``output``: the field its typed result goes to;
- ``reads(lake)`` / ``writes(lake, result)``: the tables (and folders) it reads and writes, as ``Lake``
  locations;
- ``run(ctx, inputs)``: the work; returns its typed result (a dataclass that ``core.records`` can rebuild).

A stage with ``cached = True`` may be reused (``duet.stage_cache``): its key is its config, the declared
inputs' values and the contents of its declared reads, all taken from the declaration, so no list of
settings can fall out of step with what the stage uses; its record also pins what it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from core.lake import Lake
from core.records import from_dict, plain, to_dict

R = TypeVar("R")


class StageClock:
    """Seconds per stage, printed as each one ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
        print(f"== {name}: {self.seconds[name]:.1f} s", flush=True)


@dataclass
class StageContext:
    """What every stage of a run shares: the lake, the Spark session (started on first use), the clock."""

    lake: Lake
    spark_factory: Callable[[], Any]
    clock: StageClock

    @property
    def spark(self):
        return self.spark_factory()

    @property
    def lazy_spark(self) -> Any:
        """The session, started when first used rather than when handed over (for a callee that may
        need none: an ingest whose files the ingest log already holds)."""
        return _LazySession(self.spark_factory)


class _LazySession:
    """Forwards every attribute to the session ``factory`` makes, calling it on first use."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._session = None

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._factory()
        return getattr(self._session, name)


class Stage(Generic[R]):
    """The base of every stage (module docstring). Subclasses are frozen dataclasses with a ``config``."""

    name: ClassVar[str]
    output: ClassVar[str]
    result_type: ClassVar[type]
    needs: ClassVar[tuple[str, ...]] = ()
    cached: ClassVar[bool] = False

    def reads(self, lake: Lake) -> list[str]:
        """Locations of the tables (and ``Lake`` folders) whose contents the result depends on."""
        return []

    def writes(self, lake: Lake, result: R) -> list[str]:
        """Locations of the tables and folders the run left behind (a reused result requires them intact)."""
        return []

    def run(self, ctx: StageContext, inputs: Any) -> R:
        raise NotImplementedError

    def reused(self, result: R) -> str:
        """What a reused result holds, for the log line."""
        return self.output

    def check(self, result: R) -> None:
        """Raise when ``result`` must stop the run (a failed validation); called after it is recorded."""

    def key(self, inputs: Any) -> dict:
        """The settings part of the cache key: every field of the stage (its config) and the declared
        inputs' values."""
        return {"stage": to_dict(self), "inputs": {n: plain(getattr(inputs, n)) for n in self.needs}}


def only(result: Any, needs: Sequence[str]) -> Any:
    """A copy of ``result`` with every field outside ``needs`` set to None."""
    return replace(result, **{f.name: None for f in fields(result) if f.name not in needs and f.init})


def run_stages(stages: Sequence[Stage], ctx: StageContext, result: Any, cache=None) -> Any:
    """Run ``stages`` in order on ``result`` (a mutable dataclass of optional fields, one per stage output,
    and ``reused``, the names of the stages reused), each under the clock; a cached stage whose record
    matches is reused (``cache``: a ``duet.stage_cache.StageCache``, None: run everything). Returns
    ``result`` filled in; a stage's failure leaves the fields before it filled, for the caller to report."""
    for stage in stages:
        inputs = only(result, stage.needs)
        with ctx.clock.stage(stage.name):
            value = _cached(stage, ctx, inputs, cache) if stage.cached and cache is not None else None
            if value is not None:
                result.reused.append(stage.name)
            else:
                value = stage.run(ctx, inputs)
                setattr(result, stage.output, value)
                stage.check(value)   # only a result that lets the run go on is recorded
                if stage.cached and cache is not None:
                    cache.store(stage.name, to_dict(value), stage.writes(ctx.lake, value))
        setattr(result, stage.output, value)
    return result


def _cached(stage: Stage, ctx: StageContext, inputs: Any, cache) -> Any:
    hit = cache.lookup(stage.name, stage.key(inputs), stage.reads(ctx.lake))
    if hit is None:
        return None
    value = from_dict(stage.result_type, hit["result"])
    print(f"up to date: the same inputs, code and settings as the run that finished at "
          f"{hit['finished_at'][:19]} (reused: {stage.reused(value)}; `duet demo --force` re-runs it)")
    return value
