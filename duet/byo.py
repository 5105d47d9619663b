"""Bring your own embedding (issue 22): the production commands around vectors made elsewhere.

``import_embeddings`` (`duet embeddings import`: land vectors as ``ext-<name>``, then the embedding suite on
them), ``build_lake_training_set`` (`duet training-set`: every version with embeddings, the demo's periods
unless given) and ``evaluate_variants`` (`duet evaluate`: the ablation on named variants and its report).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from core.contracts import ATTRIBUTION_WINDOW, REPORT_GRACE, TRAINING_EXAMPLES, TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError, ValidationFailed
from core.files import write_atomic
from core.lake import Lake
from core.quality import LakeReport
from duet.demo import demo_snapshots
from duet.validation import check_imported, failed_rows, validate_training
from encoders.external import Landed
from ranker.evaluate import AblationConfig
from ranker.splits import Periods, Splits, demo_periods
from ranker.training_set import SNAPSHOT, TrainingSetReport


@dataclass(frozen=True)
class LakeTrainingSet:
    """What `duet training-set` built: the periods, the training set's figures, its tables' validation."""

    periods: Periods
    training_set: TrainingSetReport
    training_validation: LakeReport

    def to_dict(self) -> dict:
        return {"periods": self.periods.to_dict(), "training_set": self.training_set.to_dict(),
                "training_validation": self.training_validation.to_dict()}


def import_embeddings(lake: str, model_version: str, path: str, spark: Callable[[], SparkSession]) -> Landed:
    """Check the file, land it under ``model_version`` (``encoders.external``: everything a file can be
    refused for is checked before anything is written), then run the embedding suite on the landed rows
    (``spark()`` starts Spark only then). Raises ``ValidationFailed`` naming the failed checks (their
    offending rows printed) when the rows fail the suite: they stay landed, and `duet validate` and the
    publish gate would fail on them too, until a fixed file is imported under the same name (it replaces
    them)."""
    from encoders.external import check_snapshots, land, read_external
    from encoders.model_store import check_external_name

    check_external_name(model_version)
    imported = read_external(path)
    check_snapshots(lake, imported)
    landed = land(lake, model_version, imported)
    conversion = landed.conversion_dim or "none (single embedding)"
    widths = f"click {landed.click_dim}, conversion {conversion}"
    replaced = "; replaced the earlier import" if landed.replaced_an_earlier_import else ""
    ignored = f"; ignored column(s) {', '.join(landed.ignored_columns)}" if landed.ignored_columns else ""
    print(f"{USER_EMBEDDINGS.path}: landed {landed.rows:,} rows of {model_version} over "
          f"{landed.snapshots} snapshot(s) ({widths}) in table version {landed.table_version}"
          f"{replaced}{ignored}")
    report = check_imported(spark(), lake, model_version)
    print(report.summary())
    if not report.success or not report.tables:
        for line in failed_rows(report, USER_EMBEDDINGS.path):
            print(line)
        failed = [d for t in report.tables for d in t.failed] or ["the embedding suite did not run"]
        raise ValidationFailed(f"{model_version}: the imported rows failed {len(failed)} embedding check(s) ("
                               + " | ".join(failed) + f"); they stay landed: import a fixed file as "
                               f"{model_version} to replace them (results in {report.results_dir})")
    return landed


def embedded_versions(lake: str) -> list[str]:
    """The model versions with a ``_models`` entry (checkpoint or imported record) and rows in
    ``embeddings/user_embeddings``, oldest first."""
    from core.object_storage import delta_table, is_delta_table
    from encoders.model_store import list_versions

    location = USER_EMBEDDINGS.location(lake)
    if not is_delta_table(location):
        return []
    present = {p["model_version"] for p in delta_table(location).partitions()}
    return [v for v in list_versions(lake) if v in present]


def examples_cutoff(spark: SparkSession, lake: str) -> datetime:
    """The label cutoff of ``training/examples`` (one per table)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F


    location = TRAINING_EXAMPLES.location(lake)
    if not DeltaTable.isDeltaTable(spark, location):
        raise DuetError(f"no {TRAINING_EXAMPLES.path} under {lake}: label the clicks first with "
                        f"`duet examples --lake {lake} --label-cutoff TS`")
    micros = spark.read.format("delta").load(location).agg(F.max(F.unix_micros("label_cutoff"))).first()[0]
    if micros is None:
        raise DuetError(f"{TRAINING_EXAMPLES.path} under {lake} is empty: no click to train a ranker on")
    return datetime.fromtimestamp(micros / 1e6, UTC)


def lake_periods(spark: SparkSession, lake: str, label_cutoff: datetime,
                 attribution_window: timedelta = ATTRIBUTION_WINDOW, report_grace: timedelta = REPORT_GRACE,
                 splits: Splits | None = None) -> Periods:
    """The periods of a lake built outside the demo: ``splits`` if given (checked against the cutoff),
    else the demo's own plan (``demo_periods``) over the daily snapshots of ``raw/clicks``
    (``demo_snapshots``) before ``label_cutoff``, with the cutoff last. On a demo's lake (whose examples
    are labelled at its last snapshot) that is exactly the demo's plan."""
    if splits is not None:
        splits.check(label_cutoff, attribution_window + report_grace)
        return Periods(label_cutoff, splits)
    snapshots = [t for t in demo_snapshots(spark, Lake(lake)) if t < label_cutoff] + [label_cutoff]
    return demo_periods(snapshots, attribution_window, report_grace)


