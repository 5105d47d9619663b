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

**A lake on object storage** keeps its tables there and these folders in its *home*, a local or mounted
folder: ``$DUET_HOME/<scheme>/<bucket>/<prefix>/`` (``home_of``). They are written with Python's file API
(atomic renames, SQLite, a lock file), which S3 does not offer; a team gives ``DUET_HOME`` a persistent
volume of the machine that runs the driver (docs/OBJECT_STORAGE.md). Without ``DUET_HOME`` a command that
needs one of them stops, naming it. A local lake's home is its root.
Standard library only (and ``core.errors``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from core.errors import DuetError

MODELS, RANKERS, FEAST, QUALITY, STAGES = "_models", "_rankers", "_feast", "_quality", "_stages"
FOLDERS = (MODELS, RANKERS, FEAST, QUALITY, STAGES)
REGISTRY_FILE, ONLINE_FILE, SERVING_FILE = "registry.db", "online.db", "serving.json"
SERVING_LOCK = "serving.lock"
LATEST_QUALITY = "latest.json"
# The local folder under which the project folders of lakes on object storage live (module docstring).
HOME_VARIABLE = "DUET_HOME"
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


def home_of(root: str, base: str | Path) -> Path:
    """The home of the lake at URI ``root`` under ``base`` (a ``$DUET_HOME``): ``base/<scheme>/<bucket>/
    <prefix>``, so that one machine can hold the homes of several lakes."""
    parts = urlsplit(root)
    return Path(absolute(base), parts.scheme, parts.netloc, *[p for p in parts.path.split("/") if p])


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

    @property
    def home(self) -> Path:
        """Where the project's folders are: the root of a local lake; for a lake on object storage, its
        folder under ``$DUET_HOME`` (module docstring)."""
        if self.is_local:
            return Path(self.root)
        base = os.environ.get(HOME_VARIABLE)
        if not base:
            raise DuetError(f"the lake {self.root} is on object storage, and its models, Feast registry and "
                            f"online store, validation results and run records live on a local or mounted "
                            f"file system: set {HOME_VARIABLE} to a folder there (a persistent volume; "
                            "docs/OBJECT_STORAGE.md)")
        return home_of(self.root, base)

    def _local(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)

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
    def serving_lock(self) -> Path:
        """The file a publish, promote or retire holds locked while it runs (``serving.versions``)."""
        return self._local(FEAST, SERVING_LOCK)

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
        """``location`` relative to the root, or to the home for a project folder of a lake on object
        storage (for records that must not depend on where the lake is)."""
        text = str(location)
        if self.is_local:
            return os.path.relpath(text, self.root)
        if not is_uri(text):
            return os.path.relpath(text, self.home)
        return text.removeprefix(self.root + "/")

    def resolve(self, relative: str) -> str:
        """The location of ``relative`` (what ``relative`` gave) in this lake."""
        if relative.split("/", 1)[0] in FOLDERS:
            return str(self.home / relative)
        return self._path(relative)
