"""Model versions online: each in two slots of its own views, a ``serving`` alias moved in one atomic write.

* Every two-embedding model version has two slots of online views, ``a`` and ``b``
  (``feature_repo.catalog.slot_views``: click, conversion and the sequence summary). Versions N and N+1
  are online side by side (SQLite tables, Redis hash fields) and never share a row. A reader names the
  version it wants (``serving.online.OnlineConfig.model_version``; a ranker, the version its checkpoint
  records) and reads the slot the record names for it (``slot_of``).
* ``_feast/serving.json`` (``feature_repo.catalog.read_serving``) records, under ``versions``, each
  version's fully published snapshot and the slot that holds it. ``duet publish`` of V at S is
  blue-green (``serving.publish``): it clears the slot V's record does *not* name, materializes S into it,
  and only then names it in one atomic write (``core.files.write_atomic``). Until that write every reader
  of V reads the other slot, which holds V's previous snapshot whole; after it, every reader re-resolves
  (``serving.online``: the record is re-read when it changed). A publish killed at any instant leaves V's
  record naming a whole slot; the half-written one is reachable by no reader, and the next publish of V
  clears it first.
* The ``serving`` alias is that file's top level (``model_version`` at its ``snapshot`` in its ``slot``;
  ``previous``: the version it replaced). ``promote`` moves it to a version whose snapshot is fully
  published, in one atomic write: that write is the switch (readers of the alias resolve it there). Then
  it registers that version as the served one (the contract views' and the ``serving`` FeatureService's
  source) and refreshes the contract views (``user_click_embeddings``, ``user_conversion_embeddings``,
  ``user_sequence_summary``: a copy for clients that name them, such as raw ``feast serve``). Those are
  rewritten *in place* (cleared, then filled: on SQLite copied from the alias's slot in one transaction,
  ``copy_online_rows``; on Redis the snapshot materialized), so a raw-Feast client may read them
  half-written: the record says so, ``contract_views`` is None from the switch until the copy is whole,
  then the version (``duet consistency`` and ``duet status`` report them stale meanwhile); duet's own
  readers never read them when they name a version. A promote killed midway serves the new version whole
  through the alias; running it again completes the copy. ``rollback`` promotes ``previous``. ``retire``
  removes a version that is not served from the record, then deletes the rows of both its slots.
* One change at a time (``serving_lock``): a publish, promote, rollback or retire holds the lake's serving
  lock (``core.lake.Lake.serving_lock``, an ``flock`` the kernel releases when its holder dies) from its
  start to its end. A second one that starts meanwhile does not wait: it stops at once, before any read or
  write, saying it lost and which run holds the lock, so two publishes of different snapshots never
  interleave their writes into one slot and never both print "published". The lock is a file of the
  lake's home: it keeps out runs on this machine (or sharing that folder), not a writer elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import DuetError, ValidationFailed
from core.files import write_atomic
from core.lake import Lake, absolute
from feature_repo.catalog import (
    CLICK_VIEW,
    CONVERSION_VIEW,
    SLOTS,
    SUMMARY_VIEW,
    RepoSpec,
    read_serving,
    slot_views,
    spec_from_lake,
    version_views,
)
from serving.store import StoreConfig, apply, feature_store

# The views the alias's published snapshot is copied into: the contract's and the (unversioned) summary.
ALIAS_VIEWS = (CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW)
_ALIAS_FIELDS = ("snapshot", "slot", "users", "online_store", "published_at")


_HELD: set[str] = set()   # the serving locks this process holds (a publish that promotes takes it once)


@contextlib.contextmanager
def serving_lock(lake: str, what: str) -> Iterator[None]:
    """Hold the lake's serving lock for ``what`` (module docstring), or raise ``DuetError`` at once when
    another run holds it. Re-entrant within a process."""
    path = Lake(absolute(lake)).serving_lock
    key = str(path)
    if key in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another run"
            raise DuetError(f"{what} lost: {holder} holds {path} (one publish, promote or retire of a "
                            "lake at a time); this one changed nothing: run it again once that one ended"
                            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()}, since {datetime.now(UTC).isoformat()})".encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)          # closing releases the lock


def record(lake: str) -> dict:
    return read_serving(absolute(lake)) or {}


def write_record(lake: str, value: dict) -> None:
    write_atomic(Lake(absolute(lake)).serving_file, json.dumps(value, indent=1))


def published_versions(value: dict) -> dict[str, dict]:
    """Each version's fully published snapshot (``versions``; a record written before versions were kept
    apart names its one version at the top level)."""
    versions = dict(value.get("versions") or {})
    if not versions and value.get("model_version") and value.get("snapshot"):
        versions[value["model_version"]] = {k: value.get(k) for k in _ALIAS_FIELDS}
    return versions


def slot_of(value: dict, version: str) -> str | None:
    """The online slot ``value`` (a serving record) names for ``version``: None when it names none (never
    published, retired, or a record written before slots: ``feature_repo.catalog.slot_views``)."""
    return (published_versions(value).get(version) or {}).get("slot")


def contract_views_stale(value: dict) -> bool:
    """Whether ``value`` (a serving record) marks the contract views stale: the alias moved, or its
    version's snapshot changed, and the copy into them has not finished (module docstring). A record
    written before the mark existed (no ``contract_views``) is not stale."""
    return bool(value.get("model_version")) and "contract_views" in value and value["contract_views"] is None


def with_published(value: dict, version: str, entry: dict, serve: bool) -> dict:
    """``value`` with ``version``'s fully published snapshot ``entry`` (its slot included); with ``serve``
    the alias names it too, and the contract views are marked stale (``contract_views`` None) until
    ``refresh_contract_views`` has copied the new snapshot into them."""
    out = {**value, "versions": {**published_versions(value), version: entry}}
    if serve:
        out.update({"model_version": version, **{k: entry.get(k) for k in _ALIAS_FIELDS},
                    "contract_views": None})
        if value.get("model_version") not in (None, version):
            out["previous"] = value["model_version"]
    return out


def materialize(store, snapshot: datetime, views) -> None:
    """The snapshot's rows into ``views`` by its own window ``[T, T]`` (``serving.publish``). With a Spark
    session active (``duet publish``, ``promote`` and ``rollback`` start one), ``serving.spark_loader``
    writes them in Feast's layout, byte-equal to Feast's own writes (tested): on Redis from the
    executors, so no snapshot passes through the driver; on SQLite (the embedded default, one local file)
    from the driver, vectorized, in place of Feast's conversion of each value in Python. Otherwise, and
    for what the loader does not write (``spark_loader.NotLoadable``: another online store, a view whose
    source is not a ``SparkSource``, a type it has no encoder for), Feast's ``materialize``."""
    from pyspark.sql import SparkSession

    from serving.spark_loader import NotLoadable, load_views

    spark = SparkSession.getActiveSession()
    if spark is not None:
        try:
            load_views(spark, store, snapshot, list(views), log=lambda _: None)
            return
        except NotLoadable:
            pass                  # refused before anything was written
    feast_materialize(store, snapshot, views)