def check_pretraining_ends(lake: str, versions: list[str], splits: Splits) -> None:
    """Refuse a checkpoint pre-trained on data after ``splits.pretrain_until``: its embeddings would be
    in-sample in the ranker's periods. (An imported embedding's training data is not known here: keeping
    it out of the ranker's periods is its owner's part.)"""
    from encoders.model_store import config_document, is_external

    for version in versions:
        document = config_document(lake, version) or {}
        until = ((document.get("info") or {}).get("split") or {}).get("train_until")
        if not is_external(version) and until and datetime.fromisoformat(until) > splits.pretrain_until:
            raise DuetError(f"{version} was pre-trained on data up to {until}, after the ranker's periods "
                            f"begin (pre-training must end by {splits.pretrain_until.isoformat()}): its "
                            "embeddings would be in-sample for the ranker; leave it out (--model-version) "
                            "or give --splits")


def build_lake_training_set(spark: SparkSession, lake: str, model_versions: list[str] | None = None,
                            periods: Periods | None = None, available_at: str = SNAPSHOT) -> LakeTrainingSet:
    """``duet training-set``: ``training/training_set`` through Feast for ``model_versions`` (default:
    every version with embeddings, the encoders' and the imported ones) over ``periods`` (default: the
    demo's plan, ``lake_periods``), joining the embedding rows available at each click (``available_at``,
    ``ranker.training_set``), then the ranker tables' suites, as the demo does. The registry is
    applied first (as ``feast apply`` would: the served version is kept), so a version imported since
    has its FeatureService."""
    from duet.console import training_set_lines
    from feature_repo.catalog import spec_from_lake
    from ranker.training_set import build_training_set
    from serving.store import StoreConfig, apply, feature_store

    periods = periods or lake_periods(spark, lake, examples_cutoff(spark, lake))
    versions = list(model_versions or embedded_versions(lake))
    if not versions:
        raise DuetError(f"no model version with embeddings under {lake}: run `duet embed` or "
                        "`duet embeddings import` first")
    check_pretraining_ends(lake, versions, periods.splits)
    print("periods: " + json.dumps(periods.to_dict()))
    store = feature_store(StoreConfig(lake))
    apply(store, spec_from_lake(lake))
    built = build_training_set(spark, store, lake, periods.splits, versions,
                               record={"label_cutoff": periods.label_cutoff.isoformat()},
                               available_at=available_at)
    print("\n".join(training_set_lines(built)))
    quality = validate_training(spark, lake)
    print(quality.summary())
    if not quality.success:
        raise ValidationFailed(f"the ranker's tables failed data quality; see {quality.results_dir}")
    return LakeTrainingSet(periods, built, quality)


def evaluate_variants(lake: str, variants: list[str], out: str,
                      seeds: tuple[int, ...] = AblationConfig.seeds, seed: int | None = None) -> dict:
    """``duet evaluate``: the ablation (``ranker.evaluate.run_ablation``) on ``variants`` (names mapped to
    model versions by ``ranker.config.variant_versions``; ``none`` always runs) over the rows of
    ``training/training_set``, and the demo's report: ``out/metrics.json`` (the contract's keys, ``seed``
    as given), ``out/ablation.json`` (everything) and ``out/index.html``. No ranker is saved (the served
    one under ``_rankers/`` is the demo's). Needs no Spark."""
    from duet.console import ne_table
    from duet.report import ReportPage, contract_metrics, write_report
    from ranker.config import check_variants, variant_versions
    from ranker.data import training_set_record, training_set_versions
    from ranker.evaluate import run_ablation

    check_variants(variants)
    models = variant_versions(lake, variants)
    if not models:
        raise DuetError("name at least one variant with a user vector beside none (e.g. duet or ext-NAME)")
    present = training_set_versions(lake)
    missing = [f"{name} ({version})" if name != version else name
               for name, version in models.items() if version not in present]
    if missing:
        raise DuetError(f"{TRAINING_SET.path} under {lake} has no rows of {', '.join(missing)}: run "
                        f"`duet training-set --lake {lake}` first")
    ablation = run_ablation(AblationConfig(lake, models, seeds=tuple(seeds), save_as=None))
    record = training_set_record(lake) or {}
    splits = {**({"label_cutoff": record["label_cutoff"]} if "label_cutoff" in record else {}),
              **record.get("splits", {})}
    print(ne_table(ablation))
    folder = Path(out)
    _write_json(folder / "metrics.json", contract_metrics(seed, ablation))
    _write_json(folder / "ablation.json", {**ablation.to_dict(), "splits": splits})
    periods = Periods.from_dict(splits) if "label_cutoff" in splits else None
    page = write_report(ReportPage(seed, ablation, periods), folder)
    print(f"evaluate: report at {page} (metrics: {folder / 'metrics.json'})")
    return {"metrics": str(folder / "metrics.json"), "report": str(page), "variants": models}


def _write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1))
