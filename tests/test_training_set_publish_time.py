"""The training set as a served system saw the embeddings (issue 26): ``available_at = created``.

A small lake written directly (``tests/feature_lake.py`` helpers): one duet model version over three daily
snapshots, where some embedding rows were written (``created_timestamp``) long after their snapshot (a
backfill, a re-embedded snapshot) and the others an hour after it, and matured examples around them. The
training set is built twice through the real Feast point-in-time join (Spark offline store on Delta):
by snapshot (the default) and by creation time. Each is held against a DuckDB query computed here from
the Delta tables, and the two differ exactly on the clicks whose snapshot-joined row was written after
the click.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from core.contracts import TRAINING_EXAMPLES, USER_EMBEDDINGS
from core.errors import DuetError
from feature_repo.views import EMBEDDING_TTL, SUMMARY_FEATURES
from ranker.splits import Splits
from ranker.training_set import CREATED, SNAPSHOT, build_training_set
from tests import feature_lake as fl

S1, S2, S3 = (datetime(2026, 1, d, tzinfo=UTC) for d in (10, 11, 12))
H = timedelta(hours=1)
VERSION, DIM = "duet-aaaaaaa", 4
SPLITS = Splits(datetime(2026, 1, 9, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC), S2 + 12 * H, S3,
                datetime(2026, 1, 14, tzinfo=UTC))

# (user, snapshot) -> when its row was written. Rows an hour after their snapshot are the embedding job's
# usual lag; the others were backfilled or re-embedded later (the table keeps only the latest write).
CREATED_AT = {
    (0, S1): S1 + H, (0, S2): S2 + H, (0, S3): S3 + H,
    (1, S1): S1 + H, (1, S2): S2 + 20 * H,                   # S2 backfilled the evening after
    (2, S2): S3 + 5 * H,                                     # its only row, a day late
    (3, S1): S2 + 12 * H,                                    # S1 re-embedded: the first write is gone
    (5, S1): S1 + H, (5, S3): S3 + 10 * H,
    (6, S1): S1 + H, (6, S2): S2 + 4 * H,
}                                                            # u004 has no row at all

# click -> (user, click time, the snapshot joined by snapshot, the one joined by creation), by hand.
CASES = {
    "x01": (0, S2 + 3 * H, S2, S2),
    "x02": (0, S2 + H / 2, S2, S1),        # S2's row came an hour after S2: the click had S1's
    "x03": (0, S3 + 5 * H, S3, S3),
    "x04": (1, S2 + 2 * H, S2, S1),        # backfilled: S1 (26 h old) was served
    "x05": (1, S2 + 21 * H, S2, S2),
    "x06": (2, S2 + 3 * H, S2, None),      # backfilled, nothing before it
    "x07": (2, S3 + 6 * H, S2, S2),
    "x08": (3, S1 + 5 * H, S1, None),      # re-embedded later: its first value is not in the table
    "x09": (3, S2 + 13 * H, S1, S1),
    "x10": (4, S2 + H, None, None),
    "x11": (5, S3 + 2 * H, S3, None),      # S1 is 50 h old: past the ttl (2 days)
    "x12": (5, S3 + 11 * H, S3, S3),
    "x13": (6, S2 + 4 * H, S2, S2),        # written exactly at the click: available
    "x14": (6, S2, S2, S1),                # at the snapshot itself, before its row was written
}
LATE = {"x02", "x04", "x06", "x08", "x11", "x14"}


def _embedding_rows() -> list[dict]:
    return [{"user_id": fl.user_id(u), "event_timestamp": snapshot, "created_timestamp": created,
             "click_embedding": fl.vector(u, snapshot, VERSION, "click", DIM),
             "conversion_embedding": fl.vector(u, snapshot, VERSION, "conversion", DIM),
             "model_version": VERSION} for (u, snapshot), created in CREATED_AT.items()]


def _example_rows() -> list[dict]:
    cutoff = datetime(2026, 2, 1, tzinfo=UTC)
    return [{"click_id": click, "user_id": fl.user_id(u), "ad_id": f"ad{i}", "advertiser_id": f"adv{i % 3}",
             "click_ts": ts, "label": i % 2, "conversion_delay_s": 600.0 if i % 2 else None, "matured": True,
             "label_cutoff": cutoff} for i, (click, (u, ts, _, _)) in enumerate(CASES.items())]


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """The lake, and the training set built by snapshot and by creation: click -> row, each."""
    from ranker.data import read_training_set, training_set_record
    from serving.store import StoreConfig, apply, feature_store

    lake = str(tmp_path_factory.mktemp("publish-time") / "lake")
    fl.write_checkpoint(lake, VERSION, DIM, S1 - 48 * H)
    active: dict[datetime, list[int]] = {}
    for u, snapshot in CREATED_AT:
        active.setdefault(snapshot, []).append(u)
    fl.write_sequences(lake, active)
    write_deltalake(USER_EMBEDDINGS.location(lake),
                    pa.Table.from_pylist(_embedding_rows(), schema=USER_EMBEDDINGS.arrow_schema()),
                    partition_by=["model_version"])
    write_deltalake(TRAINING_EXAMPLES.location(lake),
                    pa.Table.from_pylist(_example_rows(), schema=TRAINING_EXAMPLES.arrow_schema()))
    from feature_repo.catalog import spec_from_lake

    store = feature_store(StoreConfig(lake))
    apply(store, spec_from_lake(lake), log=lambda _: None)
    out = {}
    for available_at in (SNAPSHOT, CREATED):
        build_training_set(spark, store, lake, SPLITS, [VERSION], available_at=available_at)
        out[available_at] = {r["click_id"]: r for r in read_training_set(lake, VERSION).to_pylist()}
        assert training_set_record(lake)["available_at"] == available_at
    return lake, out


def _micros(ts: datetime | None) -> int | None:
    return None if ts is None else round(ts.timestamp() * 1_000_000)


def _duckdb_reference(lake: str, available_at: str) -> dict[str, tuple]:
    """click -> (snapshot micros, click vector, conversion vector) of the row each matured click of the
    ranker's period joins: the latest snapshot at or before the click within the ttl and, by creation,
    written at or before it too; None where there is none. The Delta tables as deltalake reads them."""
    embeddings = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table()
    examples = DeltaTable(TRAINING_EXAMPLES.location(lake)).to_pyarrow_table()
    con = duckdb.connect()
    con.register("embeddings", embeddings)
    con.register("examples", examples)
    by_created = ("AND epoch_us(e.created_timestamp) <= epoch_us(x.click_ts)" if available_at == CREATED
                  else "")
    rows = con.execute(f"""
        WITH period AS (
            SELECT * FROM examples
            WHERE matured AND epoch_us(click_ts) >= ? AND epoch_us(click_ts) < ?),
        candidates AS (
            SELECT x.click_id, e.event_timestamp, e.click_embedding, e.conversion_embedding,
                   row_number() OVER (PARTITION BY x.click_id
                                      ORDER BY e.event_timestamp DESC, e.created_timestamp DESC) AS rank
            FROM period x JOIN embeddings e
              ON e.user_id = x.user_id AND e.model_version = ?
             AND epoch_us(e.event_timestamp) <= epoch_us(x.click_ts)
             AND epoch_us(e.event_timestamp) >= epoch_us(x.click_ts) - ?
             {by_created})
        SELECT x.click_id, epoch_us(c.event_timestamp), c.click_embedding, c.conversion_embedding
        FROM period x LEFT JOIN candidates c ON c.click_id = x.click_id AND c.rank = 1
        ORDER BY x.click_id""", [_micros(SPLITS.train_from), _micros(SPLITS.test_until), VERSION,
                                 int(EMBEDDING_TTL.total_seconds()) * 1_000_000]).fetchall()
    con.close()
    return {click: (ts, None if v is None else list(v), None if w is None else list(w))
            for click, ts, v, w in rows}


def _joined(row: dict) -> tuple:
    return (_micros(row["embedding_ts"]), row["click_embedding"], row["conversion_embedding"])


def test_the_set_by_creation_differs_from_the_set_by_snapshot_exactly_on_the_late_rows(built):
    lake, sets = built
    by_snapshot, by_created = sets[SNAPSHOT], sets[CREATED]
    assert set(by_snapshot) == set(by_created) == set(CASES)
    # The rows each joins, worked out by hand above.
    for name, index in ((SNAPSHOT, 2), (CREATED, 3)):
        got = {c: r["embedding_ts"] for c, r in sets[name].items()}
        assert got == {c: case[index] for c, case in CASES.items()}, name
    # Late: the snapshot-joined row was written after the click (read from the table, not the constants).
    created = {(r["user_id"], r["event_timestamp"]): r["created_timestamp"]
               for r in DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table().to_pylist()}
    late = {c for c, r in by_snapshot.items()
            if r["embedding_ts"] is not None and created[(r["user_id"], r["embedding_ts"])] > r["click_ts"]}
    differ = {c for c in CASES if _joined(by_snapshot[c]) != _joined(by_created[c])}
    assert late == differ == LATE
    # Nothing else moves: labels, splits, candidates and the summary (which has no creation time).
    vectors = ("embedding_ts", "click_embedding", "conversion_embedding")
    for c in CASES:
        keep = [k for k in by_snapshot[c] if k not in vectors]
        assert {k: by_snapshot[c][k] for k in keep} == {k: by_created[c][k] for k in keep}, c
        assert set(SUMMARY_FEATURES) <= set(keep)


@pytest.mark.parametrize("available_at", [SNAPSHOT, CREATED])
def test_each_set_is_the_duckdb_reference(built, available_at):
    lake, sets = built
    want = _duckdb_reference(lake, available_at)
    got = {c: _joined(r) for c, r in sets[available_at].items()}
    assert got == want
    assert sum(v[0] is None for v in want.values()) == (1 if available_at == SNAPSHOT else 4)


def test_an_unknown_availability_is_refused_before_anything_runs():
    with pytest.raises(DuetError, match="available_at") as raised:
        build_training_set(None, None, "/nonexistent", SPLITS, [VERSION], available_at="published")
    assert raised.value.fields == ("available_at",)


def test_the_command_line_passes_the_availability_and_defaults_to_the_snapshot():
    from duet.cli import build_parser
    from duet.flags import values

    parser = build_parser()
    given = parser.parse_args(["training-set", "--lake", "x", "--available-at", "created"])
    assert values(given, build_training_set) == {"available_at": CREATED}
    assert values(parser.parse_args(["training-set", "--lake", "x"]), build_training_set) == \
        {"available_at": SNAPSHOT}
    with pytest.raises(SystemExit):
        parser.parse_args(["training-set", "--lake", "x", "--available-at", "published"])
