"""The feature store for real: Feast with the Spark offline store on Delta, SQLite and a real Redis.

A small lake is written directly (``tests/feature_lake.py``: sequences, checkpoints, embeddings of two
model versions over three snapshots, in seconds); publishing goes through the real gate (GX on Spark),
registry and materialization; reads go through Feast's SDK, its feature server over HTTP and the fast
path, and are compared with the Delta rows value for value.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from deltalake import DeltaTable

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from core.errors import ValidationFailed
from duet.validation import validate
from feature_repo.catalog import CLICK_VIEW, CONVERSION_VIEW, read_serving, spec_from_lake
from feature_repo.views import SUMMARY_FEATURES
from serving.fast import entity_key
from serving.online import HttpReader, SdkReader, online_config
from serving.publish import PublishConfig, gate, publish
from serving.readers import fast_reader
from serving.store import StoreConfig, apply, feature_store, render_yaml
from tests import feature_lake as fl
from tests.conftest import REPO
from tests.redis_server import free_port, redis_server

S1, S2, S3 = (datetime(2026, 1, d, tzinfo=UTC) for d in (10, 11, 13))
ACTIVE = {S1: list(range(0, 30)), S2: list(range(5, 35)), S3: list(range(10, 40))}
DUET, SHARED = "duet-aaaaaaa", "shared-bbbbbbb"
VERSIONS = {DUET: (8, 8), SHARED: (16, None)}
ALL_USERS = [fl.user_id(i) for i in range(40)] + ["never-seen"]
FEAST = str(REPO / ".venv" / "bin" / "feast") if (REPO / ".venv/bin/feast").exists() else "feast"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _lake(root: Path) -> str:
    lake = str(root / "lake")
    fl.build(lake, ACTIVE, VERSIONS)
    return lake


def _delta_rows(lake: str, version: str, snapshot: datetime) -> dict[str, tuple]:
    table = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(
        filters=[("model_version", "=", version)])
    return {r["user_id"]: (np.array(r["click_embedding"], np.float32),
                           None if r["conversion_embedding"] is None
                           else np.array(r["conversion_embedding"], np.float32),
                           int(snapshot.timestamp()))
            for r in table.to_pylist() if r["event_timestamp"] == snapshot}


def _assert_reads(result, expected: dict[str, tuple], as_of: datetime, ttl: timedelta = timedelta(days=2)):
    """``result`` holds exactly the expected vectors of users whose snapshot is within the ttl at
    ``as_of``, and zeros with the missing flag for everyone else."""
    assert result.error is None, result.error
    for i, user in enumerate(result.user_ids):
        row = expected.get(user)
        fresh = row is not None and as_of - ttl <= datetime.fromtimestamp(row[2], UTC) <= as_of
        assert result.click_missing[i] == result.conversion_missing[i] == (not fresh), user
        if fresh:
            np.testing.assert_array_equal(result.click[i], row[0], err_msg=user)
            np.testing.assert_array_equal(result.conversion[i], row[1], err_msg=user)
            assert result.click_ts[i] == result.conversion_ts[i] == row[2]
        else:
            assert not result.click[i].any() and not result.conversion[i].any() and result.click_ts[i] == 0


class Server:
    """A server process on a free loopback port, ready once ``GET /health`` answers 200."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[:4]} did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class FeatureServer(Server):
    """``feast serve`` on a free loopback port for the deployment ``cfg`` (its rendered yaml)."""

    def __init__(self, cfg: StoreConfig, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "feature_store.yaml").write_text(render_yaml(cfg))
        port = free_port()
        super().__init__([FEAST, "-c", str(folder), "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--no-access-log"], port, folder / "serve.log",
                         {**os.environ, "DUET_LAKE": cfg.lake})


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_publish_replaces_and_every_read_path_returns_the_delta_rows(spark, backend, tmp_path, request):
    lake = _lake(tmp_path)
    cfg = StoreConfig(lake, redis=request.getfixturevalue("redis_url") if backend == "redis" else None)
    online: dict[str, tuple] = {}   # what the online store should hold: user -> (click, conversion, ts)
    hour = timedelta(hours=1)

    # 0. On SQLite, `duet validate` first: its whole-table pass is the gate's verdict while the rows it
    #    read are unchanged (serving.publish); on Redis the gate runs.
    if backend == "sqlite":
        validated = validate(spark, lake, tables=[USER_EMBEDDINGS.path])
        [result] = validated.tables
        assert result.success and set(result.versions) == {
            USER_EMBEDDINGS.path, CLICK_SEQUENCES.path, CONVERSION_SEQUENCES.path}, result

    # 1. An explicit snapshot: its rows, and nothing for users it does not hold.
    report = publish(spark, PublishConfig(cfg, snapshot=S2), log=lambda _: None)
    assert (report.model_version, report.snapshot, report.users) == (DUET, S2.isoformat(), len(ACTIVE[S2]))
    assert report.gate_reused == (backend == "sqlite")
    if backend == "sqlite":
        assert report.gate_results == validated.results_dir
    assert report.online_store == backend
    online.update(_delta_rows(lake, DUET, S2))
    store = feature_store(cfg)
    config = online_config(store)
    assert (config.click_dim, config.conversion_dim) == VERSIONS[DUET]
    server = FeatureServer(cfg, tmp_path / "serve")
    try:
        readers = {"sdk": SdkReader(store), "http": HttpReader(server.url, config), "fast": fast_reader(cfg)}
        for reader in readers.values():
            _assert_reads(reader.read(ALL_USERS, as_of=S2 + hour), online, S2 + hour)

        # 2. The default (the latest snapshot) replaces the whole snapshot (the readers above follow it):
        #    the users it lacks are missing, not served S2's vectors (serving.publish).
        #    (revalidate: the gate runs even where the pass above still holds.)
        latest = publish(spark, PublishConfig(cfg, revalidate=True), log=lambda _: None)
        assert latest.snapshot == S3.isoformat() and not latest.gate_reused
        online = _delta_rows(lake, DUET, S3)
        for as_of in (S3, S3 + timedelta(hours=1)):
            for reader in readers.values():
                _assert_reads(reader.read(ALL_USERS, as_of=as_of), online, as_of)
        stale = readers["sdk"].read(["u005", "u012"], as_of=S3 + timedelta(hours=1))
        assert list(stale.click_missing) == [True, False]

        # 3. S3 re-embedded after a fix: the same event time, new vectors; the re-publish replaces them.
        fixed = fl.embedding_rows(ACTIVE[S3], S3, DUET, VERSIONS[DUET], revision=1)
        fl.write_embeddings(lake, fixed, predicate=f"model_version = '{DUET}' AND "
                                                   f"event_timestamp = '{S3:%Y-%m-%d %H:%M:%S}'")
        assert not publish(spark, PublishConfig(cfg, snapshot=S3), log=lambda _: None).gate_reused
        before = online[fl.user_id(20)]
        online.update(_delta_rows(lake, DUET, S3))
        assert not np.array_equal(before[0], online[fl.user_id(20)][0])
        for reader in readers.values():
            _assert_reads(reader.read(ALL_USERS, as_of=S3), online, S3)

        # 3b. A pass of a whole snapshot (`duet validate --snapshot`, as `duet daily` runs it before it
        #     publishes) is the gate's verdict for that snapshot, and for no other.
        #     (The gate alone: publish asks it first, as steps 1 and 2 show.)
        if backend == "sqlite":
            validate(spark, lake, tables=[USER_EMBEDDINGS.path], snapshots=[S2])
            assert not gate(spark, lake, DUET, S3).reused
            checked = validate(spark, lake, tables=[USER_EMBEDDINGS.path], snapshots=[S3])
            again = gate(spark, lake, DUET, S3)
            assert again.reused and again.success and again.results_dir == checked.results_dir

        # 4. Corrupt vectors (NaN, a wrong width, a duplicate key): the gate names each failed
        #    expectation and nothing changes online. (The gate runs before any store is touched, so one
        #    backend shows it.)
        if backend == "redis":
            return
        bad = fl.embedding_rows(ACTIVE[S3], S3, DUET, VERSIONS[DUET], revision=2)
        bad[0]["click_embedding"][3] = float("nan")
        bad[1]["conversion_embedding"] = bad[1]["conversion_embedding"][:-1]
        bad.append(dict(bad[2]))
        fl.write_embeddings(lake, bad, predicate=f"model_version = '{DUET}' AND "
                                                 f"event_timestamp = '{S3:%Y-%m-%d %H:%M:%S}'")
        with pytest.raises(ValidationFailed) as failed:
            publish(spark, PublishConfig(cfg, snapshot=S3), log=lambda _: None)
        message = str(failed.value)
        assert message.startswith(f"nothing published: {DUET} at {S3.isoformat()} failed")
        for words in ("every vector value is finite", "vector widths match",
                      "one row per user_id, event_timestamp, model_version"):
            assert words in message, (words, message)
        for reader in readers.values():
            _assert_reads(reader.read(ALL_USERS, as_of=S3), online, S3)
        assert read_serving(lake)["snapshot"] == S3.isoformat()
    finally:
        server.stop()


