"""Online-offline consistency (``duet consistency``, issue 26): does the online store give, for a sample of
users, what the Delta rows of the version's fully published snapshot say it should?

What is compared. A model version ``V`` (default: the one the ``serving`` alias names) and its fully
published snapshot ``T`` in the online slot the record names for it (``_feast/serving.json``'s
``versions``, ``serving.versions``; or a snapshot given). The lake's rows of ``(V, T)`` in
``embeddings/user_embeddings`` (read with delta-rs, ``core.object_storage.delta_table``: local and S3
lakes) are the reference. ``sample`` of their users, drawn with ``seed`` (the same draw every run), are
read online through each reader path, each reading the slot the record names (``serving.online``):

* ``sdk``: ``serving.online.SdkReader`` (Feast's SDK) on ``V``'s views;
* ``fast``: ``serving.readers.fast_reader`` (Feast's SQLite or Redis layout read directly) on ``V``'s views;
* ``http``: ``serving.online.HttpReader`` on a running feature server (``duet serve``), when its URL is given;
* ``fast (contract views)``: when ``V`` is the served version, the contract views (the alias's copy that
  raw Feast clients read), through the fast path; named ``fast (contract views, stale)`` while the record
  marks them stale (a promote or a publish of the served version is rewriting them, or was killed doing
  it: running it again completes them).

Each path reads the stored rows raw (no ttl, no upper bound on their time) and classifies them here, so a
row of another snapshot is seen as such rather than as "missing":

* a sampled user of ``(V, T)`` is **matched** when both vectors are there, at snapshot ``T``, each within
  ``tolerance`` (absolute, per element) of Delta's; **missing** when either vector is absent (or of the
  wrong width: the readers report those missing too); otherwise a **mismatch**: a vector beyond the
  tolerance, or a row of another snapshot (a slot holding two snapshots: what a publish writing in place
  would leave when killed midway);
* the users *not* in ``(V, T)``: up to ``sample // 2`` (at least 1) drawn from the users of ``V``'s other
  snapshots from ``T - ttl`` on (earlier and later) and of other versions at ``T``, plus one id no table
  holds. A publish clears the slot it writes, so the slot holds no row for them: a row there is **extra**.
  Only a record written before slots (no ``slot``: the version's own views, published in place) keeps an
  earlier snapshot's row of ``V`` for a user ``T`` lacks: such a row is **carried** (what those readers
  served) when it is older than ``T``, within ``[T - ttl, T)``, and equal to ``V``'s Delta row at its own
  snapshot, **expired** when older than the ttl (reported missing by the readers: not extra); no row at
  all is **absent**. Every other row is **extra**: a row at ``T`` or later for a user ``T`` does not have,
  a vector no Delta row of ``V`` backs (another version's, a re-embedded snapshot not re-published), or
  only one of the two vectors.

Rates: mismatch and missing over the sampled users of ``(V, T)``; extra over the users sampled outside it.
``max_abs_diff``: the largest element-wise difference over the vectors of snapshot ``T`` compared. A
reader that fails (store down) counts every user missing and names its error. ``ConsistencyReport.ok``:
no mismatch, no missing, no extra and no reader error on any path (``duet consistency`` exits 1
otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from core.contracts import USER_EMBEDDINGS
from core.errors import DuetError
from core.lake import Lake, absolute
from serving.store import StoreConfig

ABSENT_USER = "__duet_consistency_absent__"    # an id no table holds: the store must not know it either
_FAR = datetime(9999, 1, 1, tzinfo=UTC)         # read every stored row, whatever its time
_BATCH = 256                                    # users per online read


@dataclass(frozen=True)
class ConsistencyConfig:
    """What to check: the deployment, the version (None: the alias's) and its snapshot (None: the
    version's fully published one), how many users of that snapshot to sample and with which seed, the
    tolerance (absolute, per element) and a feature server's URL (``duet serve``) to read through too."""

    store: StoreConfig
    model_version: str | None = None
    snapshot: datetime | None = None
    sample: int = 200
    seed: int = 0
    tolerance: float = 1e-6
    server_url: str | None = None


@dataclass
class PathResult:
    """One reader path's figures (module docstring); ``examples``: up to five user ids per finding."""

    path: str
    sampled: int
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    others_sampled: int = 0
    extra: int = 0
    carried: int = 0
    expired: int = 0
    max_abs_diff: float = 0.0
    error: str | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.sampled if self.sampled else 0.0

    @property
    def missing_rate(self) -> float:
        return self.missing / self.sampled if self.sampled else 0.0

    @property
    def extra_rate(self) -> float:
        return self.extra / self.others_sampled if self.others_sampled else 0.0

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.extra or self.error)

    def note(self, kind: str, user: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < 5:
            found.append(user)

    def line(self) -> str:
        out = (f"{self.path}: {self.sampled} sampled, mismatch {self.mismatch_rate:.2%} ({self.mismatched}), "
               f"missing {self.missing_rate:.2%} ({self.missing}), extra {self.extra_rate:.2%} "
               f"({self.extra} of {self.others_sampled} outside the snapshot; {self.carried} earlier "
               f"snapshot(s) carried), max abs diff {self.max_abs_diff:.3g}")
        if self.examples:
            out += "; e.g. " + ", ".join(f"{kind} {' '.join(users)}" for kind, users in self.examples.items())
        return out + (f"; reader failed: {self.error}" if self.error else "")

    def to_dict(self) -> dict:
        return {**self.__dict__, "mismatch_rate": self.mismatch_rate, "missing_rate": self.missing_rate,
                "extra_rate": self.extra_rate, "ok": self.ok}


@dataclass
class ConsistencyReport:
    """The check's result: which version and snapshot, on which store, and each path's figures.
    ``delta_rows``: the lake's rows of ``(V, T)`` now; ``published_users``: what the publish recorded
    (they differ when the snapshot was re-embedded after it was published); ``slot``: the online slot
    compared (None: a record from before slots); ``contract_stale``: the record marks the contract views
    stale (module docstring)."""

    model_version: str
    snapshot: str
    online_store: str
    served: str | None
    delta_rows: int
    published_users: int | None
    sample: int
    seed: int
    tolerance: float
    paths: list[PathResult]
    slot: str | None = None
    contract_stale: bool = False

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.paths)

    @property
    def mismatched(self) -> int:
        return max((p.mismatched for p in self.paths), default=0)

    @property
    def missing(self) -> int:
        return max((p.missing for p in self.paths), default=0)

    @property
    def extra(self) -> int:
        return max((p.extra for p in self.paths), default=0)

    def line(self) -> str:
        verdict = "consistent" if self.ok else "NOT consistent"
        slot = f" (slot {self.slot})" if self.slot else ""
        stale = ("; the contract views are marked stale (being rewritten, or a promote or publish rewriting "
                 "them was killed: run it again)") if self.contract_stale else ""
        return (f"consistency of {self.model_version} at {self.snapshot}{slot} on the {self.online_store} "
                f"online store: {verdict} ({len(self.paths)} reader path(s), {self.delta_rows:,} Delta rows)"
                f"{stale}")

    def lines(self) -> list[str]:
        return [p.line() for p in self.paths] + [self.line()]

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "paths"},
                "paths": [p.to_dict() for p in self.paths], "ok": self.ok}


