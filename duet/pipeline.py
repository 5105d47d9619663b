"""The demo pipeline (``duet demo``): every stage in order, on the embedded default.

generate (unless input files are given) -> ingest -> sequences (daily snapshots over the data's time
range) -> pretrain (duet and both baselines) -> embed -> validate -> publish (the latest snapshot of the
duet model to Feast's SQLite online store under ``<workdir>/lake/_feast``, gated by the embedding suite)
-> examples (labels at the cutoff) -> training set (Feast point-in-time joins) -> ranker (the NE
ablation) -> report (``report/metrics.json``, ``report/ablation.json``, ``report/index.html``) -> one
online scoring. Each stage prints its time; the times are in the report.

Periods (``demo_periods``), chosen from the data's time range so that nothing leaks: the label cutoff
is the last snapshot; clicks are mature until ``cutoff - attribution window - report grace``; the days
from the first snapshot to there are cut into pre-training (the encoders learn from these snapshots and
their targets only), the ranker's training, validation and test periods, in this order, no overlap.
A data set too short for that is refused with the reason, before anything is trained.

Re-running on the same workdir ingests nothing new and rebuilds identical sequences; then pre-training and
embedding, validation and the ranker's chain (examples, training set, its validation, the ranker) are
reused when what they read is unchanged (``duet.stage_cache``: the tables' contents, the settings, the
code), so a re-run costs ingest, sequences and publish. ``--force`` re-runs them all: they retrain the
same models (the same versions, as training is deterministic on CPU), whose embeddings replace themselves.

``validate`` gathers the data quality suites of every stage for the generic runner (``core.quality``):
the conductor is the one place that knows which stage checks which table.

Outside the demo, the same stages serve "bring your own embedding" (issue 22): ``import_embeddings``
(`duet embeddings import`: land vectors made elsewhere as ``ext-<name>``, then the embedding suite on
them), ``build_lake_training_set`` (`duet training-set`: every version with embeddings, the demo's periods
unless given) and ``evaluate_variants`` (`duet evaluate`: the ablation on named variants and its report).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

from pyspark.sql import SparkSession

from core.errors import DuetError, ValidationFailed
from core.files import write_atomic
from core.quality import LakeReport, validate_lake
from core.variants import VARIANTS
from encoders.config import PretrainConfig, TrainConfig
from ranker.splits import ATTRIBUTION_WINDOW, REPORT_GRACE, Periods, Splits, demo_periods

__all__ = ["Periods", "demo_periods"]   # the demo's period plan lives in ranker.splits (no Spark there)


def demo_pretrain_config(seed: int, horizon_days: float = 2.0, report_grace_days: float = 1.0
                         ) -> PretrainConfig:
    """The demo's pre-training budget: the defaults with fewer epochs, so that three variants train in
    about two minutes on a 2-core machine. Every variant gets this same budget. A short data set (the
    Taobao sample) needs a shorter target horizon to have pre-training snapshots at all."""
    base = PretrainConfig()
    return PretrainConfig(train=TrainConfig(seed=seed, epochs=5, patience=2),
                          objective=replace(base.objective, horizon_days=horizon_days,
                                            report_grace_days=report_grace_days))


@dataclass(frozen=True)
class DemoConfig:
    workdir: str
    seed: int = 0
    clicks: str | None = None
    conversions: str | None = None
    taobao: str | None = None        # a Taobao UserBehavior file instead of --clicks/--conversions
    users: int = 2000
    days: int = 28
    conversion_signal: float = 1.0   # the generator's (0 = the control: conversions add nothing hidden)
    setting: str = "default"         # the generator's named setting (duet.generate.SETTINGS)
    variants: tuple[str, ...] = VARIANTS
    ranker_seeds: tuple[int, ...] = (1, 2, 3)
    attribution_window: timedelta = ATTRIBUTION_WINDOW
    report_grace: timedelta | None = REPORT_GRACE   # None: measured, the lake's 99th percentile report delay
    pretrain_horizon_days: float = 2.0
    pretrain_grace_days: float = 1.0
    delayed_feedback: bool = False   # also the delayed-feedback experiment (ranker.delayed)
    force: bool = False              # re-run every stage, even those whose inputs are unchanged


def demo_snapshots(spark: SparkSession, lake: str) -> list[datetime]:
    """Daily 00:00 UTC snapshots from the day after the first click to the day after the last one."""
    from pyspark.sql import functions as F

    from core.contracts import RAW_CLICKS

    # As epoch microseconds: PySpark would turn a timestamp into the Python process's local time.
    micros = F.unix_micros("click_ts")
    row = spark.read.format("delta").load(RAW_CLICKS.location(lake)) \
        .agg(F.min(micros).alias("lo"), F.max(micros).alias("hi")).first()
    if row["lo"] is None:
        raise DuetError("raw/clicks is empty: nothing to build sequences from")
    day = lambda us: datetime.fromtimestamp(us / 1e6, UTC).date()  # noqa: E731
    first = datetime.combine(day(row["lo"]), clock_time(0), tzinfo=UTC) + timedelta(days=1)
    last = datetime.combine(day(row["hi"]), clock_time(0), tzinfo=UTC) + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def validate(spark: SparkSession, lake: str, now: datetime | None = None,
             tables: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> LakeReport:
    """Run every stage's suites on the tables present under ``lake``; write and return the report.

    ``tables`` (contract paths such as ``raw/clicks``) restricts the run to those tables' suites (their
    cross-table checks still read the tables they need); a name that is not a contract table, or one the
    lake does not hold, is an error; None means every table present. ``exclude`` leaves tables out either way.
    """
    from core.contracts import RAW_CONVERSIONS, TABLES
    from encoders import quality as encoder_quality
    from ranker import quality as ranker_quality
    from spark_jobs import quality

    now = now or datetime.now(UTC)
    cfg = quality.QualityConfig(now=now)
    wanted = None if tables is None else set(tables)
    unknown = sorted(((wanted or set()) | set(exclude)) - {t.path for t in TABLES})
    if unknown:
        raise DuetError(f"not a duet table: {', '.join(unknown)} "
                        f"(the tables: {', '.join(t.path for t in TABLES)})")

    def chosen(path: str) -> bool:
        return (wanted is None or path in wanted) and path not in exclude

    def suites_for(present: set[str], properties: dict[str, dict[str, str]]) -> list:
        missing = sorted((wanted or set()) - present)
        if missing:
            raise DuetError(f"no table {', '.join(missing)} under {lake}")
        suites = (quality.suites_for(cfg, present, properties) + encoder_quality.suites_for(lake, present)
                  + ranker_quality.suites_for(present))
        unchecked = sorted((wanted or set()) - {s.table.path for s in suites})
        if unchecked:   # e.g. features/_snapshots, read by the sequence suites; or a table missing its input
            raise DuetError(f"no suite checks {', '.join(unchecked)} in this lake on its own")
        return [s for s in suites if chosen(s.table.path)]

    # The orphan rate is a figure of raw/conversions: reported when that table is validated.
    metrics = quality.metrics if chosen(RAW_CONVERSIONS.path) else None
    return validate_lake(spark, lake, suites_for, metrics_for=metrics, now=now)


def validate_training(spark: SparkSession, lake: str) -> LakeReport:
    """Only the ranker's tables (labels and the training set): the gate before the ranker trains."""
    from ranker import quality as ranker_quality

    return validate_lake(spark, lake, lambda present, _: ranker_quality.suites_for(present))