def test_the_fast_path_key_is_feasts_entity_key():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for user in ("u001", "", "ünïcode-user", "x" * 300):
        proto = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user)])
        assert entity_key(user) == serialize_entity_key(proto, entity_key_serialization_version=3)


def test_a_store_that_cannot_be_read_gives_defaults_not_an_exception(tmp_path):
    from serving.fast import SqliteReader
    from serving.online import OnlineConfig

    cfg = OnlineConfig(click_dim=4, conversion_dim=4)
    readers = (SqliteReader(str(tmp_path / "absent.db"), cfg), HttpReader("http://127.0.0.1:9", cfg, 0.5))
    for reader in readers:
        result = reader.read(["a", "b"])
        assert result.error and result.click_missing.all() and result.conversion_missing.all()
        assert result.click.shape == (2, 4) and not result.click.any()


@pytest.fixture(scope="module")
def offline_lake(spark, tmp_path_factory):
    """The lake with the shared model's S3 rows removed, registered (no publish needed offline)."""
    lake = _lake(tmp_path_factory.mktemp("offline"))
    DeltaTable(USER_EMBEDDINGS.location(lake)).delete(
        f"model_version = '{SHARED}' AND event_timestamp = '{S3:%Y-%m-%d %H:%M:%S}'")
    store = feature_store(StoreConfig(lake))
    apply(store, spec_from_lake(lake))
    return lake, store


