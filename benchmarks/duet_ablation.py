"""The powered DUET ablation: duet against ``shared`` and ``merged``, pooled over data seeds, two generator
settings.

    PYTHONPATH=. .venv/bin/python -m benchmarks.duet_ablation [--settings default duet-targeted]
        [--seeds 31 32 33 34 35] [--users 2000] [--days 70] [--workdir bench-work/duet-ablation]

Protocol (fixed on 2026-12-06, before any run of it; nothing below is tuned on its test figures):

* **Data**: for each generator setting X in {``default``, ``duet-targeted``} (``duet.generate.SETTINGS``,
  both at conversion signal 1) and data seed S in {31, 32, 33, 34, 35} (seeds no earlier benchmark used):
  ``duet demo --setting X --seed S --users 2000 --days 70 --report-grace-days measured
  --pretrain-horizon-days 7 --pretrain-grace-days 2``: the whole pipeline, every registered variant
  (``none``, ``shared``, ``merged``, ``click_only``, ``duet``) pre-trained with the same budget and a 7-day
  conversion horizon, ranker seeds 1, 2, 3. Labels use the report grace measured on the lake (the 99th
  percentile of report delays, whole days), so test labels do not miss late reports. 70 days because a
  7-day horizon needs room: the validation snapshot's targets (7 days, then a 2-day grace) must be known
  by ``pretrain_until`` (at 42% of the mature span), and each training snapshot's 7-day window must end
  before the validation snapshot; at 70 days and a 9-day grace that leaves 7 training snapshots, 17 days
  of ranker training, 6 of validation, 8 of test. (A first smoke run, 56 days at data seed 31, stopped in
  pre-training with no training snapshot, before any test figure: hence 70. A second, at data seed 99,
  never one of the seeds below, checked that it runs.)
* **The comparison**, named here: duet against ``shared`` and duet against ``merged``, each on its own
  (no best-of selection). ``none`` and ``click_only`` are reported, not judged.
* **The effect**: the relative NE reduction ``r = (NE_b - NE_duet) / NE_b`` on the run's test rows
  (positive = duet better). Both NEs divide by the same base-rate entropy, so ``r = (L_b - L_duet) / L_b``
  with ``L_v`` the mean over test rows of the log loss of variant v's predictions, each row's loss
  averaged over the three ranker seeds.
* **Pooling**: ``r_pooled`` = the mean of the 5 per-seed ``r_s``. Its standard error ``se_users`` comes
  from a bootstrap over test users within each run (1,000 replicates, Poisson(1) weight per user, paired:
  the same weights for every variant), ``se_users = sqrt(sum se_s^2) / S``. Beside it, the seed-level
  spread ``se_seeds = sd(r_s) / sqrt(S)``, which also carries pre-training and ranker variance.
* **Minimum detectable effect** (two-sided 5%, power 80%): ``MDE = 2.80 * se_users`` (and, printed beside
  it, ``(t_.975 + t_.80; S - 1) * se_seeds``). Every run prints its own MDE from its bootstrap; the pooled
  MDE is judged against the target, 0.2% NE. If it is above, the result says "underpowered" and the data
  size that would reach it (users scale with ``(MDE / 0.2%)^2``).
* **The judgement** per setting and comparator: "duet better" if the 95% interval ``r_pooled +- 1.96
  se_users`` and the seed-level t-interval are both above 0; "duet worse" if both are below 0; otherwise
  "no difference detected" with the MDE saying how large a difference could hide. A loss is reported as
  plainly as a win.
* Also per run and pooled: every variant's NE, AUC and calibration (mean prediction / mean label; the
  measured grace should bring it near 1), the ceiling where ``duet.ceiling`` models the setting (default
  only), the measured grace, FLOPs per user and parameters of each encoder, and the seconds taken.

Issue 22 asks that the protocol finish on the 2-core dev machine within 3 hours; at these defaults it
does not (added after the reduced run, BENCHMARKS.md: ten runs at 400 users took 63 minutes and a run's
time grows about linearly with its users). A GPU takes the pre-training and the rankers where one is
present. Prints one JSON line per run as it ends, then one JSON document with every run and the pooled
summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from core.spark import spark_session
from duet.demo import DemoConfig, EncodersConfig, GenerateConfig, LabelConfig, run_demo

COMPARATORS = ("shared", "merged")
TARGET_MDE = 0.002
Z_POWER = 1.96 + 0.8416          # two-sided 5%, power 80%
T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}
T_80 = {2: 1.376, 3: 1.061, 4: 0.978, 5: 0.941, 6: 0.920, 7: 0.906, 8: 0.896, 9: 0.889, 10: 0.883}


def row_losses(predictions: dict[str, np.ndarray], label: np.ndarray) -> dict[str, np.ndarray]:
    """Per variant, each test row's log loss averaged over the ranker seeds (columns ``<variant>/<seed>``)."""
    eps = 1e-7
    out: dict[str, list[np.ndarray]] = {}
    for column, p in predictions.items():
        variant = column.rsplit("/", 1)[0]
        p = np.clip(p, eps, 1 - eps)
        out.setdefault(variant, []).append(-(label * np.log(p) + (1 - label) * np.log(1 - p)))
    return {v: np.mean(losses, axis=0) for v, losses in out.items()}


