"""What publishing and serving must never do (issue 23): touch another lake's online store, take writes
over HTTP in the documented production set-up, or show a Redis password in the process list.

Real components only: a lake copied with ``cp -a`` and published by the real ``publish`` (Spark, GX,
Feast, SQLite); ``duet serve`` and ``feast serve`` as processes on loopback; a real ``redis-server``
with a password.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from core.errors import DuetError
from feature_repo.catalog import spec_from_lake
from serving.fast import SqliteReader
from serving.online import HttpReader, OnlineConfig
from serving.publish import PublishConfig, publish
from serving.store import StoreConfig, apply, feature_store
from tests import feature_lake as fl
from tests.conftest import REPO
from tests.redis_server import free_port, redis_server
from tests.test_feature_store import (
    ACTIVE,
    ALL_USERS,
    DUET,
    S2,
    S3,
    VERSIONS,
    FeatureServer,
    Server,
    _assert_reads,
    _delta_rows,
    _lake,
)

SQLITE_INFRA = "feast.infra.online_stores.sqlite.SqliteTable"


def _digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its SHA-256: a store nobody touched has the same digests."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tables(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def _recorded_paths(lake: str) -> set[str]:
    """The SQLite paths the lake's registry records for its online tables (read from the file)."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry.FromString((Path(lake) / "_feast" / "registry.db").read_bytes())
    return {o.sqlite_table.path for o in proto.infra.infra_objects
            if o.infra_object_class_type == SQLITE_INFRA}


def _read(lake: str, users: list[str]):
    reader = SqliteReader(str(Path(lake) / "_feast" / "online.db"), OnlineConfig(*VERSIONS[DUET]))
    try:
        return reader.read(users, as_of=S3)
    finally:
        if reader.conn is not None:
            reader.conn.close()


@pytest.mark.integration
def test_publishing_a_copied_lake_touches_only_the_copy(spark, tmp_path):
    # Lake A published (S2), then copied as a user would (cp -a: the copy's registry records A's paths).
    lake_a = _lake(tmp_path / "a")
    publish(spark, PublishConfig(StoreConfig(lake_a), snapshot=S2), log=lambda _: None)
    feast_a = Path(lake_a) / "_feast"
    tables_a, files_a = _tables(feast_a / "online.db"), _digests(feast_a)
    assert {"duet_user_click_embeddings", "duet_user_conversion_embeddings"} <= set(tables_a)
    lake_b = str(tmp_path / "b" / "lake")
    Path(lake_b).parent.mkdir()
    subprocess.run(["cp", "-a", lake_a, lake_b], check=True)
    assert _recorded_paths(lake_b) == {str(feast_a / "online.db")}

    lines: list[str] = []
    report = publish(spark, PublishConfig(StoreConfig(lake_b), snapshot=S3), log=lines.append)

    # A: not a byte changed (registry, online store), and it still serves S2.
    assert _tables(feast_a / "online.db") == tables_a
    assert _digests(feast_a) == files_a
    users = sorted(set(ACTIVE[S2]) | set(ACTIVE[S3]))
    ids = [f"u{i:03d}" for i in users]
    s2 = _delta_rows(lake_a, DUET, S2)
    got_a = _read(lake_a, ids)
    for i, user in enumerate(ids):
        assert got_a.click_missing[i] == (user not in s2), user
        if user in s2:
            np.testing.assert_array_equal(got_a.click[i], s2[user][0])
    # B: its own store holds S3 (the users S3 lacks: missing, the views being cleared before each copy);
    # its registry now names its own store.
    assert report.snapshot == S3.isoformat()
    s3 = _delta_rows(lake_b, DUET, S3)
    got_b = _read(lake_b, ids)
    for i, user in enumerate(ids):
        assert got_b.click_missing[i] == (user not in s3), user
        if user in s3:
            np.testing.assert_array_equal(got_b.click[i], s3[user][0])
            assert got_b.click_ts[i] == s3[user][2]
    assert _recorded_paths(lake_b) == {str(Path(lake_b) / "_feast" / "online.db")}
    assert any("re-homed" in line and str(feast_a / "online.db") in line for line in lines), lines


