"""The demo pipeline (``duet demo``): every stage that exists, in order, on the embedded default.

Stages so far: generate (unless input files are given) -> ingest -> sequences (daily snapshots over the
data's time range) -> pretrain (duet and both baselines, on the first half of the snapshots) -> embed
(every snapshot, every model) -> validate -> publish (the latest snapshot of the duet model to Feast's
SQLite online store under ``<workdir>/lake/_feast``, gated by the embedding suite). Later stages (the
ranker's training set, the ranker and its evaluation) join here as they are built; until then the demo
says what comes next instead of pretending. Outputs: ``<workdir>/lake`` and
``<workdir>/report/demo.json``. Re-running on the same workdir ingests nothing new, rebuilds identical
sequences and retrains the same models (the same versions, as training is deterministic on CPU), whose
embeddings replace themselves and are published again (the same rows online).

Time split: the encoders see only the first half of the snapshots (``pretrain_fraction``); the later
snapshots are kept for the ranker's training, validation and test periods.

``validate`` gathers the data quality suites of every stage for the generic runner (``core.quality``):
the conductor is the one place that knows which stage checks which table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from core.errors import DuetError, ValidationFailed
from core.quality import LakeReport, validate_lake
from encoders.config import VARIANTS, PretrainConfig, TrainConfig

NEXT_STAGES = ("training set", "ranker", "evaluation")


def demo_pretrain_config(seed: int) -> PretrainConfig:
    """The demo's pre-training budget: the defaults with fewer epochs, so that three variants train in
    about two minutes on a 2-core machine. Every variant gets this same budget."""
    return PretrainConfig(train=TrainConfig(seed=seed, epochs=5, patience=2))


@dataclass(frozen=True)
class DemoConfig:
    workdir: str
    seed: int = 0
    clicks: str | None = None
    conversions: str | None = None
    users: int = 2000
    days: int = 28
    pretrain_fraction: float = 0.5   # share of the snapshot range the encoders may learn from
    variants: tuple[str, ...] = VARIANTS


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
    first = datetime.combine(day(row["lo"]), time(0), tzinfo=UTC) + timedelta(days=1)
    last = datetime.combine(day(row["hi"]), time(0), tzinfo=UTC) + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def validate(spark: SparkSession, lake: str, now: datetime | None = None) -> LakeReport:
    """Run every stage's suites on the tables present under ``lake``; write and return the report."""
    from encoders import quality as encoder_quality
    from spark_jobs import quality

    now = now or datetime.now(UTC)
    cfg = quality.QualityConfig(now=now)

    def suites_for(present: set[str], properties: dict[str, dict[str, str]]) -> list:
        return quality.suites_for(cfg, present, properties) + encoder_quality.suites_for(lake, present)

    return validate_lake(spark, lake, suites_for, metrics_for=quality.metrics, now=now)


def pretrain_and_embed(lake: str, snapshots: list[datetime], cfg: DemoConfig) -> dict:
    """Pre-train every variant up to the split point, then embed every snapshot with each model."""
    from encoders.embed import embed_snapshots
    from encoders.pretrain import pretrain

    train_until = snapshots[int(cfg.pretrain_fraction * (len(snapshots) - 1))]
    out: dict = {"train_until": train_until.isoformat(), "models": {}}
    for variant in cfg.variants:
        pretrain_cfg = demo_pretrain_config(cfg.seed)
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


def run_demo(spark: SparkSession, cfg: DemoConfig) -> dict:
    """Run the pipeline; return (and write) the demo report."""
    from duet.generate import GeneratorConfig, generate
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import build_sequences

    work = Path(cfg.workdir)
    lake = str(work / "lake")
    if bool(cfg.clicks) != bool(cfg.conversions):
        raise DuetError("give both --clicks and --conversions, or neither to generate synthetic events")
    report: dict = {"seed": cfg.seed}
    if cfg.clicks:
        clicks, conversions = cfg.clicks, cfg.conversions
    else:
        summary = generate(GeneratorConfig(users=cfg.users, days=cfg.days, seed=cfg.seed), work / "input")
        clicks, conversions = summary.clicks_path, summary.conversions_path
        report["generated"] = json.loads(summary.to_json())
    counts = ingest(spark, IngestConfig(lake=lake), clicks, conversions)
    for c in counts:
        print(c.line())
    report["ingest"] = [c.to_dict() for c in counts]
    snapshots = demo_snapshots(spark, lake)
    report["snapshots"] = [s.isoformat() for s in snapshots]
    report["sequences"] = build_sequences(spark, lake, snapshots)
    for path, figures in report["sequences"].items():
        print(f"{path}: {figures['rows']} rows for {figures['snapshots']} snapshots")
    report["encoders"] = pretrain_and_embed(lake, snapshots, cfg)
    quality = validate(spark, lake)
    print(quality.summary())
    report["validation"] = quality.to_dict()
    if quality.success and "duet" in report["encoders"]["models"]:
        report["publish"] = publish_latest(spark, lake, report["encoders"]["models"]["duet"]["model_version"])
    report["not_built_yet"] = list(NEXT_STAGES)
    out = work / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(report, indent=1))
    if not quality.success:
        raise ValidationFailed(f"data quality failed; see {quality.results_dir}")
    print(f"demo: lake at {lake}; next stages not built yet: {', '.join(NEXT_STAGES)}")
    return {"lake": lake, "report": str(out / "demo.json"), "validation_passed": quality.success}