@pytest.mark.integration
def test_historical_features_take_the_latest_row_within_the_ttl_for_two_versions(offline_lake):
    lake, store = offline_lake
    hour = timedelta(hours=1)
    # (user, entity time) -> (snapshot of the duet row, snapshot of the shared row), worked out by hand
    # from ACTIVE (S1: u000-u029, S2: u005-u034, S3: u010-u039; shared has no S3) and the ttl (2 days).
    cases = [
        ("u005", S1 - hour, None, None),        # before the first snapshot
        ("u005", S1, S1, S1),                   # exactly at a snapshot: that snapshot
        ("u005", S2 - timedelta(seconds=1), S1, S1),
        ("u005", S2, S2, S2),
        ("u000", S2 + hour, S1, S1),            # not in S2: S1, 25 h old, within the ttl
        ("u000", S3, None, None),               # S1 is 3 days old at S3: outside the ttl
        ("u012", S3, S3, S2),                   # shared's S2 row is exactly 2 days old: still in
        ("u012", S3 + 5 * hour, S3, None),      # ... and 2 days 5 h later it is not
        ("u035", S2, None, None),               # not active before S3
        ("u039", S3, S3, None),
    ]
    entity_df = pd.DataFrame({"user_id": [c[0] for c in cases], "event_timestamp": [c[1] for c in cases],
                              "row": list(range(len(cases)))})
    duet, shared = (spec_from_lake(lake).versions[i][0] for i in (0, 1))
    assert (duet, shared) == (DUET, SHARED)
    features = [f"{CLICK_VIEW}_duet_aaaaaaa:click_embedding",
                f"{CONVERSION_VIEW}_duet_aaaaaaa:conversion_embedding",
                f"{CLICK_VIEW}_shared_bbbbbbb:click_embedding",
                *(f"user_sequence_summary:{name}" for name in SUMMARY_FEATURES)]
    result = store.get_historical_features(entity_df=entity_df, features=features,
                                           full_feature_names=True).to_df().sort_values("row")
    assert len(result) == len(cases)
    assert (fl.summary(39, S3)["conversions_7d"], fl.summary(39, S3)["conversion_count"]) == (3, 4)
    rows = {(v, s): _delta_rows(lake, v, s) for v in (DUET, SHARED) for s in ACTIVE}
    for (user, _, duet_at, shared_at), (_, got) in zip(cases, result.iterrows(), strict=True):
        click = got[f"{CLICK_VIEW}_duet_aaaaaaa__click_embedding"]
        conversion = got[f"{CONVERSION_VIEW}_duet_aaaaaaa__conversion_embedding"]
        other = got[f"{CLICK_VIEW}_shared_bbbbbbb__click_embedding"]
        if duet_at is None:
            assert click is None or (not isinstance(click, list | np.ndarray) and pd.isna(click)), user
        else:
            np.testing.assert_array_equal(np.asarray(click, np.float32), rows[(DUET, duet_at)][user][0])
            np.testing.assert_array_equal(np.asarray(conversion, np.float32), rows[(DUET, duet_at)][user][1])
        if shared_at is None:
            assert other is None or (not isinstance(other, list | np.ndarray) and pd.isna(other)), user
        else:
            np.testing.assert_array_equal(np.asarray(other, np.float32), rows[(SHARED, shared_at)][user][0])
        # The summary view's snapshot is the duet one here (both follow the sequences). u039's oldest
        # conversion is outside the 7-day window: conversions_7d 3 of conversion_count 4.
        if duet_at is not None:
            want = fl.summary(int(user[1:]), duet_at)
            for name, value in want.items():
                assert got[f"user_sequence_summary__{name}"] == pytest.approx(value, abs=1e-4), (user, name)


