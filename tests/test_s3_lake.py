"""duet on a lake on S3: `duet ingest` and `duet sequences` against ``s3a://<bucket>/lake`` on a real S3 API
server (moto's, started here on loopback), their tables compared row for row with a local lake built from
the same files; the server killed in the middle of a job; `duet validate` without ``DUET_HOME``; and `duet
backfill` and `duet daily` end to end on ``s3a://<bucket>/daily`` against a local lake
(docs/OBJECT_STORAGE.md).

Marked ``cluster``: run by ``make test-cluster``, not ``make test``. Each command is a cold `duet` process, as
a user runs it. The server keeps its objects in memory; it is started with moto's request recorder, so a
restart can replay every request it had received and come back with its objects (what a real S3 does).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from benchmarks.daily_faults import digest
from core.contracts import (
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    INGEST_LOG,
    QUARANTINE_CLICKS,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    USER_EMBEDDINGS,
)
from core.lake import Lake
from core.object_storage import ENDPOINT_VARIABLE, delta_rs_options
from tests.conftest import REPO, SHORT_RUN_ENV

pytestmark = pytest.mark.cluster

BUCKET = "duet-lake"
CLICKS = """click_id,user_id,ad_id,advertiser_id,click_ts
c1,u1,a1,v1,2026-01-05T10:00:00Z
c2,u1,a2,v1,2026-01-06T10:00:00Z
c3,u2,a1,v2,2026-01-06T11:00:00Z
c4,u2,a3,v2,2026-01-07T09:00:00Z
c5,u3,a1,v1,not-a-time
"""
CONVERSIONS = (
    "conversion_id,user_id,advertiser_id,conversion_type,conversion_ts,report_ts,attributed_click_id,value\n"
    "v1,u1,v1,purchase,2026-01-06T11:00:00Z,2026-01-06T12:00:00Z,c2,9.5\n"
    "v2,u2,v2,signup,2026-01-07T10:00:00Z,2026-01-07T10:30:00Z,c4,1.0\n"
)
FIRST, SECOND = "2026-01-07", "2026-01-08"
# Credentials as a user gives them: in the environment, never on a command line. moto accepts any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "duet-test", "AWS_SECRET_ACCESS_KEY": "duet-test-secret",
               "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Forwarder:
    """The server's address (``port``): connections forwarded to the moto process behind it. Closed, its
    port refuses connections and the open ones are cut, as when a server dies; opened again (on the same
    port) once a new moto process holds the objects, so no client ever sees a half-restored server."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.server: socketserver.ThreadingTCPServer | None = None
        self.sockets: set[socket.socket] = set()

    def open(self, backend: int) -> None:
        sockets = self.sockets

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    upstream = socket.create_connection(("127.0.0.1", backend))
                except OSError:
                    return
                sockets.update((self.request, upstream))
                pump = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
                pump.start()
                _pump(self.request, upstream)
                pump.join()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Pipe)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for s in list(self.sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class S3Server:
    """moto's S3 server, as a subprocess on loopback behind ``url``. moto keeps objects in memory only (it
    has no persistence); its request recorder logs every request to a file, and ``start(replay=True)``
    replays that log into a new moto process before ``url`` answers again: a restart that keeps the
    objects, as a real S3 server's does."""

    def __init__(self, folder: Path):
        self.front = _Forwarder()
        self.url = f"http://127.0.0.1:{self.front.port}"
        self.recording = folder / "requests.jsonl"
        self.log = folder / "moto.log"
        self.process: subprocess.Popen | None = None

    def start(self, replay: bool = False) -> None:
        port = _free_port()
        env = {**os.environ, "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(self.recording)}
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        backend = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{backend}/moto-api/", timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        if replay:   # into this process, by its own address; the replay itself is not recorded again
            request = urllib.request.Request(f"{backend}/moto-api/recorder/replay-recording", method="POST")
            with urllib.request.urlopen(request, timeout=300):
                pass
        self.front.open(port)

    def stop(self) -> None:
        self.front.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def requests(self) -> list[str]:
        """The recorded requests' lines so far."""
        return self.recording.read_text().splitlines() if self.recording.exists() else []


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A running S3 server with an empty bucket; this process's environment names it (as the `duet`
    processes' does), for the delta-rs reads here."""
    import boto3

    server = S3Server(tmp_path_factory.mktemp("s3"))
    env = {**CREDENTIALS, ENDPOINT_VARIABLE: server.url}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            server.start()
            boto3.client("s3", endpoint_url=server.url, region_name=CREDENTIALS["AWS_REGION"]).create_bucket(
                Bucket=BUCKET)
            yield server
        finally:
            server.stop()


def _duet(*args: str) -> subprocess.CompletedProcess:
    """A cold `duet` command, with the S3 server in its environment (os.environ, set by ``s3``)."""
    return subprocess.run([str(REPO / ".venv/bin/duet"), *args, "--master", "local[1]"], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env={**SHORT_RUN_ENV, **os.environ})


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "clicks.csv").write_text(CLICKS)
    (folder / "conversions.csv").write_text(CONVERSIONS)
    return str(folder / "clicks.csv"), str(folder / "conversions.csv")


@pytest.fixture(scope="module")
def local_lake(spark, inputs, tmp_path_factory) -> str:
    """The same files through the same jobs into a local lake (in this process's session): the reference."""
    from core.snapshots import parse_snapshot
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import SequenceConfig, build_sequences

    lake = str(tmp_path_factory.mktemp("local") / "lake")
    ingest(spark, IngestConfig(lake=lake), *inputs)
    build_sequences(spark, lake, [parse_snapshot(FIRST), parse_snapshot(SECOND)], SequenceConfig())
    return lake


@pytest.fixture(scope="module")
def s3_lake(s3, inputs) -> tuple[str, str, str]:
    """`duet ingest` then `duet sequences` (the first snapshot) on ``s3a://<bucket>/lake``: (lake, the two
    commands' outputs)."""
    lake = f"s3a://{BUCKET}/lake"
    ingested = _ok(_duet("ingest", "--lake", lake, "--clicks", inputs[0], "--conversions", inputs[1]))
    sequenced = _ok(_duet("sequences", "--lake", lake, "--snapshot", FIRST))
    return lake, ingested, sequenced


def _rows(lake: str, table, snapshot: str | None = None, drop: tuple[str, ...] = ()) -> list[tuple]:
    """The table's rows as sorted tuples (read with delta-rs, with ``core.object_storage``'s options)."""
    from deltalake import DeltaTable

    location = Lake(lake).table(table)
    rows = DeltaTable(location, storage_options=delta_rs_options(location)).to_pyarrow_table().to_pylist()
    if snapshot is not None:
        rows = [r for r in rows if r["snapshot_ts"].date().isoformat() == snapshot]
    return sorted(tuple((k, repr(v)) for k, v in r.items() if k not in drop) for r in rows)


def test_ingest_and_sequences_on_s3_equal_a_local_lake(s3_lake, local_lake, s3):
    lake, ingested, sequenced = s3_lake
    assert "read 5 = ingested 4 + already present 0 + quarantined 1" in ingested
    assert f"{CLICK_SEQUENCES.path}: " in sequenced
    for table in (RAW_CLICKS, RAW_CONVERSIONS):
        assert _rows(lake, table) == _rows(local_lake, table) != []
    # A quarantined row's record, reason, source and position; the instant it was ingested is the run's own.
    assert (_rows(lake, QUARANTINE_CLICKS, drop=("ingested_at", "quarantine_id"))
            == _rows(local_lake, QUARANTINE_CLICKS, drop=("ingested_at", "quarantine_id")) != [])
    for table in (CLICK_SEQUENCES, CONVERSION_SEQUENCES):
        assert _rows(lake, table, FIRST) == _rows(local_lake, table, FIRST) != []
    # The objects are in the bucket, where S3A put them (not in a local folder of that name).
    assert any(f"/{BUCKET}/lake/{RAW_CLICKS.path}/_delta_log/" in line for line in s3.requests())
    assert not Path(REPO, "s3a:").exists() and not Path(REPO, BUCKET).exists()


def test_validate_without_a_home_is_refused_clearly(s3_lake):
    """`duet validate` writes its results in the lake's _quality folder, which a lake on S3 keeps in its home
    (core.lake): without ``DUET_HOME`` refused in one line naming it, no Java stack."""
    lake, _, _ = s3_lake
    assert "DUET_HOME" not in os.environ
    result = _duet("validate", "--lake", lake, "--table", RAW_CLICKS.path)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "is on object storage" in result.stderr and "set DUET_HOME" in result.stderr
    assert "Traceback" not in result.stderr and "\tat " not in result.stderr


def test_the_server_killed_mid_job_and_restarted_loses_nothing(s3_lake, local_lake, s3):
    """`duet sequences` for a new snapshot; the server killed once the job has begun writing its tables,
    started again with its objects (the replayed requests) a few seconds later. The job either rides it
    out on S3A's retries or fails in one line; either way a re-run leaves exactly the local lake's rows."""
    lake, _, _ = s3_lake
    before = len(s3.requests())
    marker = f"/{BUCKET}/lake/{CLICK_SEQUENCES.path}/"
    job = subprocess.Popen([str(REPO / ".venv/bin/duet"), "sequences", "--lake", lake, "--snapshot", SECOND,
                            "--master", "local[1]"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=REPO, env={**SHORT_RUN_ENV, **os.environ})
    try:
        deadline = time.monotonic() + 300
        while not any('"PUT"' in line and marker in line for line in s3.requests()[before:]):
            assert job.poll() is None, "the job ended before it wrote: " + job.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the job wrote nothing in 300 s"
            time.sleep(0.05)
        s3.stop()
        time.sleep(3)
        s3.start(replay=True)
        out, err = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    print(f"the job: exit {job.returncode}; {err.strip().splitlines()[-1] if err.strip() else ''}")
    if job.returncode != 0:   # one line for the user (Spark's own log above it may carry a Java stack)
        assert job.returncode == 1 and err.strip().splitlines()[-1].startswith("duet: error:"), err[-3000:]
        (s3.log.parent / "killed-job.err").write_text(err)
    again = _ok(_duet("sequences", "--lake", lake, "--snapshot", SECOND))
    assert f"{CLICK_SEQUENCES.path}: " in again
    for table in (CLICK_SEQUENCES, CONVERSION_SEQUENCES):
        for snapshot in (FIRST, SECOND):
            assert _rows(lake, table, snapshot) == _rows(local_lake, table, snapshot)
    assert _rows(lake, CLICK_SEQUENCES, SECOND) != []


def test_an_unreachable_server_fails_the_job_in_one_line(s3_lake, s3):
    """The server down (its port refusing connections): `duet sequences` exits 1 with one `duet: error:`
    line instead of hanging. S3A's retries are cut short by `--conf` (by default they ride out about two
    minutes: docs/OBJECT_STORAGE.md); the server comes back with its objects afterwards."""
    lake, _, _ = s3_lake
    s3.stop()
    try:
        started = time.monotonic()
        result = _duet("sequences", "--lake", lake, "--snapshot", SECOND,
                       "--conf", "spark.hadoop.fs.s3a.attempts.maximum=1",
                       "--conf", "spark.hadoop.fs.s3a.retry.limit=1")
        seconds = time.monotonic() - started
    finally:
        s3.start(replay=True)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("duet: error:"), result.stderr[-3000:]
    assert seconds < 300


def test_backfill_and_daily_on_s3_equal_a_local_lake(s3, tmp_path, monkeypatch):
    """`duet backfill` then `duet daily` for two dates on ``s3a://<bucket>/daily``, the landing folder on S3
    too and the project folders in ``$DUET_HOME`` (core.lake): every table equal to a local lake's after
    the same commands, a second run of the last date doing nothing, `duet status` reading it. Last in the
    file: the server-restart test above replays every recorded request, and this one records many."""
    import boto3

    duet = str(REPO / ".venv/bin/duet")
    home, local, landing = tmp_path / "home", tmp_path / "local", tmp_path / "landing"
    lake, s3_landing = f"s3a://{BUCKET}/daily", f"s3a://{BUCKET}/landing"
    monkeypatch.setenv("DUET_HOME", str(home))   # the commands' and this process's (Lake(lake).home)
    env = {**SHORT_RUN_ENV, **os.environ}

    def run(*args: str, spark: bool = True) -> str:
        options = ("--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=4") if spark else ()
        return _ok(subprocess.run([duet, *args, *options], capture_output=True, text=True, timeout=900,
                                  cwd=REPO, env=env))

    run("generate", "--out", str(tmp_path / "gen"), "--users", "60", "--days", "10", "--start", "2026-01-01",
        "--landing", str(landing), spark=False)
    client = boto3.client("s3", endpoint_url=s3.url, region_name=CREDENTIALS["AWS_REGION"])
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"landing/{path.relative_to(landing)}")
    for root, files in ((str(local), str(landing)), (lake, s3_landing)):
        run("backfill", "--lake", root, "--landing", files, "--from", "2026-01-03", "--to", "2026-01-08")
    run("pretrain", "--lake", str(local), "--epochs", "1", spark=False)
    shutil.copytree(Lake(str(local)).models, Lake(lake).home / "_models")   # the same model on both
    for day in ("2026-01-09", "2026-01-10"):
        for root, files in ((str(local), str(landing)), (lake, s3_landing)):
            out = run("daily", "--lake", root, "--landing", files, "--date", day)
            record = json.loads(out.splitlines()[-1])
            assert record["status"] == "done" and record["exit"] == 0, record
            assert {s["step"] for s in record["steps"] if s["ran"]} >= {"embed", "validate", "publish"}
    # Each day grew from the day before on S3 too: it read one click file, the day's (spark_jobs.sequences).
    for day in (date(2026, 1, 9), date(2026, 1, 10)):
        read = json.loads(Lake(lake).day_record(day, "sequences").read_text())["result"]["raw_files_read"]
        assert read[CLICK_SEQUENCES.path][0] == 1, (day, read)
    again = run("daily", "--lake", lake, "--landing", s3_landing, "--date", "2026-01-10")
    assert "nothing to do" in again and json.loads(again.splitlines()[-1])["tables_changed"] == {}

    ours, theirs = digest(lake), digest(local)
    assert ours.keys() == theirs.keys() and USER_EMBEDDINGS.path in ours
    # The ingest log names each file where it was read (on S3, or the local copy): the same files by content.
    log = INGEST_LOG.path
    assert sorted(json.loads(k)[1] for k in ours.pop(log)["keys"]) == sorted(
        json.loads(k)[1] for k in theirs.pop(log)["keys"])
    assert {t: ours[t]["sha"] for t in ours} == {t: theirs[t]["sha"] for t in theirs}
    # The project folders are in the home, the tables in the bucket; the served snapshot is the last date's.
    assert (Lake(lake).home / "_feast" / "online.db").is_file()
    assert json.loads(Lake(lake).serving_file.read_text())["snapshot"].startswith("2026-01-10")
    assert any(f"/{BUCKET}/daily/{USER_EMBEDDINGS.path}/_delta_log/" in line for line in s3.requests())
    assert USER_EMBEDDINGS.path in run("status", "--lake", lake, spark=False)
