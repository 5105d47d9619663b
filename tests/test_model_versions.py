"""Model versions online never mix (issue 26, acceptance 1), on SQLite and on a real Redis.

Version N is published and a ranker is trained on N's vectors (``ranker.train.train_ranker`` on a few
rows per user built from them) and saved (``ranker.checkpoint.save_ranker``, the record the ablation
writes: the version it was trained on); N+1 is published for a subset of the users
(a later snapshot at which only some are active, and some users only N+1 knows). The ranker's read
(``ranker.score``, the code ``duet score`` runs) and every reader naming N (SDK, Feast's feature server,
the fast path) return N's vectors or "missing", never N+1's; `duet promote` moves the alias to N+1,
whose readers then get N+1's vectors or "missing", never N's; `duet rollback` restores N; `duet retire`
deletes N+1's rows. A publish of N's next snapshot is read by no reader until its record write flips N's
slot, and then by every reader, those built before included (issue 26, acceptance 2). The lake is written
directly (``tests/feature_lake.py``); publishing runs the real gate, registry and materialization.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from core.errors import DuetError
from duet.cli import main as duet
from feature_repo.catalog import read_serving
from ranker.checkpoint import load_ranker, save_ranker
from ranker.config import RankerConfig
from ranker.data import SUMMARY_WIDTH, Batch
from ranker.score import checkpoint_version, online_vectors, score
from ranker.train import train_ranker
from serving.online import HttpReader, OnlineConfig, SdkReader, online_config
from serving.publish import PublishConfig, publish
from serving.readers import fast_reader
from serving.server import read_only_app
from serving.store import StoreConfig, feature_store
from serving.versions import promote, retire
from tests import feature_lake as fl
from tests.redis_server import free_port, redis_server

S1, S2 = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)
N, N1 = "duet-aaaaaaa", "duet-ccccccc"          # same widths: a vector of one would fit the other
DIMS = (8, 8)
ACTIVE = {S1: list(range(0, 30)), S2: list(range(20, 40))}   # N at S1; N+1 at S2 only (u020..u039)
USERS = [fl.user_id(i) for i in range(40)] + ["never-seen"]
AS_OF = S2 + timedelta(hours=1)   # N's S1 rows are 25 h old: within the 2-day ttl


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _lake(root) -> str:
    lake = str(root / "lake")
    for i, version in enumerate((N, N1)):
        fl.write_checkpoint(lake, version, DIMS[0], datetime(2026, 1, 1, i, tzinfo=UTC))
    fl.write_sequences(lake, ACTIVE)
    fl.write_embeddings(lake, fl.embedding_rows(ACTIVE[S1], S1, N, DIMS)
                        + fl.embedding_rows(ACTIVE[S2], S2, N1, DIMS))
    return lake


def _expected(version: str) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    snapshot = S1 if version == N else S2
    return {fl.user_id(u): (np.array(fl.vector(u, snapshot, version, "click", DIMS[0]), np.float32),
                            np.array(fl.vector(u, snapshot, version, "conversion", DIMS[1]), np.float32),
                            int(snapshot.timestamp()))
            for u in ACTIVE[snapshot]}


def _assert_only(result, version: str) -> None:
    """``result`` holds ``version``'s vector for exactly the users it has a row for, "missing" for every
    other user, and no vector of the other version anywhere."""
    expected, other = _expected(version), _expected(N1 if version == N else N)
    assert result.error is None, result.error
    for i, user in enumerate(result.user_ids):
        row = expected.get(user)
        assert result.click_missing[i] == result.conversion_missing[i] == (row is None), (version, user)
        if row is None:
            assert not result.click[i].any() and not result.conversion[i].any() and result.click_ts[i] == 0
        else:
            np.testing.assert_array_equal(result.click[i], row[0], err_msg=user)
            np.testing.assert_array_equal(result.conversion[i], row[1], err_msg=user)
            assert result.click_ts[i] == result.conversion_ts[i] == row[2]
        if user in other:
            assert not np.array_equal(result.click[i], other[user][0]), (version, user)


def _ranker_rows(users, snapshot: datetime, version: str, seed: int, clicks_each: int = 6) -> Batch:
    """Rows for a ranker trained on ``version``'s vectors at ``snapshot``: a few clicks per user, labels
    drawn from the click vector's first value (so the user vector says something), no summary."""
    rng = np.random.default_rng(seed)
    ids = [u for u in users for _ in range(clicks_each)]
    user = np.stack([np.concatenate([fl.vector(u, snapshot, version, "click", DIMS[0]),
                                     fl.vector(u, snapshot, version, "conversion", DIMS[1])])
                     for u in ids]).astype(np.float32)
    n = len(ids)
    label = (rng.random(n) < 1 / (1 + np.exp(-2 * user[:, 0]))).astype(np.float32)
    return Batch(ad=torch.from_numpy(rng.integers(1, 50, n)),
                 advertiser=torch.from_numpy(rng.integers(1, 10, n)), summary=torch.zeros(n, SUMMARY_WIDTH),
                 user=torch.from_numpy(user), user_missing=torch.zeros(n), label=torch.from_numpy(label),
                 user_ids=np.asarray([fl.user_id(u) for u in ids], dtype=object))


