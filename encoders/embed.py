"""Embedding one snapshot (``duet embed``): plan which users, run the local engine, write one commit.

**Plan** (shared with the Spark engine, ``encoders.spark_embed``). A full run embeds every user with a
click or a conversion sequence at the snapshot and replaces that (snapshot, model version)'s rows. A
``changed_only`` run is DUET's event-triggered refresh: it re-embeds only the users whose sequence rows
at that snapshot changed since the last run of the same (snapshot, model version) - late conversions
re-built into the sequence tables, read from their change data feed between the versions that run
recorded and now - deletes the rows of users who no longer have any sequence, and leaves every other row
as it was. The result is the table a full run would give. Without an earlier run it runs in full and
says so.

Why "since the last run of this snapshot" and not "since the previous snapshot": embeddings depend on
the snapshot time (events are featurised by their age at the snapshot), so a user with no new event
still gets a different vector at the next snapshot, and carrying the old one forward would not give the
full run's table.

**Local engine**: snapshot rows streamed from ``deltalake`` in co-partitioned chunks (``encoders.lake``),
embedded in batches (``encoders.inference``), and written as a stream: memory is bounded by a chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.contracts import USER_EMBEDDINGS
from core.errors import DuetError
from encoders import checkpoint, model_store
from encoders.config import EmbedConfig
from encoders.examples import join_sequences
from encoders.inference import OUTPUT_SCHEMA, embed_tables
from encoders.lake import (
    EmbeddingRun,
    changed_users,
    click_source,
    co_partitioned,
    conversion_source,
    last_run,
    merge_embeddings,
    sequence_snapshots,
    sequence_versions,
    write_embeddings,
)
from encoders.train import select_device


@dataclass(frozen=True)
class RunPlan:
    """Which users of a snapshot to embed (``users`` None = all) from which sequence table versions."""

    snapshot: datetime
    model_version: str
    mode: str                       # "full" or "changed-only"
    users: pa.Array | None
    versions: dict[str, int]
    note: str = ""

    @property
    def run(self) -> EmbeddingRun:
        return EmbeddingRun(self.snapshot, self.model_version, self.versions, self.mode)


def plan_run(lake: str, snapshot: datetime, model_version: str, changed_only: bool) -> RunPlan:
    """The plan of an embedding run (see the module docstring)."""
    if snapshot not in sequence_snapshots(lake):
        raise DuetError(f"no sequences for snapshot {snapshot.isoformat()} under {lake}: "
                        f"run `duet sequences --lake {lake} --snapshot {snapshot.isoformat()}` first")
    versions = sequence_versions(lake)
    if not changed_only:
        return RunPlan(snapshot, model_version, "full", None, versions)
    previous = last_run(lake, snapshot, model_version)
    if previous is None:
        return RunPlan(snapshot, model_version, "full", None, versions,
                       note="no earlier run of this snapshot and model version: embedding every user")
    users, versions = changed_users(lake, snapshot, previous.sequence_versions)
    return RunPlan(snapshot, model_version, "changed-only", users, versions)


@dataclass
class EmbedReport:
    snapshot: datetime
    model_version: str
    engine: str
    mode: str
    embedded: int      # users whose vectors were computed and written
    deleted: int       # users whose rows were removed (changed-only: no sequence any more)
    seconds: float
    note: str = ""

    def line(self) -> str:
        what = f"embedded {self.embedded} user(s)"
        if self.mode == "changed-only":
            what = (f"re-embedded {self.embedded} changed user(s), deleted {self.deleted}, "
                    "others carried forward")
        note = f" ({self.note})" if self.note else ""
        return (f"{USER_EMBEDDINGS.path} {self.snapshot.isoformat()} {self.model_version}: {what} "
                f"[{self.engine}, {self.mode}] in {self.seconds:.1f} s{note}")

    def to_dict(self) -> dict:
        return {"snapshot": self.snapshot.isoformat(), "model_version": self.model_version,
                "engine": self.engine, "mode": self.mode, "embedded": self.embedded, "deleted": self.deleted,
                "seconds": self.seconds, "note": self.note}


def _counted(batches: Iterator[pa.RecordBatch], seen: list[int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        seen[0] += batch.num_rows
        yield batch


def _noted(batches: Iterator[pa.RecordBatch], refused: list[DuetError]) -> Iterator[pa.RecordBatch]:
    """``batches``, noting in ``refused`` a ``DuetError`` that ends them."""
    try:
        yield from batches
    except DuetError as e:
        refused.append(e)
        raise


def embed_snapshots(lake: str, snapshots: list[datetime], model_version: str | None = None,
                    cfg: EmbedConfig | None = None, changed_only: bool = False,
                    log: Callable[[str], None] = print) -> list[EmbedReport]:
    """Embed each snapshot with the local engine (one commit each, the model loaded once); return the
    reports (also logged). ``model_version`` defaults to the newest model under the lake."""
    cfg = cfg or EmbedConfig()
    version = model_version or model_store.latest_version(lake)
    model_store.require_weights(lake, version)   # an imported embedding (ext-...) has no model to run
    plans = [plan_run(lake, s, version, changed_only) for s in snapshots]  # every snapshot checked first
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    model, _ = checkpoint.load(lake, version)
    model.to(device)
    return [_embed_one(lake, plan, model, cfg, device, log) for plan in plans]


def embed_snapshot(lake: str, snapshot: datetime, model_version: str | None = None,
                   cfg: EmbedConfig | None = None, changed_only: bool = False,
                   log: Callable[[str], None] = print) -> EmbedReport:
    """``embed_snapshots`` for one snapshot."""
    return embed_snapshots(lake, [snapshot], model_version, cfg, changed_only, log)[0]


def _embed_one(lake: str, plan: RunPlan, model: torch.nn.Module, cfg: EmbedConfig, device: torch.device,
               log: Callable[[str], None]) -> EmbedReport:
    started = time.perf_counter()
    created = datetime.now(UTC)
    snapshot, version = plan.snapshot, plan.model_version
    sources = [click_source(snapshot), conversion_source(snapshot)]

    def tables() -> Iterator[pa.Table]:
        for clicks, conversions in co_partitioned(lake, sources, cfg.chunk_rows, plan.users, plan.versions):
            yield join_sequences(clicks, conversions, snapshot)

    batches = embed_tables(model, tables(), version, created, cfg.batch_size, device, cfg.bf16)
    deleted = 0
    if plan.mode == "full":
        seen, refused = [0], []
        try:
            write_embeddings(lake, _counted(_noted(batches, refused), seen), plan.run)
        except Exception as e:
            # The Delta writer reports a failed stream as its own error, with ours as text: raise ours
            # (e.g. non-finite vectors), one line. The stream failed, so nothing was committed.
            if refused:
                raise refused[0] from e
            raise
        embedded = seen[0]
    elif plan.users is not None and len(plan.users):
        rows = pa.Table.from_batches(list(batches), schema=OUTPUT_SCHEMA)
        gone = pc.filter(plan.users, pc.invert(pc.is_in(plan.users, value_set=rows.column("user_id"))))
        merge_embeddings(lake, rows, gone, plan.run)
        embedded, deleted = rows.num_rows, len(gone)
    else:
        embedded = 0  # nothing changed: no commit, the table already is what a full run would give
    report = EmbedReport(snapshot, version, "local", plan.mode, embedded, deleted,
                         time.perf_counter() - started, plan.note)
    log(report.line())
    return report