def pretrain_and_embed(lake: str, train_until: datetime, snapshots: list[datetime], cfg: DemoConfig) -> dict:
    """Pre-train every variant on the snapshots up to ``train_until``, then embed ``snapshots`` with each."""
    from encoders.embed import embed_snapshots
    from encoders.pretrain import pretrain

    out: dict = {"train_until": train_until.isoformat(), "models": {}}
    for variant in cfg.variants:
        pretrain_cfg = demo_pretrain_config(cfg.seed, cfg.pretrain_horizon_days, cfg.pretrain_grace_days)
        pretrain_cfg = replace(pretrain_cfg, model=replace(pretrain_cfg.model, variant=variant))
        result = pretrain(lake, pretrain_cfg, train_until)
        embedded = embed_snapshots(lake, snapshots, result.model_version,
                                   log=lambda line: None)  # one line per model below, not per snapshot
        users = sum(r.embedded for r in embedded)
        seconds = sum(r.seconds for r in embedded)
        print(f"embed {result.model_version}: {users:,} user embeddings over {len(embedded)} snapshots "
              f"in {seconds:.1f} s")
        out["models"][variant] = {**result.to_dict(), "embedded": users, "embed_seconds": seconds}
    return out


def publish_latest(spark: SparkSession, lake: str, model_version: str) -> dict:
    """Publish the latest snapshot of ``model_version`` to the embedded Feast store (SQLite under
    ``<lake>/_feast``), so that ``DUET_LAKE=<lake> feast -c feature_repo serve`` serves it."""
    from serving.publish import PublishConfig, publish
    from serving.store import StoreConfig

    return publish(spark, PublishConfig(store=StoreConfig(lake=lake), model_version=model_version)).to_dict()


