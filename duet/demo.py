"""The demo (``duet demo``): every stage in order, on the embedded default, as a list of stage objects.

generate (unless input files are given) -> ingest -> plan (the daily snapshots and the periods) ->
sequences -> pretrain and embed (every variant) -> validate -> publish (the latest snapshot of the duet
model to Feast's SQLite online store under the lake, gated by the embedding suite) -> consistency (a
sample of its users read back online and compared with the Delta rows, ``serving.consistency``) -> examples
(labels at the cutoff) -> training set (Feast point-in-time joins) -> validate training tables -> ranker
(the NE ablation) -> ceiling (generated data only) -> delayed feedback (``--delayed-feedback``) -> online
scoring; then the report (``report/metrics.json``, ``report/demo.json``, ``report/index.html``). Each stage
prints its time; the times are in the report.

Periods (``ranker.splits.demo_periods``), chosen from the data's time range so that nothing leaks: the
label cutoff is the last snapshot; clicks are mature until ``cutoff - attribution window - report grace``;
the days from the first snapshot to there are cut into pre-training (the encoders learn from these
snapshots and their targets only), the ranker's training, validation and test periods, in this order, no
overlap. A data set too short for that is refused with the reason, before anything is trained.

Re-running on the same workdir ingests nothing new and rebuilds identical sequences; the stages after them
are reused when their config, their declared inputs and the contents of what they read are unchanged
(``duet.stages``, ``duet.stage_cache``), so a re-run costs ingest, sequences and publish. ``--force`` re-runs
them all: they retrain the same models (the same versions, as training is deterministic on CPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, ClassVar

from core.contracts import (
    ATTRIBUTION_WINDOW,
    CLICK_SEQUENCES,
    CONVERSION_SEQUENCES,
    RAW_CLICKS,
    RAW_CONVERSIONS,
    REPORT_GRACE,
    SEQUENCE_SNAPSHOTS,
    TABLES,
    TRAINING_EXAMPLES,
    TRAINING_SET,
    USER_EMBEDDINGS,
)
from core.errors import DuetError, ValidationFailed
from core.files import write_atomic
from core.lake import Lake
from core.quality import LakeReport
from core.records import to_dict
from core.variants import NO_VECTOR, PROPOSED, variant_names
from duet.ceiling import CeilingResult
from duet.generate import GeneratorConfig, GeneratorSummary
from duet.stages import Stage, StageClock, StageContext, run_stages
from encoders.config import ObjectiveConfig, PretrainConfig, TrainConfig
from ranker.delayed import DelayedFeedbackResult
from ranker.evaluate import AblationConfig, AblationResult
from ranker.splits import Periods, demo_periods
from ranker.training_set import TrainingSetReport
from serving.consistency import ConsistencyReport
from serving.publish import PublishReport
from spark_jobs.examples import ExamplesReport, ReportGrace
from spark_jobs.ingest import FileCounts

DEMO_DAYS = 28   # the demo's generated range: the ranker's four periods need more than the generator's 14


@dataclass(frozen=True)
class InputFiles:
    """Events to use instead of generating them: ``clicks`` and ``conversions``, or a ``taobao`` file."""

    clicks: str | None = None
    conversions: str | None = None
    taobao: str | None = None

    def __post_init__(self) -> None:
        if bool(self.clicks) != bool(self.conversions):
            raise DuetError("give both clicks and conversions files, or neither to generate synthetic events")
        if self.taobao and self.clicks:
            raise DuetError("give either a Taobao file or clicks and conversions files, not both")

    @property
    def given(self) -> bool:
        return bool(self.clicks or self.taobao)


@dataclass(frozen=True)
class GenerateConfig:
    """What the demo generates when no input is given: a named setting (``duet.generate.SETTINGS``) with
    these on top."""

    setting: str = "default"
    users: int = GeneratorConfig.users
    days: int = DEMO_DAYS
    conversion_signal: float = GeneratorConfig.conversion_signal   # 0: the control (conversions add nothing)


@dataclass(frozen=True)
class LabelConfig:
    """When a click's label is final: the contract's attribution window, and the report grace after it
    (None: measured, the lake's 99th percentile report delay)."""

    attribution_window: timedelta = ATTRIBUTION_WINDOW
    report_grace: timedelta | None = REPORT_GRACE


@dataclass(frozen=True)
class EncodersConfig:
    """The demo's pre-training budget: the encoders' defaults with fewer epochs, so that every variant
    trains in about two minutes on a 2-core machine; every variant gets this same budget. A short data set
    (the Taobao sample) needs a shorter target horizon to have pre-training snapshots at all."""

    variants: tuple[str, ...] = field(default_factory=variant_names)   # every registered variant
    horizon_days: float = ObjectiveConfig.horizon_days
    report_grace_days: float = ObjectiveConfig.report_grace_days
    epochs: int = 5
    patience: int = TrainConfig.patience

    def pretrain_config(self, variant: str, seed: int) -> PretrainConfig:
        base = PretrainConfig()
        return replace(base, train=TrainConfig(seed=seed, epochs=self.epochs, patience=self.patience),
                       objective=replace(base.objective, horizon_days=self.horizon_days,
                                         report_grace_days=self.report_grace_days),
                       model=replace(base.model, variant=variant))


@dataclass(frozen=True)
class RankerStageConfig:
    """The ablation's ranker seeds, and whether the delayed-feedback experiment runs too."""

    seeds: tuple[int, ...] = AblationConfig.seeds
    delayed_feedback: bool = False


@dataclass(frozen=True)
class DemoConfig:
    workdir: str
    seed: int = 0                    # the generator's, and every encoder's training seed
    input: InputFiles = field(default_factory=InputFiles)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    ranker: RankerStageConfig = field(default_factory=RankerStageConfig)
    force: bool = False              # re-run every stage, even those whose inputs are unchanged

    def __post_init__(self) -> None:
        # Absolute: the stages' paths are part of their cache keys, so `make demo WORKDIR=demo-work` and
        # `duet demo --workdir $PWD/demo-work` must be the same run.
        object.__setattr__(self, "workdir", os.path.abspath(self.workdir))

    @property
    def lake(self) -> Lake:
        return Lake(str(Path(self.workdir) / "lake"))

    @property
    def report_dir(self) -> Path:
        return Path(self.workdir) / "report"


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Plan:
    """The run's time plan: the daily snapshots, the periods, the report grace used (and, when it was
    measured, how)."""

    snapshots: tuple[datetime, ...]
    periods: Periods
    report_grace: timedelta
    measured_grace: ReportGrace | None = None


@dataclass(frozen=True)
class EncodedModel:
    """One variant's pre-training report (``encoders.pretrain.PretrainReport.to_dict``) and its embedding."""

    model_version: str
    variant: str
    split: dict
    examples: dict[str, int]
    parameters: dict
    training: dict
    retrieval: dict[str, float]
    seconds: float
    embedded: int
    embed_seconds: float


@dataclass(frozen=True)
class Encoders:
    train_until: datetime
    models: dict[str, EncodedModel]

    @property
    def versions(self) -> dict[str, str]:
        """Variant -> model version."""
        return {v: m.model_version for v, m in self.models.items()}


@dataclass(frozen=True)
class OnlineScore:
    """One online scoring: what was read through Feast and the ranked candidates."""

    read: dict
    ranked: list[dict]


@dataclass
class DemoResult:
    """Every stage's typed result (None until it ran), in the order they run."""

    seed: int
    generated: GeneratorSummary | None = None
    ingest: list[FileCounts] | None = None         # one per input file
    plan: Plan | None = None
    sequences: dict | None = None                  # per table: rows, snapshots, write mode
    encoders: Encoders | None = None
    validation: LakeReport | None = None
    publish: PublishReport | None = None
    consistency: ConsistencyReport | None = None
    examples: ExamplesReport | None = None
    training_set: TrainingSetReport | None = None
    training_validation: LakeReport | None = None
    ablation: AblationResult | None = None
    ceiling: CeilingResult | None = None
    delayed_feedback: DelayedFeedbackResult | None = None
    online: OnlineScore | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)   # the stages whose recorded result was reused

    def to_dict(self) -> dict:
        """``report/demo.json``: the layout its readers (tests, benchmarks) rely on."""
        out: dict = {"seed": self.seed}
        if self.generated is not None:
            out["generated"] = to_dict(self.generated)
        if self.ingest is not None:
            out["ingest"] = [c.to_dict() for c in self.ingest]
        if self.plan is not None:
            if self.plan.measured_grace is not None:
                out["report_grace"] = self.plan.measured_grace.to_dict()
            out["snapshots"] = [s.isoformat() for s in self.plan.snapshots]
            out["periods"] = self.plan.periods.to_dict()
        for name in ("sequences", "encoders", "validation", "publish", "consistency"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value if isinstance(value, dict) else _dict(value)
        if self.ablation is not None:
            out["ranker"] = {"examples": self.examples.to_dict(), "training_set": self.training_set.to_dict(),
                             "training_validation": self.training_validation.to_dict(),
                             **self.ablation.to_dict(),
                             **({"ceiling": to_dict(self.ceiling)} if self.ceiling is not None else {}),
                             **({"delayed_feedback": self.delayed_feedback.to_dict()}
                                if self.delayed_feedback is not None else {})}
        if self.online is not None:
            out["online"] = {**self.online.read, "ranked": self.online.ranked}
        out["stage_seconds"] = self.stage_seconds
        out["reused"] = self.reused
        return out


def _dict(value: Any) -> dict:
    return value.to_dict() if hasattr(value, "to_dict") else to_dict(value)


# ---------------------------------------------------------------------------------------------- stages


def demo_snapshots(spark, lake: Lake) -> list[datetime]:
    """Daily 00:00 UTC snapshots from the day after the first click to the day after the last one."""
    from pyspark.sql import functions as F

    # As epoch microseconds: PySpark would turn a timestamp into the Python process's local time.
    micros = F.unix_micros("click_ts")
    row = spark.read.format("delta").load(lake.table(RAW_CLICKS)) \
        .agg(F.min(micros).alias("lo"), F.max(micros).alias("hi")).first()
    if row["lo"] is None:
        raise DuetError(f"{RAW_CLICKS.path} is empty: nothing to build sequences from")
    day = lambda us: datetime.fromtimestamp(us / 1e6, UTC).date()  # noqa: E731
    first = datetime.combine(day(row["lo"]), clock_time(0), tzinfo=UTC) + timedelta(days=1)
    last = datetime.combine(day(row["hi"]), clock_time(0), tzinfo=UTC) + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def ranker_snapshots(snapshots: tuple[datetime, ...], periods: Periods, ttl: timedelta) -> list[datetime]:
    """The snapshots the ranker's point-in-time joins can reach, and the latest (published)."""
    splits = periods.splits
    reach = [t for t in snapshots if splits.train_from - ttl <= t < splits.test_until]
    return sorted({*reach, snapshots[-1]})


@dataclass(frozen=True)
class Generate(Stage[GeneratorSummary]):
    name: ClassVar[str] = "generate"
    output: ClassVar[str] = "generated"
    config: GenerateConfig
    seed: int
    input_dir: str
    truth_dir: str

    def run(self, ctx: StageContext, inputs: DemoResult) -> GeneratorSummary:
        from duet.generate import generate, setting

        generator = setting(self.config.setting, users=self.config.users, days=self.config.days,
                            seed=self.seed, conversion_signal=self.config.conversion_signal)
        return generate(generator, Path(self.input_dir), Path(self.truth_dir))


@dataclass(frozen=True)
class Ingest(Stage[list[FileCounts]]):
    """The given files, or the generated ones (``needs`` the generator's summary then)."""

    name: ClassVar[str] = "ingest"
    output: ClassVar[str] = "ingest"
    needs: ClassVar[tuple[str, ...]] = ("generated",)
    config: InputFiles
    attribution_window: timedelta

    def run(self, ctx: StageContext, inputs: DemoResult) -> list[FileCounts]:
        from spark_jobs.ingest import IngestConfig, ingest
        from spark_jobs.taobao import ingest_taobao

        cfg = IngestConfig(lake=ctx.lake.root, attribution_window_s=self.attribution_window.total_seconds())
        if self.config.taobao:
            counts = [ingest_taobao(ctx.spark, cfg, self.config.taobao)]
        elif self.config.clicks:
            counts = ingest(ctx.spark, cfg, self.config.clicks, self.config.conversions)
        else:
            counts = ingest(ctx.spark, cfg, inputs.generated.clicks_path, inputs.generated.conversions_path)
        for c in counts:
            print(c.line())
        return counts


@dataclass(frozen=True)
class PlanPeriods(Stage[Plan]):
    """The daily snapshots of the data, the report grace (measured when not given) and the periods;
    refuses data too short for the ranker before anything is built."""

    name: ClassVar[str] = "plan"
    output: ClassVar[str] = "plan"
    config: LabelConfig

    def run(self, ctx: StageContext, inputs: DemoResult) -> Plan:
        from spark_jobs.examples import measured_report_grace

        measured, grace = None, self.config.report_grace
        if grace is None:
            measured = measured_report_grace(ctx.spark, ctx.lake.root)
            grace = timedelta(days=measured.grace_days)
            print(f"report grace: {measured.grace_days} day(s), the {measured.quantile:.0%} quantile of "
                  f"{measured.conversions:,} attributed conversions' report delays being "
                  f"{measured.hours:.1f} h")
        snapshots = demo_snapshots(ctx.spark, ctx.lake)
        periods = demo_periods(snapshots, self.config.attribution_window, grace)
        return Plan(tuple(snapshots), periods, grace, measured)


@dataclass(frozen=True)
class Sequences(Stage[dict]):
    name: ClassVar[str] = "sequences"
    output: ClassVar[str] = "sequences"
    needs: ClassVar[tuple[str, ...]] = ("plan",)

    def run(self, ctx: StageContext, inputs: DemoResult) -> dict:
        from spark_jobs.sequences import build_sequences

        built = build_sequences(ctx.spark, ctx.lake.root, list(inputs.plan.snapshots))
        for path, figures in built.items():
            print(f"{path}: {figures['rows']} rows for {figures['snapshots']} snapshots")
        return built


SEQUENCE_READS = (RAW_CLICKS, RAW_CONVERSIONS, CLICK_SEQUENCES, CONVERSION_SEQUENCES, SEQUENCE_SNAPSHOTS)


@dataclass(frozen=True)
class PretrainAndEmbed(Stage[Encoders]):
    """Pre-train every variant on the snapshots up to the pre-training period's end, then embed the
    snapshots the ranker's joins can reach (and the latest) with each."""

    name: ClassVar[str] = "pretrain and embed"
    output: ClassVar[str] = "encoders"
    result_type: ClassVar[type] = Encoders
    needs: ClassVar[tuple[str, ...]] = ("plan",)
    cached: ClassVar[bool] = True
    config: EncodersConfig
    seed: int

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(t) for t in SEQUENCE_READS]

    def writes(self, lake: Lake, result: Encoders) -> list[str]:
        return [lake.table(USER_EMBEDDINGS), *(str(lake.model(v)) for v in result.versions.values())]

    def reused(self, result: Encoders) -> str:
        return ", ".join(result.versions.values())

    def run(self, ctx: StageContext, inputs: DemoResult) -> Encoders:
        from encoders.embed import embed_snapshots
        from encoders.pretrain import pretrain
        from feature_repo.views import EMBEDDING_TTL

        plan = inputs.plan
        train_until = plan.periods.splits.pretrain_until
        needed = ranker_snapshots(plan.snapshots, plan.periods, EMBEDDING_TTL)
        models = {}
        for variant in self.config.variants:
            result = pretrain(ctx.lake.root, self.config.pretrain_config(variant, self.seed), train_until)
            embedded = embed_snapshots(ctx.lake.root, needed, result.model_version,
                                       log=lambda line: None)  # one line per model below, not per snapshot
            users, seconds = sum(r.embedded for r in embedded), sum(r.seconds for r in embedded)
            print(f"embed {result.model_version}: {users:,} user embeddings over {len(embedded)} snapshots "
                  f"in {seconds:.1f} s")
            models[variant] = EncodedModel(**result.to_dict(), embedded=users, embed_seconds=seconds)
        return Encoders(train_until, models)


