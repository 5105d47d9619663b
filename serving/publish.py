"""``duet publish``: put one snapshot of one model version's embeddings online, or nothing.

1. Gate: the embedding suite (``encoders.quality``, run by ``core.quality``) on exactly the rows to be
   published (that snapshot, that model version), cross-checked against the sequence tables. If any
   expectation fails, ``ValidationFailed`` names it and neither the registry nor the online store is
   touched. A whole-table pass of the same suite that still describes the rows
   (``core.quality.reusable_pass``: the same checks, every table it read unchanged since) is the gate's
   verdict without running it again: every check of the embedding suite that holds on the whole table
   holds on each (snapshot, model version) of it (``encoders.quality``; tested), so ``duet validate``
   then ``duet publish`` runs the suite once. ``revalidate`` runs it anyway.
2. Apply: the repository's objects for the lake (``feature_repo.catalog``) with this model version as the
   served one, recorded first in ``_feast/serving.json`` so that a later ``feast apply`` builds the same.
3. Materialize exactly the snapshot's rows into the served views (embeddings and sequence summary) by the
   snapshot's own window ``[T, T]`` (``store.materialize``, never ``materialize_incremental``, whose
   watermark would skip rows of a snapshot re-built after a later one was published, Feast #4133).
   Every write replaces what is stored (SQLite upserts; Redis with ``skip_dedup``), so re-publishing a
   snapshot after a fix overwrites it, and publishing the same rows twice leaves the same state.

Users absent from the published snapshot keep whatever an earlier publish wrote; ``serving.online``
reports those older than the views' ttl as missing (Feast applies no ttl online).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.contracts import TABLES, USER_EMBEDDINGS
from core.errors import DuetError, ValidationFailed
from core.files import write_atomic
from core.lake import Lake, absolute
from core.table_versions import table_version
from core.times import sql_timestamp
from core.variants import PROPOSED
from feature_repo.catalog import (
    CLICK_VIEW,
    CONVERSION_VIEW,
    SUMMARY_VIEW,
    RepoSpec,
    model_dims,
    read_serving,
    spec_from_lake,
)
from serving.store import StoreConfig, apply, feature_store

SERVED_VIEWS = (CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW)


@dataclass(frozen=True)
class PublishConfig:
    """What to publish: ``snapshot`` None = the latest of the version; ``model_version`` None = the
    latest ``duet`` model under ``_models/``."""

    store: StoreConfig
    snapshot: datetime | None = None
    model_version: str | None = None
    revalidate: bool = False      # run the gate even when an earlier whole-table pass still holds


@dataclass
class PublishReport:
    model_version: str
    snapshot: str
    users: int
    online_store: str
    gate_results: str
    seconds: dict[str, float] = field(default_factory=dict)
    registry_changes: str = ""
    gate_reused: bool = False     # the gate's verdict is the pass in gate_results (module docstring)

    def line(self) -> str:
        took = ", ".join(f"{step} {s:.1f} s" for step, s in self.seconds.items())
        reused = f"; gate: the pass in {self.gate_results}, same rows" if self.gate_reused else ""
        return (f"published {self.model_version} at {self.snapshot}: {self.users:,} users to the "
                f"{self.online_store} online store ({took}{reused})")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_version(lake: str, model_version: str | None) -> str:
    """The model version to publish (checked before Spark starts): given, or the newest duet model."""
    from encoders.model_store import latest_version

    lake = absolute(lake)
    dims = model_dims(lake)
    version = model_version or latest_version(lake, PROPOSED)
    if version not in dims:
        raise DuetError(f"no model {version!r} under {Lake(lake).models} "
                        f"(known: {', '.join(dims) or 'none'})")
    if dims[version][1] is None:
        raise DuetError(f"{version} has a single embedding: only two-embedding versions (such as duet's) are "
                        "served online; single-embedding versions are read offline through their "
                        "FeatureService")
    return version


def choose(spark, lake: str, snapshot: datetime | None,
           model_version: str | None) -> tuple[str, datetime, int]:
    """(model version, snapshot, rows) to publish; errors name what is missing and what to run."""
    from pyspark.sql import functions as F

    version = resolve_version(lake, model_version)
    location = USER_EMBEDDINGS.location(lake)
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, location):
        raise DuetError(f"no {USER_EMBEDDINGS.path} under {lake}: run `duet embed` first")
    rows = spark.read.format("delta").load(location).where(F.col("model_version") == version)
    if snapshot is None:
        latest = rows.agg(F.max(F.unix_micros("event_timestamp")).alias("t")).first()["t"]
        if latest is None:
            raise DuetError(f"no embeddings of {version} in {USER_EMBEDDINGS.path}: run `duet embed "
                            f"--model-version {version}` first")
        snapshot = datetime.fromtimestamp(latest / 1e6, UTC)
    count = rows.where(f"event_timestamp = {sql_timestamp(snapshot)}").count()
    if count == 0:
        raise DuetError(f"no embeddings of {version} at {snapshot.isoformat()} in {USER_EMBEDDINGS.path}: "
                        f"run `duet embed --snapshot {snapshot.isoformat()} --model-version {version}`")
    return version, snapshot, count


def gate(spark, lake: str, version: str, snapshot: datetime, revalidate: bool = False):
    """The embedding suite on the rows to publish, or the earlier whole-table pass that still holds
    (module docstring; not with ``revalidate``); returns the ``LakeReport`` (raises nothing)."""
    from core.quality import reusable_pass, validate_lake
    from encoders import quality

    if not revalidate:
        present = {t.path for t in TABLES if table_version(t.location(lake)) is not None}
        reused = [reusable_pass(lake, s) for s in quality.suites_for(lake, present)]
        if len(reused) == 1 and reused[0] is not None:
            return reused[0]

    def suites_for(present: set[str], properties: dict) -> list:
        suites = quality.suites_for(lake, present)
        where = f"model_version = '{version}' AND event_timestamp = {sql_timestamp(snapshot)}"
        return [replace(s, where=where) for s in suites]

    return validate_lake(spark, lake, suites_for)


def _write_serving(lake: str, record: dict) -> None:
    write_atomic(Lake(lake).serving_file, json.dumps(record, indent=1))


def publish(spark, cfg: PublishConfig, log=print) -> PublishReport:
    """Gate, apply, materialize (module docstring). Raises ``ValidationFailed`` when the gate fails."""
    import time

    lake = absolute(cfg.store.lake)
    started = time.perf_counter()
    version, snapshot, users = choose(spark, lake, cfg.snapshot, cfg.model_version)
    quality = gate(spark, lake, version, snapshot, cfg.revalidate)
    seconds = {"gate": time.perf_counter() - started}
    if not quality.success:
        failed = [f"{t.table}: {d}" for t in quality.tables for d in t.failed] or ["no embedding suite ran"]
        raise ValidationFailed(f"nothing published: {version} at {snapshot.isoformat()} failed "
                               f"{len(failed)} expectation(s): " + " | ".join(failed))
    if not quality.tables:
        raise ValidationFailed(f"nothing published: the embedding suite did not run on {lake}")

    started = time.perf_counter()
    previous = spec_from_lake(lake)
    record = {"model_version": version, "snapshot": None, "chosen_at": datetime.now(UTC).isoformat()}
    _write_serving(lake, {**(read_serving(lake) or {}), **record})
    spec = RepoSpec(previous.lake, previous.versions, version)
    store = feature_store(cfg.store)
    changes = apply(store, spec, log)
    seconds["apply"] = time.perf_counter() - started

    started = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        store.materialize(snapshot, snapshot, feature_views=list(SERVED_VIEWS))
    seconds["materialize"] = time.perf_counter() - started
    _write_serving(lake, {"model_version": version, "snapshot": snapshot.isoformat(), "users": users,
                          "online_store": store.config.online_store.type,
                          "published_at": datetime.now(UTC).isoformat()})
    report = PublishReport(version, snapshot.isoformat(), users, store.config.online_store.type,
                           quality.results_dir, seconds, changes.strip(), quality.reused)
    log(report.line())
    return report