def _shared_registry_yaml(tmp_path: Path) -> str:
    """The default configuration with one registry for every lake (outside any lake)."""
    from serving.store import DEFAULT_YAML

    text = DEFAULT_YAML.read_text().replace("${DUET_LAKE}/_feast/registry.db",
                                            str(tmp_path / "shared" / "registry.db"))
    path = tmp_path / "shared.yaml"
    path.write_text(text)
    return str(path)


def test_a_registry_outside_the_lake_naming_another_store_is_refused(tmp_path):
    """A registry that is not the lake's own (here one file for two lakes) is another deployment's: the
    apply refuses, naming both stores, and neither the registry nor the other store changes."""
    yaml_path = _shared_registry_yaml(tmp_path)
    lake_a, lake_b = _lake(tmp_path / "a"), _lake(tmp_path / "b")
    store_a = feature_store(StoreConfig(lake_a, yaml_path=yaml_path))
    apply(store_a, spec_from_lake(lake_a))
    online_a = Path(lake_a) / "_feast" / "online.db"
    tables_a = _tables(online_a)
    assert "duet_user_click_embeddings" in tables_a
    before = {**_digests(tmp_path / "shared"), **_digests(Path(lake_a) / "_feast")}

    store_b = feature_store(StoreConfig(lake_b, yaml_path=yaml_path))
    with pytest.raises(DuetError) as refused:
        apply(store_b, spec_from_lake(lake_b))
    message = str(refused.value)
    assert str(online_a) in message and str(Path(lake_b) / "_feast" / "online.db") in message, message
    assert str(tmp_path / "shared" / "registry.db") in message
    assert _tables(online_a) == tables_a
    assert {**_digests(tmp_path / "shared"), **_digests(Path(lake_a) / "_feast")} == before


# --- Serving: reads only, on loopback; the Redis password never on a command line -------------------

PASSWORD = "s3cret-Pw_23"


def _put_online(cfg: StoreConfig, snapshot) -> dict[str, tuple]:
    """The served views' rows of ``snapshot`` written through Feast's SDK (registry apply, then
    ``write_to_online_store``: the publisher's store and writes, without a Spark materialization)."""
    import pandas as pd

    from feature_repo.catalog import CLICK_VIEW, CONVERSION_VIEW

    store = feature_store(cfg)
    apply(store, spec_from_lake(cfg.lake), log=lambda _: None)
    rows = _delta_rows(cfg.lake, DUET, snapshot)
    users = sorted(rows)
    for view, feature, column in ((CLICK_VIEW, "click_embedding", 0),
                                  (CONVERSION_VIEW, "conversion_embedding", 1)):
        store.write_to_online_store(view, pd.DataFrame({
            "user_id": users, feature: [rows[u][column].tolist() for u in users],
            "event_timestamp": [snapshot] * len(users), "created_timestamp": [snapshot] * len(users)}))
    return rows


