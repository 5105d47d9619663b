"""``duet publish``: put one snapshot of one model version's embeddings online, or nothing.

1. Gate: the embedding suite (``encoders.quality``, run by ``core.quality``) on exactly the rows to be
   published (that snapshot, that model version), cross-checked against the sequence tables. If any
   expectation fails, ``ValidationFailed`` names it and neither the registry nor the online store is
   touched. A whole-table pass of the same suite that still describes the rows
   (``core.quality.reusable_pass``: the same checks, every table it read unchanged since), or a pass of
   the whole snapshot whose files, and those of the sequences it was checked against, are the same now
   (``core.quality.snapshot_pass``, as ``duet validate --snapshot`` and ``duet daily`` leave), is the
   gate's verdict without running it again: every check of the embedding suite that holds on the whole
   table or a snapshot holds on each (snapshot, model version) of it (``encoders.quality``; tested), so
   ``duet validate`` then ``duet publish`` runs the suite once. ``revalidate`` runs it anyway. Then the
   stability gate (``serving.drift.same_version_gate``): when the table holds an earlier snapshot of the
   version, this one must not have drifted from it past the documented bounds (per-user cosine,
   neighbours, norms); ``allow_drift`` publishes anyway and records the failed figures in the version's
   record.
2. Apply: the repository's objects for the lake (``feature_repo.catalog``, both online slots of every
   two-embedding version included); the served version (the contract views' source) stays the one the
   ``serving`` alias names, or becomes this one when nothing is served yet.
3. Write the free slot (blue-green, ``serving.versions``): of the version's two online slots
   (``feature_repo.catalog.slot_views``: click, conversion, sequence summary), the one its record does
   *not* name (the first publish: ``a``) is cleared, then exactly the snapshot's rows are materialized
   into it by the snapshot's own window ``[T, T]`` (``store.materialize``, never
   ``materialize_incremental``, whose watermark would skip rows of a snapshot re-built after a later one
   was published, Feast #4133). No reader reads that slot meanwhile: the record still names the other.
4. Record, in one atomic write of ``_feast/serving.json``, the version's snapshot as fully published in
   that slot (and, when this version is served, as the alias's snapshot): from that write on every reader
   of the version reads the new slot. A publish killed before it leaves the record naming the old slot,
   which holds the previous snapshot whole (summary included); one killed after it has published. A
   publish of a version the alias does not name leaves the alias where it is: ``duet promote`` (or
   ``promote=True``, after the publish) moves it.
5. When this version is served: refresh the contract views (``serving.versions.refresh_contract_views``,
   in place, marked stale in the record until done).

Re-publishing a snapshot after a fix, or the same rows twice, writes the other slot and flips to it:
the same state as one publish. A user absent from the published snapshot has no row in the new slot
(cleared first), so every reader reports them missing, never a vector of an earlier snapshot; ``duet
embed`` writes every user with a sequence at the snapshot (``--changed-only`` too: its result is the
full run's table), so only a user with no sequence there is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.contracts import TABLES, USER_EMBEDDINGS
from core.errors import DuetError, ValidationFailed
from core.lake import Lake, absolute
from core.table_versions import table_version
from core.times import sql_timestamp
from core.variants import PROPOSED
from feature_repo.catalog import RepoSpec, model_dims, other_slot, slot_views, spec_from_lake
from serving.store import StoreConfig, apply, feature_store
from serving.versions import (
    clear_views,
    materialize,
    promote,
    record,
    refresh_contract_views,
    serving_lock,
    slot_of,
    with_published,
    write_record,
)


@dataclass(frozen=True)
class PublishConfig:
    """What to publish: ``snapshot`` None = the latest of the version; ``model_version`` None = the
    latest ``duet`` model under ``_models/``."""

    store: StoreConfig
    snapshot: datetime | None = None
    model_version: str | None = None
    revalidate: bool = False      # run the gate even when an earlier whole-table pass still holds
    promote: bool = False         # then move the alias to this version (it moves anyway when none is served)
    allow_drift: bool = False     # publish even when a stability gate fails (serving.drift); recorded


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
    served: str | None = None     # the version the serving alias names after the publish
    slot: str | None = None       # the online slot written and now named (module docstring)

    def line(self) -> str:
        took = ", ".join(f"{step} {s:.1f} s" for step, s in self.seconds.items())
        reused = f"; gate: the pass in {self.gate_results}, same rows" if self.gate_reused else ""
        alias = "" if self.served == self.model_version else (
            f"; not served: the alias names {self.served} "
            f"(`duet promote --model-version {self.model_version}` serves it)")
        return (f"published {self.model_version} at {self.snapshot}: {self.users:,} users to the "
                f"{self.online_store} online store, slot {self.slot} ({took}{reused}){alias}")

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
    """The embedding suite on the rows to publish, or an earlier pass of the whole table or of the whole
    snapshot that still holds (module docstring; not with ``revalidate``); returns the ``LakeReport``
    (raises nothing)."""
    from core.quality import reusable_pass, snapshot_pass, validate_lake
    from encoders import quality

    if not revalidate:
        present = {t.path for t in TABLES if table_version(t.location(lake)) is not None}
        suites = quality.suites_for(lake, present)
        if len(suites) == 1:
            reused = reusable_pass(lake, suites[0]) or snapshot_pass(lake, suites[0], snapshot)
            if reused is not None:
                return reused

    def suites_for(present: set[str], properties: dict) -> list:
        suites = quality.suites_for(lake, present)
        where = f"model_version = '{version}' AND event_timestamp = {sql_timestamp(snapshot)}"
        return [replace(s, where=where, snapshots=(snapshot,)) for s in suites]

    return validate_lake(spark, lake, suites_for)


def publish(spark, cfg: PublishConfig, log=print) -> PublishReport:
    """Gate, apply, materialize, record (module docstring), holding the lake's serving lock throughout
    (``serving.versions.serving_lock``: a publish, promote or retire running meanwhile makes this one stop
    at once, saying it lost). Raises ``ValidationFailed`` when the gate fails."""
    what = f"the publish of {cfg.model_version or 'the newest model'}" + (
        f" at {cfg.snapshot.isoformat()}" if cfg.snapshot else "")
    with serving_lock(cfg.store.lake, what):
        return _publish(spark, cfg, log)


def _publish(spark, cfg: PublishConfig, log=print) -> PublishReport:
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
    # --- stability gate (serving.drift): this snapshot against the version's previous one -------------
    from serving.drift import same_version_gate

    try:
        drift = same_version_gate(lake, version, snapshot, cfg.allow_drift)
    except ValidationFailed as e:
        raise ValidationFailed(f"nothing published: {e}") from None
    seconds["drift"] = time.perf_counter() - started - seconds["gate"]
    # --- end stability gate ----------------------------------------------------------------------------

    started = time.perf_counter()
    previous = spec_from_lake(lake)
    alias = record(lake).get("model_version")
    serves = alias in (None, version)       # nothing served yet, or a new snapshot of the served version
    spec = RepoSpec(previous.lake, previous.versions, version if serves else alias)
    store = feature_store(cfg.store)
    changes = apply(store, spec, log)
    seconds["apply"] = time.perf_counter() - started

    started = time.perf_counter()
    current = record(lake)
    slot = other_slot(slot_of(current, version))       # the slot no reader of the version is sent to
    views = slot_views(version, slot).names
    clear_views(store, views)                          # a killed publish's half-written rows go first
    materialize(store, snapshot, views)
    seconds["materialize"] = time.perf_counter() - started
    kind = store.config.online_store.type
    entry = {"snapshot": snapshot.isoformat(), "slot": slot, "users": users, "online_store": kind,
             "published_at": datetime.now(UTC).isoformat(), "gate_results": quality.results_dir,
             "drift": drift.to_dict() if drift else None}
    flipped = with_published(current, version, entry, serves)
    write_record(lake, flipped)                        # the flip: one atomic write
    if serves:
        started = time.perf_counter()
        refresh_contract_views(store, lake, flipped)
        seconds["contract views"] = time.perf_counter() - started
    report = PublishReport(version, snapshot.isoformat(), users, kind, quality.results_dir, seconds,
                           changes.strip(), quality.reused, version if serves else alias, slot)
    log(report.line())
    if cfg.promote and not serves:
        promote(cfg.store, version, log, allow_drift=cfg.allow_drift)
        report.served = version
    return report