class StageClock:
    """Seconds per stage, printed as each one ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
        print(f"== {name}: {self.seconds[name]:.1f} s", flush=True)


def ranker_snapshots(snapshots: list[datetime], splits: Splits, ttl: timedelta) -> list[datetime]:
    """The snapshots the ranker's point-in-time joins can reach, and the latest (published)."""
    reach = [t for t in snapshots if splits.train_from - ttl <= t < splits.test_until]
    return sorted({*reach, snapshots[-1]})


def rank_and_report(spark: SparkSession, lake: str, periods: Periods, models: dict[str, str],
                    cfg: DemoConfig, clock: StageClock, history_from: datetime,
                    truth: tuple[Path, Path] | None = None) -> dict:
    """Examples, the Feast training set, the ablation (and, with ``cfg.delayed_feedback``, the
    delayed-feedback experiment on the clicks from ``history_from``); returns the ablation report. With
    ``truth`` (the generated events' folder and the generator's truth), also the ceiling on the test set
    (``duet.ceiling``) and each variant's share of the gap to it closed."""
    from ranker.evaluate import AblationConfig, run_ablation
    from ranker.training_set import build_training_set
    from serving.store import StoreConfig, feature_store
    from spark_jobs.examples import ExamplesConfig, build_examples

    with clock.stage("examples"):
        examples = build_examples(spark, ExamplesConfig(lake, periods.label_cutoff, cfg.attribution_window,
                                                        cfg.report_grace))
        print(f"training/examples: {examples['rows']:,} clicks, {examples['matured']:,} matured "
              f"({examples['matured_positives']:,} positive) at cutoff {periods.label_cutoff:%Y-%m-%d}")
    with clock.stage("training set"):
        store = feature_store(StoreConfig(lake))
        built = build_training_set(spark, store, lake, periods.splits, list(models.values()),
                                   record={"label_cutoff": periods.label_cutoff.isoformat()})
        _print_training_set(built)
    with clock.stage("validate training tables"):
        quality = validate_training(spark, lake)
        print(quality.summary())
        if not quality.success:
            raise ValidationFailed(f"the ranker's tables failed data quality; see {quality.results_dir}")
    with clock.stage("ranker"):
        ablation = run_ablation(AblationConfig(lake, models, seeds=cfg.ranker_seeds, predictions_path=str(
            Path(cfg.workdir) / "report" / "test_predictions.parquet")))
    out = {"examples": examples, "training_set": built, "training_validation": quality.to_dict(), **ablation}
    if truth is not None:
        with clock.stage("ceiling"):
            any_version = next(iter(models.values()))
            out["ceiling"] = test_set_ceiling(lake, any_version, periods, cfg, truth, ablation)
            print(f"ceiling on the test set: oracle NE {out['ceiling']['oracle_ne']:.4f}, Bayes NE "
                  f"{out['ceiling']['bayes_ne']:.4f}")
    if cfg.delayed_feedback:
        with clock.stage("delayed feedback"):
            out["delayed_feedback"] = delayed_feedback(spark, store, lake, periods, models, cfg, history_from)
    return out


def _print_training_set(built: dict) -> None:
    for key, figures in built["rows"].items():
        print(f"training/training_set {key}: {figures['rows']:,} rows, {figures['positives']:,} positive, "
              f"{figures['without_embedding']:,} without an embedding")


