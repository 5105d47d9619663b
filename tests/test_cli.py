"""The command line: help everywhere, one-line errors, exit codes (subprocesses, no Spark needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

DUET = [sys.executable, "-m", "duet.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DUET, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("command", [[], ["generate"], ["ingest"], ["sequences"], ["pretrain"], ["embed"],
                                     ["validate"], ["publish"], ["demo"]])
def test_help(command):
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: duet")


@pytest.mark.parametrize("command", [["ingest"], ["sequences"], ["embed"], ["validate"], ["publish"],
                                     ["demo"]])
def test_spark_commands_take_master_and_conf(command):
    out = _run(*command, "--help").stdout
    assert "--master" in out and "--conf KEY=VALUE" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--lake", "x", "--clicks", "/no/such.csv"], "input file not found: /no/such.csv"),
        (["ingest", "--lake", "x"], "nothing to ingest: give a clicks file, a conversions file or both "
                                    "(see --clicks, --conversions)"),
        (["ingest", "--lake", "x", "--events", "e.csv"], "--format taobao --events FILE"),
        (["ingest", "--lake", "x", "--clicks", "README.md"], "cannot tell the format"),
        # A stage says what is wrong; the command line adds the flags that set it (duet.flags.flags_for).
        (["generate", "--out", "x", "--users", "0"], "invalid generator setting(s): users (see --users)"),
        (["sequences", "--lake", "x", "--from", "2026-01-01"], "--from and --to go together"),
        (["sequences", "--lake", "x"], "no snapshot given"),
        (["sequences", "--lake", "x", "--snapshot", "yesterday"], "cannot read snapshot 'yesterday'"),
        (["sequences", "--lake", "x", "--snapshot", "2026-01-02", "--max-clicks", "0"], "at least 1"),
        (["ingest", "--lake", "x", "--clicks", "README.md", "--format", "csv", "--conf", "novalue"],
         "a Spark setting is key=value, got 'novalue' (see --conf)"),
        (["ingest", "--lake", "x", "--clicks", "README.md", "--format", "csv",
          "--conf", "spark.sql.session.timeZone=Europe/Paris"], "conflicts with duet's required"),
        (["pretrain", "--lake", "/no/lake"], "no sequence snapshots under /no/lake"),
        (["pretrain", "--lake", "x", "--config", "/no/config.json"], "cannot read --config /no/config.json"),
        (["pretrain", "--lake", "x", "--config", "tests/data/unknown_key_config.json"],
         "unknown key(s) click_layer"),
        (["embed", "--lake", "x"], "no snapshot given"),
        (["embed", "--lake", "/no/lake", "--snapshot", "2026-01-02"], "no model under /no/lake/_models"),
        (["publish", "--lake", "/no/lake"], "no duet model under /no/lake/_models"),
        (["publish", "--lake", "x", "--snapshot", "soon"], "cannot read snapshot 'soon'"),
        # A snapshot holds what was known before it: one in the future would be built from a partial
        # past and then read as final (issue 23).
        (["sequences", "--lake", "x", "--snapshot", "2150-01-01"],
         "snapshot 2150-01-01T00:00:00+00:00 is in the future"),
        (["sequences", "--lake", "x", "--from", "2026-01-01", "--to", "2150-01-01"], "is in the future"),
        (["embed", "--lake", "x", "--snapshot", "2150-01-01T08:00:00Z"],
         "snapshot 2150-01-01T08:00:00+00:00 is in the future"),
        (["examples", "--lake", "x", "--label-cutoff", "2150-01-01"],
         "label cutoff 2150-01-01T00:00:00+00:00 is in the future"),
        (["publish", "--lake", "x", "--redis", "127.0.0.1:6379,password=hunter2"],
         "DUET_REDIS_PASSWORD_FILE"),
        (["serve", "--lake", "x", "--redis", "127.0.0.1:6379,db=1,password=hunter2"], "without a password"),
    ],
)
def test_errors_are_one_line_and_non_zero(args, message):
    result = _run(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("duet: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_a_refused_password_is_not_repeated():
    result = _run("publish", "--lake", "x", "--redis", "127.0.0.1:6379,password=hunter2")
    assert result.returncode == 1 and "hunter2" not in result.stderr + result.stdout


def test_unknown_arguments_are_usage_errors():
    result = _run("generate", "--out", "x", "--userz", "3")
    assert result.returncode == 2 and "unrecognized arguments: --userz" in result.stderr


def test_help_and_generate_load_no_spark_and_no_stage(tmp_path):
    # The parser and `duet generate` are the conductor and core alone: stages load in their handlers.
    code = ("import sys; from duet.cli import main; main(sys.argv[1:]); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pyspark', 'spark_jobs', 'encoders', 'feature_repo', 'serving', 'feast', 'ranker', "
            "'great_expectations', 'torch'}))")
    args = ["generate", "--out", str(tmp_path), "--users", "3", "--days", "1"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "clicks.parquet").exists()
