"""Benchmark: the data-quality run with duet's query checks (``core.quality.no_rows``: one count per
query) next to the same suites with GX's own ``UnexpectedRowsExpectation`` (a count, then a fetch of up
to 200 rows) in the same warm Spark session, on a lake the demo's first stages build.

The lake: ``--users`` generated users over ``--days`` days, ingested, with daily sequence snapshots and
one model (``click_only``, two epochs) embedding the last three. Then ``--repeats`` rounds, the two kinds
taking turns (the reference first in odd rounds); every suite the lake's tables get (raw, quarantine,
sequences, embeddings) runs in both. Each round checks that both kinds decide every expectation the same
and count the same offending rows. Prints one JSON object: seconds per round of each, the median ratio.

    .venv/bin/python -m benchmarks.validate_query_checks [--users 300] [--days 20] [--repeats 3]
        [--workdir bench-work/validate]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _suites(spark, lake: str, now: datetime, reference: bool):
    from core.quality import present_tables
    from encoders import quality as encoder_quality
    from spark_jobs import quality
    from tests.reference_quality import gx_reference

    properties = present_tables(lake)
    present = set(properties)
    suites = (quality.suites_for(quality.QualityConfig(now=now), present, properties)
              + encoder_quality.suites_for(lake, present))
    return [gx_reference(s) for s in suites] if reference else suites


def _decisions(results_dir: str) -> dict[str, tuple]:
    out = {}
    for path in Path(results_dir).glob("*.json"):
        if path.name == "summary.json":
            continue
        for r in json.loads(path.read_text())["results"]:
            out[r["expectation_config"]["description"]] = (r["success"], r["result"].get("observed_value"))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="bench-work/validate")
    args = parser.parse_args(argv)

    from core.quality import validate_lake
    from core.snapshots import daily_snapshots
    from core.spark import spark_session
    from duet.demo import EncodersConfig
    from duet.generate import GeneratorConfig, generate
    from encoders.embed import embed_snapshots
    from encoders.pretrain import pretrain
    from spark_jobs.ingest import IngestConfig, ingest
    from spark_jobs.sequences import build_sequences

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    lake = str(work / "lake")
    spark = spark_session()
    events = generate(GeneratorConfig(users=args.users, days=args.days, seed=5), work / "events")
    ingest(spark, IngestConfig(lake=lake), events.clicks_path, events.conversions_path)
    first = datetime(2026, 1, 6, tzinfo=UTC)   # the day after the generator's first click
    snapshots = daily_snapshots(first.date().isoformat(),
                                (first + timedelta(days=args.days - 1)).date().isoformat())
    build_sequences(spark, lake, snapshots)
    cfg = EncodersConfig().pretrain_config("click_only", seed=5)
    cfg = replace(cfg, train=replace(cfg.train, epochs=2))
    model = pretrain(lake, cfg, snapshots[len(snapshots) // 2], log=lambda line: None)
    embed_snapshots(lake, snapshots[-3:], model.model_version, log=lambda line: None)

    seconds: dict[str, list[float]] = {"no_rows": [], "gx_unexpected_rows": []}
    for round_ in range(args.repeats):
        kinds = ("gx_unexpected_rows", "no_rows") if round_ % 2 == 0 else ("no_rows", "gx_unexpected_rows")
        decided, now = {}, datetime.now(UTC)   # one run time: the range checks' descriptions name it
        for kind in kinds:
            suites = _suites(spark, lake, now, reference=kind == "gx_unexpected_rows")
            started = time.perf_counter()
            report = validate_lake(spark, lake, lambda *_, s=suites: s, now=now)
            seconds[kind].append(round(time.perf_counter() - started, 2))
            decided[kind] = _decisions(report.results_dir)
            shutil.rmtree(report.results_dir)
        if decided["no_rows"] != decided["gx_unexpected_rows"]:
            raise SystemExit(f"the two kinds decided differently: {decided}")
    ratios = [a / b for a, b in zip(seconds["no_rows"], seconds["gx_unexpected_rows"], strict=True)]
    result = {"benchmark": "validate_query_checks", "users": args.users, "days": args.days,
              "expectations": len(decided["no_rows"]),
              "query_checks": sum(1 for s in _suites(spark, lake, datetime.now(UTC), False)
                                  for e in s.expectations if hasattr(e, "unexpected_rows_query")),
              "seconds": seconds, "median_ratio_no_rows_vs_gx": round(statistics.median(ratios), 3),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