def test_set_ceiling(lake: str, model_version: str, periods: Periods, cfg: DemoConfig,
                     truth: tuple[Path, Path], ablation: dict, samples: int = 1000) -> dict:
    """The oracle and Bayes NE on the ablation's test rows (``duet.ceiling``), and per variant the share of
    the gap between ``none`` and the Bayes NE that it closes, ``(NE_none - NE_v) / (NE_none - NE_bayes)``
    (and the same against the oracle)."""
    import pyarrow.compute as pc

    from duet.ceiling import ceiling
    from ranker.data import read_training_set

    table = read_training_set(lake, model_version)
    test = table.filter(pc.equal(table.column("split"), "test")).select(
        ["user_id", "advertiser_id", "click_ts", "label"])
    bound = ceiling(truth[0], truth[1], test, periods.label_cutoff, cfg.attribution_window, samples=samples)
    variants = ablation["variants"]
    none = variants["none"]["ne"]

    def closed(target: float) -> dict:
        return {v: (none - r["ne"]) / (none - target) if none > target else None for v, r in variants.items()}

    return {**bound.to_dict(), "gap_closed": closed(bound.bayes_ne),
            "gap_closed_oracle": closed(bound.oracle_ne)}


def delayed_feedback(spark: SparkSession, store, lake: str, periods: Periods, models: dict[str, str],
                     cfg: DemoConfig, history_from: datetime) -> dict:
    """Rankers trained at the start of the test period on the clicks since ``history_from`` with the labels
    known then (``ranker.delayed``), tested on the ablation's test set."""
    from ranker.delayed import DelayedFeedbackConfig, run_delayed_feedback
    from ranker.training_set import delayed_feedback_pool

    trained_at = periods.splits.test_from
    pool = delayed_feedback_pool(spark, store, lake, history_from, trained_at, cfg.attribution_window,
                                 cfg.report_grace)
    report = run_delayed_feedback(DelayedFeedbackConfig(
        lake, next(iter(models.values())), trained_at, cfg.attribution_window, cfg.report_grace,
        seeds=cfg.ranker_seeds), pool)
    figures = report["pool"]
    print(f"delayed feedback at {trained_at:%Y-%m-%d}: {figures['clicks']:,} clicks, {figures['matured']:,} "
          f"matured, {figures['immature']:,} immature ({figures['immature_seen_positives']:,} positive "
          "so far)")
    for name, r in report["relative_ne_reduction"].items():
        print(f"delayed feedback {name}: relative NE reduction {100 * r['mean']:+.2f}% "
              f"(95% interval {100 * r['interval'][0]:+.2f}% to {100 * r['interval'][1]:+.2f}%)")
    return report


def contract_metrics(seed: int, ablation: dict) -> dict:
    """``report/metrics.json`` exactly as ../shared/CONTRACTS.md gives it (seed-mean figures)."""
    return {"seed": seed, "test_rows": ablation["test_rows"], "test_positives": ablation["test_positives"],
            "variants": {name: {k: v[k] for k in ("ne", "auc", "logloss")}
                         for name, v in ablation["variants"].items()}}


def ne_table(ablation: dict) -> str:
    width = max([11, *(len(name) for name in ablation["variants"])])
    lines = [f"{'variant':<{width}} {'NE':>7}  {'95% interval':<17} {'AUC':>6} {'calib.':>6}"]
    for name, v in ablation["variants"].items():
        lo, hi = v["ne_interval"]
        lines.append(f"{name:<{width}} {v['ne']:7.4f}  [{lo:.4f}, {hi:.4f}] {v['auc']:6.4f} "
                     f"{v['calibration']:6.3f}")
    reductions = ablation.get("reductions") or (
        {ablation["relative_ne_reduction"]["baseline"]: ablation["relative_ne_reduction"]}
        if "relative_ne_reduction" in ablation else {})
    for r in reductions.values():
        lines.append(f"duet vs {r['baseline']}: relative NE reduction {100 * r['mean']:+.2f}% "
                     f"(95% interval {100 * r['interval'][0]:+.2f}% to {100 * r['interval'][1]:+.2f}%)")
    return "\n".join(lines)


# --- bring your own embedding: `duet embeddings import`, `duet training-set`, `duet evaluate` -----------


