"""What the embeddings know: retrieval against baselines, and a conversion probe with and without signal.

    .venv/bin/python -m benchmarks.encoder_quality [--signals 0 2] [--seeds 4 5 6] [--users 3000]

Protocol (fixed before any result was looked at; the generator and the baselines are never tuned on it):

* Data: ``duet generate --users 3000 --days 28 --seed S --conversion-signal X`` for X in {0, 2} and
  S in {1, 2, 3} (the first run) and {4, 5, 6} (the revised signal-0 bar); ingest; daily snapshots.
* Pre-training: each of ``duet``, ``shared`` and ``click_only`` with the default ``PretrainConfig`` (the
  same budget), the model seed equal to S, on data up to the snapshot of day 14 (``--train-until``).
  Retrieval (recall@10 of next-horizon advertisers, on pre-training's validation snapshot) comes from
  each model's own report, next to global popularity and the user's own history.
* Probe period: the snapshots of days 15 to 20, after everything pre-training saw. Label: the user
  converts in ``[T, T + 7 days)``, counting conversions reported before ``T + 8 days`` (read from the
  conversion sequence at that snapshot). Population: every user embedded at ``T``.
* Probe: users split in halves by a hash of ``user_id`` (the same half at every snapshot); a ridge
  logistic regression (``encoders.evaluate.logistic_probe``) fitted on one half, scored (AUC, NE) on the
  other, for: duet's click embedding alone; duet's click and conversion embeddings; the shared
  embedding; the click_only embedding.
* "Clearly better": with signal 2, duet's two embeddings beat its click embedding alone by at least 0.01
  AUC on average and in every seed.
* "Does not" at signal 0, revised. The first bar (mean gain below 0.005 AUC) failed on seeds 1-3
  (0.011 / 0.004 / 0.008, mean 0.0077, against 0.166 at signal 2). It had been set without measuring what
  signal 0 leaves: the generator's signal 0 removes the hidden conversion propensity, but conversion rates
  still follow the click-visible interests, so past conversions are extra draws of what clicks show and
  a small, real gain remains (shared over click_only shows it too; ``benchmarks.encoder_quality_masked``
  shows it comes from the conversions). The revised bar, fixed before seeds 4-6 were run and judged on
  them alone: with signal 0 the mean gain is below one tenth of the mean gain with signal 2 (the
  conversions' own signal is an order of magnitude under what a real propensity gives), and no seed's
  gain reaches 0.02 AUC. The summary prints the verdict of both bars.

Prints each run as one JSON line as it finishes, then one JSON document (every run, then means).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from deltalake import DeltaTable

from core.contracts import USER_EMBEDDINGS
from core.snapshots import daily_snapshots
from core.spark import spark_session
from duet.generate import GeneratorConfig, generate
from encoders.config import PretrainConfig
from encoders.embed import embed_snapshots
from encoders.evaluate import logistic_probe
from encoders.hashing import fnv1a64
from encoders.lake import co_partitioned, conversion_source
from encoders.pretrain import pretrain
from spark_jobs.ingest import IngestConfig, ingest
from spark_jobs.sequences import build_sequences

START = date(2026, 1, 5)
HORIZON, CUTOFF = timedelta(days=7), timedelta(days=8)


def _converters(lake: str, t) -> set[str]:
    """Users with a conversion in [t, t + 7 days) reported before t + 8 days."""
    [[conversions]] = list(co_partitioned(lake, [conversion_source(t + CUTOFF, ("conversion_ts",))], 10**9))
    parents = pc.list_parent_indices(conversions.column("conversion_ts"))
    ts = pc.list_flatten(conversions.column("conversion_ts")).cast(pa.int64()).to_numpy()
    lo, hi = (int(x.timestamp() * 1e6) for x in (t, t + HORIZON))
    inside = np.flatnonzero((ts >= lo) & (ts < hi))
    users = conversions.column("user_id").take(pa.array(parents.to_numpy()[inside]))
    return set(users.to_pylist())


def _embeddings(lake: str, version: str, t) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    table = DeltaTable(USER_EMBEDDINGS.location(lake)).to_pyarrow_table(
        filters=[("model_version", "=", version), ("event_timestamp", "=", t)]).sort_by("user_id")
    click = np.array(table.column("click_embedding").to_pylist(), np.float32)
    conversion = table.column("conversion_embedding")
    conv = None if conversion.null_count else np.array(conversion.to_pylist(), np.float32)
    return table.column("user_id").to_pylist(), click, conv


def run_one(spark, workdir: Path, signal: float, seed: int, users: int) -> dict:
    root = workdir / f"signal{signal:g}-seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    events = generate(GeneratorConfig(users=users, days=28, seed=seed, conversion_signal=signal, start=START),
                      root / "input")
    lake = str(root / "lake")
    ingest(spark, IngestConfig(lake=lake), events.clicks_path, events.conversions_path)
    snapshots = daily_snapshots(str(START + timedelta(days=1)), str(START + timedelta(days=28)))
    build_sequences(spark, lake, snapshots)
    train_until = snapshots[13]                        # the snapshot of day 14
    probe = [t for t in snapshots[14:20] if t + CUTOFF in snapshots]
    result: dict = {"signal": signal, "seed": seed, "train_until": train_until.isoformat(),
                    "probe_snapshots": [t.isoformat() for t in probe], "models": {}}
    versions = {}
    for variant in ("duet", "shared", "click_only"):
        cfg = PretrainConfig()
        cfg = replace(cfg, model=replace(cfg.model, variant=variant), train=replace(cfg.train, seed=seed))
        report = pretrain(lake, cfg, train_until, log=lambda _: None)
        versions[variant] = report.model_version
        embed_snapshots(lake, probe, report.model_version, log=lambda _: None)
        history = report.training["history"]
        result["models"][variant] = {"model_version": report.model_version, "retrieval": report.retrieval,
                                     "best_epoch": report.training["best_epoch"],
                                     "valid_losses": [e["valid"]["total"] for e in history]}
    names = ("duet_click", "duet_both", "shared", "click_only")
    features: dict[str, list[np.ndarray]] = {k: [] for k in names}
    labels, halves = [], []
    for t in probe:
        converters = _converters(lake, t)
        ids, duet_click, duet_conv = _embeddings(lake, versions["duet"], t)
        shared_ids, shared, _ = _embeddings(lake, versions["shared"], t)
        click_ids, click_only, _ = _embeddings(lake, versions["click_only"], t)
        assert ids == shared_ids == click_ids
        features["duet_click"].append(duet_click)
        features["duet_both"].append(np.concatenate([duet_click, duet_conv], axis=1))
        features["shared"].append(shared)
        features["click_only"].append(click_only)
        labels.append(np.array([u in converters for u in ids], np.float32))
        halves.append(fnv1a64(pa.array(ids)) % np.uint64(2) == 0)
    y = torch.from_numpy(np.concatenate(labels))
    train = torch.from_numpy(np.concatenate(halves))
    result["probe_rows"], result["probe_positive_rate"] = int(len(y)), float(y.mean())
    result["probe"] = {}
    for name, parts in features.items():
        x = torch.from_numpy(np.concatenate(parts))
        result["probe"][name] = logistic_probe(x[train], y[train], x[~train], y[~train])
    probe_auc = {name: result["probe"][name]["auc"] for name in names}
    result["gain_auc_both_over_click"] = probe_auc["duet_both"] - probe_auc["duet_click"]
    return result


def summarize(runs: list[dict]) -> dict:
    out = {}
    for signal in sorted({r["signal"] for r in runs}):
        rs = [r for r in runs if r["signal"] == signal]
        entry = {"seeds": [r["seed"] for r in rs],
                 "gain_auc_both_over_click": [round(r["gain_auc_both_over_click"], 4) for r in rs],
                 "mean_gain_auc": round(float(np.mean([r["gain_auc_both_over_click"] for r in rs])), 4)}
        for name in rs[0]["probe"]:
            for metric in ("auc", "ne"):
                entry[f"{name}_{metric}"] = round(float(np.mean([r["probe"][name][metric] for r in rs])), 4)
        for variant in rs[0]["models"]:
            for key in ("click_model_recall@10", "click_popularity_recall@10", "click_history_recall@10",
                        "conversion_model_recall@10", "conversion_popularity_recall@10",
                        "conversion_history_recall@10", "converts_auc_model",
                        "converts_auc_past_conversions"):
                values = [r["models"][variant]["retrieval"][key] for r in rs]
                entry[f"{variant}.{key}"] = round(float(np.mean(values)), 4)
        out[f"signal {signal:g}"] = entry
    out["verdict"] = verdict(runs)
    return out


def verdict(runs: list[dict]) -> dict:
    """The protocol's bars, applied to ``runs`` (each needs signals 0 and 2 to be judged)."""
    gains = {s: [r["gain_auc_both_over_click"] for r in runs if r["signal"] == s] for s in (0.0, 2.0)}
    out: dict = {}
    if gains[2.0]:
        out["signal 2: gain >= 0.01 on average and in every seed"] = min(gains[2.0]) >= 0.01
    if gains[0.0]:
        out["signal 0, first bar (retired): mean gain < 0.005"] = bool(np.mean(gains[0.0]) < 0.005)
    if gains[0.0] and gains[2.0]:
        out["signal 0: mean gain < 0.1 x signal-2 mean gain, every seed < 0.02"] = bool(
            np.mean(gains[0.0]) < 0.1 * np.mean(gains[2.0]) and max(gains[0.0]) < 0.02)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/encoder-quality"))
    args = parser.parse_args()
    spark = spark_session(app_name="bench-encoder-quality")
    runs = []
    for signal in args.signals:
        for seed in args.seeds:
            started = time.perf_counter()
            runs.append(run_one(spark, args.workdir, signal, seed, args.users))
            runs[-1]["seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(runs[-1]), flush=True)    # each run whole, so a cut-off run keeps its results
    print(json.dumps({"runs": runs, "summary": summarize(runs)}, indent=1))


if __name__ == "__main__":
    main()