def feast_materialize(store, snapshot: datetime, views) -> None:
    """Feast's own ``materialize(T, T)`` of ``views`` (its progress bars and warnings kept quiet)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        store.materialize(snapshot, snapshot, feature_views=list(views))


def clear_views(store, names) -> None:
    """Delete every online row of the views ``names`` (the views stay registered). SQLite: one DELETE per
    table; Redis: Feast's own ``delete_table`` (the views' hash fields of every entity)."""
    from feast.infra.online_stores.sqlite import _table_id

    config = store.config
    online = store._get_provider().online_store
    for name in names:
        view = store.get_feature_view(name)
        if config.online_store.type == "redis":
            online.delete_table(config, view)
        elif config.online_store.type == "sqlite":
            conn = online._get_conn(config)
            table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
            with contextlib.suppress(Exception):        # a table never created holds no row
                conn.execute(f'DELETE FROM "{table}"')
            conn.commit()
        else:
            online.update(config, tables_to_delete=[view], tables_to_keep=[], entities_to_delete=[],
                          entities_to_keep=[], partial=True)
            online.update(config, tables_to_delete=[], tables_to_keep=[view], entities_to_delete=[],
                          entities_to_keep=[], partial=True)


def copy_online_rows(store, pairs) -> bool:
    """SQLite: the online rows of each (source view, target view) of ``pairs`` copied table to table, in
    one transaction (the views of a pair have the same features, so a row's key, name, value and stamps
    are the same in both). False, doing nothing, on another online store."""
    from feast.infra.online_stores.sqlite import _table_id

    config = store.config
    if config.online_store.type != "sqlite":
        return False
    versioning = config.registry.enable_online_feature_view_versioning
    conn = store._get_provider().online_store._get_conn(config)
    try:
        with conn:                                 # one transaction: committed whole, or rolled back
            for source, target in pairs:
                tables = [_table_id(config.project, store.get_feature_view(name), versioning)
                          for name in (source, target)]
                conn.execute(f'INSERT INTO "{tables[1]}" SELECT * FROM "{tables[0]}"')
    except sqlite3.OperationalError:               # a table missing: nothing copied, materialize instead
        return False
    return True


def refresh_contract_views(store, lake: str, value: dict) -> dict:
    """Copy the alias's snapshot into the contract views, in place (module docstring): cleared (no row of
    another version or snapshot stays), then filled: on SQLite copied from the alias's slot, which holds
    that snapshot (``copy_online_rows``), elsewhere (and for a record without a slot) materialized;
    ``value`` (the record, which marks them stale) is then written with ``contract_views`` naming the
    version, and returned."""
    clear_views(store, ALIAS_VIEWS)
    slot = value.get("slot")
    source = slot_views(value["model_version"], slot).names if slot else None
    if source is None or not copy_online_rows(store, zip(source, ALIAS_VIEWS, strict=True)):
        materialize(store, datetime.fromisoformat(value["snapshot"]), ALIAS_VIEWS)
    done = {**value, "contract_views": value["model_version"]}
    write_record(lake, done)
    return done


def all_online_views(version: str) -> tuple[str, ...]:
    """Every online view that may hold ``version``'s rows: both slots, and its views from before slots."""
    return (*version_views(version), *(name for slot in SLOTS for name in slot_views(version, slot).names))