def import_embeddings(lake: str, model_version: str, path: str, spark: Callable[[], SparkSession]) -> dict:
    """Check the file, land it under ``model_version`` (``encoders.external``: everything a file can be
    refused for is checked before anything is written), then run the embedding suite on the landed rows
    (``spark()`` starts Spark only then). Raises ``ValidationFailed`` naming the failed checks (their
    offending rows printed) when the rows fail the suite: they stay landed, and `duet validate` and the
    publish gate would fail on them too, until a fixed file is imported under the same name (it replaces
    them)."""
    from core.contracts import USER_EMBEDDINGS
    from encoders.external import check_snapshots, land, read_external
    from encoders.model_store import check_external_name

    check_external_name(model_version)
    imported = read_external(path)
    check_snapshots(lake, imported)
    landed = land(lake, model_version, imported)
    conversion = landed["conversion_dim"] or "none (single embedding)"
    widths = f"click {landed['click_dim']}, conversion {conversion}"
    replaced = "; replaced the earlier import" if landed["replaced_an_earlier_import"] else ""
    ignored = landed["ignored_columns"]
    ignored = f"; ignored column(s) {', '.join(ignored)}" if ignored else ""
    print(f"{USER_EMBEDDINGS.path}: landed {landed['rows']:,} rows of {model_version} over "
          f"{landed['snapshots']} snapshot(s) ({widths}) in table version {landed['table_version']}"
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
    return {**landed, "validation": report.to_dict()}


def check_imported(spark: SparkSession, lake: str, model_version: str) -> LakeReport:
    """The embedding suite on one model version's rows. Every check of the suite is hereditary to a
    (snapshot, model version) group (``encoders.quality``), so these rows pass alone exactly when they
    pass within the whole table."""
    from encoders import quality as encoder_quality
    from encoders.model_store import VERSION_PATTERN

    if not VERSION_PATTERN.match(model_version):   # it goes into the filter below
        raise DuetError(f"not a model version: {model_version!r}")

    def suites_for(present: set[str], _: dict) -> list:
        return [replace(s, where=f"model_version = '{model_version}'")
                for s in encoder_quality.suites_for(lake, present)]

    return validate_lake(spark, lake, suites_for)


def failed_rows(report: LakeReport, table: str, shown: int = 3) -> list[str]:
    """One line per failed check of ``table`` in ``report``'s GX results: how many rows, and the first
    ``shown`` of them (as the check's query returned them)."""
    path = Path(report.results_dir) / f"{table.replace('/', '_')}.json"
    try:
        results = json.loads(path.read_text()).get("results", [])
    except (OSError, ValueError):
        return []
    lines = []
    for r in results:
        if r.get("success"):
            continue
        config, result = r.get("expectation_config") or {}, r.get("result") or {}
        count = result.get("unexpected_count", result.get("observed_value"))
        details = result.get("details") or {}
        sample = details.get("unexpected_rows") or result.get("partial_unexpected_list") or []
        lines.append(f"  {config.get('description') or config.get('type')}: {count} row(s)"
                     + (f", e.g. {json.dumps(sample[:shown], default=str)}" if sample else ""))
    return lines


def embedded_versions(lake: str) -> list[str]:
    """The model versions with a ``_models`` entry (checkpoint or imported record) and rows in
    ``embeddings/user_embeddings``, oldest first."""
    from deltalake import DeltaTable

    from core.contracts import USER_EMBEDDINGS
    from encoders.model_store import list_versions

    location = USER_EMBEDDINGS.location(lake)
    if not DeltaTable.is_deltatable(location):
        return []
    present = {p["model_version"] for p in DeltaTable(location).partitions()}
    return [v for v in list_versions(lake) if v in present]


def examples_cutoff(spark: SparkSession, lake: str) -> datetime:
    """The label cutoff of ``training/examples`` (one per table)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from core.contracts import TRAINING_EXAMPLES

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
    snapshots = [t for t in demo_snapshots(spark, lake) if t < label_cutoff] + [label_cutoff]
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
                            periods: Periods | None = None) -> dict:
    """``duet training-set``: ``training/training_set`` through Feast for ``model_versions`` (default:
    every version with embeddings, the encoders' and the imported ones) over ``periods`` (default: the
    demo's plan, ``lake_periods``), then the ranker tables' suites, as the demo does. The registry is
    applied first (as ``feast apply`` would: the served version is kept), so a version imported since
    has its FeatureService."""
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
                               record={"label_cutoff": periods.label_cutoff.isoformat()})
    _print_training_set(built)
    quality = validate_training(spark, lake)
    print(quality.summary())
    if not quality.success:
        raise ValidationFailed(f"the ranker's tables failed data quality; see {quality.results_dir}")
    return {"periods": periods.to_dict(), "training_set": built, "training_validation": quality.to_dict()}


def evaluate_variants(lake: str, variants: list[str], out: str, seeds: tuple[int, ...] = (1, 2, 3),
                      seed: int | None = None) -> dict:
    """``duet evaluate``: the ablation (``ranker.evaluate.run_ablation``) on ``variants`` (names mapped to
    model versions by ``ranker.config.variant_versions``; ``none`` always runs) over the rows of
    ``training/training_set``, and the demo's report: ``out/metrics.json`` (the contract's keys, ``seed``
    as given), ``out/ablation.json`` (everything) and ``out/index.html``. No ranker is saved (the served
    one under ``_rankers/`` is the demo's). Needs no Spark."""
    from ranker.config import check_variants, variant_versions
    from ranker.data import training_set_record, training_set_versions
    from ranker.evaluate import AblationConfig, run_ablation
    from ranker.report import write_report

    check_variants(variants)
    models = variant_versions(lake, variants)
    if not models:
        raise DuetError("name at least one variant with a user vector beside none (e.g. duet or ext-NAME)")
    present = training_set_versions(lake)
    missing = [f"{name} ({version})" if name != version else name
               for name, version in models.items() if version not in present]
    if missing:
        raise DuetError(f"training/training_set under {lake} has no rows of {', '.join(missing)}: run "
                        f"`duet training-set --lake {lake}` first")
    ablation = run_ablation(AblationConfig(lake, models, seeds=tuple(seeds), save_as=None))
    record = training_set_record(lake) or {}
    splits = {**({"label_cutoff": record["label_cutoff"]} if "label_cutoff" in record else {}),
              **record.get("splits", {})}
    print(ne_table(ablation))
    folder = Path(out)
    metrics = contract_metrics(seed, ablation)
    _write_json(folder / "metrics.json", metrics)
    _write_json(folder / "ablation.json", {**ablation, "splits": splits})
    page = write_report({**metrics, **ablation, "seed": "n/a" if seed is None else seed, "splits": splits},
                        folder)
    print(f"evaluate: report at {page} (metrics: {folder / 'metrics.json'})")
    return {"metrics": str(folder / "metrics.json"), "report": str(page), "variants": models}


def score_one(lake: str, model_version: str, as_of: datetime) -> dict:
    """One online scoring, as a ranker would do it at ``as_of`` (the published snapshot: the demo's "now"):
    the most active user of the test period, five of the ads clicked then."""
    from deltalake import DeltaTable

    from core.contracts import TRAINING_SET
    from ranker.score import score
    from serving.store import StoreConfig, feature_store

    table = DeltaTable(TRAINING_SET.location(lake)).to_pyarrow_table(
        columns=["user_id", "ad_id", "advertiser_id"],
        filters=[("model_version", "=", model_version), ("split", "=", "test")])
    users = table.group_by("user_id").aggregate([("ad_id", "count")]).sort_by([("ad_id_count", "descending")])
    user = users.column("user_id")[0].as_py()
    ads, advertisers = table.column("ad_id").to_pylist(), table.column("advertiser_id").to_pylist()
    candidates = zip(ads, advertisers, strict=True)
    pairs = list(dict.fromkeys(candidates))[:5]
    ranked, read = score(feature_store(StoreConfig(lake)), lake, model_version, user, pairs, as_of)
    print(f"online: user {user} (embedding of snapshot "
          f"{datetime.fromtimestamp(read['embedding_snapshot'], UTC):%Y-%m-%d} read through Feast)"
          if read["embedding_snapshot"] else f"online: user {user} (no embedding online: defaults)")
    for s in ranked:
        print(f"  {s.ad_id:>12} {s.advertiser_id:>10}  p(convert) = {s.probability:.4f}")
    return {**read, "ranked": [vars(s) for s in ranked]}


def run_demo(spark: SparkSession, cfg: DemoConfig) -> dict:
    """Run the pipeline; return (and write) the demo report."""
    from core.contracts import (
        CLICK_SEQUENCES,
        CONVERSION_SEQUENCES,
        RAW_CLICKS,
        RAW_CONVERSIONS,
        SEQUENCE_SNAPSHOTS,
        TABLES,
        TRAINING_EXAMPLES,
        TRAINING_SET,
        USER_EMBEDDINGS,
    )
    from duet.ceiling import modelled as ceiling_models
    from duet.generate import generate
    from duet.generate import setting as generator_setting
    from duet.stage_cache import StageCache, checkpoint_configs, sequence_records
    from encoders.model_store import MODELS_DIR
    from feature_repo.views import EMBEDDING_TTL
    from ranker.checkpoint import RANKERS
    from ranker.report import write_report
    from spark_jobs.examples import measured_report_grace
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import build_sequences
    from spark_jobs.taobao import ingest_taobao

    work = Path(cfg.workdir)
    lake = str(work / "lake")
    out = work / "report"
    if bool(cfg.clicks) != bool(cfg.conversions):
        raise DuetError("give both --clicks and --conversions, or neither to generate synthetic events")
    if cfg.taobao and cfg.clicks:
        raise DuetError("give either --taobao FILE or --clicks/--conversions, not both")
    clock = StageClock()
    report: dict = {"seed": cfg.seed}
    if cfg.clicks or cfg.taobao:
        clicks, conversions = cfg.clicks, cfg.conversions
    else:
        with clock.stage("generate"):
            generator = generator_setting(cfg.setting, users=cfg.users, days=cfg.days, seed=cfg.seed,
                                          conversion_signal=cfg.conversion_signal)
            summary = generate(generator, work / "input", work / "truth")
        clicks, conversions = summary.clicks_path, summary.conversions_path
        report["generated"] = json.loads(summary.to_json())
    with clock.stage("ingest"):
        ingest_cfg = IngestConfig(lake=lake, attribution_window_s=cfg.attribution_window.total_seconds())
        counts = ([ingest_taobao(spark, ingest_cfg, cfg.taobao)] if cfg.taobao
                  else ingest(spark, ingest_cfg, clicks, conversions))
        for c in counts:
            print(c.line())
    report["ingest"] = [c.to_dict() for c in counts]
    if cfg.report_grace is None:
        measured = measured_report_grace(spark, lake)
        cfg = replace(cfg, report_grace=timedelta(days=measured["grace_days"]))
        report["report_grace"] = measured
        print(f"report grace: {measured['grace_days']} day(s), the {measured['quantile']:.0%} quantile of "
              f"{measured['conversions']:,} attributed conversions' report delays being "
              f"{measured['hours']:.1f} h")
    snapshots = demo_snapshots(spark, lake)
    periods = demo_periods(snapshots, cfg.attribution_window, cfg.report_grace)   # refuses short data early
    report["snapshots"] = [s.isoformat() for s in snapshots]
    report["periods"] = periods.to_dict()
    with clock.stage("sequences"):
        report["sequences"] = build_sequences(spark, lake, snapshots)
        for path, figures in report["sequences"].items():
            print(f"{path}: {figures['rows']} rows for {figures['snapshots']} snapshots")
    cache = StageCache(lake, force=cfg.force)
    records = sequence_records(lake)
    sequence_reads = [t.location(lake) for t in (RAW_CLICKS, RAW_CONVERSIONS, CLICK_SEQUENCES,
                                                 CONVERSION_SEQUENCES)]
    with clock.stage("pretrain and embed"):
        needed = ranker_snapshots(snapshots, periods.splits, EMBEDDING_TTL)
        settings = {"seed": cfg.seed, "variants": list(cfg.variants), "horizon": cfg.pretrain_horizon_days,
                    "grace": cfg.pretrain_grace_days,
                    "train_until": periods.splits.pretrain_until.isoformat(),
                    "snapshots": [t.isoformat() for t in needed], "sequences": records}
        hit = cache.lookup("pretrain and embed", settings, sequence_reads)
        if hit:
            report["encoders"] = hit["result"]
            print(_reused(hit, ", ".join(m["model_version"] for m in hit["result"]["models"].values())))
        else:
            report["encoders"] = pretrain_and_embed(lake, periods.splits.pretrain_until, needed, cfg)
            cache.store("pretrain and embed", report["encoders"], [USER_EMBEDDINGS.location(lake)],
                        [f"{MODELS_DIR}/{m['model_version']}" for m in report["encoders"]["models"].values()])
    models = {v: m["model_version"] for v, m in report["encoders"]["models"].items()}
    with clock.stage("validate"):
        # The ranker's tables of an earlier run are rebuilt below and validated then, before the ranker.
        excluded = (TRAINING_EXAMPLES.path, TRAINING_SET.path)
        checked = [t.location(lake) for t in TABLES if t.path not in excluded and t is not SEQUENCE_SNAPSHOTS]
        hit = cache.lookup("validate", {"exclude": excluded, "sequences": records,
                                        "checkpoints": checkpoint_configs(lake)}, checked)
        if hit:   # only a passing validation is recorded
            validation = hit["result"]
            print(_reused(hit, f"{len(validation['tables'])} tables passed; results in "
                               f"{validation['results_dir']}"))
        else:
            quality = validate(spark, lake, exclude=excluded)
            print(quality.summary())
            validation = quality.to_dict()
            if quality.success:
                cache.store("validate", validation, [])
    report["validation"] = validation
    if not validation["success"]:
        _write_json(out / "demo.json", report)
        raise ValidationFailed(f"data quality failed; see {validation['results_dir']}")
    if "duet" in models:
        with clock.stage("publish"):
            report["publish"] = publish_latest(spark, lake, models["duet"])
    ranker_settings = {"periods": periods.to_dict(), "models": models, "seeds": list(cfg.ranker_seeds),
                       "attribution_window": cfg.attribution_window.total_seconds(),
                       "report_grace": cfg.report_grace.total_seconds(),
                       "delayed_feedback": cfg.delayed_feedback, "history_from": snapshots[0].isoformat(),
                       "sequences": records}
    hit = cache.lookup("ranker", ranker_settings, [*sequence_reads, USER_EMBEDDINGS.location(lake)])
    if hit:
        with clock.stage("examples, training set, ranker"):
            ablation = hit["result"]
            versions = ", ".join(models.values())
            print(_reused(hit, f"the examples, the training set and the rankers of {versions}"))
    else:
        truth = None if cfg.clicks or cfg.taobao else (work / "input", work / "truth")
        if truth is not None and not ceiling_models(generator):   # truth: the events were generated
            print(f"ceiling: not computed, duet.ceiling does not model the {cfg.setting} generator setting")
            truth = None
        ablation = rank_and_report(spark, lake, periods, models, cfg, clock, snapshots[0], truth)
        cache.store("ranker", ablation, [TRAINING_EXAMPLES.location(lake), TRAINING_SET.location(lake)],
                    [f"{RANKERS}/{v}" for v in models.values() if (Path(lake) / RANKERS / v).is_dir()])
    report["ranker"] = ablation
    print(ne_table(ablation))
    if "duet" in models:
        with clock.stage("online scoring"):
            report["online"] = score_one(lake, models["duet"], snapshots[-1])
    report["stage_seconds"] = clock.seconds
    _write_json(out / "metrics.json", contract_metrics(cfg.seed, ablation))
    _write_json(out / "demo.json", report)
    page = write_report({**contract_metrics(cfg.seed, ablation), **ablation, "seed": cfg.seed,
                         "splits": periods.to_dict(), "data_quality": validation,
                         "stage_seconds": clock.seconds}, out)
    print(f"demo: lake at {lake}; report at {page} (metrics: {out / 'metrics.json'}); "
          f"{sum(clock.seconds.values()):.0f} s in stages")
    return {"lake": lake, "report": str(page), "metrics": str(out / "metrics.json"),
            "validation_passed": validation["success"]}


def _reused(record: dict, what: str) -> str:
    return (f"up to date: the same inputs, code and settings as the run that finished at "
            f"{record['finished_at'][:19]} (reused: {what}; `duet demo --force` re-runs it)")


def _write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1))