# --------------------------------------------------------------------------------------------- the lake


def _seconds(value: datetime) -> int:
    return int(value.timestamp())


def published_snapshot(lake: str, version: str | None) -> tuple[str, datetime, dict]:
    """(version, snapshot, its record entry): the version named, else the alias's, and its fully
    published snapshot (``serving.versions``)."""
    from serving.versions import published_versions, record

    current = record(lake)
    version = version or current.get("model_version")
    if not version:
        raise DuetError("nothing is served and no model version was named: run `duet publish` first, or "
                        "name the version (--model-version)", fields=("model_version",))
    entry = published_versions(current).get(version)
    if not entry or not entry.get("snapshot"):
        known = ", ".join(published_versions(current)) or "none"
        raise DuetError(f"{version} has no fully published snapshot (published: {known}): nothing online "
                        "to compare", fields=("model_version",))
    return version, datetime.fromisoformat(entry["snapshot"]), entry


def _draw(users: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    ordered = sorted(set(users))
    if n >= len(ordered):
        return ordered
    return sorted(ordered[i] for i in rng.choice(len(ordered), size=n, replace=False))


def _vectors(table) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]]:
    out = {}
    for row in table.to_pylist():
        conversion = row["conversion_embedding"]
        out[(row["user_id"], _seconds(row["event_timestamp"]))] = (
            np.asarray(row["click_embedding"], np.float32),
            None if conversion is None else np.asarray(conversion, np.float32))
    return out


