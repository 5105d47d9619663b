"""What Spark and delta-rs are told about a lake on S3 (``core.object_storage``), and when a Spark session
gets S3A (``core.spark``): plain data, no Spark started. The jobs on a real S3 API server are in
tests/test_s3_lake.py (``make test-cluster``)."""

from __future__ import annotations

from datetime import date

import pytest

from core import object_storage as storage
from core.contracts import RAW_CLICKS
from core.spark import s3_jars, uses_s3

MOTO = {"DUET_S3_ENDPOINT": "http://127.0.0.1:9000/", "AWS_ENDPOINT_URL": "https://elsewhere.example",
        "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_only_an_s3a_uri_is_on_s3():
    assert storage.on_s3("s3a://bucket/lake") and storage.on_s3("S3A://bucket/lake")
    assert not any(map(storage.on_s3, ("/data/lake", "lake", "file:///data/lake", "hdfs://nn/lake")))
    assert storage.any_on_s3(["ingest", "--lake=s3a://bucket/lake"])
    assert storage.any_on_s3(["--clicks", "s3a://bucket/in/clicks.csv"])
    assert not storage.any_on_s3(["--lake", "/data/s3a-copy", "--note=s3a"])


def test_the_duet_endpoint_wins_and_a_custom_one_is_path_style_without_tls():
    settings = storage.spark_settings(MOTO)
    assert settings == {"spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
                        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
                        "spark.hadoop.fs.s3a.path.style.access": "true",
                        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}
    assert storage.delta_rs_options("s3a://bucket/lake/raw/clicks", MOTO) == {
        "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false", "AWS_ALLOW_HTTP": "true"}
    # No custom endpoint: AWS's S3, its defaults; the region from the SDK's fallback variable.
    assert storage.spark_settings({"AWS_DEFAULT_REGION": "us-west-2"}) == {
        "spark.hadoop.fs.s3a.endpoint.region": "us-west-2"}
    assert storage.delta_rs_options("s3a://b/t", {}) == {"AWS_REGION": "us-east-1"}
    assert storage.delta_rs_options("/data/lake/raw/clicks", MOTO) is None


@pytest.mark.parametrize("env", [MOTO, {}])
def test_no_secret_is_ever_a_setting(env):
    values = [*storage.spark_settings(env).values(), *storage.delta_rs_options("s3a://b/t", env).values()]
    assert "secret" not in values and "key" not in values


def test_a_session_gets_s3a_only_for_a_location_on_s3(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["duet", "ingest", "--lake", "/data/lake"])
    assert not uses_s3() and not uses_s3(["/data/lake"])
    assert uses_s3(["s3a://bucket/lake"])
    monkeypatch.setattr("sys.argv", ["duet", "sequences", "--lake", "s3a://bucket/lake"])
    assert uses_s3()
    (tmp_path / "hadoop-aws-3.4.2.jar").write_bytes(b"")
    (tmp_path / ".duet-stamp").write_text("x")
    assert s3_jars(tmp_path) == [str(tmp_path / "hadoop-aws-3.4.2.jar")]
    assert s3_jars(tmp_path / "absent") == []


def test_a_lake_on_s3_keeps_its_folders_in_its_home(tmp_path, monkeypatch):
    from core.errors import DuetError
    from core.lake import HOME_VARIABLE, Lake

    lake = Lake("s3a://bucket/team/lake/")
    monkeypatch.delenv(HOME_VARIABLE, raising=False)
    with pytest.raises(DuetError, match=f"set {HOME_VARIABLE}"):
        lake.model("duet-aaaaaaa")
    assert lake.table(RAW_CLICKS) == "s3a://bucket/team/lake/raw/clicks"    # the tables need no home
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path))
    home = tmp_path / "s3a" / "bucket" / "team" / "lake"
    assert lake.home == home and lake.models == home / "_models" and lake.registry.parent == home / "_feast"
    assert lake.day_record(date(2026, 1, 9), "embed").is_relative_to(home / "_stages")
    # Records name a model folder relative to the home and a table relative to the root, and resolve back.
    model, table = lake.model("duet-aaaaaaa"), "s3a://bucket/team/lake/raw/clicks"
    assert lake.relative(model) == "_models/duet-aaaaaaa" and lake.resolve(lake.relative(model)) == str(model)
    assert lake.relative(table) == "raw/clicks" and lake.resolve("raw/clicks") == table
    # A local lake's home is its root, whatever DUET_HOME says.
    local = Lake(str(tmp_path / "local"))
    assert local.home == tmp_path / "local" and local.models == tmp_path / "local" / "_models"


def test_arrow_reads_the_same_s3_server_as_spark_and_delta_rs(monkeypatch):
    for key, value in MOTO.items():
        monkeypatch.setenv(key, value)
    fs, path = storage.arrow_filesystem("s3a://bucket/landing/2026-01-09/_SUCCESS")
    assert fs.type_name == "s3" and path == "bucket/landing/2026-01-09/_SUCCESS"
    assert fs.region == "eu-west-1"
    local, where = storage.arrow_filesystem("/data/landing")
    assert local.type_name == "local" and where == "/data/landing"
