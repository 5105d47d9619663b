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

import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import TRAINING_EXAMPLES
from core.errors import DuetError
from ranker import metrics
from ranker.checkpoint import save_ranker
from ranker.config import VARIANTS, RankerConfig, is_variant
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
    save_as: str | None = "duet"
    predictions_path: str | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.model_versions if v == "none" or not is_variant(v)]
        if unknown:
            raise DuetError(f"unknown variant(s) {', '.join(sorted(unknown))}; expected "
                            f"{', '.join(VARIANTS[1:])} or a model version (duet-3f2a9c1, ext-NAME)")
        if not self.model_versions:
            raise DuetError("the ablation needs at least one model version (the training set's)")
        if not self.seeds:
            raise DuetError("the ablation needs at least one training seed")


def delay_histogram(lake: str) -> dict:
    """Click-to-conversion delays (hours) of the positive examples, in ``DELAY_EDGES_H`` bins."""
    from deltalake import DeltaTable

    table = DeltaTable(TRAINING_EXAMPLES.location(lake)).to_pyarrow_table(columns=["conversion_delay_s"])
    delays = pc.drop_null(table.column("conversion_delay_s")).to_numpy() / 3600
    counts, _ = np.histogram(np.clip(delays, 0, DELAY_EDGES_H[-1]), bins=DELAY_EDGES_H)
    return {"edges": list(DELAY_EDGES_H), "counts": counts.tolist(),
            "median_hours": float(np.median(delays)) if len(delays) else None}


def ordered_variants(model_versions: dict[str, str]) -> list[str]:
    """``none``, the demo's variants in ``VARIANTS`` order, then any other variant in the order given."""
    return ["none", *(v for v in VARIANTS[1:] if v in model_versions),
            *(v for v in model_versions if v not in VARIANTS)]


def _write_predictions(path: str, users, labels: np.ndarray, predictions: dict[str, list[np.ndarray]],
                       seeds: tuple[int, ...]) -> None:
    columns = {"user_id": pa.array(list(users), pa.string()), "label": pa.array(labels.astype(np.int8))}
    for variant, per_seed in predictions.items():
        for seed, p in zip(seeds, per_seed, strict=True):
            columns[f"{variant}/{seed}"] = pa.array(p.astype(np.float64))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(pa.table(columns), f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def run_ablation(cfg: AblationConfig, log=print) -> dict:
    """Train and evaluate every variant; return the report (see the module docstring)."""
    variants = ordered_variants(cfg.model_versions)
    any_version = next(iter(cfg.model_versions.values()))
    buckets = (cfg.ranker.ad_buckets, cfg.ranker.advertiser_buckets)
    predictions: dict[str, list[np.ndarray]] = {}
    report_variants: dict[str, dict] = {}
    test_labels = test_users = None
    for variant in variants:
        started = time.perf_counter()
        version = cfg.model_versions.get(variant, any_version)
        splits = load_splits(cfg.lake, version, buckets, with_user=variant != "none")
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
            seeds.append({"seed": seed, **metrics.summary(p, y), **training})
            if variant == cfg.save_as and seed == cfg.seeds[0]:
                save_ranker(cfg.lake, version, model, replace(cfg.ranker, seed=seed),
                            {"variant": variant, "model_version": version})
        mean_p = np.mean(predictions[variant], axis=0)
        report_variants[variant] = {
            "model_version": cfg.model_versions.get(variant),
            "probe": probe(splits, with_user=variant != "none"),
            **{k: float(np.mean([s[k] for s in seeds])) for k in ("ne", "auc", "logloss", "calibration")},
            "ne_seed_sd": float(np.std([s["ne"] for s in seeds], ddof=1)) if len(seeds) > 1 else 0.0,
            "seeds": seeds, "calibration_curve": metrics.calibration_curve(mean_p, y)}
        done = report_variants[variant]
        log(f"ranker {variant}: NE {done['ne']:.4f}, AUC {done['auc']:.4f} "
            f"({len(cfg.seeds)} seeds, {time.perf_counter() - started:.1f} s)")
    if cfg.predictions_path:
        _write_predictions(cfg.predictions_path, test_users, test_labels, predictions, cfg.seeds)
    weights = metrics.user_bootstrap_weights(test_users, cfg.bootstrap, seed=0)
    ne_replicates = metrics.bootstrap_ne(predictions, test_labels, weights)
    for variant in variants:
        report_variants[variant]["ne_interval"] = metrics.interval(ne_replicates[variant])
        aucs = np.mean([metrics.bootstrap_auc(p, test_labels, weights) for p in predictions[variant]], axis=0)
        report_variants[variant]["auc_interval"] = metrics.interval(aucs)
    report = {"test_rows": int(len(test_labels)), "test_positives": int(test_labels.sum()),
              "seeds": list(cfg.seeds), "bootstrap_replicates": cfg.bootstrap,
              "ranker": cfg.ranker.to_dict(), "variants": report_variants,
              "label_delay_hours": delay_histogram(cfg.lake)}
    baselines = [v for v in variants if v != "duet"]
    if "duet" in variants and baselines:
        def against(b: str) -> dict:
            reduction = (ne_replicates[b] - ne_replicates["duet"]) / ne_replicates[b]
            point = (report_variants[b]["ne"] - report_variants["duet"]["ne"]) / report_variants[b]["ne"]
            return {"variant": "duet", "baseline": b, "mean": float(point),
                    "interval": metrics.interval(reduction)}

        report["reductions"] = {b: against(b) for b in baselines}
        named = next((b for b in ("shared", "merged") if b in baselines), None)
        comparator = named or min(baselines, key=lambda v: report_variants[v]["ne"])
        report["relative_ne_reduction"] = report["reductions"][comparator]
    return report
