"""Bring your own embedding (issue 22): vectors made outside duet, imported as ``ext-<name>``
(`duet embeddings import`), joined through Feast beside the encoders' versions (`duet training-set`) and
held against ``none`` and ``duet`` by the ranker's ablation (`duet evaluate`); a bad name, a ragged width,
a NaN and a null are refused with nothing written; rows that fail the embedding suite fail the import; a
version without weights never embeds.

The lake is a copy of the session's small demo lake (tests/conftest.py ``demo_lake``): no second demo runs,
and the demo's own lake, which tests/test_demo.py re-runs and checks for changes, is left as it was.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, TRAINING_SET, USER_EMBEDDINGS
from duet.cli import main as duet

VERSION = "ext-team-v1"
WIDTH = 6


@pytest.fixture(scope="module")
def byo(spark, demo_run, demo_lake, tmp_path_factory):
    """(a copy of the demo's lake, the demo's report, a folder for files). ``spark`` first: the commands
    run in this process then use the tests' session."""
    _, _, report, _ = demo_run
    root = tmp_path_factory.mktemp("byo")
    shutil.copytree(demo_lake, root / "lake")
    return str(root / "lake"), report, root


def _lengths(lake: str, table) -> dict[tuple[str, datetime], int]:
    rows = DeltaTable(table.location(lake)).to_pyarrow_table(columns=["user_id", "snapshot_ts", "length"])
    return {(r["user_id"], r["snapshot_ts"]): r["length"] for r in rows.to_pylist()}


def team_vectors(lake: str) -> pa.Table:
    """What another team's pipeline might serve: per user with a sequence at a snapshot, a vector of width
    6 made from its click and conversion counts and two fixed random coordinates per user (numpy, no duet
    code); no conversion_embedding column (a single-embedding version)."""
    clicks, conversions = _lengths(lake, CLICK_SEQUENCES), _lengths(lake, CONVERSION_SEQUENCES)
    keys = sorted(set(clicks) | set(conversions))
    vectors = []
    for user, snapshot in keys:
        c, k = clicks.get((user, snapshot), 0), conversions.get((user, snapshot), 0)
        a, b = np.random.default_rng(zlib.crc32(user.encode())).normal(size=2)
        vectors.append([1.0, math.log1p(c), math.log1p(k), math.log1p(c) ** 2, float(a), float(b)])
    return pa.table({"user_id": [u for u, _ in keys],
                     "event_timestamp": pa.array([t for _, t in keys], pa.timestamp("us", tz="UTC")),
                     "click_embedding": pa.array(vectors, pa.list_(pa.float32()))})


def _write(table: pa.Table, path: Path) -> str:
    pq.write_table(table, path)
    return str(path)


def _with_vector(table: pa.Table, row: int, vector: list | None) -> pa.Table:
    vectors = table.column("click_embedding").to_pylist()
    vectors[row] = vector
    return table.set_column(2, "click_embedding", pa.array(vectors, pa.list_(pa.float32())))


def _state(lake: str) -> tuple[int, list[str]]:
    """What an import would change: the embeddings table's version and the folders under _models."""
    return (DeltaTable(USER_EMBEDDINGS.location(lake)).version(),
            sorted(p.name for p in (Path(lake) / "_models").iterdir()))


def _rows(lake: str, version: str) -> list[dict]:
    table = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(
        filters=[("model_version", "=", version)])
    return sorted(table.to_pylist(), key=lambda r: (r["user_id"], r["event_timestamp"]))


def _import(lake: str, version: str, path: str) -> int:
    return duet(["embeddings", "import", "--lake", lake, "--model-version", version, "--path", path])


@pytest.mark.integration
def test_a_bad_name_a_ragged_width_a_nan_and_a_null_are_refused_with_nothing_written(byo, capsys):
    lake, _, root = byo
    good = team_vectors(lake)
    before = _state(lake)
    cases = [
        ("ext-Team", good, "not an imported embedding's version: 'ext-Team'"),
        ("ext-../x", good, "not an imported embedding's version: 'ext-../x'"),
        ("ext-a/b", good, "not an imported embedding's version"),
        ("duet-1234567", good, "not an imported embedding's version"),
        (VERSION, _with_vector(good, 7, [1.0] * (WIDTH - 1)),
         f"click_embedding must have one width on every row; its {good.num_rows} rows have 2 widths: "
         f"5 (1 row(s)), 6 ({good.num_rows - 1} row(s))"),
        (VERSION, _with_vector(good, 3, [1.0, float("nan"), 0.0, 0.0, 0.0, 0.0]),
         "1 row(s) have values that are not finite (NaN or infinite as 32-bit floats) in click_embedding: "
         f"row 3 (user {good.column('user_id')[3].as_py()}"),
        (VERSION, _with_vector(good, 5, None), "1 row(s) have a null click_embedding: row 5"),
    ]
    for i, (version, table, message) in enumerate(cases):
        capsys.readouterr()
        assert _import(lake, version, _write(table, root / f"bad-{i}.parquet")) == 1, version
        err = capsys.readouterr().err
        assert err.startswith("duet: error: ") and err.count("\n") == 1 and message in err, (message, err)
        assert _state(lake) == before, message          # no commit, no record
    assert not (Path(lake) / "x").exists() and not (Path(lake) / "_models" / "ext-..").exists()


