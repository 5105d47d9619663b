"""`duet daily` and `duet backfill`: the day's work on a lake, and only that, however often it is run.

A scheduler calls ``duet daily --lake LAKE --landing DIR --date D`` once a day (and again after any
failure). A run builds the snapshot of ``D`` (00:00 UTC: what was reported before it) and, for a lake a
day or more behind, every missing snapshot since its newest one; ``duet backfill --from D1 --to D2`` does
the same for a range. Its steps, in order:

==========  ====================================================================================  ==========
step        what                                                                                  per
==========  ====================================================================================  ==========
ingest      every file of every landed day folder up to ``D - 1`` (``Landing``); a file the ingest  run
            log already holds costs a checksum, no Spark job (``spark_jobs.ingest``)
sequences   the snapshots (one Spark job for all of them; one day grows from the day before)          day
embed       those snapshots with the served model version (``_feast/serving.json``; else the      day
            newest duet model), ``--changed-only`` (a snapshot rebuilt since is re-embedded for the
            users whose sequences changed)
validate    the suites on the new snapshots' rows (``duet.validation.validate(snapshots=...)``) and  day
            on the raw tables' rows added since a pass (the ranker's tables are checked by the
            ranker before it trains); a failure stops the run before anything is published
publish     the newest snapshot, unless a newer one is already served                            run's day
labels      ``training/examples`` at the cutoff ``D`` (the labels that matured by then), unless     run's day
            the table holds a later cutoff
==========  ====================================================================================  ==========

A step is skipped for a day when its record (``Lake.day_record``: the key it ran with, its result) says
it succeeded with the same *key* and its output for that day is still there (``present``); otherwise it
runs and the log says why: no record, which parts of the key changed (``reads.raw/clicks: 3 -> 5``,
``code``, a setting), or which output is gone. A key is the step's settings, the content versions of the
tables it reads (``core.table_versions``: a MERGE that changed no row is no change), the results of the
earlier steps it needs (a snapshot rebuilt, a day embedded again) and the code (``duet.stage_cache``).
A day already built is not revisited by a later day's run: a file that lands late for an earlier day is
ingested and reaches the next snapshot, not the past one, which keeps each snapshot what could be known
when it was built.

Exit codes, for a scheduler: 0 done or nothing to do; 1 failed (a one-line reason; a re-run converges:
every write is atomic or idempotent); 75 (EX_TEMPFAIL) the day's input has not landed yet (retry later).
The last line on stdout is the run record, one JSON object: the status, each step's days and why it ran
or not, the tables whose versions changed. A second run of the same date changes no table and says so
(``"tables_changed": {}``, status ``up to date``).

One daily run writes a lake at a time: a run holds an exclusive lock on ``Lake.daily_lock``
(``fcntl.flock``, released by the kernel when the process dies, even by SIGKILL); a second run waits for
it, then finds the work done. (The lock and the records are files of the lake's ``_stages`` folder,
which ``core.lake`` keeps on a file system: a lake on object storage is refused here for now.)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, ClassVar

from core.contracts import (
    ATTRIBUTION_WINDOW,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    REPORT_GRACE,
    SEQUENCE_SNAPSHOTS,
    TABLES,
    TRAINING_EXAMPLES,
    TRAINING_SET,
)
from core.errors import DuetError
from core.files import write_atomic
from core.lake import Lake
from core.object_storage import arrow_filesystem
from core.records import plain
from core.table_versions import content_version, table_version
from duet.stage_cache import code_fingerprint, snapshot_records
from duet.stages import StageClock, StageContext
from spark_jobs.sequences import SequenceConfig

EXIT_OK, EXIT_FAILED, EXIT_NOT_LANDED = 0, 1, 75
SUCCESS_MARKER = "_SUCCESS"
KINDS = ("clicks", "conversions")
FORMATS = (".csv", ".parquet", ".jsonl")


class NotLanded(DuetError):
    """The input of the run's day has not landed yet: a scheduler retries later (exit 75)."""


