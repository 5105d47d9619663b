"""The delayed-feedback experiment: rankers trained at an instant when recent labels are still arriving.

A ranker deployed at ``trained_at`` can only learn from what was reported by then. Clicks older than the
attribution window plus the report grace have final labels (*matured*); younger ones show a 0 that may
still become a 1. Four ways to train at ``trained_at`` (``MODES``), replayed from one pool, one test set:

* ``matured``: the default, matured clicks only (final labels, but the freshest days are left out);
* ``naive``: every click once with the label seen at ``trained_at`` (fresh, but a late positive counts as a
  negative: biased down, to the rate of the conversions reported by then);
* ``elapsed_weighted``: every click once with its seen label, weighted by the elapsed-time weights of
  ``ranker.delay_weights`` (a seen positive ``1 / F(e)``, a seen negative ``(1 - p) / (1 - p F(e))``): the
  expected loss is the loss on the eventual labels. This project's estimator (named ``importance`` before
  issue 22), not a published one;
* ``fnw``: FNW as published (Ktena et al. 2019; the loss and its derivation in ``ranker.delay_weights``):
  every click once as a negative (as it entered the stream at click time), and each click whose conversion
  was reported by ``trained_at`` once more as a positive (``fake_negative_rows``), trained on the fake
  negative weighted loss (a positive row ``1 + p``, a negative row ``(1 - p)(1 + p)``, ``p`` the model's own
  prediction, gradient stopped). The model's output estimates the eventual rate (not the rows' positive
  share ``p / (1 + p)``) and is used as it is on the test set. Its derivation assumes every conversion's
  duplicate is in the data; at ``trained_at`` a conversion not reported yet has none, and for those clicks
  FNW converges, like ``naive``, to the rate reported by then: it corrects the duplication, not the wait.

Protocol (fixed before any result of it was looked at; ``fnw`` was added, and ``importance`` renamed
``elapsed_weighted``, after the first results, with the protocol unchanged):

* The pool: the clicks of ``[history_from, trained_at)`` labelled at ``trained_at``
  (``ranker.training_set.delayed_feedback_pool``), the same for every mode; users whose id hashes into
  ``valid_share`` of the buckets are held out for early stopping (the same users in every mode), so each
  mode stops on data it could have had at ``trained_at``, with its own training loss (matured: the held-out
  users' matured clicks, plain; naive: all of their clicks, plain; elapsed_weighted: all of their clicks,
  weighted; fnw: their clicks as negatives and the duplicates of their reported conversions, FNW's loss).
* ``F(e)`` (``elapsed_weighted`` only) from the first-report delays of the pool's matured positives
  (known at ``trained_at``).
* The test set: the ablation's (``split = test`` of ``training/training_set``, final labels), which
  starts at or after ``trained_at`` (checked), so no mode sees a test click or its label.
* Features: the ``none`` variant's (ids and the sequence summary, no user embedding) with the ablation's
  ``RankerConfig``: the pool reaches back before the encoders' pre-training ended, where their embeddings
  are in-sample, so the experiment measures the labels, not the embeddings.
* Each mode trains once per training seed; NE, AUC, log loss, calibration are the seed means; intervals
  from the same user bootstrap as the ablation (paired across modes); every other mode's relative NE
  reduction against ``matured`` is reported. The pre-registered claim (``benchmarks/ranker_ablation.py``)
  is ``elapsed_weighted``'s; ``fnw``'s came after the first results and is no claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.errors import DuetError
from core.records import to_dict
from core.times import arrow_micros, micros
from encoders.hashing import bucketize
from ranker import metrics
from ranker.config import RankerConfig
from ranker.data import Batch, read_training_set, to_batch
from ranker.delay_weights import ObservationCDF
from ranker.evaluate import Interval, SeedResult, seed_means, seed_result
from ranker.train import predict, train_ranker

MODES = ("matured", "naive", "elapsed_weighted", "fnw")


@dataclass(frozen=True)
class DelayedFeedbackConfig:
    """``trained_at``: the instant the rankers are trained (labels as reported by then); the test rows
    are ``model_version``'s test split of ``training/training_set`` (the ablation's test set)."""

    lake: str
    model_version: str
    trained_at: datetime
    attribution_window: timedelta = timedelta(days=7)
    report_grace: timedelta = timedelta(days=1)
    seeds: tuple[int, ...] = (1, 2, 3)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    valid_share: float = 0.1
    min_observed: float = 0.05
    bootstrap: int = 200

    def __post_init__(self) -> None:
        if self.trained_at.tzinfo is None:
            raise DuetError("delayed feedback: trained_at must be a zone-aware instant")
        if not 0 < self.valid_share < 1:
            raise DuetError("delayed feedback: valid_share must be in (0, 1)")
        if not self.seeds:
            raise DuetError("delayed feedback needs at least one training seed")

    @property
    def horizon(self) -> timedelta:
        return self.attribution_window + self.report_grace


def held_out(user_ids: pa.ChunkedArray, share: float) -> np.ndarray:
    """(n,) bool: the users whose id hashes into the first ``share`` of 1,000 buckets."""
    return (bucketize(user_ids, 1001) - 1) < round(share * 1000)


def observation_cdf(pool: pa.Table, cfg: DelayedFeedbackConfig) -> ObservationCDF:
    """``F(e)`` from the first-report delays of the pool's matured positives."""
    matured = pool.column("matured").to_numpy(zero_copy_only=False)
    positive = pool.column("label").to_numpy(zero_copy_only=False) == 1
    delays = pc.fill_null(pool.column("report_delay_s"), np.nan).to_numpy(zero_copy_only=False)
    return ObservationCDF.from_delays(delays[matured & positive], cfg.horizon.total_seconds(),
                                      cfg.min_observed)


