"""Ranker checkpoints: safetensors weights plus a JSON document (config, variant, model version, widths);
never a pickle. Stored under ``<lake>/_rankers/<name>/`` by the one checkpoint store
(``core.checkpoint_store``, replace mode): a save replaces the previous one of that name in one atomic step,
and a load reads both files from one version."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from core import checkpoint_store
from core.errors import DuetError
from core.lake import Lake
from core.records import from_dict, to_dict
from ranker.config import RankerConfig
from ranker.model import Ranker

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_ranker(lake: str, name: str, model: Ranker, cfg: RankerConfig, meta: dict) -> Path:
    """Write the checkpoint (``core.checkpoint_store``): a reader sees the previous one or this one, whole."""
    weights = save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    document = json.dumps({"config": to_dict(cfg), "user_width": model.user_width, **meta}, indent=1)
    return checkpoint_store.save(Lake(lake).rankers, name, {WEIGHTS: weights, CONFIG: document.encode()})


def load_ranker(lake: str, name: str) -> tuple[Ranker, dict]:
    rankers = Lake(lake).rankers
    files = checkpoint_store.read(rankers, name, (CONFIG, WEIGHTS))
    if files is None:
        raise DuetError(f"no ranker {name!r} under {rankers}: run `duet demo` (or the ranker) first")
    document = json.loads(files[CONFIG])
    model = Ranker(from_dict(RankerConfig, document["config"]), int(document["user_width"]))
    model.load_state_dict(load_tensors(files[WEIGHTS]))
    model.eval()
    return model, document