def day_start(day: date) -> datetime:
    """The snapshot of ``day``: 00:00 UTC."""
    return datetime.combine(day, clock_time(0), UTC)


# --- the landing folder ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Landing:
    """Where input files land, one folder per day of reports: ``<root>/<YYYY-MM-DD>/clicks*.{csv,parquet,
    jsonl}`` and ``conversions*...`` (the clicks made and the conversions *reported* that day, in the
    input layout of ``duet ingest``), complete once its ``_SUCCESS`` file exists (Hadoop's convention: a
    writer adds it last, so a half-copied day is never read). ``duet generate --landing DIR`` writes it.
    ``root`` is a folder or an ``s3a://`` URI (listed through ``core.object_storage.arrow_filesystem``;
    the files it gives are read by ``duet ingest`` there)."""

    root: str

    def folder(self, day: date) -> str:
        return f"{self.root.rstrip('/')}/{day.isoformat()}"

    def marker(self, day: date) -> str:
        return f"{self.folder(day)}/{SUCCESS_MARKER}"

    def landed(self, day: date) -> bool:
        from pyarrow.fs import FileType

        fs, path = arrow_filesystem(self.marker(day))
        return fs.get_file_info(path).type == FileType.File

    def _children(self, location: str):
        from pyarrow.fs import FileSelector

        fs, path = arrow_filesystem(location)
        return sorted(fs.get_file_info(FileSelector(path, allow_not_found=True)), key=lambda i: i.base_name)

    def days(self) -> list[date]:
        """The landed days, ascending."""
        from pyarrow.fs import FileType

        found = []
        for child in self._children(self.root):
            try:
                day = date.fromisoformat(child.base_name)
            except ValueError:
                continue
            if child.type == FileType.Directory and self.landed(day):
                found.append(day)
        return sorted(found)

    def files(self, through: date) -> list[tuple[str, str]]:
        """(kind, location) of every file of the landed days up to ``through``, in day order, clicks first."""
        out = []
        for day in (d for d in self.days() if d <= through):
            names = [c.base_name for c in self._children(self.folder(day))]
            for kind in KINDS:
                out += [(kind, f"{self.folder(day)}/{name}") for name in names
                        if name.startswith(kind) and Path(name).suffix in FORMATS]
        return out


# --- the run's configuration and record -------------------------------------------------------------------

@dataclass(frozen=True)
class DailyConfig:
    """One run: the snapshots of ``days`` (ascending; the last is the run's date) on ``lake``."""

    lake: str
    days: tuple[date, ...]
    landing: str | None = None
    model_version: str | None = None      # None: the served one, else the newest duet model
    engine: str = "local"                  # embedding on this machine or on Spark's executors
    sequences: SequenceConfig = field(default_factory=SequenceConfig)
    attribution_window: timedelta = ATTRIBUTION_WINDOW
    report_grace: timedelta = REPORT_GRACE
    feature_store_yaml: str | None = None
    redis: str | None = None
    publish: bool = True
    force: bool = False                    # ignore the records: run every step

    def __post_init__(self) -> None:
        if not self.days or list(self.days) != sorted(set(self.days)):
            raise DuetError("a run needs its days ascending, each once")

    @property
    def date(self) -> date:
        return self.days[-1]


@dataclass
class StepRun:
    """What one step did for one day (or for the run): ran or skipped, and why."""

    step: str
    day: str
    ran: bool
    why: str
    result: dict = field(default_factory=dict)


@dataclass
class DailyRun:
    """The run record (the JSON line a scheduler reads)."""

    command: str
    date: str
    snapshots: list[str]
    status: str = "running"
    exit: int = EXIT_OK
    reason: str = ""
    model_version: str | None = None
    steps: list[StepRun] = field(default_factory=list)
    tables_changed: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)   # each step's wall time, decisions included

    def to_json(self) -> str:
        return json.dumps(plain(self), sort_keys=False, default=str)


