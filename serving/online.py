"""The online read path for rankers: both embeddings of a batch of users, never an exception.

Three readers return the same ``Embeddings`` for the same store (tests compare them value for value):

* ``SdkReader``: Feast's Python SDK (``FeatureStore.get_online_features``) in the ranker's process;
* ``HttpReader``: Feast's feature server (``feast serve``, loopback by default) over HTTP/JSON;
* ``serving.fast``: Feast's own online layout read directly (SQLite query, Redis pipeline), for when the
  SDK's per-call cost dominates small lookups (BENCHMARKS.md).

Versions never mix: every reader reads the views of one model version (``OnlineConfig.model_version``),
which only that version's publishes write, so a row read carries its version (the view it is stored
under) and its snapshot (its event time). A ranker names the version its checkpoint was trained on
(``ranker.score``); ``online_config(store)`` without a version takes the one the ``serving`` alias names
in the lake's serving record (``serving.versions``) when the reader is built. A user without a row of
that version is missing, whatever other versions hold for them.

One snapshot at a time: a version has two online slots (``feature_repo.catalog.slot_views``) and the
serving record names the one that holds its published snapshot whole; a publish writes the other and
then flips the record (``serving.publish``). Every read asks ``SlotWatch`` which slot the record names
now (one ``os.stat`` of the record per read; the file is re-read only when it was replaced), so a reader
built before a publish follows the flip at its next read and never reads a slot being written.
``Embeddings.slot`` says which slot a read used (``ranker.score`` reads the summary of that slot).
``OnlineConfig`` without a version reads the contract's views (the alias's copy, rewritten in place
after a switch: for raw-Feast clients, not for duet's readers).

The documented default: a user the store does not know, or whose vectors are older than the views' ttl
at ``as_of`` (default: now), gets zero vectors and ``missing = True`` for that embedding; Feast itself
applies no ttl online (STACK.md), so this module does. Vectors of an unexpected width are reported
missing too. A failing store (server down, file gone) or an unreadable serving record yields every user
missing and ``error`` set: the serving path degrades, it never raises.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from core.errors import DuetError
from core.lake import Lake
from feature_repo.catalog import (
    CLICK_VIEW,
    CONVERSION_VIEW,
    SUMMARY_VIEW,
    SlotViews,
    slot_views,
    version_views,
)
from feature_repo.views import CLICK_FEATURE, CONVERSION_FEATURE, EMBEDDING_TTL

log = logging.getLogger(__name__)

FEATURES = (f"{CLICK_VIEW}:{CLICK_FEATURE}", f"{CONVERSION_VIEW}:{CONVERSION_FEATURE}")


@dataclass(frozen=True)
class OnlineConfig:
    """The widths the ranker expects, the ttl after which a stored vector counts as missing, the model
    version whose views are read (None: the contract's views, the alias's copy) and the lake whose
    serving record names that version's slot (None: no record; the views from before slots)."""

    click_dim: int
    conversion_dim: int
    ttl: timedelta = EMBEDDING_TTL
    model_version: str | None = None
    lake: str | None = None

    def at(self, slot: str | None) -> SlotViews:
        """The views read when the record names ``slot`` for the version."""
        if self.model_version is None:
            return SlotViews(CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW)
        return slot_views(self.model_version, slot)

    def views(self, slot: str | None) -> tuple[tuple[str, str], tuple[str, str]]:
        """(view, feature) of the click and the conversion embedding read in ``slot``."""
        names = self.at(slot)
        return (names.click, CLICK_FEATURE), (names.conversion, CONVERSION_FEATURE)

    def features(self, slot: str | None) -> list[str]:
        return [f"{view}:{feature}" for view, feature in self.views(slot)]