@dataclass
class AliasReport:
    model_version: str
    snapshot: str
    previous: str | None
    online_store: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def promote(cfg: StoreConfig, version: str, log=print, verb: str = "promoted", allow_drift: bool = False,
            drift_gate: bool = True) -> AliasReport:
    """``_promote`` holding the lake's serving lock (module docstring)."""
    what = f"the promote of {version}" if verb == "promoted" else f"the rollback to {version}"
    with serving_lock(cfg.lake, what):
        return _promote(cfg, version, log, verb, allow_drift, drift_gate)


def _promote(cfg: StoreConfig, version: str, log=print, verb: str = "promoted", allow_drift: bool = False,
             drift_gate: bool = True) -> AliasReport:
    """Move the ``serving`` alias to ``version`` (module docstring). Refused unless ``version`` has a fully
    published snapshot on this online store, and (``drift_gate``; not for a rollback) unless it passes the
    cross-version stability gate against the served version (``serving.drift``; ``allow_drift`` moves the
    alias anyway and records the failed figures under ``promote_drift``)."""
    lake = absolute(cfg.lake)
    current = record(lake)
    entry = published_versions(current).get(version)
    if entry is None or not entry.get("snapshot"):
        known = ", ".join(published_versions(current)) or "none"
        raise DuetError(f"{version} has no fully published snapshot (published: {known}): run `duet publish "
                        f"--model-version {version}` first; the alias moves only to a version whose gate "
                        "passed and whose snapshot is wholly online")
    # --- stability gate (serving.drift): the candidate against the served version, before Feast loads --
    drift, serving_now = None, current.get("model_version")
    if drift_gate and serving_now not in (None, version):
        from serving.drift import cross_version_gate

        try:
            drift = cross_version_gate(lake, serving_now, version, datetime.fromisoformat(entry["snapshot"]),
                                       allow_drift)
        except ValidationFailed as e:
            raise ValidationFailed(f"not promoted, the alias still serves {serving_now}: {e}") from None
    # --- end stability gate ----------------------------------------------------------------------------
    store = feature_store(cfg)
    kind = store.config.online_store.type
    if entry.get("online_store") not in (None, kind):
        raise DuetError(f"{version} was published to the {entry['online_store']} online store, not to this "
                        f"{kind} one: publish it here first")
    served = current.get("model_version")
    if served == version and current.get("contract_views") == version:
        log(f"{version} is already served (at {entry['snapshot']})")
        return AliasReport(version, entry["snapshot"], current.get("previous"), kind)
    previous = current.get("previous") if served == version else served
    moved = {**current, "model_version": version, **{k: entry.get(k) for k in _ALIAS_FIELDS},
             "previous": previous, "promoted_at": datetime.now(UTC).isoformat(), "contract_views": None,
             "promote_drift": drift.to_dict() if drift else None}
    write_record(lake, moved)                       # the switch: one atomic write
    spec = spec_from_lake(lake)
    apply(store, RepoSpec(spec.lake, spec.versions, version), log)   # the contract views' source
    refresh_contract_views(store, lake, moved)
    report = AliasReport(version, entry["snapshot"], previous, kind)
    log(f"{verb}: serving {version} at {entry['snapshot']} on the {kind} online store"
        + (f" (was {previous}; `duet rollback` serves it again)" if previous else ""))
    return report


