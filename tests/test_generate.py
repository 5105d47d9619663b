"""The synthetic event generator: determinism, the documented statistics, the conversion-signal control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.errors import DuetError
from duet.generate import GeneratorConfig, generate, read_truth, setting

USERS, DAYS = 2000, 14


def _load(out):
    clicks = pq.read_table(out / "clicks.parquet").to_pandas()
    conversions = pq.read_table(out / "conversions.parquet").to_pandas()
    return clicks, conversions


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    summary = generate(GeneratorConfig(users=USERS, days=DAYS, seed=1), out)
    return summary, *_load(out)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    cfg = GeneratorConfig(users=300, days=5, seed=7, chunk_users=128)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(cfg, a)
    generate(cfg, b)
    generate(GeneratorConfig(users=300, days=5, seed=8, chunk_users=128), c)
    for name in ("clicks.parquet", "conversions.parquet"):
        assert pq.read_table(a / name).equals(pq.read_table(b / name))
        assert not pq.read_table(a / name).equals(pq.read_table(c / name))
    # Chunks become row groups: memory is bounded by a chunk, not by the data set.
    assert pq.ParquetFile(a / "clicks.parquet").metadata.num_row_groups == 3
    assert not list(a.glob("*.tmp"))


def test_schema_is_the_input_layout_with_microsecond_utc(events):
    summary, clicks, conversions = events
    assert list(clicks.columns) == ["click_id", "user_id", "ad_id", "advertiser_id", "click_ts"]
    assert list(conversions.columns) == ["conversion_id", "user_id", "advertiser_id", "conversion_type",
                                         "conversion_ts", "report_ts", "attributed_click_id", "value"]
    assert str(clicks.click_ts.dtype) == "datetime64[us, UTC]"
    assert summary.clicks == len(clicks) and summary.conversions == len(conversions)
    assert clicks.click_id.is_unique and conversions.conversion_id.is_unique
    start = pd.Timestamp("2026-01-05", tz="UTC")
    assert clicks.click_ts.min() >= start and clicks.click_ts.max() < start + pd.Timedelta(days=DAYS)


def test_documented_statistics(events):
    summary, clicks, conversions = events
    attributed = conversions[conversions.attributed_click_id.notna()]
    # 1-3% of clicks lead to an attributed conversion; 30% of conversions unattributed.
    assert 0.01 <= len(attributed) / len(clicks) <= 0.03
    assert 0.25 <= summary.unattributed_conversions / summary.conversions <= 0.35
    # Heavy-tailed activity: the top 10% of users make well over 10% of clicks.
    per_user = clicks.groupby("user_id").size().sort_values(ascending=False)
    assert per_user.head(len(per_user) // 10).sum() / per_user.sum() > 0.3
    # Delays: about half within a day, a tail up to 30 days; reports minutes to days after.
    joined = attributed.merge(clicks, left_on="attributed_click_id", right_on="click_id", suffixes=("", "_c"))
    assert len(joined) == len(attributed) and (joined.user_id == joined.user_id_c).all()
    delay = (joined.conversion_ts - joined.click_ts).dt.total_seconds()
    assert (delay > 0).all() and delay.max() <= 30 * 86400
    assert 0.4 <= (delay <= 86400).mean() <= 0.65
    assert (delay > 7 * 86400).mean() > 0.01
    report = (conversions.report_ts - conversions.conversion_ts).dt.total_seconds()
    assert report.min() >= 60 and report.max() <= 14 * 86400
    assert 0.1 < (report > 86400).mean() < 0.3 and (report < 3600).mean() > 0.3
    assert set(conversions.conversion_type) == {"purchase", "add_to_cart", "lead", "install"}
    assert conversions.value.isna().any() and (conversions.value.dropna() > 0).all()


def _repeat_lift(out) -> float:
    """Week-2 click CVR of users who converted in week 1 over that of users who did not."""
    clicks, conversions = _load(out)
    split = clicks.click_ts.min() + pd.Timedelta(days=7)
    early = set(conversions.loc[conversions.conversion_ts < split, "user_id"])
    late_clicks = clicks[clicks.click_ts >= split]
    late_att = conversions[conversions.attributed_click_id.isin(late_clicks.click_id)]
    per_user = late_clicks.groupby("user_id").size().rename("n").to_frame()
    per_user["conv"] = late_att.groupby("user_id").size().reindex(per_user.index, fill_value=0)
    per_user["early"] = per_user.index.isin(early)
    sums = per_user.groupby("early")[["conv", "n"]].sum()
    rate = sums.conv / sums.n
    return float(rate[True] / rate[False])


def test_conversion_signal_makes_past_conversions_predictive(tmp_path):
    lifts = {}
    for signal in (0.0, 2.0):
        out = tmp_path / f"s{signal}"
        generate(GeneratorConfig(users=4000, days=14, seed=3, conversion_signal=signal), out)
        lifts[signal] = _repeat_lift(out)
    print(lifts)
    # With signal, having converted before says much more about converting again than without.
    assert lifts[2.0] > 1.5 * lifts[0.0], lifts
    assert lifts[0.0] < 2.0, lifts


def test_lost_attributions_follow_a_click_on_the_same_advertiser(tmp_path):
    generate(GeneratorConfig(users=500, days=14, seed=5, unattributed="lost"), tmp_path)
    clicks, conversions = _load(tmp_path)
    lost = conversions[conversions.attributed_click_id.isna()]
    assert 0.25 < len(lost) / len(conversions) < 0.35
    first_click = clicks.groupby(["user_id", "advertiser_id"]).click_ts.min()
    before = first_click.reindex(pd.MultiIndex.from_frame(lost[["user_id", "advertiser_id"]])).to_numpy()
    assert (before < lost.conversion_ts.to_numpy()).all()      # each after a click of the same pair
    # the independent default draws them anywhere: many have no earlier click on the advertiser
    generate(GeneratorConfig(users=500, days=14, seed=5), tmp_path / "independent")
    clicks, conversions = _load(tmp_path / "independent")
    free = conversions[conversions.attributed_click_id.isna()]
    first_click = clicks.groupby(["user_id", "advertiser_id"]).click_ts.min()
    before = first_click.reindex(pd.MultiIndex.from_frame(free[["user_id", "advertiser_id"]])).to_numpy()
    assert (pd.isna(before) | (before >= free.conversion_ts.to_numpy())).mean() > 0.3


def _weekly_topic_shift(out) -> float:
    """Mean total variation between each user's click topics in the first and the third week."""
    clicks, _ = _load(out)
    _, _, topic_of_adv = read_truth(out / "truth")
    clicks["topic"] = topic_of_adv[clicks.advertiser_id.str[3:].astype(int)]
    week = (clicks.click_ts - clicks.click_ts.min()).dt.days // 7
    shares = [clicks[week == w].groupby("user_id").topic.value_counts(normalize=True).unstack(fill_value=0)
              for w in (0, 2)]
    a, b = shares[0].align(shares[1], join="inner", fill_value=0)
    return float((a - b).abs().sum(axis=1).mean() / 2)


