"""Which of the demo's derived stages can be skipped: their inputs have not changed since they last passed.

A re-run of ``duet demo`` on an unchanged workdir repeats ingest and sequences (both idempotent by design,
and what the re-run checks), then finds that each cached stage after them (``duet.stages``: pre-training
and embedding, validation, examples, the training set and its validation, the ranker, the ceiling,
delayed feedback) would read exactly what it read last time. Re-doing them costs most of a re-run and
gives the same models, the same verdicts and the same metrics (CPU training is deterministic), so the
conductor reuses their recorded results instead, and says so on each stage's line.

A stage is reused only when **all** of these hold (``StageCache.lookup``):

- the same *key*: the stage's config and declared inputs (``Stage.key``), the contents of the tables it
  declares it reads, the project's source code
  (every ``.py`` of its packages) and the versions of the libraries that compute results;
- the tables it wrote still hold the rows of the versions it left them (every later commit changed no
  row: ``core.table_versions.unchanged_since``, so a ``duet maintain`` OPTIMIZE or VACUUM keeps the record)
  and the folders it wrote (model checkpoints) are still there;
- it succeeded: a stage is recorded only then (``store``), so a failed validation is never reused.

A table's *content* is its latest Delta version that changed rows (``core.table_versions.content_version``):
a MERGE that inserted, updated and deleted nothing (what a sequence re-run committed
when no input changed, before it learned to commit nothing then; older lakes hold such commits)
and the commits of ``duet maintain`` (OPTIMIZE, VACUUM) do not count; any other commit does, even one that
changed nothing: when unsure, the stage runs. A record holds version numbers only: no stage reads an older
version's rows back, so ``VACUUM`` (which never touches the log) cannot break one.
The records live in ``<lake>/_stages/<stage>.json``, written atomically after the stage succeeded;
``duet demo --force`` ignores them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from core.contracts import SEQUENCE_SNAPSHOTS
from core.files import write_atomic
from core.lake import Lake
from core.sources import package_sources
from core.table_versions import content_version, table_version, unchanged_since

# The packages whose code computes what the stages write (the conductor's own included).
CODE_PACKAGES = ("core", "spark_jobs", "encoders", "feature_repo", "serving", "ranker", "duet")
LIBRARIES = ("torch", "pyspark", "delta-spark", "deltalake", "feast", "great-expectations", "numpy",
             "pyarrow")
REPO = Path(__file__).resolve().parent.parent


@cache
def code_fingerprint() -> str:
    """A hash of every ``.py`` file of the project's packages (path and bytes, ``core.sources``) and the
    library versions."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:     # read the same from a checkout and from spark-submit's zip
        for name, data in package_sources(package):
            digest.update(name.encode() + b"\0" + data + b"\0")
    for library in LIBRARIES:
        try:
            version = metadata.version(library)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{library}={version}\0".encode())
    return digest.hexdigest()


@dataclass
class StageCache:
    """The records of one lake's reusable stages. ``force`` makes every lookup miss."""

    lake: Lake
    force: bool = False
    _keys: dict[str, str] = field(default_factory=dict)

    def _content(self, location: str) -> object:
        """What a read's content is measured by: the snapshot log's current records, the model folder's
        configs, else a Delta table's content version."""
        if location == self.lake.table(SEQUENCE_SNAPSHOTS):
            return sequence_records(self.lake)
        if location == str(self.lake.models):
            return checkpoint_configs(self.lake)
        return content_version(location)

    def key(self, stage: str, settings: dict, reads: list[str]) -> str:
        """The stage's key from its ``settings`` (JSON-able), the contents of what it ``reads`` (table
        locations, or the lake's model folder) and the code; kept for ``store``."""
        document = {"stage": stage, "settings": settings, "code": code_fingerprint(),
                    "reads": {self.lake.relative(t): self._content(t) for t in sorted(reads)}}
        text = json.dumps(document, sort_keys=True, default=str)
        self._keys[stage] = hashlib.sha256(text.encode()).hexdigest()
        return self._keys[stage]

    def lookup(self, stage: str, settings: dict, reads: list[str]) -> dict | None:
        """The recorded result of ``stage`` if it may be reused (module docstring), else None."""
        key = self.key(stage, settings, reads)
        path = self.lake.stage_record(stage)
        if self.force or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if record["key"] != key:
                return None
            if not all(unchanged_since(self.lake.resolve(t), v) for t, v in record["tables"].items()):
                return None
            if not all(os.path.isdir(self.lake.resolve(d)) for d in record["folders"]):
                return None
        except (ValueError, KeyError, TypeError, AttributeError):   # not a record this module wrote: run
            return None
        return record

    def store(self, stage: str, result: dict, writes: list[str]) -> None:
        """Record that ``stage`` (its key taken by ``lookup``) succeeded with ``result``, leaving what it
        ``writes`` (locations): Delta tables at their current versions, folders (checkpoints) present."""
        tables = [w for w in writes if table_version(w) is not None]
        record = {"key": self._keys[stage], "finished_at": datetime.now(UTC).isoformat(), "result": result,
                  "tables": {self.lake.relative(t): table_version(t) for t in tables},
                  "folders": [self.lake.relative(w) for w in writes if w not in tables]}
        write_atomic(self.lake.stage_record(stage), json.dumps(record, indent=1, default=str))


def snapshot_records(lake: Lake) -> dict:
    """Each snapshot's current record in ``features/_snapshots`` (its newest row: settings, the tables it
    is complete in, the raw versions its build read, ``updated_at``), by its UTC instant; empty without
    the log (``spark_jobs.sequences.snapshot_records``)."""
    from spark_jobs.sequences import snapshot_records as records

    return records(lake.root)


def sequence_records(lake: Lake) -> list[list]:
    """Each snapshot's current record (``snapshot_records``) without when it was written, sorted: the log
    gains rows on every sequence run, so its version is no measure of what the stages downstream read
    from it."""
    return [[str(t), *(str(v) for k, v in sorted(r.items()) if k not in ("snapshot_ts", "updated_at"))]
            for t, r in sorted(snapshot_records(lake).items())]


def checkpoint_configs(lake: Lake) -> dict[str, str]:
    """Each checkpoint under ``<lake>/_models`` with a hash of its ``config.json`` (the embedding suite
    reads the widths from there; a checkpoint added or changed since must run validation again)."""
    from encoders.model_store import CONFIG

    root = lake.models
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob(f"*/{CONFIG}")) if not p.parent.name.startswith(".")} \
        if root.is_dir() else {}
