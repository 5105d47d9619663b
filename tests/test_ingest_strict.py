"""duet ingest's strict input rules (issue 23): the contract's timestamp formats only, clean ids and
numbers, JSON values of the right type, Parquet errors that say what applies, concurrent ingests that
converge. Every rule is checked in CSV, JSON Lines and Parquet alike, on one lake ingested once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from core.errors import InputError
from spark_jobs.ingest import IngestConfig, ingest

T0 = pd.Timestamp("2026-01-05T10:00:00Z")
T_EXP = pd.Timestamp(1767960000.5, unit="s", tz="UTC")  # 1.7679600005e9 epoch seconds
CLICK_FIELDS = ("click_id", "user_id", "ad_id", "advertiser_id", "click_ts")
CONVERSION_FIELDS = ("conversion_id", "user_id", "advertiser_id", "conversion_type", "conversion_ts",
                     "report_ts", "attributed_click_id", "value")
LONG_ID = "u" * 200_000

# (name, fields that differ from a valid row, expected): expected is a dict of the landed row's values
# (the row is new) or a fragment of its quarantine reason. `name` is the key, prefixed by the format.
CLICK_CASES = [
    # Item 3: the contract's timestamps (ISO-8601 or epoch seconds) ...
    ("ts-z", {"click_ts": "2026-01-05T10:00:00Z"}, {"click_ts": T0}),
    ("ts-offset", {"click_ts": "2026-01-05T12:00:00+02:00"}, {"click_ts": T0}),
    ("ts-space", {"click_ts": "2026-01-05 10:00:00"}, {"click_ts": T0}),
    ("ts-minutes", {"click_ts": "2026-01-05T10:00Z"}, {"click_ts": T0}),
    ("ts-date", {"click_ts": "2026-01-05"}, {"click_ts": pd.Timestamp("2026-01-05T00:00:00Z")}),
    ("ts-epoch", {"click_ts": "1767607200"}, {"click_ts": T0}),
    # ... and nothing looser: no date, a partial date, unpadded fields, an expanded year, a zone name.
    ("ts-time-t", {"click_ts": "T10:00:00"}, "click_ts: cannot parse 'T10:00:00' (a time without a date"),
    ("ts-time", {"click_ts": "10:00:00"}, "click_ts: cannot parse '10:00:00' (a time without a date"),
    ("ts-month", {"click_ts": "2026-01"}, "click_ts: cannot parse '2026-01' as ISO-8601"),
    ("ts-unpadded", {"click_ts": "2026-1-9"}, "click_ts: cannot parse '2026-1-9' as ISO-8601"),
    ("ts-plus-year", {"click_ts": "+2026-01-11"}, "click_ts: cannot parse '+2026-01-11' as ISO-8601"),
    ("ts-zone-name", {"click_ts": "2026-01-05T10:00:00 UTC"}, "click_ts: cannot parse"),
    # Item 7: epoch seconds written with an exponent are epoch seconds.
    ("ts-exponent", {"click_ts": "1.7679600005e9"}, {"click_ts": T_EXP}),
    # Item 6: ids are trimmed (the same user whatever the padding); control characters and huge ids are not
    # ids.
    ("id-padded", {"user_id": " u9000001\t", "ad_id": "a1 "}, {"user_id": "u9000001", "ad_id": "a1"}),
    ("id-nul", {"user_id": "u\x001"}, "user_id: contains a control character"),
    ("id-long", {"user_id": LONG_ID}, "user_id: 200000 characters, more than 256"),
    ("id-blank", {"advertiser_id": " \t "}, "missing advertiser_id"),
]
CONVERSION_CASES = [
    ("ok", {}, {"value": 12.5, "conversion_ts": T0}),
    ("conv-time", {"conversion_ts": "T10:00:00"}, "conversion_ts: cannot parse 'T10:00:00'"),
    ("conv-unpadded", {"conversion_ts": "2026-1-5"}, "conversion_ts: cannot parse '2026-1-5'"),
    ("report-month", {"report_ts": "2026-01"}, "report_ts: cannot parse '2026-01'"),
    ("report-plus", {"report_ts": "+2026-01-11"}, "report_ts: cannot parse '+2026-01-11'"),
    ("report-time", {"report_ts": "11:00"}, "report_ts: cannot parse '11:00' (a time without a date"),
    ("exponent", {"conversion_ts": "1.7679600005e9", "report_ts": "1.7679636e9"},
     {"conversion_ts": T_EXP, "report_ts": pd.Timestamp(1767963600, unit="s", tz="UTC")}),
    ("value-d", {"value": "100d"}, "value: not a number: '100d'"),
    ("value-hex", {"value": "0x10p0"}, "value: not a number: '0x10p0'"),
    ("value-nan", {"value": "NaN"}, "value: not a finite number: 'NaN'"),
    ("value-exp", {"value": "1e2"}, {"value": 100.0}),
    ("padded", {"conversion_type": " purchase ", "attributed_click_id": " c1 "},
     {"conversion_type": "purchase", "attributed_click_id": "c1"}),
    ("id-nul", {"advertiser_id": "adv\x00"}, "advertiser_id: contains a control character"),
]
# JSON Lines only: the JSON type of a value matters, and a key may repeat. (name, raw fields as JSON text.)
JSON_CLICK_CASES = [
    ("array-user", {"user_id": '["u1"]'}, "user_id is an array"),
    ("object-ad", {"ad_id": '{"id": "a1"}'}, "ad_id is an object"),
    ("bool-user", {"user_id": "true"}, "user_id is a boolean"),
    ("fraction-ad", {"ad_id": "1.5"}, "ad_id is a number not written as an integer"),
    ("integer-user", {"user_id": "42"}, {"user_id": "42"}),
    ("number-ts", {"click_ts": "1.7679600005e9"}, {"click_ts": T_EXP}),       # item 7: a JSON number
    ("integer-ts", {"click_ts": "1767607200"}, {"click_ts": T0}),
    ("dup-key", {"user_id": '"u1", "user_id": "u2"'}, "duplicated JSON key(s): user_id"),
    ("dup-nested", {"ad_id": '{"id": "a1", "id": "a1"}'}, "malformed JSON: a key repeats inside a value"),
]
JSON_CONVERSION_CASES = [
    ("array-value", {"value": "[1]"}, "value is an array"),
    ("bool-report", {"report_ts": "true"}, "report_ts is a boolean"),
    ("number-value", {"value": "12.5"}, {"value": 12.5}),
]


def _click(name: str, fields: dict) -> dict:
    row = {"click_id": name, "user_id": "u1", "ad_id": "a1", "advertiser_id": "v1",
           "click_ts": "2026-01-05T10:00:00Z"}
    return {**row, **fields}


def _conversion(name: str, fields: dict) -> dict:
    row = {"conversion_id": name, "user_id": "u1", "advertiser_id": "v1", "conversion_type": "purchase",
           "conversion_ts": "2026-01-05T10:00:00Z", "report_ts": "2026-01-05T11:00:00Z",
           "attributed_click_id": "c1", "value": "12.5"}
    return {**row, **fields}


def _write(path: Path, fmt: str, columns: tuple[str, ...], rows: list[dict]) -> Path:
    if fmt == "csv":
        path.write_text("\n".join([",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]))
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps({c: r[c] for c in columns}) for r in rows))
    else:
        pq.write_table(pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns}), path)
    return path


def _json_line(row: dict, raw: dict) -> str:
    """A JSON object with ``raw``'s values written as given (JSON text), the rest as JSON strings."""
    return "{" + ", ".join(f'"{k}": {raw[k] if k in raw else json.dumps(v)}' for k, v in row.items()) + "}"