def fake_negative_rows(pool: pa.Table, trained_at: datetime) -> pa.Table:
    """FNW's rows at ``trained_at``: every click of ``pool`` once with label 0 (as it entered the stream at
    click time), then each click whose conversion was reported by ``trained_at`` once more with label 1
    (both parts in pool order). The pool's label 1 is that report; a label 1 whose report
    (``click_ts + report_delay_s``) is missing or after ``trained_at`` is refused: such a pool was not
    labelled at ``trained_at``, and its other modes would see a label from the future."""
    label = pool.column("label").to_numpy(zero_copy_only=False)
    positives = np.flatnonzero(label == 1)
    delay_s = pc.fill_null(pool.column("report_delay_s"), np.nan).to_numpy(zero_copy_only=False)[positives]
    reported_us = arrow_micros(pool.column("click_ts"))[positives] + np.rint(delay_s.astype(np.float64) * 1e6)
    late = ~(reported_us <= micros(trained_at))     # NaN (no report) counts as late
    if late.any():
        raise DuetError(f"delayed feedback: {int(late.sum())} positive(s) of the pool have no report by "
                        f"the training instant {trained_at.isoformat()}: the pool is not labelled at it")
    label_field = pool.schema.field("label")
    negatives = pool.set_column(pool.schema.get_field_index("label"), label_field,
                                pa.array(np.zeros(pool.num_rows, label.dtype), label_field.type))
    return pa.concat_tables([negatives, pool.take(pa.array(positives, pa.int64()))])


def mode_batches(pool: pa.Table, cfg: DelayedFeedbackConfig, cdf: ObservationCDF
                 ) -> dict[str, tuple[Batch, Batch]]:
    """(train, valid) per mode (module docstring), the held-out users' rows validating:
    ``elapsed_weighted``'s batches carry ``observed = F(trained_at - click_ts)``, ``fnw``'s are the rows of
    ``fake_negative_rows`` with ``fake_negatives`` set."""
    buckets = (cfg.ranker.ad_buckets, cfg.ranker.advertiser_buckets)
    matured = pool.column("matured").to_numpy(zero_copy_only=False)
    valid = held_out(pool.column("user_id"), cfg.valid_share)
    elapsed = (micros(cfg.trained_at) - arrow_micros(pool.column("click_ts"))) / 1e6
    observed = torch.from_numpy(cdf(elapsed))
    stream = fake_negative_rows(pool, cfg.trained_at)
    stream_valid = held_out(stream.column("user_id"), cfg.valid_share)

    def part(table: pa.Table, mask: np.ndarray, weights: torch.Tensor | None = None,
             fake_negatives: bool = False) -> Batch:
        rows = np.flatnonzero(mask)
        batch = to_batch(table.take(pa.array(rows, pa.int64())), buckets, with_user=False)
        batch.observed = None if weights is None else weights[torch.from_numpy(rows)]
        batch.fake_negatives = fake_negatives
        return batch

    return {"matured": (part(pool, matured & ~valid), part(pool, matured & valid)),
            "naive": (part(pool, ~valid), part(pool, valid)),
            "elapsed_weighted": (part(pool, ~valid, observed), part(pool, valid, observed)),
            "fnw": (part(stream, ~stream_valid, fake_negatives=True),
                    part(stream, stream_valid, fake_negatives=True))}


def evaluation_batch(cfg: DelayedFeedbackConfig) -> Batch:
    """The ablation's test rows (final labels), refused if any click comes before ``trained_at``."""
    table = read_training_set(cfg.lake, cfg.model_version)
    table = table.filter(pc.equal(table.column("split"), "test"))
    if table.num_rows == 0 or pc.sum(table.column("label")).as_py() in (None, 0):
        raise DuetError(f"{cfg.model_version} has no test rows or no positive test row")
    first = int(arrow_micros(table.column("click_ts")).min())
    if first < micros(cfg.trained_at):
        raise DuetError(f"delayed feedback: the test set starts before the training instant "
                        f"{cfg.trained_at.isoformat()}: its labels would leak into training")
    return to_batch(table, (cfg.ranker.ad_buckets, cfg.ranker.advertiser_buckets), with_user=False)


