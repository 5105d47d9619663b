"""Online-offline consistency (``serving.consistency``, ``duet consistency``; issue 26), on SQLite and on a
real Redis.

One model version is published at two snapshots (``duet publish``'s real gate, registry and
materialization on a lake written directly, ``tests/feature_lake.py``): the check finds every sampled user
of the published snapshot online with Delta's vectors in the slot the record names, and no row for the
users only the earlier snapshot has (the publish wrote a cleared slot). Then that slot is damaged directly
(Feast's own ``online_write_batch``, a SQL ``DELETE`` or Redis ``HDEL``): one vector changed, one user's
rows deleted, one user's row put back at the earlier snapshot, a row of the earlier snapshot written for a
user the published one lacks, a row written for a user no table holds. The check counts exactly those, on
every reader path of the version's views, and the command exits 1.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

from duet.cli import main as duet
from feature_repo.catalog import read_serving, slot_views
from feature_repo.views import CLICK_FEATURE, CONVERSION_FEATURE
from serving.consistency import ABSENT_USER, ConsistencyConfig, check_consistency
from serving.publish import PublishConfig, publish
from serving.store import StoreConfig, feature_store
from tests import feature_lake as fl
from tests.redis_server import redis_server

S1, S2 = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)
V = "duet-aaaaaaa"
DIMS = (8, 8)
ACTIVE = {S1: list(range(0, 30)), S2: list(range(20, 40))}   # u000..u019 only at S1: no row at S2
VIEW_PATHS = ("sdk", "fast")
CONTRACT = "fast (contract views)"
quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _published(spark, root, redis: str | None) -> StoreConfig:
    lake = str(root / "lake")
    fl.write_checkpoint(lake, V, DIMS[0], datetime(2026, 1, 1, tzinfo=UTC))
    fl.write_sequences(lake, ACTIVE)
    fl.write_embeddings(lake, [r for s, u in ACTIVE.items() for r in fl.embedding_rows(u, s, V, DIMS)])
    cfg = StoreConfig(lake, redis=redis)
    for snapshot in (S1, S2):
        publish(spark, PublishConfig(cfg, snapshot=snapshot, model_version=V), log=quiet)
    return cfg


def _views(cfg: StoreConfig) -> tuple[str, str]:
    """The click and conversion views of the slot the record names for ``V``."""
    views = slot_views(V, read_serving(cfg.lake)["versions"][V]["slot"])
    return views.click, views.conversion


def _write(cfg: StoreConfig, view: str, user: str, values: dict[str, list[float]], at: datetime) -> None:
    """A row of ``view`` for ``user`` at ``at`` written as Feast writes it (SQLite upsert; Redis with
    skip_dedup), as a materialization writes them."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = feature_store(cfg)
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user)])
    row = {name: Value(float_list_val={"val": vector}) for name, vector in values.items()}
    store._get_provider().online_write_batch(store.config, store.get_feature_view(view), [(key, row, at, at)],
                                             None)