def paired_reduction(losses: dict[str, np.ndarray], users: np.ndarray, baseline: str,
                     replicates: int = 1000, seed: int = 0) -> dict:
    """``r = (L_b - L_duet) / L_b`` on one run's rows and its standard error from a paired bootstrap over
    users (Poisson(1) weights per user, the same for both variants)."""
    _, user_index = np.unique(users, return_inverse=True)
    n_users = user_index.max() + 1
    base = np.bincount(user_index, losses[baseline], n_users)
    duet = np.bincount(user_index, losses["duet"], n_users)
    point = (base.sum() - duet.sum()) / base.sum()
    w = np.random.default_rng(seed).poisson(1.0, (replicates, n_users))
    b, d = w @ base, w @ duet
    boot = (b - d) / b
    se = float(np.std(boot, ddof=1))
    return {"baseline": baseline, "r": float(point), "se": se, "mde": Z_POWER * se}


def run_one(spark, workdir: Path, setting: str, seed: int, users: int, days: int) -> dict:
    work = workdir / f"{setting}-seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    run_demo(lambda: spark, DemoConfig(
        workdir=str(work), seed=seed, generate=GenerateConfig(setting=setting, users=users, days=days),
        labels=LabelConfig(report_grace=None),
        encoders=EncodersConfig(horizon_days=7.0, report_grace_days=2.0)))
    seconds = time.perf_counter() - started
    report = json.loads((work / "report" / "demo.json").read_text())
    table = pq.read_table(work / "report" / "test_predictions.parquet")
    label = table.column("label").to_numpy().astype(float)
    users_col = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    predictions = {c: table.column(c).to_numpy() for c in table.column_names if "/" in c}
    losses = row_losses(predictions, label)
    ranker = report["ranker"]
    encoders = report["encoders"]["models"]
    return {
        "setting": setting, "seed": seed, "seconds": round(seconds, 1),
        "report_grace": report.get("report_grace"), "periods": report["periods"],
        "test_rows": ranker["test_rows"], "test_positives": ranker["test_positives"],
        "variants": {v: {k: r[k] for k in ("ne", "auc", "calibration", "ne_interval")}
                     for v, r in ranker["variants"].items()},
        "reductions": {b: paired_reduction(losses, users_col, b) for b in COMPARATORS if b in losses},
        "ceiling": {k: ranker["ceiling"][k] for k in ("oracle_ne", "bayes_ne", "gap_closed")}
        if "ceiling" in ranker else None,
        "encoders": {v: {"parameters": m["parameters"][v]["encoder"],
                         "flops_per_user": m["parameters"][v].get("flops_per_user"),
                         "best_epoch": m["training"].get("best_epoch"),
                         "pretrain_examples": m["examples"]}
                     for v, m in encoders.items()},
        "stage_seconds": report["stage_seconds"],
    }


def pool(runs: list[dict]) -> dict:
    """Per setting and comparator, the pooled reduction, its standard errors, MDEs and the judgement."""
    out: dict = {}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        rs = [r for r in runs if r["setting"] == setting]
        s = len(rs)
        entry: dict = {"seeds": [r["seed"] for r in rs],
                       "mean": {v: {k: float(np.mean([r["variants"][v][k] for r in rs]))
                                    for k in ("ne", "auc", "calibration")} for v in rs[0]["variants"]}}
        for b in COMPARATORS:
            per = [r["reductions"][b] for r in rs if b in r["reductions"]]
            if not per:
                continue
            values = np.array([p["r"] for p in per])
            mean = float(values.mean())
            se_users = float(np.sqrt(sum(p["se"] ** 2 for p in per)) / len(per))
            se_seeds = float(values.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else None
            t = T_975.get(len(per), 1.96)
            users_ci = [mean - 1.96 * se_users, mean + 1.96 * se_users]
            seeds_ci = [mean - t * se_seeds, mean + t * se_seeds] if se_seeds is not None else None
            mde = Z_POWER * se_users
            if users_ci[0] > 0 and seeds_ci and seeds_ci[0] > 0:
                verdict = "duet better"
            elif users_ci[1] < 0 and seeds_ci and seeds_ci[1] < 0:
                verdict = "duet worse"
            else:
                verdict = "no difference detected"
            entry[f"duet vs {b}"] = {
                "per_seed": values.tolist(), "r_pooled": mean, "se_users": se_users, "se_seeds": se_seeds,
                "interval_users": users_ci, "interval_seeds": seeds_ci, "mde": mde,
                "mde_seeds": (t + T_80.get(len(per), 0.8416)) * se_seeds if len(per) > 1 else None,
                "powered": mde <= TARGET_MDE, "verdict": verdict,
                **({} if mde <= TARGET_MDE else
                   {"underpowered": f"MDE {100 * mde:.2f}% > {100 * TARGET_MDE:.1f}%: about "
                                    f"{(mde / TARGET_MDE) ** 2:.1f}x the test users would reach it"})}
        entry["runs"] = s
        out[setting] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["default", "duet-targeted"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[31, 32, 33, 34, 35])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/duet-ablation"))
    parser.add_argument("--keep", action="store_true", help="keep each run's workdir (default: removed)")
    args = parser.parse_args()
    spark = spark_session(app_name="bench-duet-ablation")
    started = time.perf_counter()
    runs = []
    for setting in args.settings:
        for seed in args.seeds:
            runs.append(run_one(spark, args.workdir, setting, seed, args.users, args.days))
            print(json.dumps(runs[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(args.workdir / f"{setting}-seed{seed}", ignore_errors=True)
    elapsed = timedelta(seconds=round(time.perf_counter() - started))
    print(json.dumps({"runs": runs, "summary": pool(runs), "elapsed": str(elapsed),
                      "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
