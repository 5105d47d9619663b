"""A diagnosis after the fact (not part of ``encoder_quality``'s pre-registered protocol): when duet's
conversion embedding adds to its click embedding on the probe, is that the conversions, or click
information the conversion encoder was trained to extract (it also reads the clicks)?

    .venv/bin/python -m benchmarks.encoder_quality > quality.json
    .venv/bin/python -m benchmarks.encoder_quality_masked quality.json

For every run of ``encoder_quality`` (its lakes and models under ``--workdir``), the same probe on duet's
click embedding alone, on click + conversion embeddings (as stored), and on the click embedding + the
conversion embedding recomputed with every user's conversions removed. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from benchmarks.encoder_quality import _converters, _embeddings
from encoders.batch import CONVERSION_COLUMNS
from encoders.checkpoint import load
from encoders.evaluate import logistic_probe
from encoders.examples import join_sequences
from encoders.hashing import fnv1a64
from encoders.inference import embed_rows
from encoders.lake import click_source, co_partitioned, conversion_source


def without_conversions(rows: pa.Table) -> pa.Table:
    for column in CONVERSION_COLUMNS.values():
        i = rows.schema.get_field_index(column)
        rows = rows.set_column(i, rows.schema.field(i), pa.nulls(rows.num_rows, rows.schema.field(i).type))
    return rows


def diagnose(run: dict, workdir: Path) -> dict:
    lake = str(workdir / f"signal{run['signal']:g}-seed{run['seed']}" / "lake")
    version = run["models"]["duet"]["model_version"]
    model, _ = load(lake, version)
    features: dict[str, list[np.ndarray]] = {"click": [], "click+conversion": [], "click+masked": []}
    labels, halves = [], []
    for iso in run["probe_snapshots"]:
        t = datetime.fromisoformat(iso)
        [[clicks, conversions]] = list(co_partitioned(lake, [click_source(t), conversion_source(t)], 10**9))
        masked = embed_rows(model, without_conversions(join_sequences(clicks, conversions, t)), version,
                            datetime.now(UTC))
        masked = pa.Table.from_batches([masked]).sort_by("user_id")
        ids, click, conversion = _embeddings(lake, version, t)
        assert masked.column("user_id").to_pylist() == ids
        masked_conversion = np.array(masked.column("conversion_embedding").to_pylist(), np.float32)
        converters = _converters(lake, t)
        features["click"].append(click)
        features["click+conversion"].append(np.concatenate([click, conversion], 1))
        features["click+masked"].append(np.concatenate([click, masked_conversion], 1))
        labels.append(np.array([u in converters for u in ids], np.float32))
        halves.append(fnv1a64(pa.array(ids)) % np.uint64(2) == 0)
    y, train = torch.from_numpy(np.concatenate(labels)), torch.from_numpy(np.concatenate(halves))
    out = {"signal": run["signal"], "seed": run["seed"]}
    for name, parts in features.items():
        x = torch.from_numpy(np.concatenate(parts))
        out[f"auc {name}"] = round(logistic_probe(x[train], y[train], x[~train], y[~train])["auc"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="encoder_quality's output")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/encoder-quality"))
    args = parser.parse_args()
    for line in args.runs.read_text().splitlines():
        if line.startswith('{"signal"'):
            print(json.dumps(diagnose(json.loads(line), args.workdir)), flush=True)


if __name__ == "__main__":
    main()