@pytest.fixture(scope="module")
def strict_lake(spark, tmp_path_factory):
    """Every case ingested once from CSV, JSON Lines and Parquet (string columns), plus JSON-only cases
    and a Parquet file with typed (double) epoch seconds: (lake, accounts by file name)."""
    tmp = tmp_path_factory.mktemp("strict")
    lake = tmp / "lake"
    accounts = {}
    for fmt, ext in (("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet")):
        clicks = [_click(f"{fmt}-{name}", fields) for name, fields, _ in CLICK_CASES]
        conversions = [_conversion(f"{fmt}-{name}", fields) for name, fields, _ in CONVERSION_CASES]
        click_path = _write(tmp / f"clicks.{ext}", fmt, CLICK_FIELDS, clicks)
        conversion_path = _write(tmp / f"conversions.{ext}", fmt, CONVERSION_FIELDS, conversions)
        if fmt == "jsonl":
            with click_path.open("a") as f:
                for name, raw, _ in JSON_CLICK_CASES:
                    f.write("\n" + _json_line(_click(f"json-{name}", {}), raw))
            with conversion_path.open("a") as f:
                for name, raw, _ in JSON_CONVERSION_CASES:
                    f.write("\n" + _json_line(_conversion(f"json-{name}", {}), raw))
        for result in ingest(spark, IngestConfig(lake=str(lake)), clicks=str(click_path),
                             conversions=str(conversion_path)):
            accounts[Path(result.source).name] = result
    typed = tmp / "typed.parquet"
    pq.write_table(pa.table({"click_id": ["typed-exponent", "typed-epoch"], "user_id": ["u1", "u1"],
                             "ad_id": ["a1", "a1"], "advertiser_id": ["v1", "v1"],
                             "click_ts": pa.array([1.7679600005e9, 1767607200.0], pa.float64())}), typed)
    (accounts["typed.parquet"],) = ingest(spark, IngestConfig(lake=str(lake)), clicks=str(typed))
    return lake, accounts


