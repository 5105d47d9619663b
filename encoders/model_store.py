"""Where checkpoints live and which exist, without torch: ``<lake>/_models/<model_version>/``.

Each folder holds ``model.safetensors`` and ``config.json``; ``encoders.checkpoint`` writes and loads
them. This module only finds and reads the files, so data quality checks and the Spark driver can list
models and read their configs without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import DuetError

MODELS_DIR = "_models"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def models_root(lake: str) -> Path:
    return Path(lake) / MODELS_DIR


def list_versions(lake: str) -> list[str]:
    """Model versions under the lake, oldest first (by when they were trained)."""
    root = models_root(lake)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            continue
        info = json.loads((folder / CONFIG).read_text()).get("info", {})
        found.append((str(info.get("trained_at", "")), folder.name))
    return [name for _, name in sorted(found)]


def latest_version(lake: str, variant: str | None = None) -> str:
    """The newest model version (of ``variant`` if given)."""
    versions = [v for v in list_versions(lake) if variant is None or v.startswith(f"{variant}-")]
    if not versions:
        what = f"{variant} model" if variant else "model"
        raise DuetError(f"no {what} under {models_root(lake)}: run `duet pretrain` first")
    return versions[-1]


def read(lake: str, model_version: str) -> tuple[dict[str, Any], bytes]:
    """The config document and the weight bytes of a checkpoint (what a Spark job broadcasts)."""
    folder = models_root(lake) / model_version
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        known = ", ".join(list_versions(lake)) or "none"
        raise DuetError(f"no model {model_version!r} under {models_root(lake)} (known: {known}); "
                        "run `duet pretrain` first")
    return json.loads((folder / CONFIG).read_text()), (folder / WEIGHTS).read_bytes()
