"""Can the ranker use a user vector? The ranker fed the generator's own latents, against its ceiling.

    .venv/bin/python -m benchmarks.ranker_ceiling [--users 2000 8000] [--signals 1 0] [--seeds 11 12 13]

Protocol (fixed on 2026-12-04 before any run of it; the ranker was developed on data seed 0 at 2,000
users, signals 0 and 1, whose test figures were seen; the seeds below never were):

* Data: ``duet generate --truth`` with ``--users U --days 28 --seed S --conversion-signal X`` for U in
  {2000 (the demo's scale), 8000}, X in {1, 0}, S in {11, 12, 13}; rows, labels and periods as the demo
  builds them (``duet.ranker_sanity``: the contract's labels, matured clicks only, the demo's periods).
* Ceiling (``duet.ceiling``) on each test split: the oracle NE (the true conversion probabilities) and the
  Bayes NE (the posterior mean given the history reported before each click's snapshot; 2,000 importance
  samples per user and snapshot).
* Rankers, ``RankerConfig()`` as shipped, ranker seeds 1 and 2, their test NE averaged:
  ``none`` (no user vector) and ``latents`` (the user's ``theta``, ``eta`` and propensity as the user
  vector); ``ridge`` is the ranker's own wide part alone (a ridge logistic regression on the same rows
  and inputs, penalty chosen on validation: the ranker's "epoch 0").
* Reported per (users, signal): the mean over data seeds of each NE, the share of the gap closed
  ``(NE_none - NE_latents) / (NE_none - NE_oracle)``, and ``NE_latents - NE_bayes``.
* Criteria (issue 22, acceptance 1), judged on the means as written here:
  1. signal 1: the share of the gap closed is at least 0.5;
  2. signal 1: ``latents`` is at least as good as ``ridge`` on the same latents (NE not higher);
  3. signal 0: ``latents`` is within 0.005 of the Bayes NE.
  A criterion that fails is reported as failed, with the scale at which it fails.

Prints each run as one JSON line, then one JSON document with the runs and the summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.metrics import normalized_entropy
from duet.ceiling import ceiling
from duet.generate import GeneratorConfig, generate
from duet.ranker_sanity import generated_rows, latent_vectors, to_batch
from ranker.config import RankerConfig
from ranker.train import predict, train_ranker

RANKER_SEEDS = (1, 2)


def evaluate(events: Path, truth: Path, cfg: RankerConfig | None = None, samples: int = 2000,
             seeds: tuple[int, ...] = RANKER_SEEDS) -> dict:
    """Every figure of one data set: the ceiling, and ``none``, ``latents``, ``ridge`` (means over the
    ranker ``seeds``; the protocol's are ``RANKER_SEEDS``)."""
    cfg = cfg or RankerConfig()
    rows = generated_rows(events, truth)
    test = rows.splits["test"]
    y = test.column("label").to_numpy().astype(float)
    out = {"test_rows": test.num_rows, "test_positives": int(y.sum()),
           "train_positives": int(np.sum(rows.splits["train"].column("label").to_numpy()))}
    bound = ceiling(events, truth, test, rows.label_cutoff, samples=samples)
    out.update(oracle=bound.oracle_ne, bayes=bound.bayes_ne, median_ess=bound.median_ess)
    for name in ("none", "latents"):
        batches = {split: to_batch(t, cfg, None if name == "none" else
                                   latent_vectors(truth, t.column("user_id").to_pylist()))
                   for split, t in rows.splits.items()}
        ne, ridge, wide = [], [], None
        for seed in seeds:
            model, info = train_ranker(replace(cfg, seed=seed), batches["train"], batches["valid"], wide=wide)
            wide = model.wide_fit
            ne.append(normalized_entropy(predict(model, batches["test"]).numpy(), y))
            ridge.append(normalized_entropy(predict(model, batches["test"], wide_only=True).numpy(), y))
        out[name], out[f"ridge_{name}"] = float(np.mean(ne)), float(np.mean(ridge))
        out[f"{name}_best_epochs"] = info["best_epoch"]
    out["gap_closed"] = (out["none"] - out["latents"]) / (out["none"] - out["oracle"])
    out["latents_minus_bayes"] = out["latents"] - out["bayes"]
    return out


def run_one(item: tuple[Path, int, float, int]) -> dict:
    work, users, signal, seed = item
    started = time.perf_counter()
    folder = work / f"u{users}-s{signal:g}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    generate(GeneratorConfig(users=users, days=28, seed=seed, conversion_signal=signal),
             folder / "events", folder / "truth")
    run = {"users": users, "signal": signal, "seed": seed, **evaluate(folder / "events", folder / "truth")}
    run["seconds"] = round(time.perf_counter() - started, 1)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--signals", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--workdir", default="bench-work/ranker_ceiling")
    parser.add_argument("--out", help="also append each run to this file as one JSON line")
    parser.add_argument("--jobs", type=int, default=1, help="data sets evaluated at once (processes)")
    args = parser.parse_args()
    work = Path(args.workdir)
    plan = [(work, users, signal, seed)
            for users in args.users for signal in args.signals for seed in args.seeds]
    runs = []
    def done(run: dict) -> None:
        runs.append(run)
        print(json.dumps(run), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(run) + "\n")

    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            largest_first = sorted(plan, key=lambda item: -item[1])
            for future in as_completed([pool.submit(run_one, item) for item in largest_first]):
                done(future.result())
    else:
        for item in plan:
            done(run_one(item))
    runs.sort(key=lambda r: (r["users"], -r["signal"], r["seed"]))
    summary = []
    for users in args.users:
        for signal in args.signals:
            group = [r for r in runs if r["users"] == users and r["signal"] == signal]
            mean = {k: float(np.mean([r[k] for r in group])) for k in
                    ("none", "latents", "ridge_none", "ridge_latents", "oracle", "bayes", "gap_closed",
                     "latents_minus_bayes", "test_positives")}
            if signal > 0:
                criteria = {"gap_closed_at_least_half": mean["gap_closed"] >= 0.5,
                            "latents_not_worse_than_ridge": mean["latents"] <= mean["ridge_latents"]}
            else:
                criteria = {"latents_within_0.005_of_bayes": mean["latents_minus_bayes"] <= 0.005}
            summary.append({"users": users, "signal": signal, "seeds": len(group), **mean,
                            "criteria": criteria})
    print(json.dumps({"benchmark": "ranker_ceiling", "runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
