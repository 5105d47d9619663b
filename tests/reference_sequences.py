"""A reference implementation of the sequence tables in DuckDB SQL, sharing no code with spark_jobs.

It does the obvious thing: join every event to every snapshot whose window contains it, rank per
(user, snapshot) from the most recent, keep the cap, aggregate in ascending order. The ascending order is
made by sorting one list of structs (time, id first) rather than by ordered aggregates: DuckDB's ordered
list() keeps a sort state per group and ran out of 18.8 GiB at 16M clicks. Used by the parity
test and by the sequences benchmark as the time to beat. Reads the raw Delta tables with `deltalake`.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

CLICKS_SQL = """
WITH snaps AS (SELECT unnest($snapshots::TIMESTAMPTZ[]) AS snapshot_ts),
win AS (
  SELECT c.user_id, s.snapshot_ts, c.click_ts, c.click_id, c.ad_id, c.advertiser_id,
         row_number() OVER (PARTITION BY c.user_id, s.snapshot_ts
                            ORDER BY c.click_ts DESC, c.click_id DESC) AS rn
  FROM clicks c JOIN snaps s
    ON c.click_ts < s.snapshot_ts AND c.click_ts >= s.snapshot_ts - to_seconds($lookback_s)
)
SELECT user_id, snapshot_ts,
       list_transform(seq, e -> e.ad_id) AS ad_ids,
       list_transform(seq, e -> e.advertiser_id) AS advertiser_ids,
       list_transform(seq, e -> e.ts) AS click_ts,
       len(seq)::INTEGER AS length
FROM (SELECT user_id, snapshot_ts,
             list_sort(list({'ts': click_ts, 'id': click_id, 'ad_id': ad_id, 'advertiser_id': advertiser_id}))
               AS seq
      FROM win WHERE rn <= $cap GROUP BY user_id, snapshot_ts)
"""

CONVERSIONS_SQL = """
WITH snaps AS (SELECT unnest($snapshots::TIMESTAMPTZ[]) AS snapshot_ts),
win AS (
  SELECT v.user_id, s.snapshot_ts, v.conversion_ts, v.conversion_id, v.advertiser_id, v.conversion_type,
         v.attributed_click_id IS NOT NULL AS attributed,
         row_number() OVER (PARTITION BY v.user_id, s.snapshot_ts
                            ORDER BY v.conversion_ts DESC, v.conversion_id DESC) AS rn
  FROM conversions v JOIN snaps s
    ON v.report_ts < s.snapshot_ts AND v.conversion_ts >= s.snapshot_ts - to_seconds($lookback_s)
)
SELECT user_id, snapshot_ts,
       list_transform(seq, e -> e.advertiser_id) AS advertiser_ids,
       list_transform(seq, e -> e.conversion_type) AS conversion_types,
       list_transform(seq, e -> e.ts) AS conversion_ts,
       list_transform(seq, e -> e.attributed) AS attributed,
       len(seq)::INTEGER AS length
FROM (SELECT user_id, snapshot_ts,
             list_sort(list({'ts': conversion_ts, 'id': conversion_id, 'advertiser_id': advertiser_id,
                             'conversion_type': conversion_type, 'attributed': attributed})) AS seq
      FROM win WHERE rn <= $cap GROUP BY user_id, snapshot_ts)
"""


def reference_sequences(lake: str, snapshots: list[datetime], click_lookback_s: int,
                        conversion_lookback_s: int, max_clicks: int, max_conversions: int,
                        threads: int | None = None) -> dict[str, pa.Table]:
    """Both sequence tables as Arrow tables sorted by (user_id, snapshot_ts)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {threads}")
    con.register("clicks", DeltaTable(f"{lake}/raw/clicks").to_pyarrow_table())
    con.register("conversions", DeltaTable(f"{lake}/raw/conversions").to_pyarrow_table())
    out = {}
    for name, sql, lookback, cap in (("click_sequences", CLICKS_SQL, click_lookback_s, max_clicks),
                                     ("conversion_sequences", CONVERSIONS_SQL, conversion_lookback_s,
                                      max_conversions)):
        params = {"snapshots": snapshots, "lookback_s": lookback, "cap": cap}
        table = con.execute(sql + " ORDER BY user_id, snapshot_ts", params).to_arrow_table()
        out[name] = table
    con.close()
    return out
