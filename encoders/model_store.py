"""Where model versions live and which exist, without torch: ``<lake>/_models/<model_version>/``.

Two kinds of folder, each with a ``config.json``:

* a **checkpoint** (``duet-3f2a9c1``, ``shared-...``, ``click_only-...``): ``model.safetensors`` and the
  ``PretrainConfig`` in ``config.json``; ``encoders.checkpoint`` writes and loads them;
* an **imported embedding's record** (``ext-<name>``, ``duet embeddings import``): ``config.json`` only,
  ``{"model_version", "variant": "ext", "dims": {"click": W, "conversion": W or null}, "info"}``; no
  weights, so such a version can be validated, joined into training sets, evaluated and served, but never
  loaded as a model (``read`` refuses it, so ``duet embed`` does).

This module only finds, reads and (for records) writes these files, so data quality checks, the Feast
catalog and the Spark driver can list versions and their widths without importing torch. Every reader of
a version's widths goes through ``version_dims``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.errors import DuetError
from core.files import write_atomic
from core.variants import VARIANTS
from encoders.config import ModelConfig, embedding_dims, from_dict

MODELS_DIR = "_models"
WEIGHTS, CONFIG = "model.safetensors", "config.json"

EXTERNAL_VARIANT = "ext"
# An imported embedding's name: lower-case letters, digits, '_' and '-' after "ext-" (no '/', no '..', no
# quote: it becomes a folder, a Delta partition value, a SQL literal and, '-' -> '_', part of Feast names).
EXTERNAL_NAME = r"ext-[a-z0-9][a-z0-9_-]*"
CHECKPOINT_NAME = rf"(?:{'|'.join(VARIANTS)})-[0-9a-f]{{7}}"
# \Z, not $: "$" would also match before a trailing newline.
VERSION_PATTERN = re.compile(rf"^(?:{CHECKPOINT_NAME}|{EXTERNAL_NAME})\Z")
_EXTERNAL_PATTERN = re.compile(rf"^{EXTERNAL_NAME}\Z")


def models_root(lake: str) -> Path:
    return Path(lake) / MODELS_DIR


def is_external(model_version: str) -> bool:
    """An imported embedding's version (``ext-<name>``): a record, never weights."""
    return model_version.startswith(f"{EXTERNAL_VARIANT}-")


def check_external_name(model_version: str) -> str:
    """``model_version`` if it is a valid imported embedding's name, else ``DuetError`` saying why."""
    if not _EXTERNAL_PATTERN.match(model_version):
        raise DuetError(f"not an imported embedding's version: {model_version!r}; use ext-NAME with NAME of "
                        "lower-case letters, digits, '_' and '-', starting with a letter or digit "
                        "(e.g. ext-serving-v3)")
    return model_version


def _document(folder: Path) -> dict[str, Any] | None:
    """A version folder's config.json if the folder is a usable version (a checkpoint with its weights,
    or an imported embedding's record), else None (scratch folders, a half-written checkpoint)."""
    if folder.name.startswith(".") or not (folder / CONFIG).is_file():
        return None
    document = json.loads((folder / CONFIG).read_text())
    external = document.get("variant") == EXTERNAL_VARIANT and is_external(folder.name)
    return document if external or (folder / WEIGHTS).is_file() else None


def _documents(lake: str) -> list[tuple[str, dict[str, Any]]]:
    """(version, config document) of every usable version, oldest first (trained or imported)."""
    root = models_root(lake)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        document = _document(folder)
        if document is not None:
            info = document.get("info", {})
            when = str(info.get("trained_at") or info.get("imported_at") or "")
            found.append((when, folder.name, document))
    return [(name, document) for _, name, document in sorted(found, key=lambda f: f[:2])]