def test_interest_drift_moves_click_topics_between_weeks_and_the_ceiling_refuses_it(tmp_path):
    from duet.ceiling import click_probabilities

    shift = {}
    for drift in (0.0, 0.5):
        out = tmp_path / f"d{drift}"
        generate(GeneratorConfig(users=400, days=21, seed=2, clicks_per_day=10, interest_drift=drift), out,
                 out / "truth")
        shift[drift] = _weekly_topic_shift(out)
    assert shift[0.5] > shift[0.0] + 0.1, shift
    with pytest.raises(DuetError, match="ceiling models the generator's default dynamics"):
        click_probabilities(tmp_path / "d0.5", tmp_path / "d0.5" / "truth", None, None)


def test_named_settings_and_overrides():
    targeted = setting("duet-targeted", users=10, seed=4)
    assert (targeted.unattributed, targeted.interest_drift, targeted.users) == ("lost", 0.5, 10)
    default = GeneratorConfig()
    assert targeted.clicks_per_day / targeted.cvr > 4 * default.clicks_per_day / default.cvr
    assert setting("default") == GeneratorConfig()
    with pytest.raises(DuetError, match="unknown generator setting 'paper'.*default, duet-targeted"):
        setting("paper")


@pytest.mark.parametrize("bad", [dict(users=0), dict(unattributed_share=1.0), dict(cvr=0.0),
                                 dict(conversion_signal=-1.0), dict(unattributed="random"),
                                 dict(interest_drift=1.5)])
def test_invalid_settings_are_rejected_by_name(bad):
    with pytest.raises(DuetError, match=next(iter(bad))):
        GeneratorConfig(**bad)


def test_values_are_numpy_free_of_nan_timestamps(events):
    _, clicks, conversions = events
    assert not clicks.isna().any().any()
    assert not conversions[["conversion_ts", "report_ts"]].isna().any().any()
    assert np.all(conversions.report_ts >= conversions.conversion_ts)