class SlotWatch:
    """The slot the lake's serving record names for ``cfg``'s version now (module docstring). The record
    is replaced by a rename (``core.files.write_atomic``), so its inode, size and mtime tell a new one;
    it is parsed only then. Raises when the record cannot be read, or (``store_kind`` given) when it says
    the version's slot was last published to another kind of online store: one record per lake names one
    slot per version, so a lake published to SQLite and then to Redis is read from Redis only (readers
    turn that into an error naming both, not into silently missing users)."""

    def __init__(self, cfg: OnlineConfig, store_kind: str | None = None):
        self.version = cfg.model_version
        self.path = Lake(cfg.lake).serving_file if cfg.lake and cfg.model_version else None
        self.store_kind = store_kind
        self._stamp: tuple | None = None
        self._slot: str | None = None
        self._elsewhere: str | None = None

    def slot(self) -> str | None:
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = ()
        if stamp != self._stamp:
            from serving.versions import slot_of

            value = json.loads(self.path.read_text()) if stamp else {}
            entry = ((value.get("versions") or {}).get(self.version)) or {}
            published = entry.get("online_store")
            self._elsewhere = published if self.store_kind and published not in (None, self.store_kind) \
                else None
            self._slot, self._stamp = slot_of(value, self.version), stamp
        if self._elsewhere:
            raise DuetError(f"{self.version}'s online slot was last published to the {self._elsewhere} "
                            f"online store, not to this {self.store_kind} one: publish it here again")
        return self._slot


@dataclass
class Embeddings:
    """Rows in the order of ``user_ids``. ``click``: (n, click_dim) float32, zeros where
    ``click_missing``; the same for ``conversion``; ``*_ts``: (n,) int64 epoch seconds of the snapshot
    each vector was computed for (0 when missing); ``error``: why the store could not be read, if so."""

    user_ids: list[str]
    click: np.ndarray
    conversion: np.ndarray
    click_missing: np.ndarray
    conversion_missing: np.ndarray
    click_ts: np.ndarray
    conversion_ts: np.ndarray
    error: str | None = None
    model_version: str | None = None    # the version every vector is of (None: the contract's views)
    slot: str | None = None             # the online slot read (None: the contract's views, or no record)


def served_version(store) -> str | None:
    """The model version the ``serving`` alias names: in the lake's serving record (the switch,
    ``serving.versions``), else in the registry (the contract views' tag)."""
    lake = lake_of(store)
    if lake:
        from feature_repo.catalog import read_serving

        version = (read_serving(lake) or {}).get("model_version")
        if version:
            return version
    try:
        return store.get_feature_view(CLICK_VIEW).tags.get("model_version") or None
    except Exception:  # noqa: BLE001 - nothing applied yet
        return None


def lake_of(store) -> str | None:
    """The lake of a store ``serving.store.feature_store`` built (None for another ``FeatureStore``)."""
    from serving.store import LAKE_ATTRIBUTE

    return getattr(store, LAKE_ATTRIBUTE, None)


def online_config(store, model_version: str | None = None) -> OnlineConfig:
    """The widths and ttl of ``model_version``'s online views (default: the version the ``serving`` alias
    names now), from the registry (``dim`` tags ``feature_repo`` sets), and the lake whose serving record
    names its slot."""
    version = model_version or served_version(store)
    if version is None:
        raise DuetError("no model version is served (nothing published): run `duet publish`, or name the "
                        "model version to read")
    try:
        click, conversion = (store.get_feature_view(view) for view in version_views(version))
    except Exception as e:  # noqa: BLE001 - Feast's not-found errors differ between registries
        raise DuetError(f"{version} has no online views in the registry ({type(e).__name__}): only the "
                        "lake's two-embedding model versions are online; run `duet publish "
                        f"--model-version {version}`") from None
    if not click.online or not conversion.online:
        raise DuetError(f"{version}'s views are not online: only two-embedding versions are published")
    return OnlineConfig(int(click.tags["dim"]), int(conversion.tags["dim"]), click.ttl or EMBEDDING_TTL,
                        version, lake_of(store))