@dataclass(frozen=True)
class _Sample:
    users: list[str]                                  # of (V, T)
    others: list[str]                                 # outside it
    rows: dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]]   # V's Delta rows of all of them
    delta_rows: int


def sample_users(lake: str, version: str, snapshot: datetime, ttl: timedelta, n: int, seed: int) -> _Sample:
    """The seeded draw (module docstring) and ``version``'s Delta rows of every user drawn."""
    from core.object_storage import delta_table, is_delta_table

    location = Lake(lake).table(USER_EMBEDDINGS)
    if not is_delta_table(location):
        raise DuetError(f"no {USER_EMBEDDINGS.path} under {lake}: nothing to compare the online store with")
    table = delta_table(location)
    ids = ["user_id", "model_version"]
    at_t = table.to_pyarrow_table(columns=ids, filters=[("event_timestamp", "=", snapshot)])
    at_t_rows = list(zip(at_t.column("user_id").to_pylist(), at_t.column("model_version").to_pylist(),
                         strict=True))
    in_snapshot = [u for u, v in at_t_rows if v == version]
    if not in_snapshot:
        raise DuetError(f"no rows of {version} at {snapshot.isoformat()} in {USER_EMBEDDINGS.path}: the "
                        "published snapshot is gone from the lake (re-embedded or deleted since)")
    members = set(in_snapshot)
    recent = [("model_version", "=", version), ("event_timestamp", ">=", snapshot - ttl)]
    window = table.to_pyarrow_table(columns=["user_id"], filters=recent)
    pool = {u for u in window.column("user_id").to_pylist() if u not in members}
    pool |= {u for u, v in at_t_rows if v != version and u not in members}
    rng = np.random.default_rng(seed)
    users = _draw(in_snapshot, n, rng)
    others = _draw(sorted(pool), max(1, n // 2), rng) + [ABSENT_USER]
    rows = table.to_pyarrow_table(
        columns=["user_id", "event_timestamp", "click_embedding", "conversion_embedding"],
        filters=[("model_version", "=", version), ("user_id", "in", users + others)])
    return _Sample(users, others, _vectors(rows), len(in_snapshot))


# ------------------------------------------------------------------------------------------ the readers


def _read(reader, users: Sequence[str]):
    """Every stored row of ``users`` (no ttl: ``_FAR``, ttl 0), in batches; the first error, if any."""
    parts = [reader.read(list(users[i:i + _BATCH]), as_of=_FAR) for i in range(0, len(users), _BATCH)]
    stack = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    error = next((p.error for p in parts if p.error), None)
    return (stack("click"), stack("conversion"), stack("click_missing"), stack("conversion_missing"),
            stack("click_ts"), stack("conversion_ts"), error)


def _diff(online: np.ndarray, expected: np.ndarray | None) -> float:
    if expected is None or online.shape != expected.shape:
        return float("inf")
    if not len(expected):
        return 0.0
    value = float(np.max(np.abs(online.astype(np.float64) - expected.astype(np.float64))))
    return value if value == value else float("inf")        # NaN: never within a tolerance


def classify(name: str, reader, sample: _Sample, snapshot: datetime, ttl: timedelta,
             tolerance: float, carry: bool = False) -> PathResult:
    """One path's figures (module docstring); ``carry``: the views are published in place (a record from
    before slots, or the contract views), so an earlier snapshot's backed row within the ttl is carried."""
    t = _seconds(snapshot)
    oldest = t - int(ttl.total_seconds()) if ttl else 0
    result = PathResult(name, len(sample.users), others_sampled=len(sample.others))
    users = sample.users + sample.others
    click, conversion, click_missing, conversion_missing, click_ts, conversion_ts, result.error = _read(
        reader, users)
    for i, user in enumerate(sample.users):
        expected_click, expected_conversion = sample.rows[(user, t)]
        conversion_expected = expected_conversion is not None
        if click_missing[i] or (conversion_expected and conversion_missing[i]):
            result.missing += 1
            result.note("missing", user)
            continue
        if click_ts[i] != t or (conversion_expected and conversion_ts[i] != t) or (
                not conversion_expected and not conversion_missing[i]):
            result.mismatched += 1
            result.note("other snapshot", user)
            continue
        diff = max(_diff(click[i], expected_click),
                   _diff(conversion[i], expected_conversion) if conversion_expected else 0.0)
        if diff <= tolerance:
            result.matched += 1
        else:
            result.mismatched += 1
            result.note("mismatch", user)
        if diff != float("inf"):
            result.max_abs_diff = max(result.max_abs_diff, diff)
    for j, user in enumerate(sample.others, start=len(sample.users)):
        if click_missing[j] and conversion_missing[j]:
            continue                                                   # absent
        stamp = int(click_ts[j] if not click_missing[j] else conversion_ts[j])
        row = sample.rows.get((user, stamp))
        backed = (not click_missing[j] and not conversion_missing[j] and click_ts[j] == conversion_ts[j]
                  and row is not None and row[1] is not None
                  and _diff(click[j], row[0]) <= tolerance and _diff(conversion[j], row[1]) <= tolerance)
        if carry and stamp < t and backed and stamp >= oldest:
            result.carried += 1
        elif carry and stamp < oldest and stamp < t and backed:
            result.expired += 1
        else:
            result.extra += 1
            result.note("extra", user)
    return result


def check_consistency(cfg: ConsistencyConfig, log=print) -> ConsistencyReport:
    """Read the sample online through every path and compare it with the lake (module docstring)."""
    from serving.online import HttpReader, OnlineConfig, SdkReader, online_config
    from serving.readers import fast_reader
    from serving.store import feature_store
    from serving.versions import contract_views_stale, record, slot_of

    lake = absolute(cfg.store.lake)
    if cfg.sample < 1:
        raise DuetError(f"the sample must hold at least one user, not {cfg.sample}", fields=("sample",))
    if cfg.snapshot is None:
        version, snapshot, entry = published_snapshot(lake, cfg.model_version)
    else:
        version = cfg.model_version or record(lake).get("model_version")
        if not version:
            raise DuetError("nothing is served and no model version was named", fields=("model_version",))
        snapshot, entry = cfg.snapshot, {}
    store = feature_store(cfg.store)
    kind = store.config.online_store.type
    if entry.get("online_store") not in (None, kind):
        raise DuetError(f"{version} at {snapshot.isoformat()} was published to the {entry['online_store']} "
                        f"online store, not to this {kind} one: check that store (--redis), or publish here "
                        "first")
    online = online_config(store, version)
    sample = sample_users(lake, version, snapshot, online.ttl, cfg.sample, cfg.seed)
    raw = replace(online, ttl=timedelta(0))            # every stored row; classified against the ttl here
    readers = {"sdk": SdkReader(store, raw), "fast": fast_reader(cfg.store, raw)}
    if cfg.server_url:
        readers["http"] = HttpReader(cfg.server_url, raw, timeout_s=30.0)
    current = record(lake)
    served, slot = current.get("model_version"), slot_of(current, version)
    carry = slot is None            # published in place: earlier snapshots' rows stay (module docstring)
    stale = served == version and contract_views_stale(current)
    if served == version and (stale or current.get("contract_views") in (None, version)) \
            and cfg.snapshot is None:
        name = "fast (contract views, stale)" if stale else "fast (contract views)"
        readers[name] = fast_reader(
            cfg.store, OnlineConfig(online.click_dim, online.conversion_dim, timedelta(0)))
    paths = [classify(name, reader, sample, snapshot, online.ttl, cfg.tolerance, carry)
             for name, reader in readers.items()]
    report = ConsistencyReport(version, snapshot.isoformat(), kind, served, sample.delta_rows,
                               entry.get("users"), cfg.sample, cfg.seed, cfg.tolerance, paths, slot, stale)
    for line in report.lines():
        log(line)
    return report
