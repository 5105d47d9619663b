"""The NE ablation: one ranker, several sets of user features, several training seeds, one test set.

Protocol (fixed before any test figure is looked at; the encoders, the generator and the baselines are
never tuned on it):

* The training set (``ranker.training_set``) gives every variant the same matured clicks and splits;
  variants differ only in the user vector: ``none`` (no embedding), ``shared``, ``click_only`` and
  ``duet`` (each its model version's embeddings, the same width for the three) in the demo; any model
  version can be a variant (``ranker.config.variant_versions``), an imported embedding ``ext-<name>``
  included, whatever its widths.
* Each variant trains with the same ``RankerConfig`` once per training seed, stops early on the
  validation log loss, and predicts the test split once.
* Reported per variant: NE, AUC, log loss and calibration, the mean over seeds; 95% intervals from a
  bootstrap over test users (the same replicates for every variant) of the seed-mean; the per-seed
  figures and training curves; a calibration curve of the seed-mean predictions.
* Beside each variant's NE, what its user vector knows: a linear probe on the same rows
  (``ranker.probe``: the summary alone against the summary and the vector, no candidate), so a vector that
  knows something the ranker does not use shows as a probe gain without a ranker gain.
* The claim: ``duet``'s relative NE reduction (``(NE_b - NE_duet) / NE_b``, positive = duet better), with
  its paired bootstrap interval, against a comparator named in advance: ``shared`` when it runs, else
  ``merged``, else the best baseline by mean NE (picking the best after the fact favours the baseline:
  a winner's curse against duet). ``reductions`` holds the same against every baseline, an imported
  embedding included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import TRAINING_EXAMPLES
from core.errors import DuetError
from core.files import atomic_path
from core.records import optional_key, to_dict
from core.variants import COMPARATORS, NO_VECTOR, PROPOSED, variant_names
from ranker import metrics
from ranker.checkpoint import save_ranker
from ranker.config import RankerConfig, is_variant
from ranker.data import load_splits
from ranker.probe import probe
from ranker.train import predict, train_ranker

DELAY_EDGES_H = (0, 1, 2, 4, 8, 16, 24, 48, 96, 168)


@dataclass(frozen=True)
class AblationConfig:
    """``model_versions``: variant -> model version, e.g. ``shared``, ``click_only`` and ``duet`` (any
    subset), or a model version under its own name (``ext-<name>``; ``ranker.config.variant_versions``);
    ``none`` always runs. ``save_as``: the variant whose first-seed ranker is saved for online scoring
    (under ``_rankers/<its model version>``; None saves nothing). ``predictions_path``: also write the test
    rows' predictions there as Parquet (``user_id``, ``label``, then ``<variant>/<seed>`` per variant and
    training seed), for analyses that pool runs (``benchmarks.duet_ablation``)."""

    lake: str
    model_versions: dict[str, str]
    seeds: tuple[int, ...] = (1, 2, 3)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    bootstrap: int = 200
    save_as: str | None = PROPOSED
    predictions_path: str | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.model_versions if v == NO_VECTOR or not is_variant(v)]
        if unknown:
            raise DuetError(f"unknown variant(s) {', '.join(sorted(unknown))}; expected "
                            f"{', '.join(variant_names())} or a model version (duet-3f2a9c1, ext-NAME)")
        if not self.model_versions:
            raise DuetError("the ablation needs at least one model version (the training set's)")
        if not self.seeds:
            raise DuetError("the ablation needs at least one training seed")


# ------------------------------------------------------------------------------------------------ results

Interval = tuple[float, float]   # a 95% bootstrap interval: (low, high)


@dataclass(frozen=True)
class Epoch:
    """One epoch of a ranker's training (``ranker.train``): the mean training loss (NaN for epoch 0, the
    wide part alone, which is fitted, not trained) and the validation log loss."""

    epoch: int
    train_loss: float
    valid_loss: float


@dataclass(frozen=True)
class SeedResult:
    """One training seed's ranker: its test figures and how its training went. ``ridge``: the wide part's
    penalty search (``lambda`` chosen, its ``valid_loss``, the ``path`` of every penalty tried), absent
    when the wide part trained with the rest (the delayed-feedback losses)."""

    seed: int
    ne: float
    auc: float
    logloss: float
    calibration: float
    best_epoch: int
    history: tuple[Epoch, ...]
    ridge: dict[str, Any] | None = optional_key()


def seed_result(seed: int, p: np.ndarray, y: np.ndarray, training: dict) -> SeedResult:
    """``seed``'s predictions ``p`` on the test labels ``y``, with ``training`` (``train_ranker``'s
    second value)."""
    return SeedResult(seed=seed, **metrics.summary(p, y), best_epoch=training["best_epoch"],
                      history=tuple(Epoch(**h) for h in training["history"]), ridge=training.get("ridge"))


def seed_means(seeds: list[SeedResult]) -> dict[str, float]:
    """NE, AUC, log loss and calibration, each the mean over the seeds."""
    return {k: float(np.mean([getattr(s, k) for s in seeds]))
            for k in ("ne", "auc", "logloss", "calibration")}


@dataclass(frozen=True)
class Probe:
    """The linear probe's test NE (``ranker.probe``): on the sequence summary alone and, for a variant with
    a user vector, on the summary and the vector, and the probe's gain from the vector."""

    ne_summary: float
    ne_with_vector: float | None = optional_key()
    gain: float | None = optional_key()


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-count bin of predicted probability: the mean prediction, the observed rate, its rows."""

    predicted: float
    observed: float
    count: int


@dataclass(frozen=True)
class VariantResult:
    """One variant: NE, AUC, log loss and calibration (seed means), the NE's spread over seeds, the probe,
    each seed's ranker, the calibration curve of the seed-mean predictions and the bootstrap intervals.
    ``model_version``: the embeddings' (None for ``none``)."""

    model_version: str | None
    probe: Probe
    ne: float
    auc: float
    logloss: float
    calibration: float
    ne_seed_sd: float
    seeds: tuple[SeedResult, ...]
    calibration_curve: tuple[CalibrationBin, ...]
    ne_interval: Interval
    auc_interval: Interval