@dataclass(frozen=True)
class FirstReport:
    """Hours from a click to the first report of its conversion, over the pool's matured positives."""

    median_hours: float
    p90_hours: float


@dataclass(frozen=True)
class PoolFigures:
    """The pool's clicks at ``trained_at``: how many matured (and of those, positive), how many are still
    maturing (and of those, already seen positive), and how long reports took."""

    clicks: int
    matured: int
    matured_positives: int
    immature: int
    immature_seen_positives: int
    first_report: FirstReport


def pool_figures(pool: pa.Table, cdf: ObservationCDF) -> PoolFigures:
    matured = pool.column("matured").to_numpy(zero_copy_only=False)
    label = pool.column("label").to_numpy(zero_copy_only=False)
    return PoolFigures(clicks=int(len(label)), matured=int(matured.sum()),
                       matured_positives=int(label[matured].sum()), immature=int((~matured).sum()),
                       immature_seen_positives=int(label[~matured].sum()),
                       first_report=FirstReport(**cdf.quantiles()))


@dataclass(frozen=True)
class ModeResult:
    """One mode: its training rows (and the positives seen in them), NE, AUC, log loss and calibration
    (seed means), each seed's ranker, and the NE's bootstrap interval."""

    train_rows: int
    train_seen_positives: int
    ne: float
    auc: float
    logloss: float
    calibration: float
    seeds: tuple[SeedResult, ...]
    ne_interval: Interval


@dataclass(frozen=True)
class ModeReduction:
    """A mode's relative NE reduction against ``matured`` (positive: the mode better), with its paired
    bootstrap interval."""

    mean: float
    interval: Interval


@dataclass(frozen=True)
class DelayedFeedbackResult:
    """What ``run_delayed_feedback`` measured (the module docstring): per mode (``MODES``) its figures,
    and every other mode's reduction against ``matured``, keyed ``"<mode> vs matured"``."""

    trained_at: datetime
    model_version_of_test_rows: str
    features: str
    seeds: tuple[int, ...]
    test_rows: int
    test_positives: int
    pool: PoolFigures
    modes: dict[str, ModeResult]
    relative_ne_reduction: dict[str, ModeReduction]

    def to_dict(self) -> dict:
        return to_dict(self)


def run_delayed_feedback(cfg: DelayedFeedbackConfig, pool: pa.Table, log=print) -> DelayedFeedbackResult:
    """Train every mode on ``pool``, evaluate on the test set; return the result (module docstring)."""
    cdf = observation_cdf(pool, cfg)
    batches = mode_batches(pool, cfg, cdf)
    test = evaluation_batch(cfg)
    y = test.label.double().numpy()
    predictions: dict[str, list[np.ndarray]] = {}
    figures: dict[str, dict] = {}   # each mode's ModeResult fields but the interval, known at the end
    for mode in MODES:
        started = time.perf_counter()
        train, valid = batches[mode]
        if train.label.sum() == 0 or len(valid) == 0:
            raise DuetError(f"delayed feedback: the {mode} pool has no positive training click or no "
                            "held-out click: the history before the training instant is too short")
        seeds = []
        predictions[mode] = []
        for seed in cfg.seeds:
            model, training = train_ranker(replace(cfg.ranker, seed=seed), train, valid)
            p = predict(model, test).numpy()
            predictions[mode].append(p)
            seeds.append(seed_result(seed, p, y, training))
        figures[mode] = {"train_rows": len(train), "train_seen_positives": int(train.label.sum()),
                         **seed_means(seeds), "seeds": tuple(seeds)}
        log(f"delayed feedback {mode}: NE {figures[mode]['ne']:.4f}, AUC {figures[mode]['auc']:.4f}, "
            f"calibration {figures[mode]['calibration']:.3f} ({len(train):,} training rows, "
            f"{time.perf_counter() - started:.1f} s)")
    weights = metrics.user_bootstrap_weights(test.user_ids, cfg.bootstrap, seed=0)
    replicates = metrics.bootstrap_ne(predictions, y, weights)
    modes = {mode: ModeResult(**figures[mode], ne_interval=tuple(metrics.interval(replicates[mode])))
             for mode in MODES}
    reductions = {}
    for mode in (m for m in MODES if m != "matured"):
        point = (modes["matured"].ne - modes[mode].ne) / modes["matured"].ne
        paired = (replicates["matured"] - replicates[mode]) / replicates["matured"]
        reductions[f"{mode} vs matured"] = ModeReduction(mean=float(point),
                                                         interval=tuple(metrics.interval(paired)))
    return DelayedFeedbackResult(trained_at=cfg.trained_at, model_version_of_test_rows=cfg.model_version,
                                 features="none (ids and the sequence summary)", seeds=tuple(cfg.seeds),
                                 test_rows=int(len(y)), test_positives=int(y.sum()),
                                 pool=pool_figures(pool, cdf), modes=modes, relative_ne_reduction=reductions)