def _column(values: Sequence, stamps: Sequence[int], dim: int, oldest: int, newest: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = np.zeros((len(values), dim), dtype=np.float32)
    missing = np.ones(len(values), dtype=bool)
    ts = np.zeros(len(values), dtype=np.int64)
    for i, (value, stamp) in enumerate(zip(values, stamps, strict=True)):
        if value is None or not stamp or not oldest <= stamp <= newest or len(value) != dim:
            continue
        out[i] = value
        missing[i] = False
        ts[i] = stamp
    return out, missing, ts


def assemble(user_ids: Sequence[str], cfg: OnlineConfig, as_of: datetime | None,
             click: tuple[Sequence, Sequence[int]], conversion: tuple[Sequence, Sequence[int]],
             slot: str | None = None) -> Embeddings:
    """``Embeddings`` from raw (values or None, event seconds or 0) per user, read in ``slot``, with the
    defaults applied: a vector counts if its snapshot is within ``[as_of - ttl, as_of]``."""
    now = int((as_of or datetime.now(UTC)).timestamp())
    oldest = now - int(cfg.ttl.total_seconds()) if cfg.ttl else 0
    c, cm, cts = _column(*click, cfg.click_dim, oldest, now)
    v, vm, vts = _column(*conversion, cfg.conversion_dim, oldest, now)
    return Embeddings(list(user_ids), c, v, cm, vm, cts, vts, model_version=cfg.model_version, slot=slot)


def all_missing(user_ids: Sequence[str], cfg: OnlineConfig, error: str) -> Embeddings:
    n = len(user_ids)
    log.warning("online read failed, serving defaults for %d user(s): %s", n, error)
    zeros = np.zeros(n, dtype=np.int64)
    return Embeddings(list(user_ids), np.zeros((n, cfg.click_dim), np.float32),
                      np.zeros((n, cfg.conversion_dim), np.float32), np.ones(n, bool), np.ones(n, bool),
                      zeros, zeros.copy(), error, cfg.model_version)


class SdkReader:
    """Both embeddings of ``cfg``'s model version (default: the alias's, ``online_config``), in the slot the
    record names at each read, through ``FeatureStore.get_online_features`` (the response's protobuf is
    read directly: ``to_dict`` converts every value through Python objects first)."""

    def __init__(self, store, cfg: OnlineConfig | None = None):
        self.store = store
        self.cfg = cfg or online_config(store)
        if self.cfg.model_version and not self.cfg.lake:
            self.cfg = replace(self.cfg, lake=lake_of(store))   # the slot this store's lake's record names
        self.watch = SlotWatch(self.cfg, store.config.online_store.type)

    def read(self, user_ids: Sequence[str], as_of: datetime | None = None) -> Embeddings:
        try:
            slot = self.watch.slot()
            response = self.store.get_online_features(features=self.cfg.features(slot),
                                                      entity_rows={"user_id": list(user_ids)})
            proto = response.proto
            names = list(proto.metadata.feature_names.val)
            columns = []
            for feature in (CLICK_FEATURE, CONVERSION_FEATURE):
                vector = proto.results[names.index(feature)]
                values = [list(v.float_list_val.val) if v.HasField("float_list_val") else None
                          for v in vector.values]
                columns.append((values, [t.seconds for t in vector.event_timestamps]))
            return assemble(user_ids, self.cfg, as_of, *columns, slot=slot)
        except Exception as e:  # noqa: BLE001 - the serving path degrades to defaults, never raises
            return all_missing(user_ids, self.cfg, f"{type(e).__name__}: {e}")


def _seconds(stamp: str) -> int:
    if not stamp:
        return 0
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


class HttpReader:
    """Both embeddings of ``cfg``'s model version from Feast's feature server (``POST
    /get-online-features``, naming the views of the slot the record names at each read: every slot's
    views are registered, so the server needs no registry refresh to follow a flip)."""

    def __init__(self, url: str, cfg: OnlineConfig, timeout_s: float = 2.0):
        import requests

        self.url = url.rstrip("/") + "/get-online-features"
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.session = requests.Session()  # keep-alive: one connection for every call
        self.watch = SlotWatch(cfg)

    def read(self, user_ids: Sequence[str], as_of: datetime | None = None) -> Embeddings:
        try:
            slot = self.watch.slot()
            request = {"features": self.cfg.features(slot), "entities": {"user_id": list(user_ids)}}
            reply = self.session.post(self.url, json=request, timeout=self.timeout_s)
            reply.raise_for_status()
            body = reply.json()
            names = body["metadata"]["feature_names"]
            columns = []
            for feature in (CLICK_FEATURE, CONVERSION_FEATURE):
                vector = body["results"][names.index(feature)]
                columns.append((vector["values"], [_seconds(t) for t in vector["event_timestamps"]]))
            return assemble(user_ids, self.cfg, as_of, *columns, slot=slot)
        except Exception as e:  # noqa: BLE001 - the serving path degrades to defaults, never raises
            return all_missing(user_ids, self.cfg, f"{type(e).__name__}: {e}")