class _FeatureServer:
    """``duet serve``'s app (Feast's feature server, reads only) in a thread on a free loopback port."""

    def __init__(self, cfg: StoreConfig):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(read_only_app(feature_store(cfg)), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the feature server did not start"
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _readers(cfg: StoreConfig, server: _FeatureServer, version: str | None) -> dict:
    """The SDK, the feature server and the fast path, each reading ``version`` (None: the alias's)."""
    store = feature_store(cfg)
    online = online_config(store, version)
    return {"sdk": SdkReader(store, online), "http": HttpReader(server.url, online),
            "fast": fast_reader(cfg, online)}


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_versions_never_mix_and_the_alias_moves_by_promote_and_rollback(spark, backend, tmp_path, request):
    lake = _lake(tmp_path)
    redis = request.getfixturevalue("redis_url") if backend == "redis" else None
    cfg = StoreConfig(lake, redis=redis)
    store_flags = ["--redis", redis] if redis else []
    quiet = lambda _: None  # noqa: E731

    # 1. Version N published (nothing served before: the alias names it) and a ranker trained on it.
    first = publish(spark, PublishConfig(cfg, snapshot=S1, model_version=N), log=quiet)
    assert (first.model_version, first.served, first.users) == (N, N, 30)
    ranker_cfg = RankerConfig(max_epochs=3)
    model, _ = train_ranker(ranker_cfg, *(_ranker_rows(ACTIVE[S1], S1, N, seed) for seed in (0, 1)))
    save_ranker(lake, N, model, ranker_cfg, {"variant": "duet", "model_version": N})
    _, document = load_ranker(lake, N)
    assert checkpoint_version(document, N) == N
    with pytest.raises(DuetError, match=f"{N1} has no fully published snapshot"):
        promote(cfg, N1, log=quiet)       # nothing of N+1 is online yet: the alias cannot move to it

    # 2. N+1 published for a subset (u020..u039 at S2): its own views; the alias stays on N.
    second = publish(spark, PublishConfig(cfg, snapshot=S2, model_version=N1), log=quiet)
    assert (second.model_version, second.served, second.users) == (N1, N, 20)
    assert "not served: the alias names duet-aaaaaaa" in second.line()
    record = read_serving(lake)
    assert (record["model_version"], record["snapshot"]) == (N, S1.isoformat())
    assert {v: e["snapshot"] for v, e in record["versions"].items()} == {N: S1.isoformat(),
                                                                          N1: S2.isoformat()}

    server = _FeatureServer(cfg)
    try:
        # The ranker's read: N's vectors (u000..u029) or missing (u030..u039: only N+1 has them), never
        # N+1's (u020..u029 have both); through every reader naming N, and through the alias.
        ranker_read = online_vectors(feature_store(cfg), checkpoint_version(document, N), USERS, AS_OF)
        assert ranker_read.model_version == N
        _assert_only(ranker_read, N)
        for version in (N, None):
            for name, reader in _readers(cfg, server, version).items():
                result = reader.read(USERS, as_of=AS_OF)
                assert result.model_version == N, name
                _assert_only(result, N)
        # The contract views (raw Feast clients) still hold N only.
        _assert_only(fast_reader(cfg, OnlineConfig(*DIMS)).read(USERS, as_of=AS_OF), N)
        # N+1 read by name: its own rows, none of N's.
        for reader in _readers(cfg, server, N1).values():
            _assert_only(reader.read(USERS, as_of=AS_OF), N1)
        # `duet score` for a user both versions know: the ranker of N, N's S1 vector.
        _, read = score(feature_store(cfg), lake, N, "u025", [("ad0", "adv0"), ("ad1", "adv1")], AS_OF)
        assert read["model_version"] == N and read["embedding_snapshot"] == int(S1.timestamp())
        assert not read["embedding_missing"]

        # 3. `duet promote`: the alias serves N+1 (u000..u019, which N+1 lacks, are missing, not N's);
        #    the ranker of N still reads N.
        assert duet(["promote", "--lake", lake, "--model-version", N1, *store_flags]) == 0
        record = read_serving(lake)
        assert (record["model_version"], record["snapshot"], record["previous"]) == (N1, S2.isoformat(), N)
        for name, reader in _readers(cfg, server, None).items():
            result = reader.read(USERS, as_of=AS_OF)
            assert result.model_version == N1, name
            _assert_only(result, N1)
        _assert_only(fast_reader(cfg, OnlineConfig(*DIMS)).read(USERS, as_of=AS_OF), N1)
        _assert_only(online_vectors(feature_store(cfg), N, USERS, AS_OF), N)

        # 4. `duet rollback`: N again, through the alias and the contract views.
        assert duet(["rollback", "--lake", lake, *store_flags]) == 0
        assert (read_serving(lake)["model_version"], read_serving(lake)["previous"]) == (N, N1)
        for reader in _readers(cfg, server, None).values():
            _assert_only(reader.read(USERS, as_of=AS_OF), N)
        _assert_only(fast_reader(cfg, OnlineConfig(*DIMS)).read(USERS, as_of=AS_OF), N)

        # 5. `duet retire`: N+1's rows are gone (every user missing), N untouched; the served version
        #    cannot be retired, and a retired one cannot be promoted.
        assert duet(["retire", "--lake", lake, "--model-version", N, *store_flags]) == 1
        retire(cfg, N1, log=quiet)
        for reader in _readers(cfg, server, N1).values():
            gone = reader.read(USERS, as_of=AS_OF)
            assert gone.error is None and gone.click_missing.all() and gone.conversion_missing.all()
        for reader in _readers(cfg, server, N).values():
            _assert_only(reader.read(USERS, as_of=AS_OF), N)
        with pytest.raises(DuetError, match="no fully published snapshot"):
            promote(cfg, N1, log=quiet)
    finally:
        server.stop()


class _Killed(Exception):
    """Stands for a SIGKILL of the publish just before its record write (the flip)."""


@pytest.mark.integration
def test_a_publish_of_the_next_snapshot_is_read_only_once_the_record_flips(spark, tmp_path, monkeypatch):
    """Blue-green (``serving.publish``): N at S1 is in slot a; the publish of S2 writes slot b whole, and
    until the record names b every reader of N (built before, or after) reads S1, all of it; the one
    atomic write flips every reader built before it to S2 at its next read (users S2 lacks: missing,
    not S1's vectors)."""
    import sqlite3

    import serving.publish
    from feature_repo.catalog import slot_views
    from serving.versions import write_record

    lake = str(tmp_path / "lake")
    active = {S1: list(range(0, 30)), S2: list(range(10, 40))}
    fl.write_checkpoint(lake, N, DIMS[0], datetime(2026, 1, 1, tzinfo=UTC))
    fl.write_sequences(lake, active)
    fl.write_embeddings(lake, [row for snapshot, users in active.items()
                               for row in fl.embedding_rows(users, snapshot, N, DIMS)])
    cfg = StoreConfig(lake)
    quiet = lambda _: None  # noqa: E731
    assert publish(spark, PublishConfig(cfg, snapshot=S1, model_version=N), log=quiet).slot == "a"

    def only(result, snapshot: datetime, slot: str) -> None:
        assert result.error is None and result.slot == slot, (result.error, result.slot)
        for i, user in enumerate(result.user_ids):
            u = int(user[1:]) if user.startswith("u") else -1
            held = u in active[snapshot]
            assert result.click_missing[i] == result.conversion_missing[i] == (not held), (snapshot, user)
            if held:
                np.testing.assert_array_equal(result.click[i], fl.vector(u, snapshot, N, "click", DIMS[0]))
                np.testing.assert_array_equal(result.conversion[i],
                                              fl.vector(u, snapshot, N, "conversion", DIMS[1]))
                assert result.click_ts[i] == result.conversion_ts[i] == int(snapshot.timestamp())

    server = _FeatureServer(cfg)
    try:
        before = _readers(cfg, server, N) | {"alias": SdkReader(feature_store(cfg))}
        for reader in before.values():
            only(reader.read(USERS, as_of=AS_OF), S1, "a")

        flips = []

        def killed(lake_root, value):
            flips.append(value)
            raise _Killed

        monkeypatch.setattr(serving.publish, "write_record", killed)
        with pytest.raises(_Killed):
            publish(spark, PublishConfig(cfg, snapshot=S2, model_version=N), log=quiet)
        monkeypatch.undo()
        [flip] = flips
        assert (flip["versions"][N]["slot"], flip["snapshot"]) == ("b", S2.isoformat())
        assert flip["contract_views"] is None          # stale until the copy after the flip
        # Slot b holds S2 whole, and no reader reads it: the record still names a.
        with sqlite3.connect(str(feature_store(cfg).config.online_store.path)) as conn:
            stamps = conn.execute(f'SELECT count(*), min(event_ts), max(event_ts) FROM '
                                  f'"duet_{slot_views(N, "b").click}"').fetchone()
        assert stamps == (len(active[S2]), int(S2.timestamp()), int(S2.timestamp()))
        assert read_serving(lake)["versions"][N]["slot"] == "a"
        for reader in [*before.values(), *_readers(cfg, server, N).values()]:
            only(reader.read(USERS, as_of=AS_OF), S1, "a")

        write_record(lake, flip)           # what the killed publish was about to write
        for reader in before.values():
            only(reader.read(USERS, as_of=AS_OF), S2, "b")
    finally:
        server.stop()


def test_a_reader_follows_its_versions_slot_and_refuses_a_slot_published_to_another_store(tmp_path):
    """``SlotWatch`` without Spark or Feast: the slot the record names, re-read once the record is
    replaced; a record saying the slot was last published to another kind of store is an error (one
    record per lake), which the fast reader turns into every user missing, not into silent misses."""
    from core.lake import Lake
    from serving.fast import SqliteReader
    from serving.online import SlotWatch
    from serving.versions import write_record

    lake = str(tmp_path / "lake")
    Lake(lake).serving_file.parent.mkdir(parents=True)
    cfg = OnlineConfig(4, 4, model_version=N, lake=lake)
    write_record(lake, {"versions": {N: {"snapshot": S1.isoformat(), "slot": "a", "online_store": "sqlite"}}})
    watch = SlotWatch(cfg, "sqlite")
    assert watch.slot() == "a"
    write_record(lake, {"versions": {N: {"snapshot": S2.isoformat(), "slot": "b", "online_store": "sqlite"}}})
    assert watch.slot() == "b"
    write_record(lake, {"versions": {N: {"snapshot": S2.isoformat(), "slot": "a", "online_store": "redis"}}})
    with pytest.raises(DuetError, match="last published to the redis online store, not to this sqlite"):
        watch.slot()
    assert SlotWatch(cfg, "redis").slot() == "a" and SlotWatch(cfg).slot() == "a"
    sqlite3.connect(tmp_path / "online.db").close()          # a store that opens, with no table
    read = SqliteReader(str(tmp_path / "online.db"), cfg).read(["u0000001"])
    assert read.click_missing.all() and "redis online store" in read.error


def test_only_a_record_that_marks_them_says_the_contract_views_are_stale():
    from serving.versions import contract_views_stale

    assert contract_views_stale({"model_version": N, "contract_views": None})        # the copy is running
    assert not contract_views_stale({"model_version": N, "contract_views": N})        # the copy is whole
    assert not contract_views_stale({"model_version": N})        # written before the mark existed
    assert not contract_views_stale({})                          # nothing published