@pytest.mark.integration
def test_an_imported_embedding_lands_as_the_encoders_rows_do_and_reimports_idempotently(byo, capsys):
    from encoders.model_store import version_dims
    from feature_repo.catalog import spec_from_lake

    lake, report, root = byo
    table = team_vectors(lake)
    path = _write(table, root / "team.parquet")
    others = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(columns=["model_version"]).num_rows
    capsys.readouterr()
    assert _import(lake, VERSION, path) == 0
    out = capsys.readouterr().out
    assert f"landed {table.num_rows:,} rows of {VERSION}" in out and "PASS embeddings/user_embeddings" in out
    rows = _rows(lake, VERSION)
    assert len(rows) == table.num_rows > 300
    expected = {(r["user_id"], r["event_timestamp"]): r["click_embedding"] for r in table.to_pylist()}
    for r in rows:
        np.testing.assert_array_equal(np.float32(r["click_embedding"]),
                                      np.float32(expected[(r["user_id"], r["event_timestamp"])]))
        assert r["conversion_embedding"] is None and r["created_timestamp"] is not None
    # The record: widths and the variant, no weights; every reader of widths knows the version; the served
    # version is still the demo's duet model.
    folder = Path(lake) / "_models" / VERSION
    record = json.loads((folder / "config.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert (record["variant"], record["dims"]) == ("ext", {"click": WIDTH, "conversion": None})
    assert version_dims(lake)[VERSION] == (WIDTH, None)
    spec = spec_from_lake(lake)
    assert (VERSION, WIDTH, None) in spec.versions
    assert spec.serving == report["encoders"]["models"]["duet"]["model_version"]

    # Again, the same file: one more commit, the same rows; the other versions' rows untouched.
    version = DeltaTable(USER_EMBEDDINGS.location(lake)).version()
    assert _import(lake, VERSION, path) == 0
    assert "replaced the earlier import" in capsys.readouterr().out
    assert DeltaTable(USER_EMBEDDINGS.location(lake)).version() == version + 1
    drop = lambda rs: [{k: v for k, v in r.items() if k != "created_timestamp"} for r in rs]  # noqa: E731
    assert drop(_rows(lake, VERSION)) == drop(rows)
    total = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(columns=["model_version"]).num_rows
    assert total == others + len(rows)

    # A version without weights is never loaded as a model.
    assert duet(["embed", "--lake", lake, "--snapshot", report["snapshots"][-1], "--model-version",
                 VERSION]) == 1
    assert f"{VERSION} is an imported embedding" in capsys.readouterr().err


@pytest.mark.integration
def test_training_set_and_evaluate_hold_the_imported_embedding_against_none_and_duet(byo, capsys):
    lake, report, root = byo
    capsys.readouterr()
    assert duet(["training-set", "--lake", lake]) == 0
    out = capsys.readouterr().out
    # The demo's own periods (the same plan over the same lake), and every version with embeddings.
    assert "periods: " + json.dumps(report["periods"]) in out
    assert "PASS training/training_set" in out
    training = DeltaTable(TRAINING_SET.location(lake)).to_pyarrow_table()
    encoders = {m["model_version"] for m in report["encoders"]["models"].values()}
    assert set(training.column("model_version").to_pylist()) == encoders | {VERSION}
    ours = [r for r in training.to_pylist() if r["model_version"] == VERSION]
    joined = [r for r in ours if r["embedding_ts"] is not None]
    assert len(ours) == training.num_rows // (len(encoders) + 1) and len(joined) > len(ours) // 2
    assert all(len(r["click_embedding"]) == WIDTH and r["conversion_embedding"] is None for r in joined)
    assert all(r["embedding_ts"] <= r["click_ts"] for r in joined)

    out_dir = root / "report"
    assert duet(["evaluate", "--lake", lake, "--variants", "none", "duet", VERSION, "--out", str(out_dir),
                 "--seeds", "1"]) == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"seed", "test_rows", "test_positives", "variants"}
    assert list(metrics["variants"]) == ["none", "duet", VERSION]
    for figures in metrics["variants"].values():
        assert math.isfinite(figures["ne"]) and 0 < figures["ne"] < 2
    assert metrics["test_positives"] > 0 and metrics["test_rows"] == report["ranker"]["test_rows"]
    ablation = json.loads((out_dir / "ablation.json").read_text())
    assert ablation["variants"][VERSION]["model_version"] == VERSION
    assert ablation["relative_ne_reduction"]["baseline"] in ("none", VERSION)
    assert ablation["splits"]["test"] == report["periods"]["test"]
    page = (out_dir / "index.html").read_text()
    assert VERSION in page and 'id="plot-ne"' in page
    # No ranker saved by an evaluation: the served one is the demo's.
    assert not (Path(lake) / "_rankers" / VERSION).exists()


@pytest.mark.integration
def test_rows_that_fail_the_embedding_suite_fail_the_import(byo, capsys):
    lake, _, root = byo
    table = team_vectors(lake)
    # The first row's user loses its vector at that snapshot (coverage), the second's is all zeros (norm).
    broken = _with_vector(table, 1, [0.0] * WIDTH).slice(1)
    capsys.readouterr()
    assert _import(lake, "ext-broken", _write(broken, root / "broken.parquet")) == 1
    captured = capsys.readouterr()
    assert "FAIL embeddings/user_embeddings" in captured.out
    assert "L2 norms within" in captured.out and table.column("user_id")[1].as_py() in captured.out
    assert "have an embedding" in captured.out
    assert "ext-broken: the imported rows failed 2 embedding check(s)" in captured.err
    assert len(_rows(lake, "ext-broken")) == broken.num_rows     # landed, as the error says
