"""The loader (``serving.spark_loader``) against Feast's own materialization, on a real Redis (from the
executors) and on SQLite (from the driver).

One small lake (``tests/feature_lake.py``) and one registry; the version's click and conversion views
(``Array(Float32)`` and ``UnixTimestamp`` features, one source: one pass of the loader) and the sequence
summary (``Int32`` and ``Float32``, another source) are written at one snapshot by Feast's
``materialize(T, T)`` into Redis db 0 and by ``load_views`` into db 1. The two databases must hold
the same hashes byte for byte, and Feast's SDK must read the same values from both. The lake holds the
cases that could differ: a user whose snapshot row was re-written later (two rows, the later created one
wins), a user with no conversion vector (a null) and no sequence (no summary row), users with no conversion
sequence (zero counts, -1 hours), users present only at another snapshot (written by neither).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from feature_repo.catalog import SUMMARY_VIEW, spec_from_lake, version_views
from serving.spark_loader import load_views
from serving.store import StoreConfig, apply, feature_store
from serving.versions import feast_materialize
from tests import feature_lake as fl
from tests.redis_server import redis_server

EARLIER, SNAPSHOT = datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 13, tzinfo=UTC)
VERSION, DIMS = "duet-abcdef0", (8, 8)
USERS = 300
ACTIVE = {EARLIER: list(range(280, USERS + 20)), SNAPSHOT: list(range(USERS))}
REWRITTEN, NO_CONVERSION = 7, USERS           # u007: a second, later row at SNAPSHOT; u300: null vector


def _lake(root) -> str:
    lake = str(root / "lake")
    fl.write_checkpoint(lake, VERSION, DIMS[0], datetime(2026, 1, 1, tzinfo=UTC))
    fl.write_sequences(lake, ACTIVE)
    rows = [r for snapshot, users in ACTIVE.items()
            for r in fl.embedding_rows(users, snapshot, VERSION, DIMS)]
    rows += fl.embedding_rows([REWRITTEN], SNAPSHOT, VERSION, DIMS, revision=1)
    rows += fl.embedding_rows([NO_CONVERSION], SNAPSHOT, VERSION, (DIMS[0], None))
    fl.write_embeddings(lake, rows)
    return lake


def _hashes(store) -> dict[bytes, dict[bytes, bytes]]:
    client = store._get_provider().online_store._get_client(store.config.online_store)
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


@pytest.mark.integration
def test_executor_load_equals_feast_materialize_byte_for_byte(spark, tmp_path):
    lake = _lake(tmp_path)
    with redis_server(tmp_path / "redis") as url:
        feast_store = feature_store(StoreConfig(lake, redis=url))
        apply(feast_store, spec_from_lake(lake), log=lambda _: None)
        views = sorted([*version_views(VERSION), SUMMARY_VIEW])
        feast_materialize(feast_store, SNAPSHOT, views)

        loader_store = feature_store(StoreConfig(lake, redis=f"{url},db=1"))
        report = load_views(spark, loader_store, SNAPSHOT, views, batch_rows=64, log=lambda _: None)
        assert sorted(v for p in report.passes for v in p.views) == views
        assert len(report.passes) == 2, report.to_dict()   # the embeddings' source, the summary's
        embeddings = next(p for p in report.passes if p.duplicates)
        assert (embeddings.duplicates, embeddings.rows, embeddings.written) == (1, USERS + 1, USERS + 1)

        # (a) the raw hashes, field by field
        expected, loaded = _hashes(feast_store), _hashes(loader_store)
        assert len(expected) == USERS + 1
        assert loaded.keys() == expected.keys()
        for key, fields in expected.items():
            assert loaded[key] == fields, key

        # (b) what Feast's SDK reads from each
        features = [f"{v}:{f.name}" for v in views for f in feast_store.get_feature_view(v).features]
        users = [fl.user_id(i) for i in range(USERS + 20)] + ["never-seen"]
        rows = [{"user_id": u} for u in users]
        read = {name: s.get_online_features(features=features, entity_rows=rows,
                                           full_feature_names=True).to_dict()
                for name, s in (("feast", feast_store), ("loader", loader_store))}
        assert read["loader"].keys() == read["feast"].keys()
        for column, values in read["feast"].items():
            for user, want, got in zip(users, values, read["loader"][column], strict=True):
                if isinstance(want, list):
                    np.testing.assert_array_equal(np.array(got, np.float32), np.array(want, np.float32),
                                                  err_msg=f"{column} {user}")
                else:
                    assert got == want, (column, user)
        click, conversion, count = (next(c for c in read["feast"] if c.endswith(f"__{feature}"))
                                    for feature in ("click_embedding", "conversion_embedding", "click_count"))
        rewritten = fl.vector(REWRITTEN, SNAPSHOT, VERSION, "click", DIMS[0], revision=1)
        np.testing.assert_array_equal(read["loader"][click][REWRITTEN], np.array(rewritten, np.float32))
        assert read["loader"][conversion][NO_CONVERSION] is None
        assert read["loader"][count][NO_CONVERSION] is None                 # no sequence row
        assert all(read["loader"][click][i] is None for i in range(USERS + 1, len(users)))

        # Feast's dedup when skip_dedup is off: rows not newer than the stored ones are not written.
        loader_store.config.online_store.skip_dedup = False       # (duet's stores always skip)
        again = load_views(spark, loader_store, SNAPSHOT, version_views(VERSION), log=lambda _: None)
        assert sum(p.written for p in again.passes) == 0
        assert sum(p.skipped for p in again.passes) == sum(p.rows * len(p.views) for p in again.passes)
        assert _hashes(loader_store) == loaded


def _sqlite_rows(store, views) -> dict[str, list[tuple]]:
    from feast.infra.online_stores.sqlite import _table_id

    conn = store._get_provider().online_store._get_conn(store.config)
    return {v: conn.execute(f'SELECT * FROM "{_table_id(store.config.project, store.get_feature_view(v))}" '
                            "ORDER BY entity_key, feature_name").fetchall() for v in views}


@pytest.mark.integration
def test_driver_load_into_sqlite_equals_feast_materialize_row_for_row(spark, tmp_path):
    # The same lake and views as above, on the embedded default's SQLite online store: Feast's
    # materialize(T, T) first, its rows kept, the tables emptied, then load_views; every column of every
    # row must be equal (the value bytes, value_text, the stamps as stored) and the SDK must read the same.
    from serving.versions import clear_views

    lake = _lake(tmp_path)
    store = feature_store(StoreConfig(lake))
    apply(store, spec_from_lake(lake), log=lambda _: None)
    views = sorted([*version_views(VERSION), SUMMARY_VIEW])
    feast_materialize(store, SNAPSHOT, views)
    expected = _sqlite_rows(store, views)
    features = [f"{v}:{f.name}" for v in views for f in store.get_feature_view(v).features]
    rows = [{"user_id": fl.user_id(i)} for i in range(USERS + 20)] + [{"user_id": "never-seen"}]
    feast_read = store.get_online_features(features=features, entity_rows=rows).to_dict()

    clear_views(store, views)
    assert all(not r for r in _sqlite_rows(store, views).values())
    # In slices of at most 100 users (4 for the 301 embedded), as a snapshot of millions is read.
    report = load_views(spark, store, SNAPSHOT, views, batch_rows=64, log=lambda _: None, slice_rows=100)
    assert len(report.passes) == 2, report.to_dict()
    embeddings = next(p for p in report.passes if p.duplicates)
    assert (embeddings.duplicates, embeddings.written, embeddings.partitions) == (1, USERS + 1, 4)
    loaded = _sqlite_rows(store, views)
    assert {v: len(r) for v, r in loaded.items()} == {v: len(r) for v, r in expected.items()}
    assert all(len(r) > USERS for r in expected.values())
    for view in views:
        for want, got in zip(expected[view], loaded[view], strict=True):
            assert got == want, (view, want[:2])
    assert store.get_online_features(features=features, entity_rows=rows).to_dict() == feast_read


def test_what_the_loader_refuses_goes_to_feasts_materialize_and_other_errors_do_not(spark, monkeypatch):
    from core.errors import DuetError
    from serving import spark_loader, versions

    fed = []
    monkeypatch.setattr(versions, "feast_materialize", lambda store, snapshot, views: fed.append(list(views)))

    def refuse(*args, **kwargs):      # what _plan says of a view whose source is not a SparkSource
        raise spark_loader.NotLoadable("view v reads a FileSource: the loader reads SparkSources only")
    monkeypatch.setattr(spark_loader, "load_views", refuse)
    versions.materialize(object(), SNAPSHOT, ["v"])
    assert fed == [["v"]]

    def fail(*args, **kwargs):
        raise DuetError("the snapshot has no time zone")
    monkeypatch.setattr(spark_loader, "load_views", fail)
    with pytest.raises(DuetError, match="no time zone"):
        versions.materialize(object(), SNAPSHOT, ["v"])
    assert fed == [["v"]]