@dataclass(frozen=True)
class Validate(Stage[LakeReport]):
    """Every stage's suites on every table present, but the ranker's (rebuilt below and checked then);
    a failure stops the run."""

    name: ClassVar[str] = "validate"
    output: ClassVar[str] = "validation"
    result_type: ClassVar[type] = LakeReport
    cached: ClassVar[bool] = True
    excluded: ClassVar[tuple] = (TRAINING_EXAMPLES, TRAINING_SET)

    def reads(self, lake: Lake) -> list[str]:
        # The model folders too: the embedding suite checks the widths in each checkpoint's config.json.
        return [*(lake.table(t) for t in TABLES if t not in self.excluded), str(lake.models)]

    def run(self, ctx: StageContext, inputs: DemoResult) -> LakeReport:
        from duet.validation import validate

        report = validate(ctx.spark, ctx.lake.root, exclude=[t.path for t in self.excluded])
        print(report.summary())
        return report

    def reused(self, result: LakeReport) -> str:
        return f"{len(result.tables)} tables passed; results in {result.results_dir}"

    def check(self, result: LakeReport) -> None:
        if not result.success:
            raise ValidationFailed(f"data quality failed; see {result.results_dir}")


@dataclass(frozen=True)
class Publish(Stage[PublishReport]):
    """The latest snapshot of the duet model to the embedded Feast store (SQLite under the lake), so that
    ``DUET_LAKE=<lake> feast -c feature_repo serve`` serves it."""

    name: ClassVar[str] = "publish"
    output: ClassVar[str] = "publish"
    needs: ClassVar[tuple[str, ...]] = ("encoders",)
    variant: str = PROPOSED

    def run(self, ctx: StageContext, inputs: DemoResult) -> PublishReport:
        from serving.publish import PublishConfig, publish
        from serving.store import StoreConfig

        version = inputs.encoders.versions[self.variant]
        return publish(ctx.spark, PublishConfig(store=StoreConfig(lake=ctx.lake.root), model_version=version,
                                                promote=True))


@dataclass(frozen=True)
class Consistency(Stage[ConsistencyReport]):
    """The published snapshot read back online (Feast's SDK, the fast path, the contract views) for a seeded
    sample of its users and compared with its Delta rows (``serving.consistency``): a mismatch, a missing
    or an extra row stops the demo. Never reused: it checks the store as it is now."""

    name: ClassVar[str] = "consistency"
    output: ClassVar[str] = "consistency"
    needs: ClassVar[tuple[str, ...]] = ("publish",)
    sample: int = 200

    def run(self, ctx: StageContext, inputs: DemoResult) -> ConsistencyReport:
        from serving.consistency import ConsistencyConfig, check_consistency
        from serving.store import StoreConfig

        return check_consistency(ConsistencyConfig(StoreConfig(lake=ctx.lake.root),
                                                   model_version=inputs.publish.model_version,
                                                   sample=self.sample))

    def check(self, result: ConsistencyReport) -> None:
        if not result.ok:
            raise DuetError(f"{result.line()}: " + "; ".join(p.line() for p in result.paths if not p.ok))


@dataclass(frozen=True)
class Examples(Stage[ExamplesReport]):
    name: ClassVar[str] = "examples"
    output: ClassVar[str] = "examples"
    needs: ClassVar[tuple[str, ...]] = ("plan",)
    cached: ClassVar[bool] = True
    attribution_window: timedelta

    result_type: ClassVar[type] = ExamplesReport

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(RAW_CLICKS), lake.table(RAW_CONVERSIONS)]

    def writes(self, lake: Lake, result: ExamplesReport) -> list[str]:
        return [lake.table(TRAINING_EXAMPLES)]

    def reused(self, result: ExamplesReport) -> str:
        return f"{TRAINING_EXAMPLES.path} at cutoff {result.label_cutoff}"

    def run(self, ctx: StageContext, inputs: DemoResult) -> ExamplesReport:
        from spark_jobs.examples import ExamplesConfig, build_examples

        plan = inputs.plan
        built = build_examples(ctx.spark, ExamplesConfig(ctx.lake.root, plan.periods.label_cutoff,
                                                         self.attribution_window, plan.report_grace))
        print(f"{TRAINING_EXAMPLES.path}: {built.rows:,} clicks, {built.matured:,} matured "
              f"({built.matured_positives:,} positive) at cutoff {plan.periods.label_cutoff:%Y-%m-%d}")
        return built


RANKER_READS = (TRAINING_EXAMPLES, TRAINING_SET)


@dataclass(frozen=True)
class TrainingSet(Stage[TrainingSetReport]):
    """``training/training_set`` through Feast's point-in-time joins, every variant's model version."""

    name: ClassVar[str] = "training set"
    output: ClassVar[str] = "training_set"
    result_type: ClassVar[type] = TrainingSetReport
    needs: ClassVar[tuple[str, ...]] = ("plan", "encoders")
    cached: ClassVar[bool] = True

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(t) for t in (TRAINING_EXAMPLES, USER_EMBEDDINGS, *SEQUENCE_READS)]

    def writes(self, lake: Lake, result: TrainingSetReport) -> list[str]:
        return [lake.table(TRAINING_SET)]

    def reused(self, result: TrainingSetReport) -> str:
        return f"{TRAINING_SET.path} of {', '.join(result.rows)}"

    def run(self, ctx: StageContext, inputs: DemoResult) -> TrainingSetReport:
        from duet.console import training_set_lines
        from ranker.training_set import build_training_set
        from serving.store import StoreConfig, feature_store

        periods = inputs.plan.periods
        built = build_training_set(ctx.spark, feature_store(StoreConfig(ctx.lake.root)), ctx.lake.root,
                                   periods.splits, list(inputs.encoders.versions.values()),
                                   record={"label_cutoff": periods.label_cutoff.isoformat()})
        print("\n".join(training_set_lines(built)))
        return built


@dataclass(frozen=True)
class ValidateTraining(Stage[LakeReport]):
    """Only the ranker's tables (labels and the training set): the gate before the ranker trains."""

    name: ClassVar[str] = "validate training tables"
    output: ClassVar[str] = "training_validation"
    result_type: ClassVar[type] = LakeReport
    cached: ClassVar[bool] = True

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(t) for t in RANKER_READS]

    def reused(self, result: LakeReport) -> str:
        return f"{len(result.tables)} tables passed"

    def run(self, ctx: StageContext, inputs: DemoResult) -> LakeReport:
        from duet.validation import validate_training

        report = validate_training(ctx.spark, ctx.lake.root)
        print(report.summary())
        return report

    def check(self, result: LakeReport) -> None:
        if not result.success:
            raise ValidationFailed(f"the ranker's tables failed data quality; see {result.results_dir}")


@dataclass(frozen=True)
class Ablation(Stage[AblationResult]):
    """The NE ablation (``ranker.evaluate``): one ranker per variant and seed; the duet variant's ranker
    of the first seed is saved (``_rankers/<model version>``) for online scoring."""

    name: ClassVar[str] = "ranker"
    output: ClassVar[str] = "ablation"
    result_type: ClassVar[type] = AblationResult
    needs: ClassVar[tuple[str, ...]] = ("encoders",)
    cached: ClassVar[bool] = True
    config: RankerStageConfig
    predictions: str

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(t) for t in RANKER_READS]

    def writes(self, lake: Lake, result: AblationResult) -> list[str]:
        return [str(lake.ranker(v.model_version)) for v in result.variants.values()
                if v.model_version and lake.ranker(v.model_version).is_dir()]

    def reused(self, result: AblationResult) -> str:
        return f"the rankers of {', '.join(result.variants)}"

    def run(self, ctx: StageContext, inputs: DemoResult) -> AblationResult:
        from ranker.evaluate import AblationConfig, run_ablation

        return run_ablation(AblationConfig(ctx.lake.root, inputs.encoders.versions, seeds=self.config.seeds,
                                           predictions_path=self.predictions))


@dataclass(frozen=True)
class Ceiling(Stage[CeilingResult]):
    """The oracle and Bayes NE on the ablation's test rows (``duet.ceiling``, generated data only), and
    each variant's share of the gap between ``none`` and them."""

    name: ClassVar[str] = "ceiling"
    output: ClassVar[str] = "ceiling"
    result_type: ClassVar[type] = CeilingResult
    needs: ClassVar[tuple[str, ...]] = ("plan", "encoders", "ablation")
    cached: ClassVar[bool] = True
    attribution_window: timedelta
    input_dir: str
    truth_dir: str
    samples: int = 1000

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(TRAINING_SET)]

    def reused(self, result: CeilingResult) -> str:
        return f"Bayes NE {result.bayes_ne:.4f}"

    def run(self, ctx: StageContext, inputs: DemoResult) -> CeilingResult:
        any_version = next(iter(inputs.encoders.versions.values()))
        result = test_set_ceiling(ctx.lake, any_version, inputs.plan.periods, self.attribution_window,
                                  (Path(self.input_dir), Path(self.truth_dir)), inputs.ablation, self.samples)
        print(f"ceiling on the test set: oracle NE {result.oracle_ne:.4f}, Bayes NE {result.bayes_ne:.4f}")
        return result


def test_set_ceiling(lake: Lake, model_version: str, periods: Periods, attribution_window: timedelta,
                     truth: tuple[Path, Path], ablation: AblationResult,
                     samples: int = 1000) -> CeilingResult:
    """The oracle and Bayes NE on the ablation's test rows (``duet.ceiling``), and per variant the share of
    the gap between ``none`` and the Bayes NE that it closes, ``(NE_none - NE_v) / (NE_none - NE_bayes)``
    (and the same against the oracle)."""
    import pyarrow.compute as pc

    from duet.ceiling import ceiling
    from ranker.data import read_training_set

    table = read_training_set(lake.root, model_version)
    test = table.filter(pc.equal(table.column("split"), "test")).select(
        ["user_id", "advertiser_id", "click_ts", "label"])
    bound = ceiling(truth[0], truth[1], test, periods.label_cutoff, attribution_window, samples=samples)
    none = ablation.variants[NO_VECTOR].ne

    def closed(target: float) -> dict[str, float | None]:
        return {v: (none - r.ne) / (none - target) if none > target else None
                for v, r in ablation.variants.items()}

    return CeilingResult.of(bound, closed(bound.bayes_ne), closed(bound.oracle_ne))


@dataclass(frozen=True)
class DelayedFeedback(Stage[DelayedFeedbackResult]):
    """Rankers trained at the start of the test period on the clicks since the first snapshot with the
    labels known then (``ranker.delayed``), tested on the ablation's test set."""

    name: ClassVar[str] = "delayed feedback"
    output: ClassVar[str] = "delayed_feedback"
    result_type: ClassVar[type] = DelayedFeedbackResult
    needs: ClassVar[tuple[str, ...]] = ("plan", "encoders")
    cached: ClassVar[bool] = True
    config: RankerStageConfig
    attribution_window: timedelta

    def reads(self, lake: Lake) -> list[str]:
        return [lake.table(t) for t in (*SEQUENCE_READS, TRAINING_SET)]

    def reused(self, result: DelayedFeedbackResult) -> str:
        return f"the delayed-feedback rankers at {result.trained_at}"

    def run(self, ctx: StageContext, inputs: DemoResult) -> DelayedFeedbackResult:
        return delayed_feedback(ctx, inputs.plan, inputs.encoders.versions, self.config.seeds,
                                self.attribution_window)


def delayed_feedback(ctx: StageContext, plan: Plan, models: dict[str, str], seeds: tuple[int, ...],
                     attribution_window: timedelta) -> DelayedFeedbackResult:
    from duet.console import delayed_feedback_lines
    from ranker.delayed import DelayedFeedbackConfig, run_delayed_feedback
    from ranker.training_set import delayed_feedback_pool
    from serving.store import StoreConfig, feature_store

    trained_at = plan.periods.splits.test_from
    pool = delayed_feedback_pool(ctx.spark, feature_store(StoreConfig(ctx.lake.root)), ctx.lake.root,
                                 plan.snapshots[0], trained_at, attribution_window, plan.report_grace)
    result = run_delayed_feedback(DelayedFeedbackConfig(
        ctx.lake.root, next(iter(models.values())), trained_at, attribution_window, plan.report_grace,
        seeds=seeds), pool)
    print("\n".join(delayed_feedback_lines(result)))
    return result


@dataclass(frozen=True)
class OnlineScoring(Stage[OnlineScore]):
    """One online scoring, as a ranker would do it at the published snapshot (the demo's "now"): the most
    active user of the test period, five of the ads clicked then."""

    name: ClassVar[str] = "online scoring"
    output: ClassVar[str] = "online"
    needs: ClassVar[tuple[str, ...]] = ("plan", "encoders")
    variant: str = PROPOSED

    def run(self, ctx: StageContext, inputs: DemoResult) -> OnlineScore:
        return score_one(ctx.lake, inputs.encoders.versions[self.variant], inputs.plan.snapshots[-1])


def score_one(lake: Lake, model_version: str, as_of: datetime) -> OnlineScore:
    from core.object_storage import delta_table
    from ranker.score import score
    from serving.store import StoreConfig, feature_store

    table = delta_table(lake.table(TRAINING_SET)).to_pyarrow_table(
        columns=["user_id", "ad_id", "advertiser_id"],
        filters=[("model_version", "=", model_version), ("split", "=", "test")])
    users = table.group_by("user_id").aggregate([("ad_id", "count")]).sort_by([("ad_id_count", "descending")])
    user = users.column("user_id")[0].as_py()
    ads, advertisers = table.column("ad_id").to_pylist(), table.column("advertiser_id").to_pylist()
    pairs = list(dict.fromkeys(zip(ads, advertisers, strict=True)))[:5]
    ranked, read = score(feature_store(StoreConfig(lake.root)), lake.root, model_version, user, pairs, as_of)
    print(f"online: user {user} (embedding of snapshot "
          f"{datetime.fromtimestamp(read['embedding_snapshot'], UTC):%Y-%m-%d} read through Feast)"
          if read["embedding_snapshot"] else f"online: user {user} (no embedding online: defaults)")
    for s in ranked:
        print(f"  {s.ad_id:>12} {s.advertiser_id:>10}  p(convert) = {s.probability:.4f}")
    return OnlineScore(read, [vars(s) for s in ranked])


# ------------------------------------------------------------------------------------------- the demo


def demo_stages(cfg: DemoConfig) -> list[Stage]:
    """The demo as a list of stages, from its config."""
    from duet.ceiling import modelled
    from duet.generate import setting

    work = Path(cfg.workdir)
    input_dir, truth_dir = str(work / "input"), str(work / "truth")
    window = cfg.labels.attribution_window
    stages: list[Stage] = []
    if not cfg.input.given:
        stages.append(Generate(cfg.generate, cfg.seed, input_dir, truth_dir))
    stages += [Ingest(cfg.input, window), PlanPeriods(cfg.labels), Sequences(),
               PretrainAndEmbed(cfg.encoders, cfg.seed), Validate()]
    publishes = PROPOSED in cfg.encoders.variants
    if publishes:
        stages += [Publish(), Consistency()]
    stages += [Examples(window), TrainingSet(), ValidateTraining(),
               Ablation(cfg.ranker, str(cfg.report_dir / "test_predictions.parquet"))]
    if not cfg.input.given:
        generator = setting(cfg.generate.setting)
        if modelled(generator):
            stages.append(Ceiling(window, input_dir, truth_dir))
        else:
            print(f"ceiling: not computed, duet.ceiling does not model the {cfg.generate.setting} "
                  "generator setting")
    if cfg.ranker.delayed_feedback:
        stages.append(DelayedFeedback(cfg.ranker, window))
    if publishes:
        stages.append(OnlineScoring())
    return stages


def run_demo(spark_factory, cfg: DemoConfig) -> dict:
    """Run the demo's stages; write and return where its reports are. ``spark_factory()`` gives the Spark
    session (started on first use)."""
    from duet.console import ne_table
    from duet.report import ReportPage, contract_metrics, write_report
    from duet.stage_cache import StageCache

    lake = cfg.lake
    clock = StageClock()
    result = DemoResult(seed=cfg.seed)
    ctx = StageContext(lake, spark_factory, clock)
    try:
        run_stages(demo_stages(cfg), ctx, result, StageCache(lake, force=cfg.force))
    finally:   # what ran is reported, a failed validation's verdict included
        result.stage_seconds = clock.seconds
        _write_json(cfg.report_dir / "demo.json", result.to_dict())
    print(ne_table(result.ablation))
    _write_json(cfg.report_dir / "metrics.json", contract_metrics(cfg.seed, result.ablation))
    page = write_report(ReportPage(cfg.seed, result.ablation, result.plan.periods, result.validation,
                                   result.stage_seconds, result.ceiling,
                                   delayed_feedback=result.delayed_feedback,
                                   consistency=result.consistency), cfg.report_dir)
    print(f"demo: lake at {lake.root}; report at {page} (metrics: {cfg.report_dir / 'metrics.json'}); "
          f"{sum(clock.seconds.values()):.0f} s in stages")
    return {"lake": lake.root, "report": str(page), "metrics": str(cfg.report_dir / "metrics.json"),
            "validation_passed": result.validation.success}


def _write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1))
