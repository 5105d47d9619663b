"""What a new model version's vectors do to a ranker trained on the old one, raw and aligned (issue 26).

    .venv/bin/python -m benchmarks.procrustes_ranker --lake DIR --served N --candidate N1 [--seeds 1 2 3]

Protocol (fixed on 2026-12-07 before any run of it; nothing below is tuned on its results):

* Data: a lake of ``duet demo`` (the run reported: the tests' small demo, ``--users 300 --days 20 --seed
  5``) whose ``training/training_set`` holds rows of version N (the demo's duet model). N+1 is the same
  variant re-trained on the same data with another seed and embedded at every snapshot N has:
  ``duet pretrain --lake DIR --variant duet --config <N's config.json "config", train.seed = S+1>
  --train-until <N's train_until>`` then ``duet embed --lake DIR --model-version N1 --snapshot ...``.
  The drift gate's "normal re-train" case: it passes ``serving.drift.cross_version_gate``.
* Rankers: ``RankerConfig()`` (the demo's), trained on N's train split and stopped on its valid split,
  once per training seed (default 1, 2, 3), exactly as ``ranker.evaluate`` trains a variant; one ranker
  without user vectors (``none``) the same way, as the floor.
* Scoring: N's test split, every row scored by each N-ranker with the user vector taken from
  (a) ``N``: N's row for the user at the row's ``embedding_ts`` (what it was trained with);
  (b) ``N1_raw``: N+1's row for the same user and snapshot, as is (a consumer switched without re-training);
  (c) ``N1_aligned``: that row mapped by ``serving.drift.Alignment`` (means moved, orthogonal rotation),
      click and conversion parts each with its own map;
  (d) ``N1_aligned_scaled``: the same with one global scale fitted too.
  The maps are fitted on the rows of both versions at every snapshot up to the latest ``embedding_ts`` of
  N's train split (never the test period's), pooled over users and snapshots. A test row whose N+1 vector
  is absent is scored as missing (zeros, ``user_missing`` 1) in (b)-(d); their count is reported.
* Metric: test NE (``core.metrics``), the mean over training seeds, with a 95% bootstrap interval over test
  users (``ranker.metrics``, 200 replicates, the same for every scoring); AUC beside it. Comparator: (a).
  Reported: each scoring's NE and AUC, and the paired relative NE change against (a)
  (``(NE_x - NE_a) / NE_a``, positive = worse) with its interval.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
import torch

from core.metrics import normalized_entropy
from ranker import metrics
from ranker.config import RankerConfig
from ranker.data import Batch, read_training_set, to_batch
from ranker.train import predict, train_ranker
from serving import drift


def _vectors_by_key(lake: str, version: str) -> dict[tuple[str, int], np.ndarray]:
    """(user, snapshot in epoch microseconds) -> click and conversion side by side."""
    out = {}
    for snapshot in drift.snapshots_of(lake, version):
        v = drift.read_vectors(lake, version, snapshot)
        key = int(snapshot.timestamp() * 1_000_000)
        for user, row in zip(v.users, v.joined(), strict=True):
            out[(str(user), key)] = row
    return out


def _keys(part) -> list[tuple[str, int | None]]:
    ts = part.column("embedding_ts").cast("int64").to_pylist()
    return list(zip(part.column("user_id").to_pylist(), ts, strict=True))


def _with_user(batch: Batch, user: np.ndarray, missing: np.ndarray) -> Batch:
    return replace(batch, user=torch.from_numpy(user.astype(np.float32)),
                   user_missing=torch.from_numpy(missing.astype(np.float32)))


def run(lake: str, served: str, candidate: str, seeds: list[int], bootstrap: int = 200) -> dict:
    started = time.perf_counter()
    cfg = RankerConfig()
    buckets = (cfg.ad_buckets, cfg.advertiser_buckets)
    table = read_training_set(lake, served)
    parts = {s: table.filter(pc.equal(table.column("split"), s)) for s in ("train", "valid", "test")}
    splits = {s: to_batch(p, buckets, with_user=True) for s, p in parts.items()}
    bare = {s: to_batch(p, buckets, with_user=False) for s, p in parts.items()}

    # The maps: both versions' rows at every snapshot up to the train split's latest embedding.
    ours, theirs = _vectors_by_key(lake, served), _vectors_by_key(lake, candidate)
    fit_until = pc.max(parts["train"].column("embedding_ts").cast("int64")).as_py()
    common = sorted(k for k in ours.keys() & theirs.keys() if k[1] <= fit_until)
    source = np.stack([theirs[k] for k in common])
    target = np.stack([ours[k] for k in common])
    width = splits["train"].user.shape[1] // 2
    maps = {}
    for name, with_scale in (("N1_aligned", False), ("N1_aligned_scaled", True)):
        click = drift.Alignment.fit(source[:, :width], target[:, :width], with_scale)
        conversion = drift.Alignment.fit(source[:, width:], target[:, width:], with_scale)
        maps[name] = (click, conversion)

    test = splits["test"]
    keys = _keys(parts["test"])
    raw = np.zeros(test.user.shape, np.float64)
    absent = np.ones(len(keys), bool)
    for i, k in enumerate(keys):
        if k[1] is not None and k in theirs:
            raw[i], absent[i] = theirs[k], False
    missing = test.user_missing.numpy().astype(bool) | absent
    scorings = {"N": test, "N1_raw": _with_user(test, np.where(missing[:, None], 0.0, raw), missing)}
    for name, (click, conversion) in maps.items():
        aligned = np.hstack([click.apply(raw[:, :width]), conversion.apply(raw[:, width:])])
        scorings[name] = _with_user(test, np.where(missing[:, None], 0.0, aligned), missing)

    y = test.label.double().numpy()
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in (*scorings, "none")}
    for seed in seeds:
        model, _ = train_ranker(replace(cfg, seed=seed), splits["train"], splits["valid"])
        for name, batch in scorings.items():
            predictions[name].append(predict(model, batch).double().numpy())
        floor, _ = train_ranker(replace(cfg, seed=seed), bare["train"], bare["valid"])
        predictions["none"].append(predict(floor, bare["test"]).double().numpy())

    weights = metrics.user_bootstrap_weights(test.user_ids, bootstrap, seed=0)
    replicates = metrics.bootstrap_ne(predictions, y, weights)
    out = {}
    for name, ps in predictions.items():
        summaries = [metrics.summary(p, y) for p in ps]
        ne = float(np.mean([normalized_entropy(p, y) for p in ps]))
        out[name] = {"ne": ne, "ne_interval": metrics.interval(replicates[name]),
                     "auc": float(np.mean([s["auc"] for s in summaries])),
                     "calibration": float(np.mean([s["calibration"] for s in summaries]))}
        if name != "N":
            change = (replicates[name] - replicates["N"]) / replicates["N"]
            out[name]["relative_ne_change_vs_N"] = (ne - out["N"]["ne"]) / out["N"]["ne"]
            out[name]["relative_ne_change_interval"] = metrics.interval(change)
    gate = drift.cross_version_figures(drift.read_vectors(lake, served, drift.snapshots_of(lake, served)[-1]),
                                       drift.read_vectors(lake, candidate,
                                                          drift.snapshots_of(lake, candidate)[-1]))
    return {"lake": lake, "served": served, "candidate": candidate, "seeds": seeds,
            "test_rows": int(len(y)), "test_positives": int(y.sum()),
            "test_users": int(len(set(test.user_ids))),
            "test_rows_without_candidate_vector": int(absent.sum()),
            "alignment_fit_rows": len(common), "cross_version_gate_figures": gate, "scorings": out,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--served", required=True, help="version N: the ranker's training set's")
    parser.add_argument("--candidate", required=True, help="version N+1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    print(json.dumps(run(args.lake, args.served, args.candidate, args.seeds), indent=1))


if __name__ == "__main__":
    main()