@dataclass(frozen=True)
class LabelDelays:
    """Click-to-conversion delays of the positive examples: ``counts[i]`` in hours
    ``[edges[i], edges[i + 1])`` (the last bin takes every longer delay), and the median (None without
    a positive)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    median_hours: float | None


@dataclass(frozen=True)
class Reduction:
    """``variant``'s relative NE reduction against ``baseline``, ``(NE_b - NE_v) / NE_b`` (positive:
    ``variant`` better), and its paired bootstrap interval."""

    variant: str
    baseline: str
    mean: float
    interval: Interval


@dataclass(frozen=True)
class AblationResult:
    """What ``run_ablation`` measured (the module docstring). ``reductions``: duet's against every other
    variant, ``relative_ne_reduction``: the one against the comparator named in advance; both absent when
    duet did not run."""

    test_rows: int
    test_positives: int
    seeds: tuple[int, ...]
    bootstrap_replicates: int
    ranker: RankerConfig
    variants: dict[str, VariantResult]
    label_delay_hours: LabelDelays
    reductions: dict[str, Reduction] | None = optional_key()
    relative_ne_reduction: Reduction | None = optional_key()

    def to_dict(self) -> dict:
        return to_dict(self)


def delay_histogram(lake: str) -> LabelDelays:
    """Click-to-conversion delays (hours) of the positive examples, in ``DELAY_EDGES_H`` bins."""
    from core.object_storage import delta_table

    table = delta_table(TRAINING_EXAMPLES.location(lake)).to_pyarrow_table(columns=["conversion_delay_s"])
    delays = pc.drop_null(table.column("conversion_delay_s")).to_numpy() / 3600
    counts, _ = np.histogram(np.clip(delays, 0, DELAY_EDGES_H[-1]), bins=DELAY_EDGES_H)
    return LabelDelays(edges=DELAY_EDGES_H, counts=tuple(counts.tolist()),
                       median_hours=float(np.median(delays)) if len(delays) else None)


def ordered_variants(model_versions: dict[str, str]) -> list[str]:
    """``none``, the registry's variants in its order, then any other (a model version) in the order given."""
    names = variant_names()
    return [NO_VECTOR, *(v for v in names if v in model_versions),
            *(v for v in model_versions if v not in names)]