def dims_of(document: dict[str, Any]) -> tuple[int, int | None]:
    """(click width, conversion width or None) of a version's config document, either kind."""
    if document.get("variant") == EXTERNAL_VARIANT:
        dims = document["dims"]
        return int(dims["click"]), (int(dims["conversion"]) if dims.get("conversion") else None)
    return embedding_dims(from_dict(ModelConfig, document["config"]["model"]))


def config_document(lake: str, model_version: str) -> dict[str, Any] | None:
    """A usable version's ``config.json`` as a dict (checkpoint or record), None if there is none."""
    return _document(models_root(lake) / model_version)


def list_versions(lake: str, external: bool = True) -> list[str]:
    """Model versions under the lake, oldest first (by when they were trained or imported); with
    ``external=False`` the checkpoints only (what can be loaded as a model)."""
    return [v for v, _ in _documents(lake) if external or not is_external(v)]


def version_dims(lake: str) -> dict[str, tuple[int, int | None]]:
    """Model version -> (click width, conversion width or None), oldest first, checkpoints and imported
    embeddings alike: what the embedding suite, the Feast catalog and the training set check rows against."""
    return {version: dims_of(document) for version, document in _documents(lake)}


def latest_version(lake: str, variant: str | None = None) -> str:
    """The newest checkpoint (of ``variant`` if given). Imported embeddings are never a default: they are
    named (``--model-version ext-NAME``) where they can be used."""
    versions = [v for v in list_versions(lake, external=False)
                if variant is None or v.startswith(f"{variant}-")]
    if not versions:
        what = f"{variant} model" if variant else "model"
        raise DuetError(f"no {what} under {models_root(lake)}: run `duet pretrain` first")
    return versions[-1]


def require_weights(lake: str, model_version: str) -> None:
    """Refuse, before any work, a version that cannot be loaded as a model (an imported embedding)."""
    if is_external(model_version):
        raise DuetError(f"{model_version} is an imported embedding (a record under {models_root(lake)}, no "
                        "weights): it can be validated, put in a training set, evaluated and published, but "
                        "not loaded as a model; `duet embed` runs duet's own encoders (duet-..., shared-..., "
                        "click_only-...)")


def read(lake: str, model_version: str) -> tuple[dict[str, Any], bytes]:
    """The config document and the weight bytes of a checkpoint (what a Spark job broadcasts)."""
    require_weights(lake, model_version)
    folder = models_root(lake) / model_version
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        known = ", ".join(list_versions(lake, external=False)) or "none"
        raise DuetError(f"no model {model_version!r} under {models_root(lake)} (known: {known}); "
                        "run `duet pretrain` first")
    return json.loads((folder / CONFIG).read_text()), (folder / WEIGHTS).read_bytes()


def write_external(lake: str, model_version: str, click_dim: int, conversion_dim: int | None,
                   info: dict[str, Any]) -> str | None:
    """Write (or replace) the record of an imported embedding; return the record it replaced (its text,
    for ``restore_external``), None if there was none.

    Feast names replace '-' by '_', so a name that differs from another imported version's only there
    (``ext-a-b`` beside ``ext-a_b``) is refused: their views and services would collide."""
    check_external_name(model_version)
    twins = [v for v in list_versions(lake) if is_external(v) and v != model_version
             and v.replace("-", "_") == model_version.replace("-", "_")]
    if twins:
        raise DuetError(f"{model_version} would share its Feast names with {twins[0]} ('-' and '_' read the "
                        "same there): choose another name")
    path = models_root(lake) / model_version / CONFIG
    previous = path.read_text() if path.is_file() else None
    document = {"model_version": model_version, "variant": EXTERNAL_VARIANT,
                "dims": {"click": click_dim, "conversion": conversion_dim}, "info": info}
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True, default=str))
    return previous


def restore_external(lake: str, model_version: str, previous: str | None) -> None:
    """Undo ``write_external``: put ``previous`` back, or remove the record (and its folder) if None."""
    check_external_name(model_version)
    path = models_root(lake) / model_version / CONFIG
    if previous is not None:
        write_atomic(path, previous)
        return
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass
