"""Stability gates (issue 26, acceptance 4): ``serving.drift``'s figures and their GX check.

Embeddings built like a trained encoder's (a direction every user shares, each user's own part; a day
later each user moved a little) so that the figures sit where the demo's do (the bounds' measurements are
in ``serving/drift.py``). A snapshot with its user ids shuffled, or its vectors times 3, fails the
same-version gate naming the figure, its value and its bound; the next day's re-embedding passes. Across
versions, a re-train (another basis: a rotation of what the first knew, plus its own noise) passes and the
same re-train with user ids shuffled fails. The gates run on a real Delta table (delta-rs) and GX, and
``promote`` refuses to move the alias on a failure, before anything is written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from core.errors import ValidationFailed
from serving import drift
from tests.feature_lake import write_checkpoint, write_embeddings

USERS = 300
D = 16
T1, T2 = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)
V, W = "duet-aaaaaaa", "duet-bbbbbbb"


def _day(rng, latent: np.ndarray, common: np.ndarray, noise: float = 0.3) -> np.ndarray:
    """A trained encoder's vectors: a shared direction, each user's own part, a little day-to-day change."""
    return common + latent + noise * rng.normal(size=latent.shape)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    users = np.array([f"u{i:04d}" for i in range(USERS)], dtype=object)
    click, conversion = rng.normal(size=(USERS, D)), rng.normal(size=(USERS, D))
    common_click, common_conversion = 3 * rng.normal(size=D), 3 * rng.normal(size=D)
    day1 = drift.Vectors(users, _day(rng, click, common_click), _day(rng, conversion, common_conversion))
    day2 = drift.Vectors(users, _day(rng, click, common_click), _day(rng, conversion, common_conversion))
    # A re-train on the same data: what the users are, in another basis and at another scale, with noise
    # of its own (an orthogonal Q from a QR decomposition).
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    retrain = drift.Vectors(users, 1.3 * _day(rng, click, common_click, 0.6) @ q,
                            1.3 * _day(rng, conversion, common_conversion, 0.6) @ q)
    return {"day1": day1, "day2": day2, "retrain": retrain, "rng": rng}


def _shuffled(v: drift.Vectors, seed: int = 1) -> drift.Vectors:
    order = np.random.default_rng(seed).permutation(len(v.users))
    return drift.Vectors(v.users[order], v.click, v.conversion)


def _rescaled(v: drift.Vectors, by: float = 3.0) -> drift.Vectors:
    return drift.Vectors(v.users, v.click * by, v.conversion * by)


def _failed_figures(report: drift.DriftReport) -> set[str]:
    return {f.split(" = ")[0] for f in report.failed}


def test_same_version_gate_passes_a_reembedding_and_fails_a_shuffled_or_rescaled_snapshot(world):
    day1, day2 = world["day1"], world["day2"]
    normal = drift.check("same_version", drift.same_version_figures(day1, day2), "next day")
    assert normal.success, normal.failed
    assert normal.evaluated == 2 * len(drift.BOUNDS["same_version"])     # every figure checked by GX

    shuffled = drift.check("same_version", drift.same_version_figures(day1, _shuffled(day2)), "shuffled")
    assert not shuffled.success
    assert {"click_cosine_median", "conversion_cosine_median", "knn_overlap"} <= _failed_figures(shuffled)
    assert not {"click_norm_ratio", "click_norm_ks"} & _failed_figures(shuffled)     # norms are the same

    rescaled = drift.check("same_version", drift.same_version_figures(day1, _rescaled(day2)), "x3")
    assert _failed_figures(rescaled) == {"click_norm_ratio", "click_norm_ks", "conversion_norm_ratio",
                                         "conversion_norm_ks"}    # directions and neighbours unchanged
    message = rescaled.message()
    assert "\n" not in message and message.startswith("x3 failed the same-version drift gate: ")
    ratio = rescaled.figures["click_norm_ratio"]
    assert f"click_norm_ratio = {ratio:.3f}, bound within [0.8, 1.25]" in message and 2.9 < ratio < 3.1


def test_cross_version_gate_passes_a_retrain_and_fails_it_shuffled(world):
    day1, retrain = world["day1"], world["retrain"]
    raw = np.median(drift.cosines(day1.click, retrain.click))
    figures = drift.cross_version_figures(day1, retrain)
    # Raw coordinates mean nothing across trainings; after the orthogonal fit the users line up.
    assert abs(raw) < 0.5 < figures["aligned_cosine_median"]
    report = drift.check("cross_version", figures, "re-train")
    assert report.success, report.failed

    shuffled = drift.check("cross_version", drift.cross_version_figures(day1, _shuffled(retrain)), "shuffled")
    assert {"knn_overlap", "aligned_cosine_median", "procrustes_residual"} <= _failed_figures(shuffled)


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8))
    q = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    r = drift.procrustes(x @ q, x)
    assert np.allclose(r @ r.T, np.eye(8), atol=1e-8)
    assert np.allclose(x @ q @ r, x, atol=1e-8)


def _lake(tmp_path, world, candidate: drift.Vectors) -> str:
    """V at T1 and T2 (the next day: ``candidate``) and the re-train W at T2, in a real Delta table."""
    lake = str(tmp_path / "lake")
    for i, version in enumerate((V, W)):
        write_checkpoint(lake, version, D, datetime(2026, 1, 1, i, tzinfo=UTC))

    def rows(v: drift.Vectors, at: datetime, version: str) -> list[dict]:
        return [{"user_id": u, "event_timestamp": at, "created_timestamp": at, "model_version": version,
                 "click_embedding": c.tolist(), "conversion_embedding": k.tolist()}
                for u, c, k in zip(v.users, v.click, v.conversion, strict=True)]

    write_embeddings(lake, rows(world["day1"], T1, V) + rows(candidate, T2, V)
                     + rows(world["retrain"], T2, W))
    return lake


def test_the_gates_on_a_lake_raise_one_clear_line_and_allow_drift_records_it(tmp_path, world):
    lake = _lake(tmp_path, world, _shuffled(world["day2"]))
    assert drift.same_version_gate(lake, V, T1) is None             # no earlier snapshot: nothing to judge
    with pytest.raises(ValidationFailed) as failed:
        drift.same_version_gate(lake, V, T2)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"{V} at {T2.isoformat()} (vs its snapshot {T1.isoformat()}) failed the "
                              "same-version drift gate: ")
    assert "knn_overlap = " in message and "bound >= 0.15" in message and "--allow-drift" in message

    allowed = drift.same_version_gate(lake, V, T2, allow=True)
    assert (allowed.success, allowed.skipped) == (False, "--allow-drift")
    written = json.loads(open(allowed.results).read())
    assert written["failed"] == allowed.failed and written["gx"]["success"] is False



def test_too_few_users_are_not_judged(tmp_path, world):
    small = world["day2"].take(np.arange(drift.MIN_USERS - 1))
    lake = _lake(tmp_path, world, _shuffled(small))
    report = drift.same_version_gate(lake, V, T2)
    assert report.skipped.startswith(f"{drift.MIN_USERS - 1} users in common") and not report.failed


def test_a_previous_snapshot_further_back_than_the_gap_is_not_judged(tmp_path, world):
    """A snapshot that fails against a predecessor of the day before is not judged a week after it."""
    lake = _lake(tmp_path, world, _shuffled(world["day2"]))    # V at T2: day 2's vectors, users shuffled
    v, later = world["day1"], T2 + drift.MAX_SAME_GAP + (T2 - T1)
    write_embeddings(lake, [{"user_id": u, "event_timestamp": later, "created_timestamp": later,
                             "model_version": V, "click_embedding": c.tolist(),
                             "conversion_embedding": k.tolist()}
                            for u, c, k in zip(v.users, v.click, v.conversion, strict=True)])
    report = drift.same_version_gate(lake, V, later)
    assert report.skipped.endswith("not judged") and "more than 2 days" in report.skipped
    assert not report.failed


def test_promote_refuses_a_version_that_fails_the_cross_version_gate(tmp_path, world):
    """The alias stays where it was: the record is not written and nothing is applied."""
    from feature_repo.catalog import read_serving
    from serving.store import StoreConfig
    from serving.versions import promote, write_record

    lake = str(tmp_path / "lake")
    for i, version in enumerate((V, W)):
        write_checkpoint(lake, version, D, datetime(2026, 1, 1, i, tzinfo=UTC))
    shuffled = _shuffled(world["retrain"])
    write_embeddings(lake, [
        {"user_id": u, "event_timestamp": T2, "created_timestamp": T2, "model_version": version,
         "click_embedding": c.tolist(), "conversion_embedding": k.tolist()}
        for version, v in ((V, world["day2"]), (W, shuffled))
        for u, c, k in zip(v.users, v.click, v.conversion, strict=True)])
    entry = {"snapshot": T2.isoformat(), "users": USERS, "online_store": "sqlite", "published_at": "x"}
    before = {"model_version": V, **entry, "versions": {V: entry, W: entry}, "contract_views": V}
    write_record(lake, before)
    expected = (rf"^not promoted, the alias still serves {V}: {W} at .* failed the cross-version drift "
                "gate: knn_overlap = ")
    with pytest.raises(ValidationFailed, match=expected):
        promote(StoreConfig(lake), W, log=lambda _: None)
    assert read_serving(lake) == before




def test_past_max_gate_users_the_gates_read_one_hash_sample_of_users_on_both_sides(tmp_path, world,
                                                                                   monkeypatch):
    """A snapshot larger than ``MAX_GATE_USERS`` is judged on the same hash sample of users on both sides
    (streamed: memory holds the sample), and the verdicts stay: a shuffle fails, the next day passes."""
    monkeypatch.setattr(drift, "MAX_GATE_USERS", USERS // 2)
    lake = _lake(tmp_path, world, world["day2"])
    fraction = drift.sample_fraction(lake, (V, T1), (V, T2))
    assert fraction == pytest.approx(0.5)
    old, new = drift.read_vectors(lake, V, T1, fraction), drift.read_vectors(lake, V, T2, fraction)
    assert list(old.users) == list(new.users) and drift.MIN_USERS < len(old.users) < USERS * 0.65
    assert set(old.users) == {u for u in world["day1"].users if drift.in_sample([u], fraction)[0]}
    passed = drift.same_version_gate(lake, V, T2)
    assert passed.success and "on 50.00% of the users" in passed.subject

    shuffled = _lake(tmp_path / "shuffled", world, _shuffled(world["day2"]))
    with pytest.raises(ValidationFailed, match="on 50.00% of the users .* failed the same-version drift"):
        drift.same_version_gate(shuffled, V, T2)
