"""The demo pipeline (``duet demo``): every stage that exists, in order, on the embedded default.

Stages so far: generate (unless input files are given) -> ingest -> validate. Later stages (sequences,
pre-training, embedding, publishing to Feast, the ranker and its evaluation) join here as they are built;
until then the demo says what comes next instead of pretending. Outputs: ``<workdir>/lake`` and
``<workdir>/report/demo.json``. Re-running on the same workdir is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from duet.errors import DuetError, ValidationFailed

NEXT_STAGES = ("sequences", "pretrain", "embed", "publish to Feast", "training set", "ranker", "evaluation")


@dataclass(frozen=True)
class DemoConfig:
    workdir: str
    seed: int = 0
    clicks: str | None = None
    conversions: str | None = None
    users: int = 2000
    days: int = 14


def run_demo(spark: SparkSession, cfg: DemoConfig) -> dict:
    """Run the pipeline; return (and write) the demo report."""
    from duet.generate import GeneratorConfig, generate
    from duet.quality.runner import validate_lake
    from spark_jobs.ingest import IngestConfig, ingest

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
    quality = validate_lake(spark, lake)
    print(quality.summary())
    report["validation"] = quality.to_dict()
    report["not_built_yet"] = list(NEXT_STAGES)
    out = work / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(report, indent=1))
    if not quality.success:
        raise ValidationFailed(f"data quality failed; see {quality.results_dir}")
    print(f"demo: lake at {lake}; next stages not built yet: {', '.join(NEXT_STAGES)}")
    return {"lake": lake, "report": str(out / "demo.json"), "validation_passed": quality.success}
