"""A lake on S3 (``s3a://bucket/lake``): what Spark's S3A file system and delta-rs are told about the
S3 server, from the environment. Standard library only; docs/OBJECT_STORAGE.md says what works on S3.

No credential is ever a setting here: Spark's S3A and delta-rs both read the AWS default chain themselves
(``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, a profile, an instance role),
so a secret is never on a command line, in a Spark setting (which Spark's UI and event log show) or in a
log. What is read:

``DUET_S3_ENDPOINT``   an S3 API server other than AWS's (MinIO, Ceph, moto in the tests), as a URL
                       (``http://127.0.0.1:9000``); else the AWS SDKs' own ``AWS_ENDPOINT_URL_S3`` or
                       ``AWS_ENDPOINT_URL``; none of them: AWS's S3
``AWS_REGION``         the bucket's region (else ``AWS_DEFAULT_REGION``, else ``us-east-1``)

A custom endpoint is addressed path-style (``http://host/bucket/key``: a server on an address has no
per-bucket host names) and, when it is ``http://``, without TLS.

Every delta-rs open of a table and every Arrow read of a file by location goes through ``delta_table``,
``is_delta_table`` and ``arrow_filesystem`` here (they import ``deltalake`` and ``pyarrow`` when called), so
that code reading the lake never needs to know where it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

ENDPOINT_VARIABLE = "DUET_S3_ENDPOINT"
ENDPOINT_VARIABLES = (ENDPOINT_VARIABLE, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_REGION = "us-east-1"
# The URI scheme of Hadoop's S3A file system, which Spark needs hadoop-aws for (scripts/setup.sh).
S3A = "s3a"


def on_s3(location: str | os.PathLike) -> bool:
    """Whether ``location`` is an ``s3a://`` URI."""
    return urlsplit(str(location)).scheme.lower() == S3A


def any_on_s3(locations: Sequence[str | os.PathLike]) -> bool:
    """Whether one of ``locations`` is an ``s3a://`` URI (a ``--flag=s3a://...`` argument counts)."""
    return any(on_s3(text) or on_s3(str(text).partition("=")[2]) for text in locations)


def endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The S3 API server's URL if it is not AWS's (module docstring), without a trailing slash."""
    env = os.environ if env is None else env
    return next((env[v].rstrip("/") for v in ENDPOINT_VARIABLES if env.get(v)), None)


def region(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return next((env[v] for v in REGION_VARIABLES if env.get(v)), DEFAULT_REGION)


def spark_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Hadoop S3A settings (as ``spark.hadoop.*``) for the S3 server the environment names. Credentials
    stay with S3A's default provider chain, which reads the environment variables above."""
    settings = {"spark.hadoop.fs.s3a.endpoint.region": region(env)}
    url = endpoint(env)
    if url:
        settings.update({
            "spark.hadoop.fs.s3a.endpoint": url,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(urlsplit(url).scheme == "https").lower(),
        })
    return settings


def delta_rs_options(location: str | os.PathLike,
                     env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """delta-rs ``storage_options`` for the table at ``location``: None for a local one. For S3, the
    endpoint and region; delta-rs reads credentials from the environment itself, and commits with S3's
    conditional put (put-if-absent) by default, so no locking provider and no unsafe rename."""
    if not on_s3(location):
        return None
    options = {"AWS_REGION": region(env)}
    url = endpoint(env)
    if url:
        options.update({"AWS_ENDPOINT_URL": url, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"})
        if urlsplit(url).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def delta_table(location: str | os.PathLike, version: int | None = None):
    """The delta-rs ``DeltaTable`` at ``location`` (at ``version``, else the latest), told where its S3
    server is if it is on S3. Raises deltalake's ``TableNotFoundError`` where there is no table."""
    from deltalake import DeltaTable

    return DeltaTable(str(location), version=version, storage_options=delta_rs_options(location))


def is_delta_table(location: str | os.PathLike) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(str(location), storage_options=delta_rs_options(location))


def arrow_filesystem(location: str | os.PathLike):
    """A pyarrow file system for ``location`` and the path to give it: the local one, or S3 (the same
    endpoint and region as Spark and delta-rs; credentials from the AWS default chain)."""
    from pyarrow import fs

    if not on_s3(location):
        return fs.LocalFileSystem(), str(location)
    parts = urlsplit(str(location))
    url = endpoint()
    options = {"region": region()}
    if url:
        options.update(endpoint_override=url, scheme=urlsplit(url).scheme)
    return fs.S3FileSystem(**options), f"{parts.netloc}{parts.path}"