# --- records: when a step is up to date for a day -------------------------------------------------------

def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    """The leaves where two key documents differ, as ``path: old -> new`` (the code by name only)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    if old == new:
        return []
    if path == "code":
        return ["code (the project's code or a library version)"]
    return [f"{path}: {old} -> {new}"]


@dataclass
class DayRecords:
    """The records of one lake's daily steps (``Lake.day_record``)."""

    lake: Lake
    force: bool = False

    def read(self, day: date, step: str) -> dict | None:
        path = self.lake.day_record(day, step)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            return None

    def why_run(self, day: date, step: str, key: dict, present: Callable[[dict], str | None]) -> str | None:
        """None if ``step`` is up to date for ``day`` (its recorded key equals ``key`` and ``present`` of
        its recorded result says nothing is missing), else why it must run."""
        if self.force:
            return "--force"
        record = self.read(day, step)
        if record is None:
            return "not run for this day yet"
        changed = _diff(record.get("key"), plain(key))
        if changed:
            return "changed: " + "; ".join(changed)
        missing = present(record.get("result") or {})
        return f"output gone: {missing}" if missing else None

    def store(self, day: date, step: str, key: dict, result: dict) -> None:
        write_atomic(self.lake.day_record(day, step), json.dumps(
            {"key": plain(key), "finished_at": datetime.now(UTC).isoformat(), "result": plain(result)},
            indent=1, default=str))


# --- what the steps read from the lake (delta-rs, no Spark) ------------------------------------------------

def complete_days(lake: Lake) -> list[date]:
    """The days whose snapshot is complete in both sequence tables, ascending."""
    from spark_jobs.sequences import SEQUENCE_TABLES

    return sorted(t.date() for t, r in snapshot_records(lake).items()
                  if t.time() == clock_time(0) and all(p in (r["tables"] or []) for p in SEQUENCE_TABLES))


def built_at(lake: Lake, day: date) -> str | None:
    """When the snapshot of ``day`` was last built (its record's ``updated_at``), None if it is not
    complete."""
    from spark_jobs.sequences import SEQUENCE_TABLES

    record = snapshot_records(lake).get(day_start(day))
    if record is None or not all(p in (record["tables"] or []) for p in SEQUENCE_TABLES):
        return None
    return record["updated_at"].astimezone(UTC).isoformat()


def raw_contents(lake: Lake) -> dict[str, int | None]:
    return {t.path: content_version(lake.table(t)) for t in (RAW_CLICKS, RAW_CONVERSIONS)}


def examples_cutoff(lake: Lake) -> datetime | None:
    """The label cutoff ``training/examples`` holds (one per table), None if there is none."""
    from deltalake.exceptions import TableNotFoundError

    from core.object_storage import delta_table

    try:
        dataset = delta_table(lake.table(TRAINING_EXAMPLES)).to_pyarrow_dataset()
        head = dataset.head(1, columns=["label_cutoff"])
    except TableNotFoundError:
        return None
    values = head.column("label_cutoff").to_pylist()
    return values[0].astimezone(UTC) if values else None


def served_model(lake: Lake) -> dict | None:
    from feature_repo.catalog import read_serving

    return read_serving(lake.root)


def model_version_for(lake: Lake, given: str | None) -> str | None:
    """The model version to embed with: ``given``, else the served one, else the newest duet model; None
    when the lake has no model (embedding and publishing wait for ``duet pretrain``)."""
    from core.variants import PROPOSED
    from encoders.model_store import latest_version, require_weights

    if given:
        require_weights(lake.root, given)
        return given
    served = served_model(lake)
    if served and served.get("model_version"):
        return served["model_version"]
    try:
        return latest_version(lake.root, PROPOSED)
    except DuetError:
        if not lake.models.is_dir() or not any(lake.models.iterdir()):
            return None
        raise