def rollback(cfg: StoreConfig, log=print) -> AliasReport:
    """Move the alias back to the version it named before the last promote."""
    with serving_lock(cfg.lake, "a rollback"):
        return _rollback(cfg, log)


def _rollback(cfg: StoreConfig, log=print) -> AliasReport:
    current = record(cfg.lake)
    previous = current.get("previous")
    if not previous:
        served = current.get("model_version") or "nothing"
        raise DuetError(f"nothing to roll back to: the alias names {served} and no version before it")
    return promote(cfg, previous, log, verb="rolled back", drift_gate=False)   # back to a known state


def retire(cfg: StoreConfig, version: str, log=print) -> int:
    """``_retire`` holding the lake's serving lock (module docstring)."""
    with serving_lock(cfg.lake, f"the retire of {version}"):
        return _retire(cfg, version, log)


def _retire(cfg: StoreConfig, version: str, log=print) -> int:
    """Remove ``version`` (not the served one) from the record, then delete its online rows (both slots,
    and its views from before slots); returns the number of views cleared."""
    lake = absolute(cfg.lake)
    current = record(lake)
    if current.get("model_version") == version:
        raise DuetError(f"{version} is served (the alias names it): promote another version before "
                        "retiring it")
    versions = published_versions(current)
    versions.pop(version, None)
    write_record(lake, {**current, "versions": versions,
                        "previous": None if current.get("previous") == version else current.get("previous")})
    store = feature_store(cfg)
    registered = {view.name for view in store.list_feature_views()}
    views = [name for name in all_online_views(version) if name in registered]
    if not views:
        raise DuetError(f"{version} has no online views in the registry: nothing of it is online")
    clear_views(store, views)
    log(f"retired {version}: its online rows are deleted from the {store.config.online_store.type} online "
        "store; it can no longer be promoted until published again")
    return len(views)
