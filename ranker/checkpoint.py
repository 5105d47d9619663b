"""Ranker checkpoints: safetensors weights plus a JSON document (config, variant, model version, widths);
never a pickle. Stored under ``<lake>/_rankers/<name>/``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from core.errors import DuetError
from ranker.config import RankerConfig
from ranker.model import Ranker

RANKERS = "_rankers"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def ranker_dir(lake: str, name: str) -> Path:
    return Path(lake) / RANKERS / name


def save_ranker(lake: str, name: str, model: Ranker, cfg: RankerConfig, meta: dict) -> Path:
    """Write the checkpoint into a temporary folder next to it, then rename: never half written."""
    target = ranker_dir(lake, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(json.dumps({"config": cfg.to_dict(), "user_width": model.user_width, **meta},
                                         indent=1))
    if target.exists():
        old = target.with_name(f".{name}-old")
        os.replace(target, old)
        os.replace(tmp, target)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, target)
    return target


def load_ranker(lake: str, name: str) -> tuple[Ranker, dict]:
    folder = ranker_dir(lake, name)
    if not (folder / CONFIG).is_file():
        raise DuetError(f"no ranker {name!r} under {folder.parent}: run `duet demo` (or the ranker) first")
    document = json.loads((folder / CONFIG).read_text())
    model = Ranker(RankerConfig.from_dict(document["config"]), int(document["user_width"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return model, document