def _delete(cfg: StoreConfig, user: str) -> None:
    """Every row of ``user`` in the version's served slot, deleted behind Feast's back."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    from serving.fast import _field, entity_key

    store = feature_store(cfg)
    config = store.config
    views = dict(zip(_views(cfg), (CLICK_FEATURE, CONVERSION_FEATURE), strict=True))
    if config.online_store.type == "sqlite":
        with sqlite3.connect(str(config.online_store.path)) as conn:
            for view in views:
                conn.execute(f'DELETE FROM "{config.project}_{view}" WHERE entity_key = ?',
                             (entity_key(user),))
    else:
        client = RedisOnlineStore()._get_client(config.online_store)
        fields = [f for view, feature in views.items()
                  for f in (_field(view, feature), f"_ts:{view}".encode())]
        assert client.hdel(entity_key(user) + config.project.encode(), *fields) == len(fields)


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_consistency_counts_exactly_the_rows_damaged_online(spark, backend, tmp_path, request, capsys):
    redis = request.getfixturevalue("redis_url") if backend == "redis" else None
    cfg = _published(spark, tmp_path, redis)
    flags = ["--lake", cfg.lake, "--sample", "100", *(["--redis", redis] if redis else [])]

    # A clean publish: every user of S2 online with Delta's vectors on every path (the contract views
    # too, V being served), in slot b (S1 went to a); u000..u019 (S1 only) and the id no table has: no
    # row (the slot was cleared before S2 was written).
    clean = check_consistency(ConsistencyConfig(cfg, sample=100), log=quiet)
    assert (clean.model_version, clean.snapshot, clean.delta_rows, clean.published_users) == (
        V, S2.isoformat(), 20, 20)
    assert [p.path for p in clean.paths] == [*VIEW_PATHS, CONTRACT] and clean.ok
    assert (clean.slot, clean.contract_stale) == ("b", False)
    for p in clean.paths:
        assert (p.sampled, p.matched, p.mismatched, p.missing, p.max_abs_diff) == (20, 20, 0, 0, 0.0), p
        assert (p.others_sampled, p.carried, p.extra, p.error) == (21, 0, 0, None), p
    capsys.readouterr()
    assert duet(["consistency", *flags]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("sdk: 20 sampled, mismatch 0.00% (0), missing 0.00% (0)")
    assert json.loads(lines[-1])["ok"] is True

    # The same seed draws the same users; a smaller sample, a smaller draw.
    small = [check_consistency(ConsistencyConfig(cfg, sample=5, seed=7), log=quiet) for _ in range(2)]
    assert small[0].to_dict() == small[1].to_dict() and small[0].paths[0].sampled == 5
    assert small[0].paths[0].others_sampled == 3     # two of u000..u019 and the absent id

    # Damage V's served slot: u025's click vector changed; u026's click row put back at S1 (a snapshot
    # the publish of S2 replaced); u030 deleted; a conversion row of S1 for u005 (S2 lacks u005); a row
    # for an id no table holds.
    click_view, conversion_view = _views(cfg)
    _write(cfg, click_view, "u025", {CLICK_FEATURE: [9.0] * DIMS[0]}, S2)
    _write(cfg, click_view, "u026", {CLICK_FEATURE: fl.vector(26, S1, V, "click", DIMS[0])}, S1)
    _delete(cfg, "u030")
    _write(cfg, conversion_view, "u005", {CONVERSION_FEATURE: [0.5] * DIMS[1]}, S1)
    _write(cfg, click_view, ABSENT_USER, {CLICK_FEATURE: [1.0] * DIMS[0]}, S2)

    damaged = check_consistency(ConsistencyConfig(cfg, sample=100), log=quiet)
    assert not damaged.ok
    expected_diff = float(np.max(np.abs(9.0 - np.array(fl.vector(25, S2, V, "click", DIMS[0]), np.float32))))
    for p in damaged.paths[:2]:
        assert (p.sampled, p.matched, p.mismatched, p.missing) == (20, 17, 2, 1), p
        assert (p.others_sampled, p.carried, p.extra) == (21, 0, 2), p
        assert p.max_abs_diff == pytest.approx(expected_diff, rel=1e-6)
        assert p.examples == {"mismatch": ["u025"], "other snapshot": ["u026"], "missing": ["u030"],
                              "extra": ["u005", ABSENT_USER]}, p
        assert (p.mismatch_rate, p.missing_rate) == (0.1, 0.05) and p.extra_rate == pytest.approx(2 / 21)
    assert damaged.paths[2].path == CONTRACT and damaged.paths[2].ok    # the contract views were not touched
    capsys.readouterr()
    assert duet(["consistency", *flags]) == 1
    printed = capsys.readouterr().out
    assert "mismatch 10.00% (2), missing 5.00% (1), extra 9.52% (2 of 21" in printed
    assert json.loads(printed.strip().splitlines()[-1])["ok"] is False


def test_consistency_refuses_a_version_never_published(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    fl.write_checkpoint(lake, V, DIMS[0], datetime(2026, 1, 1, tzinfo=UTC))
    assert duet(["consistency", "--lake", lake]) == 1
    assert "nothing is served and no model version was named" in capsys.readouterr().err
    assert duet(["consistency", "--lake", lake, "--model-version", V]) == 1
    assert f"{V} has no fully published snapshot" in capsys.readouterr().err
