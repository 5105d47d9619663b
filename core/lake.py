"""The lake's layout, owned in one place: every path under a lake root is spelled here.

A lake is a folder (or any Hadoop URI such as ``s3a://bucket/lake``) holding the contract's Delta tables
(``core.contracts``: ``raw/clicks``, ``features/click_sequences``, ...) and the project's own folders:

=============  ==============================================================================
``_models``    one folder per model version: a checkpoint or an imported embedding's record
``_rankers``   one folder per ranker, named by the model version it ranks with
``_feast``     the Feast registry, the embedded SQLite online store, ``serving.json`` (what is served)
``_quality``   one folder per validation run, and ``latest.json``
``_stages``    the demo's stage records (``duet.stage_cache``); ``_stages/daily/<YYYY-MM-DD>/``: the records
               of ``duet daily`` per day and step, and ``_stages/daily.lock`` (one daily run at a time)
=============  ==============================================================================

Code asks a ``Lake`` for a path, never joins these names itself (``tests/test_lake_layout.py`` fails on a
spelling elsewhere), so that moving a folder, or the whole lake to object storage, is a change here.
Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Protocol

MODELS, RANKERS, FEAST, QUALITY, STAGES = "_models", "_rankers", "_feast", "_quality", "_stages"
FOLDERS = (MODELS, RANKERS, FEAST, QUALITY, STAGES)
REGISTRY_FILE, ONLINE_FILE, SERVING_FILE = "registry.db", "online.db", "serving.json"
LATEST_QUALITY = "latest.json"
DAILY = "daily"
# A validation run's folder is named by its UTC instant, so names sort as the runs happened.
QUALITY_RUN_FORMAT = "%Y%m%dT%H%M%SZ"


class Table(Protocol):
    """What ``Lake.table`` needs of a ``core.contracts.Table``: its path under the root. (``core.contracts``
    asks this module for its tables' locations, so this module cannot import it.)"""

    @property
    def path(self) -> str: ...


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names a location by URI (``s3a://...``, ``file:///...``) rather than a local path."""
    return "://" in str(path)


def absolute(path: str | Path) -> str:
    """A local path made absolute against this process's working directory (Spark would resolve a
    relative one against the JVM's, and Delta's SQL ``delta.`path``` takes no relative path); a URI as
    given, without a trailing slash."""
    text = str(path)
    return text.rstrip("/") if is_uri(text) else os.path.abspath(text)


@dataclass(frozen=True)
class Lake:
    """A lake root and every path under it. ``root`` is kept absolute (``absolute``)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", absolute(self.root))

    @property
    def is_local(self) -> bool:
        return not is_uri(self.root)

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _local(self, *parts: str) -> Path:
        if not self.is_local:
            raise NotImplementedError(f"{'/'.join(parts)} of a lake on object storage ({self.root}) is not "
                                      "supported yet: keep the lake on a local or mounted file system")
        return Path(self.root, *parts)

    def table(self, table: Table) -> str:
        """A contract table's location (a path or URI, what Spark and delta-rs open)."""
        return self._path(table.path)

    # The project's folders: local paths (``Path``), as the code that writes them needs a file system.
    @property
    def models(self) -> Path:
        return self._local(MODELS)

    def model(self, version: str) -> Path:
        return self._local(MODELS, version)

    @property
    def rankers(self) -> Path:
        return self._local(RANKERS)

    def ranker(self, name: str) -> Path:
        return self._local(RANKERS, name)

    @property
    def feast(self) -> Path:
        return self._local(FEAST)

    @property
    def registry(self) -> Path:
        return self._local(FEAST, REGISTRY_FILE)

    @property
    def online_db(self) -> Path:
        return self._local(FEAST, ONLINE_FILE)

    @property
    def serving_file(self) -> Path:
        return self._local(FEAST, SERVING_FILE)

    @property
    def quality(self) -> Path:
        return self._local(QUALITY)

    def quality_run(self, run_at: datetime) -> Path:
        """The folder of the validation run at ``run_at`` (an instant in UTC)."""
        return self._local(QUALITY, run_at.strftime(QUALITY_RUN_FORMAT))

    @property
    def latest_quality(self) -> Path:
        """The newest validation run's summary."""
        return self._local(QUALITY, LATEST_QUALITY)

    def stage_record(self, stage: str) -> Path:
        return self._local(STAGES, f"{stage.replace(' ', '_')}.json")

    def day_record(self, day: date, step: str) -> Path:
        """The record of ``duet daily``'s ``step`` for the snapshot of ``day`` (``duet.daily``)."""
        return self._local(STAGES, DAILY, day.isoformat(), f"{step}.json")

    @property
    def daily_lock(self) -> Path:
        """The file a ``duet daily`` run holds locked while it runs (``duet.daily``)."""
        return self._local(STAGES, f"{DAILY}.lock")

    def relative(self, location: str | Path) -> str:
        """``location`` relative to the root (for records that must not depend on where the lake is)."""
        text = str(location)
        return os.path.relpath(text, self.root) if self.is_local else text.removeprefix(self.root + "/")

    def resolve(self, relative: str) -> str:
        """The location of ``relative`` (what ``relative`` gave) under this lake's root."""
        return self._path(relative)
