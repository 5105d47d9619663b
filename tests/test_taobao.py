"""The Taobao UserBehavior layout: the contract's mapping on the real 10k-row sample, and edge cases."""

from __future__ import annotations

import pandas as pd
from deltalake import DeltaTable

from spark_jobs.ingest import IngestConfig, known_file
from spark_jobs.taobao import ingest_taobao

WINDOW_S = 7 * 86400


def _expected_attribution(path) -> dict[str, str | None]:
    """An independent pandas reading of the contract: latest pv of the same user and item at or before
    the buy and within the window."""
    d = pd.read_csv(path, header=None, names=["user", "item", "category", "behavior", "ts"], dtype=str)
    d["ts"] = d.ts.astype("int64")
    pv, buy = d[d.behavior == "pv"], d[d.behavior == "buy"]
    out = {}
    for row in buy.itertuples():
        cands = pv[(pv.user == row.user) & (pv.item == row.item) & (pv.ts <= row.ts)
                   & (row.ts - pv.ts <= WINDOW_S)]
        out[f"{row.user}:{row.item}:{row.ts}"] = (
            f"{row.user}:{row.item}:{cands.ts.max()}" if len(cands) else None)
    return out


def test_shared_sample_maps_as_the_contract_says(spark, tmp_path, taobao_sample):
    lake = tmp_path / "lake"
    counts = ingest_taobao(spark, IngestConfig(lake=str(lake)), str(taobao_sample))
    # 9,046 pv + 206 buy ingested, 536 cart + 212 fav skipped (shared/data/README.md).
    assert (counts.read, counts.ingested, counts.already_present, counts.quarantined, counts.skipped) == \
        (10000, 9046 + 206, 0, 0, 536 + 212)
    assert counts.by_table["raw/clicks"]["new"] == 9046

    clicks = DeltaTable(str(lake / "raw/clicks")).to_pandas().set_index("click_id")
    conv = DeltaTable(str(lake / "raw/conversions")).to_pandas().set_index("conversion_id")
    assert clicks.loc["999477:2200475:1511848894"].tolist()[:3] == ["999477", "2200475", "3607361"]
    assert clicks.loc["999477:2200475:1511848894", "click_ts"] == pd.Timestamp(1511848894, unit="s", tz="UTC")
    assert (conv.conversion_type == "purchase").all() and (conv.report_ts == conv.conversion_ts).all()
    assert conv.value.isna().all()

    # Checked by hand in the file: a buy 277 s after its pv (a later pv of the same item does not count),
    # and a buy whose only pv of the item comes after it.
    assert conv.loc["999478:2449173:1512176889", "attributed_click_id"] == "999478:2449173:1512176612"
    assert conv.loc["999478:2449173:1512176889", "advertiser_id"] == "4915680"
    assert conv.loc["999479:4574698:1512282400", "attributed_click_id"] is None

    expected = _expected_attribution(taobao_sample)
    got = conv.attributed_click_id.where(conv.attributed_click_id.notna(), None).to_dict()
    assert got == expected
    assert 0 < sum(v is not None for v in got.values()) < len(got)
    # Every attributed click exists and belongs to the same user.
    attributed = conv.dropna(subset=["attributed_click_id"])
    assert attributed.attributed_click_id.isin(clicks.index).all()
    assert (clicks.loc[attributed.attributed_click_id, "user_id"].values == attributed.user_id.values).all()


def test_edge_cases_of_the_layout(spark, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("\n".join([
        "1,10,100,pv,1512000000",
        "1,10,100,buy,1512000000",          # pv at the same second: attributed
        "1,11,100,pv,1511000000",
        "1,11,100,buy,1512000000",          # its pv is 11.6 days earlier: unattributed
        "2,10,100,cart,1512000000",         # skipped
        "2,10,100,fav,1512000001",          # skipped
        "2,10,100,click,1512000002",        # unknown behavior: quarantined
        "2,10,100,pv",                      # 4 fields: quarantined
        "2,10,100,pv,1512000000",
        "2,10,100,pv,1512000000",           # identical repeat: already present
        "2,12,100,buy,yesterday",           # bad timestamp: quarantined with the conversions
    ]))
    lake = tmp_path / "lake"
    counts = ingest_taobao(spark, IngestConfig(lake=str(lake)), str(path))
    assert (counts.read, counts.ingested, counts.already_present, counts.quarantined, counts.skipped) == \
        (11, 5, 1, 3, 2)
    conv = DeltaTable(str(lake / "raw/conversions")).to_pandas().set_index("conversion_id")
    assert conv.loc["1:10:1512000000", "attributed_click_id"] == "1:10:1512000000"
    assert conv.loc["1:11:1512000000", "attributed_click_id"] is None
    qc = DeltaTable(str(lake / "quarantine/clicks")).to_pandas().sort_values("source_row")
    assert list(qc.source_row) == [7, 8]
    assert "unknown behavior 'click'" in qc.reason.iloc[0] and "malformed Taobao record" in qc.reason.iloc[1]
    qv = DeltaTable(str(lake / "quarantine/conversions")).to_pandas()
    assert list(qv.source_row) == [11] and "conversion_ts: cannot parse 'yesterday'" in qv.reason.iloc[0]

    again = ingest_taobao(spark, IngestConfig(lake=str(lake)), str(path))  # the ingest log holds it: not read
    assert again.unchanged_since is not None and again.balanced
    assert (again.read, again.ingested, again.already_present, again.quarantined, again.skipped) == \
        (11, 0, 6, 3, 2)
    other_window = IngestConfig(lake=str(lake), attribution_window_s=2 * WINDOW_S)  # it would be read again
    assert known_file(spark, other_window, "taobao", str(path), "taobao")[1] is None
