"""The ranker against the generator's own ceiling (issue 22, acceptance 1, at twice the demo's users, one data
seed, one ranker seed): fed the generator's latents as the user vector, it must close at least half of the
gap between ``none`` and the oracle NE at signal 1 and be no worse than the ridge regression on the same
rows and inputs (its own wide part). ``benchmarks/ranker_ceiling.py`` runs the full protocol over seeds
and scales.
Also: the truth the generator writes, and the ceiling's pieces."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from duet.ceiling import DelayLaws, click_probabilities
from duet.generate import GeneratorConfig, generate, log_rates, read_truth


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    generate(GeneratorConfig(users=4000, days=28, seed=5), root / "events", root / "truth")
    return root / "events", root / "truth"


def test_the_truth_is_written_apart_and_changes_no_event(generated, tmp_path):
    events, truth = generated
    assert sorted(p.name for p in events.iterdir()) == ["clicks.parquet", "conversions.parquet"]
    assert sorted(p.name for p in truth.iterdir()) == [
        "advertisers.parquet", "generator.json", "users.parquet"]
    generate(GeneratorConfig(users=4000, days=28, seed=5), tmp_path)   # without --truth
    for name in ("clicks.parquet", "conversions.parquet"):
        assert pq.read_table(tmp_path / name).equals(pq.read_table(events / name))


def test_the_truths_probabilities_give_the_configured_conversion_rate(generated):
    events, truth = generated
    cfg, users, topic_of_adv = read_truth(truth)
    clicks = pq.read_table(events / "clicks.parquet", columns=["user_id", "advertiser_id"])
    index = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    u = np.asarray([index[x] for x in clicks.column("user_id").to_pylist()])
    t = topic_of_adv[np.asarray([int(a[3:]) for a in clicks.column("advertiser_id").to_pylist()])]
    theta = np.stack(users.column("theta").to_numpy(zero_copy_only=False))
    eta = np.stack(users.column("eta").to_numpy(zero_copy_only=False))
    rate = log_rates(cfg, theta[u], eta[u], users.column("propensity").to_numpy()[u])[np.arange(len(u)), t]
    p = np.minimum(users.column("scale").to_numpy()[u] * np.exp(rate), cfg.P_CAP)
    conversions = pq.read_table(events / "conversions.parquet", columns=["attributed_click_id"])
    attributed = conversions.num_rows - conversions.column("attributed_click_id").null_count
    # The truth's probabilities predict the attributed conversions: their sum is the count within 3 sd.
    assert abs(p.sum() - attributed) < 3 * np.sqrt(np.sum(p * (1 - p)))
    assert abs(p.mean() - cfg.cvr) < 0.1 * cfg.cvr


def test_the_delay_laws_are_monotone_and_the_window_caps_the_labelled_share():
    laws = DelayLaws(window_us=7 * 86_400e6, draws=200_000)
    ages = np.array([1, 8, 30, 60]) * 86_400e6
    labelled, observed = laws.labelled(ages), laws.observed(ages)
    assert np.all(np.diff(labelled) >= 0) and np.all(np.diff(observed) >= 0)
    assert np.all(labelled <= observed) and observed[-1] == pytest.approx(1.0, abs=1e-3)
    # About 91% of conversions happen within 7 days (log-normal, median 20 h, sigma 1.6).
    assert labelled[-1] == pytest.approx(0.908, abs=0.01)


def test_with_its_latents_the_ranker_closes_half_the_gap_to_the_oracle_and_beats_the_regression(generated):
    from benchmarks.ranker_ceiling import evaluate

    events, truth = generated
    figures = evaluate(events, truth, samples=500, seeds=(1,))
    print(figures)
    assert figures["oracle"] < figures["bayes"] < figures["none"]     # the ceiling leaves room
    assert figures["gap_closed"] >= 0.5
    assert figures["latents"] <= figures["ridge_latents"]
    assert figures["none"] <= figures["ridge_none"] + 0.002


def test_the_bayes_prediction_of_a_user_without_history_is_the_prior_mean(generated):
    events, truth = generated
    cfg, users, _ = read_truth(truth)
    cutoff = datetime(2026, 3, 1, tzinfo=UTC)
    rows = pa.table({"user_id": ["u0000000"], "advertiser_id": ["adv0000"],
                     "click_ts": pa.array([0], pa.timestamp("us", tz="UTC"))})   # 1970: nothing before it
    probs = click_probabilities(events, truth, rows, cutoff, samples=20_000)
    assert probs["ess"][0] == pytest.approx(20_000)      # no observation: every sample weighs the same
    # The prior mean of min(scale exp(log_rate), cap) by plain Monte Carlo (every topic alike a priori),
    # times the share of conversions labelled by the cutoff.
    rng = np.random.default_rng(3)
    theta = rng.dirichlet(np.full(cfg.topics, cfg.topic_alpha), 200_000)
    eta = rng.dirichlet(np.full(cfg.topics, cfg.topic_alpha), 200_000)
    s = rng.standard_normal(200_000)
    scale = users.column("scale").to_numpy()[0]
    prior = np.minimum(scale * np.exp(log_rates(cfg, theta, eta, s)[:, 0]), cfg.P_CAP).mean()
    labelled = DelayLaws(7 * 86_400e6).labelled(np.array([cutoff.timestamp() * 1e6]))[0]
    assert probs["bayes"][0] == pytest.approx(prior * labelled, rel=0.05)


def test_the_probe_finds_the_propensity_in_the_latents_and_nothing_in_noise(generated):
    from duet.ranker_sanity import generated_rows, latent_vectors, to_batch
    from ranker.config import RankerConfig
    from ranker.probe import probe

    events, truth = generated
    rows = generated_rows(events, truth)
    rng = np.random.default_rng(0)
    latents = {k: to_batch(t, RankerConfig(), latent_vectors(truth, t.column("user_id").to_pylist()))
               for k, t in rows.splits.items()}
    noise = {k: to_batch(t, RankerConfig(), rng.standard_normal((t.num_rows, 8)).astype(np.float32))
             for k, t in rows.splits.items()}
    found, nothing = probe(latents, with_user=True), probe(noise, with_user=True)
    assert found["gain"] > 0.01                 # the hidden propensity s says who converts, candidate-blind
    assert abs(nothing["gain"]) < 0.005 and found["ne_summary"] == pytest.approx(nothing["ne_summary"])


def test_a_vector_that_says_nothing_costs_the_wide_part_nothing(generated):
    """A random vector per user is a user id: under one ridge penalty for every input it cost 1.2% test NE
    (the penalty that silenced it also shrank the summary); the wide part's two penalties prevent that.
    The deep part still loses to it (0.45% NE on this data set: it memorises the ids before it learns
    what ``none``'s deep part learns, and stops early; BENCHMARKS.md), which this test does not hide: it
    checks the wide part, the floor the ranker guarantees. The wide part is fitted before the deep part
    trains and stays frozen (``ranker.train``), so one deep epoch gives the same wide predictions as a
    full training."""
    from core.metrics import normalized_entropy
    from duet.ranker_sanity import generated_rows, to_batch
    from ranker.config import RankerConfig
    from ranker.train import predict, train_ranker

    events, truth = generated
    rows = generated_rows(events, truth)
    rng = np.random.default_rng(1)
    users = sorted({u for t in rows.splits.values() for u in t.column("user_id").to_pylist()})
    vectors = dict(zip(users, rng.standard_normal((len(users), 64)).astype(np.float32), strict=True))
    y = rows.splits["test"].column("label").to_numpy().astype(float)
    ne = {}
    for name in ("none", "noise"):
        batches = {k: to_batch(t, RankerConfig(), None if name == "none" else
                               np.stack([vectors[u] for u in t.column("user_id").to_pylist()]))
                   for k, t in rows.splits.items()}
        model, _ = train_ranker(RankerConfig(seed=1, max_epochs=1), batches["train"], batches["valid"])
        ne[name] = normalized_entropy(predict(model, batches["test"], wide_only=True).numpy(), y)
    assert ne["noise"] <= ne["none"] + 0.003, ne