def _listening(port: int) -> set[str]:
    """The local addresses a socket listens on at ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:
                    found.add("::1" if address == "0" * 24 + "01000000" else address)
    return found


@pytest.mark.integration
def test_the_production_server_serves_reads_only_on_loopback(tmp_path, monkeypatch):
    """``duet serve`` as infra/README.md runs it (Redis with a password from a file, no --host): it
    listens on loopback only, serves ``/get-online-features``, and refuses every write endpoint with the
    stored vectors unchanged; the password is on no command line. The control: the same write through
    plain ``feast serve`` overwrites the vector (what the read-only server is for)."""
    from feature_repo.catalog import CLICK_VIEW
    from serving.readers import fast_reader

    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.delenv("DUET_REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("DUET_REDIS_PASSWORD_FILE", str(secret))
    with redis_server(tmp_path / "redis", password=PASSWORD) as url:
        lake = _lake(tmp_path)
        cfg = StoreConfig(lake, redis=url)
        online = _put_online(cfg, S3)
        port = free_port()
        server = Server([sys.executable, "-m", "duet.cli", "serve", "--lake", lake, "--redis", url,
                         "--port", str(port)], port, tmp_path / "serve.log", dict(os.environ))
        user = fl.user_id(20)
        write = {"feature_view_name": CLICK_VIEW,
                 "df": {"user_id": [user], "click_embedding": [[9.0] * VERSIONS[DUET][0]],
                        "event_timestamp": [S3.isoformat()], "created_timestamp": [S3.isoformat()]}}
        try:
            assert _listening(port) == {"127.0.0.1"}
            assert PASSWORD not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
            reader = HttpReader(server.url, OnlineConfig(*VERSIONS[DUET]))
            _assert_reads(reader.read(ALL_USERS, as_of=S3), online, S3)
            attempts = {
                ("POST", "/write-to-online-store"): write,
                ("POST", "/push"): {"push_source_name": "x", "df": write["df"]},
                ("POST", "/materialize"): {"start_ts": S3.isoformat(), "end_ts": S3.isoformat()},
                ("POST", "/materialize-incremental"): {"end_ts": S3.isoformat()},
                ("GET", "/docs"): None, ("GET", "/openapi.json"): None,
                ("GET", "/get-online-features"): None,
            }
            for (method, path), body in attempts.items():
                reply = requests.request(method, server.url + path, json=body, timeout=10)
                assert reply.status_code == 403, (method, path, reply.status_code, reply.text)
                assert "read-only" in reply.json()["detail"], reply.text
            _assert_reads(reader.read(ALL_USERS, as_of=S3), online, S3)
            # The contract views (what _put_online wrote), as the HttpReader above reads them.
            contract = fast_reader(cfg, OnlineConfig(*VERSIONS[DUET]))
            _assert_reads(contract.read(ALL_USERS, as_of=S3), online, S3)
        finally:
            server.stop()

        plain = FeatureServer(cfg, tmp_path / "plain")   # the dev set-up: every endpoint open
        try:
            reply = requests.post(plain.url + "/write-to-online-store", json=write, timeout=30)
            assert reply.status_code == 200, reply.text
            overwritten = fast_reader(cfg, OnlineConfig(*VERSIONS[DUET])).read([user], as_of=S3)
            assert (overwritten.click[0] == 9.0).all()
        finally:
            plain.stop()


def test_a_redis_password_comes_from_the_environment_or_a_file_never_the_command_line(tmp_path, monkeypatch):
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.exceptions import AuthenticationError, ResponseError

    from serving.store import repo_config

    monkeypatch.delenv("DUET_REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("DUET_REDIS_PASSWORD_FILE", raising=False)
    with pytest.raises(DuetError) as refused:
        StoreConfig("lake", redis=f"127.0.0.1:6379,password={PASSWORD}")
    assert "DUET_REDIS_PASSWORD_FILE" in str(refused.value) and PASSWORD not in str(refused.value)

    def ping(cfg: StoreConfig) -> bool:
        return RedisOnlineStore()._get_client(repo_config(cfg).online_store).ping()

    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    with redis_server(tmp_path / "redis", password=PASSWORD) as url:
        cfg = StoreConfig(str(tmp_path / "lake"), redis=url)
        with pytest.raises((AuthenticationError, ResponseError)):
            ping(cfg)
        monkeypatch.setenv("DUET_REDIS_PASSWORD_FILE", str(secret))
        assert ping(cfg)
        monkeypatch.setenv("DUET_REDIS_PASSWORD", PASSWORD)
        with pytest.raises(DuetError, match="set one of"):
            ping(cfg)
        monkeypatch.delenv("DUET_REDIS_PASSWORD_FILE")
        assert ping(cfg)
        monkeypatch.setenv("DUET_REDIS_PASSWORD_FILE", str(tmp_path / "absent"))
        monkeypatch.delenv("DUET_REDIS_PASSWORD")
        with pytest.raises(DuetError, match="absent"):
            ping(cfg)
    # The file's first line, exactly: Feast json-decodes connection-string values, which would turn this
    # password into 1000.0 unless it is passed as a JSON string.
    secret.write_text("1e3\nnot part of it\n")
    monkeypatch.setenv("DUET_REDIS_PASSWORD_FILE", str(secret))
    with redis_server(tmp_path / "redis-2", password="1e3") as url:
        assert ping(StoreConfig(str(tmp_path / "lake"), redis=url))


def test_the_production_docs_serve_through_duet_serve_only():
    """infra/README.md and the README's feature-store section run the read-only server, never an open
    ``feast serve`` on every interface, and say where the Redis password comes from."""
    infra = (REPO / "infra" / "README.md").read_text()
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Feature store"):readme.index("### The ranker")]
    for text in (infra, section):
        assert "duet serve" in text and "DUET_REDIS_PASSWORD_FILE" in text
        assert "0.0.0.0" not in text
        assert "[,password=" not in text   # no connection string with a password in it is documented