def _tables(lake: Path, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    key = {"clicks": "click_id", "conversions": "conversion_id"}[kind]
    raw = DeltaTable(str(lake / "raw" / kind)).to_pandas().set_index(key)
    quarantine = DeltaTable(str(lake / "quarantine" / kind)).to_pandas().set_index(key)
    return raw, quarantine


def _check(lake: Path, kind: str, prefixes: tuple[str, ...], cases: list) -> None:
    """Each case landed with its expected values, or is quarantined with its expected reason."""
    raw, quarantine = _tables(lake, kind)
    for prefix in prefixes:
        for name, _, expected in cases:
            key = f"{prefix}-{name}"
            if isinstance(expected, dict):
                assert key in raw.index, (key, quarantine.reason.get(key))
                for column, value in expected.items():
                    assert raw.loc[key, column] == value, (key, column, raw.loc[key, column])
            else:
                assert key not in raw.index, (key, raw.loc[key].to_dict())
                assert expected in quarantine.loc[key, "reason"], (key, quarantine.loc[key, "reason"])


def _item_cases(cases: list, names: tuple[str, ...]) -> list:
    return [c for c in cases if c[0].startswith(names)]


FORMATS = ("csv", "jsonl", "parquet")


def test_timestamps_take_only_the_contracts_formats_in_every_format(strict_lake):
    """Item 3: a time without a date, a partial or unpadded date, an expanded year are quarantined."""
    lake, _ = strict_lake
    _check(lake, "clicks", FORMATS, _item_cases(CLICK_CASES, ("ts-",)))
    _check(lake, "conversions", FORMATS, _item_cases(CONVERSION_CASES, ("ok", "conv-", "report-")))


def test_ids_and_numbers_are_cleaned_or_quarantined_alike_in_every_format(strict_lake):
    """Item 6: ids trimmed, control characters and oversized ids quarantined, `100d` / `0x10p0` are not
    numbers; in JSON Lines arrays, objects, booleans and fractions are not ids and a key may not repeat."""
    lake, _ = strict_lake
    _check(lake, "clicks", FORMATS, _item_cases(CLICK_CASES, ("id-",)))
    _check(lake, "conversions", FORMATS, _item_cases(CONVERSION_CASES, ("value-", "padded", "id-")))
    _check(lake, "clicks", ("json",), _item_cases(JSON_CLICK_CASES, ("array", "object", "bool", "fraction",
                                                                      "integer-user", "dup")))
    _check(lake, "conversions", ("json",), JSON_CONVERSION_CASES)
    raw, _ = _tables(lake, "clicks")
    assert set(raw.loc[[f"{f}-id-padded" for f in FORMATS], "user_id"]) == {"u9000001"}
    # The quarantine keeps what the file said, not the cleaned value.
    quarantine = DeltaTable(str(lake / "quarantine/clicks")).to_pandas().set_index("click_id")
    assert quarantine.loc["csv-id-long", "user_id"] == LONG_ID


def test_epoch_seconds_with_an_exponent_are_accepted_in_every_format(strict_lake):
    """Item 7: 1.7679600005e9 as text (CSV, JSON string, Parquet string), as a JSON number and as a
    Parquet double is the same instant; it was quarantined as unparseable."""
    lake, _ = strict_lake
    _check(lake, "clicks", FORMATS, _item_cases(CLICK_CASES, ("ts-exponent",)))
    _check(lake, "conversions", FORMATS, _item_cases(CONVERSION_CASES, ("exponent",)))
    _check(lake, "clicks", ("json",), _item_cases(JSON_CLICK_CASES, ("number-ts", "integer-ts")))
    _check(lake, "clicks", ("typed",), [("exponent", {}, {"click_ts": T_EXP}),
                                        ("epoch", {}, {"click_ts": T0})])


def test_every_strict_ingest_balances(strict_lake):
    lake, accounts = strict_lake
    expected_rows = {"clicks.csv": len(CLICK_CASES), "clicks.parquet": len(CLICK_CASES),
                     "clicks.jsonl": len(CLICK_CASES) + len(JSON_CLICK_CASES), "typed.parquet": 2,
                     "conversions.csv": len(CONVERSION_CASES), "conversions.parquet": len(CONVERSION_CASES),
                     "conversions.jsonl": len(CONVERSION_CASES) + len(JSON_CONVERSION_CASES)}
    assert {name: a.read for name, a in accounts.items()} == expected_rows
    for account in accounts.values():
        assert account.balanced and account.already_present == 0 and account.skipped == 0, account.line()
    for kind in ("clicks", "conversions"):
        raw, quarantine = _tables(lake, kind)
        files = [a for name, a in accounts.items() if a.kind == kind]
        assert len(raw) == sum(a.ingested for a in files)
        assert len(quarantine) == sum(a.quarantined for a in files)


def test_the_timestamp_grammar(spark):
    """Item 3, the parser alone: what the contract's ISO-8601 and epoch seconds cover, and what not."""
    from pyspark.sql import functions as F

    from spark_jobs.parse import parse_timestamp

    t0 = int(T0.timestamp()) * 1_000_000
    cases = {
        "2026-01-05T10:00:00.123456789Z": t0 + 123_456,       # a fraction finer than microseconds: cut
        "2026-01-05T12:00:00.5+02": t0 + 500_000,
        "2026-01-05T12:00:00+0200": t0,
        "2026-01-05T05:00-05:00": t0,
        "2026-01-05 10:00": t0,
        " 2026-01-05T10:00:00Z\t": t0,                         # surrounding whitespace is trimmed
        "1767607200.5": t0 + 500_000,
        "1.7679600005E9": int(T_EXP.timestamp() * 1_000_000),
        "17676072e2": t0,
        "20260105": 20260105 * 1_000_000,  # a number is epoch seconds (then refused: outside [2000, 2100))
        **{bad: None for bad in ("2026-01-05t10:00:00z", "2026-02-30", "2026-01-05T10",
                                 "2026-01-05T10:00:00+2", "2026-01-05T10:00:00.Z", "2026-01-05T10:00:00 Z",
                                 "2026-01-05T10:00:00 Europe/Paris", "2026-W02-1", "1767607200d", "0x10p0",
                                 "NaN", "Infinity", "T10:00", "10:00", "2026-01", "+2026-01-05",
                                 "2026-01-05T10:00:00\x00")},
    }
    df = spark.createDataFrame([(text,) for text in cases], "text string")
    got = {r["text"]: r["us"] for r in df.select("text", F.unix_micros(parse_timestamp(F.col("text")))
                                                   .alias("us")).collect()}
    assert got == cases


def test_a_parquet_id_column_of_a_non_id_type_is_refused(spark, tmp_path):
    """Item 6 for Parquet: a column type that JSON Lines would quarantine row by row refuses the file."""
    path = tmp_path / "double_ids.parquet"
    pq.write_table(pa.table({"click_id": ["c1"], "user_id": pa.array([1.5], pa.float64()), "ad_id": ["a1"],
                             "advertiser_id": ["v1"], "click_ts": ["2026-01-05T10:00:00Z"]}), path)
    with pytest.raises(InputError, match="user_id.*double"):
        ingest(spark, IngestConfig(lake=str(tmp_path / "lake")), clicks=str(path))
    assert not (tmp_path / "lake").exists()


def test_the_nanosecond_hint_is_given_only_when_it_applies(spark, tmp_path):
    """Item 7: a file that is not Parquet at all is not a nanosecond problem."""
    path = tmp_path / "clicks.parquet"
    path.write_bytes(b"click_id,user_id\nc1,u1\n")  # a CSV file under a Parquet name
    with pytest.raises(InputError) as failure:
        ingest(spark, IngestConfig(lake=str(tmp_path / "lake")), clicks=str(path))
    assert str(path) in str(failure.value) and "not a Parquet file" in str(failure.value)
    assert "not nanoseconds" not in str(failure.value)  # the hint (the path holds the test's name)


def _race(spark, lake: Path, clicks: Path, conversions: Path) -> list:
    """Two ingests of the same files into ``lake`` at once; their accounts (each: clicks, conversions)."""
    start = threading.Barrier(2)
    results, errors = [], []

    def run() -> None:
        start.wait()
        try:
            results.append(ingest(spark, IngestConfig(lake=str(lake)), clicks=str(clicks),
                                  conversions=str(conversions)))
        except Exception as e:  # noqa: BLE001 - the test reports whatever either run raised
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, [f"{type(e).__name__}: {str(e)[:300]}" for e in errors]
    return results


def test_two_concurrent_ingests_of_the_same_files_converge(spark, tmp_path):
    """Item 7: two real ingests at once both succeed, into a new lake (both create its tables) and into
    existing tables (Delta's ConcurrentAppendException); every row lands once and the two accounts together
    say so: one run ingested each row, the other found it present."""
    lake = tmp_path / "lake"
    n = 20
    for round_ in ("new", "existing"):
        clicks = _write(tmp_path / f"clicks-{round_}.csv", "csv", CLICK_FIELDS,
                        [_click(f"{round_}-c{i}", {}) for i in range(n)])
        conversions = _write(tmp_path / f"conversions-{round_}.csv", "csv", CONVERSION_FIELDS,
                             [_conversion(f"{round_}-v{i}", {}) for i in range(n)])
        results = _race(spark, lake, clicks, conversions)
        for kind in range(2):
            accounts = [run_accounts[kind] for run_accounts in results]
            assert all(a.balanced and a.read == n and a.quarantined == 0 for a in accounts), accounts
            assert sum(a.ingested for a in accounts) == n and sum(a.already_present for a in accounts) == n
    assert len(DeltaTable(str(lake / "raw/clicks")).to_pandas()) == 2 * n
    assert len(DeltaTable(str(lake / "raw/conversions")).to_pandas()) == 2 * n