def model_digest(lake: Lake, version: str) -> str:
    """A hash of the checkpoint's files: a version is written once, so this guards a replaced folder."""
    digest = hashlib.sha256()
    for path in sorted(lake.model(version).iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- the run ---------------------------------------------------------------------------------------------

@contextmanager
def daily_lock(lake: Lake) -> Iterator[None]:
    """Hold the lake's daily lock (module docstring), waiting for another run's."""
    path = lake.daily_lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another duet daily run on {lake.root} (lock {path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _versions(lake: Lake) -> dict[str, Any]:
    out: dict[str, Any] = {t.path: table_version(lake.table(t)) for t in TABLES}
    try:
        out["serving"] = (served_model(lake) or {}).get("published_at")
    except NotImplementedError:
        pass
    return out


@dataclass(frozen=True)
class DailyStep:
    """A step of the daily run: ``days(run)`` the days it is for, ``key(ctx, day)`` what its result for a
    day depends on, ``present(ctx, day, result)`` what of its output is gone (None: nothing), ``run(ctx,
    days)`` the work for the days whose record did not hold, returning a result per day."""

    name: ClassVar[str]
    config: DailyConfig

    def days(self) -> tuple[date, ...]:
        return self.config.days

    def key(self, ctx: DailyContext, day: date) -> dict:
        raise NotImplementedError

    def present(self, ctx: DailyContext, day: date, result: dict) -> str | None:
        return None

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        raise NotImplementedError

    def skip(self, ctx: DailyContext) -> str | None:
        """Why the step does nothing in this run at all (no model yet, a newer snapshot served), or None."""
        return None


@dataclass
class DailyContext(StageContext):
    """A stage context plus what the steps decide once per run."""

    records: DayRecords | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class IngestLanded(DailyStep):
    name: ClassVar[str] = "ingest"

    def days(self) -> tuple[date, ...]:
        return (self.config.date,)

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        from spark_jobs.ingest import IngestConfig, ingest_file

        landing = Landing(self.config.landing) if self.config.landing else None
        last = self.config.date - timedelta(days=1)
        if landing is None:
            return {self.config.date: {"files": 0, "note": "no --landing: nothing ingested"}}
        if not landing.landed(last):
            raise NotLanded(f"the reports of {last} have not landed: no "
                            f"{landing.marker(last)} (a scheduler retries later)")
        files = landing.files(through=last)
        cfg = IngestConfig(lake=ctx.lake.root)
        counts = [ingest_file(ctx.lazy_spark, cfg, kind, path) for kind, path in files]
        for c in counts:
            print(c.line(), flush=True)
        return {self.config.date: {"files": len(files), "ingested": sum(c.ingested for c in counts),
                                   "quarantined": sum(c.quarantine_added for c in counts),
                                   "read": sum(c.read for c in counts)}}


@dataclass(frozen=True)
class BuildSequences(DailyStep):
    name: ClassVar[str] = "sequences"

    def key(self, ctx: DailyContext, day: date) -> dict:
        return {"settings": self.config.sequences.settings(), "reads": raw_contents(ctx.lake),
                "code": code_fingerprint()}

    def present(self, ctx: DailyContext, day: date, result: dict) -> str | None:
        now = built_at(ctx.lake, day)
        if now is None:
            return f"no complete snapshot {day} in {SEQUENCE_SNAPSHOTS.path}"
        if now != result.get("built_at"):
            return f"snapshot {day} was rebuilt since (at {now})"
        return None

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        from spark_jobs.sequences import build_sequences, report_lines

        report = build_sequences(ctx.spark, ctx.lake.root, [day_start(d) for d in days],
                                 self.config.sequences)
        print("\n".join(report_lines(report)))
        read = {path: [f["files_read"], f["files"]] for path, f in report.items()}
        return {d: {"built_at": built_at(ctx.lake, d), "raw_files_read": read} for d in days}


@dataclass(frozen=True)
class Embed(DailyStep):
    name: ClassVar[str] = "embed"

    def skip(self, ctx: DailyContext) -> str | None:
        return None if ctx.model_version else f"no model under {ctx.lake.models}: run `duet pretrain` first"

    def key(self, ctx: DailyContext, day: date) -> dict:
        from encoders.config import EmbedConfig

        return {"model_version": ctx.model_version, "model": model_digest(ctx.lake, ctx.model_version),
                "engine": self.config.engine, "embed": plain(EmbedConfig()),
                "snapshot_built_at": built_at(ctx.lake, day), "code": code_fingerprint()}

    def present(self, ctx: DailyContext, day: date, result: dict) -> str | None:
        from encoders.lake import last_run

        if last_run(ctx.lake.root, day_start(day), ctx.model_version) is None:
            return f"no embedding run of {ctx.model_version} at {day}"
        return None

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        snapshots = [day_start(d) for d in days]
        if self.config.engine == "spark":
            from encoders.spark_embed import embed_snapshots_spark

            reports = embed_snapshots_spark(ctx.spark, ctx.lake.root, snapshots, ctx.model_version,
                                            changed_only=True)
        else:
            from encoders.embed import embed_snapshots

            reports = embed_snapshots(ctx.lake.root, snapshots, ctx.model_version, changed_only=True)
        return {d: {"mode": r.mode, "embedded": r.embedded, "deleted": r.deleted}
                for d, r in zip(days, reports, strict=True)}


@dataclass(frozen=True)
class ValidateDays(DailyStep):
    name: ClassVar[str] = "validate"

    def key(self, ctx: DailyContext, day: date) -> dict:
        embedded = ctx.records.read(day, Embed.name) if ctx.model_version else None
        return {"snapshot_built_at": built_at(ctx.lake, day), "reads": raw_contents(ctx.lake),
                "embedded_at": (embedded or {}).get("finished_at"), "code": code_fingerprint()}

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        from core.errors import ValidationFailed
        from duet.validation import validate

        # The ranker's tables are left to the ranker's own check before it trains on them
        # (``duet.validation.validate_training``), as the demo's validate stage leaves them: the labels
        # are rewritten whole each day, so checking them here would check every click of the history.
        report = validate(ctx.spark, ctx.lake.root, snapshots=[day_start(d) for d in days],
                          exclude=[TRAINING_EXAMPLES.path, TRAINING_SET.path])
        print(report.summary(), flush=True)
        if not report.success:
            failed = [f"{t.table}: {d}" for t in report.tables for d in t.failed]
            raise ValidationFailed(f"{len(failed)} expectation(s) failed, nothing published: "
                                   + " | ".join(failed))
        return {d: {"results": report.results_dir} for d in days}


@dataclass(frozen=True)
class PublishDay(DailyStep):
    name: ClassVar[str] = "publish"

    def days(self) -> tuple[date, ...]:
        return (self.config.date,) if self.config.publish else ()

    def skip(self, ctx: DailyContext) -> str | None:
        if not ctx.model_version:
            return "no model to publish"
        served = served_model(ctx.lake) or {}
        newest = served.get("snapshot")
        if newest and datetime.fromisoformat(newest) > day_start(self.config.date):
            return f"a newer snapshot is served ({served['snapshot']})"
        return None

    def key(self, ctx: DailyContext, day: date) -> dict:
        embedded = ctx.records.read(day, Embed.name) or {}
        return {"model_version": ctx.model_version, "embedded_at": embedded.get("finished_at"),
                "feature_store_yaml": self.config.feature_store_yaml, "redis": self.config.redis,
                "code": code_fingerprint()}

    def present(self, ctx: DailyContext, day: date, result: dict) -> str | None:
        served = served_model(ctx.lake) or {}
        if (served.get("model_version"), served.get("snapshot")) != (ctx.model_version,
                                                                     day_start(day).isoformat()):
            return f"the served snapshot is {served.get('model_version')} at {served.get('snapshot')}"
        from serving.versions import contract_views_stale

        if contract_views_stale(served):
            return "the contract views are marked stale (a publish rewriting them was killed)"
        return None

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        from serving.publish import PublishConfig, publish
        from serving.store import StoreConfig

        store = StoreConfig(lake=ctx.lake.root, yaml_path=self.config.feature_store_yaml,
                            redis=self.config.redis)
        [day] = days
        report = publish(ctx.spark, PublishConfig(store, snapshot=day_start(day),
                                                  model_version=ctx.model_version, promote=True))
        return {day: {"users": report.users, "online_store": report.online_store}}


@dataclass(frozen=True)
class Labels(DailyStep):
    name: ClassVar[str] = "labels"

    def days(self) -> tuple[date, ...]:
        return (self.config.date,)

    def skip(self, ctx: DailyContext) -> str | None:
        cutoff = examples_cutoff(ctx.lake)
        if cutoff is not None and cutoff > day_start(self.config.date):
            return f"{TRAINING_EXAMPLES.path} holds a later cutoff ({cutoff.isoformat()})"
        return None

    def key(self, ctx: DailyContext, day: date) -> dict:
        return {"reads": raw_contents(ctx.lake), "attribution_window": self.config.attribution_window,
                "report_grace": self.config.report_grace, "code": code_fingerprint()}

    def present(self, ctx: DailyContext, day: date, result: dict) -> str | None:
        cutoff = examples_cutoff(ctx.lake)
        return None if cutoff == day_start(day) else f"{TRAINING_EXAMPLES.path} holds cutoff {cutoff}"

    def run(self, ctx: DailyContext, days: list[date]) -> dict[date, dict]:
        from spark_jobs.examples import ExamplesConfig, build_examples

        [day] = days
        report = build_examples(ctx.spark, ExamplesConfig(
            lake=ctx.lake.root, label_cutoff=day_start(day),
            attribution_window=self.config.attribution_window, report_grace=self.config.report_grace))
        return {day: {"rows": report.rows, "matured": report.matured,
                      "matured_positives": report.matured_positives}}


def daily_steps(cfg: DailyConfig) -> list[DailyStep]:
    return [IngestLanded(cfg), BuildSequences(cfg), Embed(cfg), ValidateDays(cfg), PublishDay(cfg),
            Labels(cfg)]


def plan_days(lake: Lake, day: date, first: date | None = None) -> tuple[date, ...]:
    """The snapshots a daily run of ``day`` builds: ``day`` and, for a lake behind, every day after its
    newest complete snapshot before ``day`` (from ``first`` on, when given)."""
    before = [d for d in complete_days(lake) if d < day]
    start = before[-1] + timedelta(days=1) if before else day
    if first is not None:
        start = max(start, first) if before else first
    return tuple(start + timedelta(days=i) for i in range((day - start).days + 1))


def decide(step: DailyStep, ctx: DailyContext) -> tuple[str | None, dict[date, dict], dict[date, str | None]]:
    """Whether ``step`` runs in this run and for which days: (why it does nothing at all or None, its key per
    day, why it runs per day or None when that day is up to date). Reads records and the lake only."""
    days = step.days()
    if step.name == IngestLanded.name:    # the ingest log decides per file; it has no day record
        return None, {}, {d: "the landed files not yet in the ingest log" for d in days}
    why_not = step.skip(ctx)
    if why_not:
        return why_not, {}, {}
    keys = {d: step.key(ctx, d) for d in days}
    reasons = {d: ctx.records.why_run(d, step.name, keys[d], lambda r, d=d: step.present(ctx, d, r))
               for d in days}
    return None, keys, reasons


def _run_step(step: DailyStep, ctx: DailyContext, record: DailyRun) -> None:
    why_not, keys, reasons = decide(step, ctx)
    if why_not:
        print(f"skipped: {why_not}", flush=True)
        record.steps += [StepRun(step.name, d.isoformat(), False, why_not) for d in step.days()]
        return
    todo = [d for d, why in reasons.items() if why]
    if step.name != IngestLanded.name:
        for d, why in reasons.items():
            print(f"{d}: " + (f"runs ({why})" if why else "up to date"), flush=True)
    results = step.run(ctx, todo) if todo else {}
    for d, why in reasons.items():
        if why and d in keys:
            ctx.records.store(d, step.name, keys[d], results[d])
        record.steps.append(StepRun(step.name, d.isoformat(), bool(why), why or "up to date",
                                    results.get(d, {})))


def plan(cfg: DailyConfig) -> list[StepRun]:
    """What a run of ``cfg`` would do, as the lake is now (``ran``: whether it would run), starting nothing:
    ``duet daily --dry-run`` and ``duet status``. A step after one that would run is judged on the lake as
    it is, so it may run although it says up to date (its key changes when the earlier step runs)."""
    lake = Lake(cfg.lake)
    ctx = DailyContext(lake, lambda: None, StageClock(), DayRecords(lake, cfg.force))
    ctx.model_version = model_version_for(lake, cfg.model_version)
    out = []
    for step in daily_steps(cfg):
        why_not, _, reasons = decide(step, ctx)
        if why_not:
            out += [StepRun(step.name, d.isoformat(), False, why_not) for d in step.days()]
        else:
            out += [StepRun(step.name, d.isoformat(), bool(why), why or "up to date")
                    for d, why in reasons.items()]
    return out


def run_daily(spark_factory: Callable[[], Any], cfg: DailyConfig, command: str = "daily") -> DailyRun:
    """Run the daily steps for ``cfg.days`` (module docstring); returns the run record, which says how it
    ended (``status``, ``exit``) rather than raising for the failures a scheduler acts on."""
    lake = Lake(cfg.lake)
    record = DailyRun(command, cfg.date.isoformat(), [d.isoformat() for d in cfg.days])
    started = time.perf_counter()
    with daily_lock(lake):
        before = _versions(lake)
        ctx = DailyContext(lake, spark_factory, StageClock(), DayRecords(lake, cfg.force))
        try:
            ctx.model_version = model_version_for(lake, cfg.model_version)
            record.model_version = ctx.model_version
            for step in daily_steps(cfg):
                with ctx.clock.stage(step.name):
                    _run_step(step, ctx, record)
            record.status = "done" if any(s.ran and s.step != IngestLanded.name for s in record.steps) \
                else "up to date"
        except NotLanded as e:
            record.status, record.exit, record.reason = "not landed", EXIT_NOT_LANDED, str(e)
        except DuetError as e:
            record.status, record.exit, record.reason = "failed", EXIT_FAILED, str(e)
        except Exception as e:  # noqa: BLE001 - a scheduler reads the record whatever failed (Redis gone, ...)
            first = (str(e).strip().splitlines() or [""])[0]
            record.status, record.exit = "failed", EXIT_FAILED
            record.reason = f"{type(e).__name__}: {first} (a re-run converges)"
        after = _versions(lake)
        record.step_seconds = dict(ctx.clock.seconds)
    record.tables_changed = {k: [before[k], after[k]] for k in after if before.get(k) != after[k]}
    if record.status == "up to date" and record.tables_changed:
        record.status = "done"
    record.seconds = round(time.perf_counter() - started, 1)
    return record


def summary(record: DailyRun) -> str:
    """One line for people (the JSON record follows it)."""
    ran = sorted({s.step for s in record.steps if s.ran and s.step != IngestLanded.name})
    if record.status == "up to date":
        return (f"{record.command} {record.date}: nothing to do, every step up to date; no table changed "
                f"({record.seconds:.1f} s)")
    if record.exit:
        return f"{record.command} {record.date}: {record.status}: {record.reason}"
    return (f"{record.command} {record.date}: ran {', '.join(ran) or 'ingest'}; "
            f"{len(record.tables_changed)} table(s) changed ({record.seconds:.1f} s)")


def backfill_days(first: date, last: date) -> tuple[date, ...]:
    if last < first:
        raise DuetError(f"--to {last} is before --from {first}")
    return tuple(first + timedelta(days=i) for i in range((last - first).days + 1))