def test_a_feature_service_per_model_version_and_one_for_serving(offline_lake):
    _, store = offline_lake
    services = {s.name: s for s in store.list_feature_services()}
    assert set(services) == {"duet_aaaaaaa", "shared_bbbbbbb", "serving"}
    views = lambda s: sorted(p.name for p in services[s].feature_view_projections)  # noqa: E731
    assert views("duet_aaaaaaa") == [f"{CLICK_VIEW}_duet_aaaaaaa", f"{CONVERSION_VIEW}_duet_aaaaaaa",
                                     "user_sequence_summary"]
    assert views("shared_bbbbbbb") == [f"{CLICK_VIEW}_shared_bbbbbbb", "user_sequence_summary"]
    assert views("serving") == [CLICK_VIEW, CONVERSION_VIEW, "user_sequence_summary"]
    click = store.get_feature_view(CLICK_VIEW)
    assert click.tags == {"model_version": DUET, "dim": "8", "embedding": "click"}
    assert store.get_feature_view(f"{CLICK_VIEW}_shared_bbbbbbb").tags["dim"] == "16"
    assert not store.get_feature_view(f"{CLICK_VIEW}_shared_bbbbbbb").online


@pytest.mark.integration
def test_the_feast_command_line_sees_what_duet_registered(offline_lake):
    """``feast plan`` on the repository as is (it imports feature_repo/, starts its own Spark from the
    yaml's spark_conf and validates the sources): the objects the publisher registered, nothing else."""
    lake, _ = offline_lake
    result = subprocess.run([FEAST, "-c", "feature_repo", "plan"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "DUET_LAKE": lake}, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Feast reports every view "Updated" on each plan: its diff compares the sources' meta timestamps,
    # which a fresh parse always sets anew (the same holds after `feast apply`). Nothing is created or
    # deleted, and no online table changes.
    assert "No changes to infrastructure" in result.stdout, result.stdout[-3000:]
    changes = [line for line in result.stdout.splitlines() if line.startswith(("Created ", "Deleted "))]
    assert changes == [], changes
    assert not (REPO / "feature_repo" / "spark-warehouse").exists()  # feature_repo/ holds definitions only


def test_configurations_put_the_store_under_the_lake_and_redis_never_dedups(tmp_path, monkeypatch):
    from serving.store import repo_config

    monkeypatch.delenv("DUET_LAKE", raising=False)
    lake = tmp_path / "lake"
    default = repo_config(StoreConfig(str(lake)))
    assert default.registry.path == f"{lake}/_feast/registry.db"
    assert default.online_store.type == "sqlite" and default.online_store.path == f"{lake}/_feast/online.db"
    spark_conf = default.offline_store.spark_conf
    assert spark_conf["spark.sql.session.timeZone"] == "UTC" and "Delta" in spark_conf["spark.sql.extensions"]
    redis = repo_config(StoreConfig(str(lake), redis="127.0.0.1:6390"))
    assert (redis.online_store.type, redis.online_store.connection_string, redis.online_store.skip_dedup) == \
        ("redis", "127.0.0.1:6390", True)

    monkeypatch.setenv("DUET_REDIS", "redis-1:6379,password=x")
    monkeypatch.setenv("SPARK_MASTER", "spark://spark-head:7077")
    production = repo_config(StoreConfig("s3a://duet-lake/lake",
                                         yaml_path=str(REPO / "infra/feast/feature_store.yaml")))
    assert production.online_store.type == "redis" and production.online_store.skip_dedup
    assert production.online_store.connection_string == "redis-1:6379,password=x"
    assert production.offline_store.spark_conf["spark.master"] == "spark://spark-head:7077"
    assert production.offline_store.spark_conf["spark.sql.session.timeZone"] == "UTC"
    assert production.batch_engine.type == "spark.engine"
    assert production.registry.path.startswith("s3://")