def _write_predictions(path: str, users, labels: np.ndarray, predictions: dict[str, list[np.ndarray]],
                       seeds: tuple[int, ...]) -> None:
    columns = {"user_id": pa.array(list(users), pa.string()), "label": pa.array(labels.astype(np.int8))}
    for variant, per_seed in predictions.items():
        for seed, p in zip(seeds, per_seed, strict=True):
            columns[f"{variant}/{seed}"] = pa.array(p.astype(np.float64))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def run_ablation(cfg: AblationConfig, log=print) -> AblationResult:
    """Train and evaluate every variant; return the result (see the module docstring)."""
    variants = ordered_variants(cfg.model_versions)
    any_version = next(iter(cfg.model_versions.values()))
    buckets = (cfg.ranker.ad_buckets, cfg.ranker.advertiser_buckets)
    predictions: dict[str, list[np.ndarray]] = {}
    figures: dict[str, dict] = {}   # each variant's VariantResult fields but the intervals, known at the end
    test_labels = test_users = None
    for variant in variants:
        started = time.perf_counter()
        version = cfg.model_versions.get(variant, any_version)
        splits = load_splits(cfg.lake, version, buckets, with_user=variant != NO_VECTOR)
        if min(len(splits["train"]), len(splits["valid"]), len(splits["test"])) == 0 or \
                splits["train"].label.sum() == 0 or splits["test"].label.sum() == 0:
            raise DuetError(f"the training set of {version} has an empty split or no positive example in "
                            "train or test: the data is too small for the ranker's splits")
        y = splits["test"].label.double().numpy()
        if test_labels is None:
            test_labels, test_users = y, splits["test"].user_ids
        elif not np.array_equal(test_labels, y):
            raise DuetError(f"variant {variant} has other test rows than the first: rebuild the training set")
        seeds = []
        predictions[variant] = []
        wide = None   # the wide part's fit, the same for every seed (ranker.train)
        for seed in cfg.seeds:
            model, training = train_ranker(replace(cfg.ranker, seed=seed), splits["train"], splits["valid"],
                                           wide=wide)
            wide = model.wide_fit
            p = predict(model, splits["test"]).numpy()
            predictions[variant].append(p)
            seeds.append(seed_result(seed, p, y, training))
            if variant == cfg.save_as and seed == cfg.seeds[0]:
                save_ranker(cfg.lake, version, model, replace(cfg.ranker, seed=seed),
                            {"variant": variant, "model_version": version})
        mean_p = np.mean(predictions[variant], axis=0)
        figures[variant] = {
            "model_version": cfg.model_versions.get(variant),
            "probe": Probe(**probe(splits, with_user=variant != NO_VECTOR)),
            **seed_means(seeds),
            "ne_seed_sd": float(np.std([s.ne for s in seeds], ddof=1)) if len(seeds) > 1 else 0.0,
            "seeds": tuple(seeds),
            "calibration_curve": tuple(CalibrationBin(**b) for b in metrics.calibration_curve(mean_p, y))}
        log(f"ranker {variant}: NE {figures[variant]['ne']:.4f}, AUC {figures[variant]['auc']:.4f} "
            f"({len(cfg.seeds)} seeds, {time.perf_counter() - started:.1f} s)")
    if cfg.predictions_path:
        _write_predictions(cfg.predictions_path, test_users, test_labels, predictions, cfg.seeds)
    weights = metrics.user_bootstrap_weights(test_users, cfg.bootstrap, seed=0)
    ne_replicates = metrics.bootstrap_ne(predictions, test_labels, weights)
    results = {}
    for variant in variants:
        aucs = np.mean([metrics.bootstrap_auc(p, test_labels, weights) for p in predictions[variant]], axis=0)
        results[variant] = VariantResult(**figures[variant],
                                         ne_interval=tuple(metrics.interval(ne_replicates[variant])),
                                         auc_interval=tuple(metrics.interval(aucs)))
    reductions = comparator = None
    baselines = [v for v in variants if v != PROPOSED]
    if PROPOSED in variants and baselines:
        def against(b: str) -> Reduction:
            reduction = (ne_replicates[b] - ne_replicates[PROPOSED]) / ne_replicates[b]
            point = (results[b].ne - results[PROPOSED].ne) / results[b].ne
            return Reduction(variant=PROPOSED, baseline=b, mean=float(point),
                             interval=tuple(metrics.interval(reduction)))

        reductions = {b: against(b) for b in baselines}
        named = next((b for b in COMPARATORS if b in baselines), None)
        comparator = named or min(baselines, key=lambda v: results[v].ne)
    return AblationResult(test_rows=int(len(test_labels)), test_positives=int(test_labels.sum()),
                          seeds=tuple(cfg.seeds), bootstrap_replicates=cfg.bootstrap, ranker=cfg.ranker,
                          variants=results, label_delay_hours=delay_histogram(cfg.lake),
                          reductions=reductions,
                          relative_ne_reduction=reductions[comparator] if reductions else None)
