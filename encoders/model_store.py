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

It is also where a version name is held to its promise (issue 23):

* a model version is a *name*, never a path: ``check_version`` accepts only the contract's form
  (``VERSION_PATTERN``: no '/', no '.'), so it can only name a direct child of ``_models/``. Every function
  here that takes a version checks it (``duet embed``, local or Spark, through ``require_weights`` and
  ``read``; an import's name through ``check_external_name``), and only such names are listed, so a
  command that takes a version only from the listing (``duet publish``) or by ``is_version``
  (``duet evaluate``, ``duet training-set``: ``ranker.config.check_variants``) never gets another;
* a checkpoint's name is its content's: ``read`` (what ``duet embed``, local or Spark, loads) recomputes
  ``content_version`` from the config and weights bytes and refuses a folder whose content hashes to
  another name (an edited config.json, a copied or renamed folder);
* a folder whose config.json cannot be read or does not type-check is refused with its path and what to
  do wherever it is named, and skipped when versions are listed, so it never breaks work on another
  version; only the default (``latest_version``) refuses while one could be the newest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import DuetError
from core.files import write_atomic
from core.lake import MODELS, Lake
from core.records import from_dict
from core.variants import EXTERNAL, NAME_PATTERN, variant_names
from encoders.config import ModelConfig, PretrainConfig, embedding_dims

WEIGHTS, CONFIG = "model.safetensors", "config.json"

# An imported embedding's name: lower-case letters, digits, '_' and '-' after "ext-" (no '/', no '..', no
# quote: it becomes a folder, a Delta partition value, a SQL literal and, '-' -> '_', part of Feast names).
EXTERNAL_NAME = rf"{EXTERNAL}-[a-z0-9][a-z0-9_-]*"
# A checkpoint's name: a variant's name and 7 hex digits of its content's hash (``content_version``). Only
# the shape: which variants exist is asked of the registry when a name is checked (``is_version``), since a
# test registers a variant after this module loads.
CHECKPOINT_NAME = rf"{NAME_PATTERN}-[0-9a-f]{{7}}"
# The shape of every version's name, which is what makes it safe as a folder, a partition value and a SQL
# literal. \Z, not $: "$" would also match before a trailing newline.
VERSION_PATTERN = re.compile(rf"^(?:{CHECKPOINT_NAME}|{EXTERNAL_NAME})\Z")
_EXTERNAL_PATTERN = re.compile(rf"^{EXTERNAL_NAME}\Z")


def check_version(model_version: str) -> str:
    """``model_version`` if it is a model version's name in the contract's form, else ``DuetError``.

    The form has no '/' and no '.', so a valid name can only be a direct child of ``_models/``: a version
    such as ``../../evil`` would otherwise load a checkpoint from outside the lake and name rows after it."""
    if not is_version(model_version):
        raise DuetError(f"not a model version: {model_version!r}; a model version names a folder directly "
                        f"under {MODELS}/: <variant>-<7 hex digits> (variant one of "
                        f"{', '.join(variant_names())}; e.g. duet-3f2a9c1) or ext-NAME (an imported "
                        "embedding)")
    return model_version


def is_version(name: Any) -> bool:
    """A model version's name: an imported embedding's (``ext-<name>``), or a checkpoint's of a variant
    registered now (``<variant>-<7 hex digits>``)."""
    if not isinstance(name, str) or not VERSION_PATTERN.match(name):
        return False
    return is_external(name) or name.rsplit("-", 1)[0] in variant_names()


def content_version(config: Mapping[str, Any], weights: bytes) -> str:
    """The name a checkpoint must have: its variant and the first 7 hex digits of the SHA-256 of its
    config (the ``"config"`` of its config.json, as saved: canonical JSON) and its weight bytes."""
    variant = from_dict(PretrainConfig, config).model.variant
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"{variant}-{hashlib.sha256(text.encode() + weights).hexdigest()[:7]}"


def is_external(model_version: str) -> bool:
    """An imported embedding's version (``ext-<name>``): a record, never weights."""
    return model_version.startswith(f"{EXTERNAL}-")


def check_external_name(model_version: str) -> str:
    """``model_version`` if it is a valid imported embedding's name, else ``DuetError`` saying why."""
    if not _EXTERNAL_PATTERN.match(model_version):
        raise DuetError(f"not an imported embedding's version: {model_version!r}; use ext-NAME with NAME of "
                        "lower-case letters, digits, '_' and '-', starting with a letter or digit "
                        "(e.g. ext-serving-v3)")
    return model_version


def _remedy(model_version: str) -> str:
    if is_external(model_version):
        return (f"import the embedding again (`duet embeddings import --model-version {model_version}`), "
                "which rewrites it")
    return "restore the folder from a copy, or remove it and re-run `duet pretrain`"


def _width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_document(document: Any, external: bool) -> None:
    """Refuse (``DuetError`` saying why) a config document that is not what its kind must hold."""
    if not isinstance(document, dict):
        raise DuetError(f"expected a JSON object, got {type(document).__name__}")
    if external:
        dims = document.get("dims")
        if not (isinstance(dims, dict) and _width(dims.get("click"))
                and (dims.get("conversion") is None or _width(dims.get("conversion")))):
            raise DuetError(f"dims must be {{\"click\": W, \"conversion\": W or null}} with positive integer "
                            f"widths, got {dims!r}")
    else:
        from_dict(PretrainConfig, document.get("config", {}))   # unknown keys, wrong types, bad values
    if not isinstance(document.get("info", {}), dict):
        raise DuetError("info must be a JSON object")


def _document(folder: Path) -> dict[str, Any] | None:
    """A version folder's config.json if the folder is a usable version (a checkpoint with its weights,
    or an imported embedding's record), else None (not a version's name, scratch folders, a half-written
    checkpoint). Raises ``DuetError`` naming the file and what to do if the file is unreadable, not JSON
    or does not type-check."""
    name = folder.name
    path = folder / CONFIG
    if not is_version(name) or not path.is_file():
        return None
    external = is_external(name)
    if not external and not (folder / WEIGHTS).is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as e:   # ValueError: JSONDecodeError, UnicodeDecodeError
        raise DuetError(f"{path} is not valid JSON ({type(e).__name__}: {e}); {_remedy(name)}") from e
    if external and isinstance(document, dict) and document.get("variant") != EXTERNAL:
        return None
    try:
        _check_document(document, external)
    except DuetError as e:
        raise DuetError(f"{path}: {e}; {_remedy(name)}") from e
    return document


def _scan(lake: str) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """(version, config document) of every usable version, oldest first (trained or imported), and
    version -> why for the folders named like a version whose config.json cannot be used."""
    root = Lake(lake).models
    if not root.is_dir():
        return [], {}
    found, problems = [], {}
    for folder in root.iterdir():
        try:
            document = _document(folder)
        except DuetError as e:   # one corrupt folder must not break work on the others
            problems[folder.name] = str(e)
            continue
        if document is not None:
            info = document.get("info", {})
            when = str(info.get("trained_at") or info.get("imported_at") or "")
            found.append((when, folder.name, document))
    return [(name, document) for _, name, document in sorted(found, key=lambda f: f[:2])], problems


def _documents(lake: str) -> list[tuple[str, dict[str, Any]]]:
    """(version, config document) of every usable version, oldest first (trained or imported)."""
    return _scan(lake)[0]


def dims_of(document: dict[str, Any]) -> tuple[int, int | None]:
    """(click width, conversion width or None) of a version's config document, either kind."""
    if document.get("variant") == EXTERNAL:
        dims = document["dims"]
        return int(dims["click"]), (int(dims["conversion"]) if dims.get("conversion") else None)
    return embedding_dims(from_dict(ModelConfig, document.get("config", {}).get("model", {})))


def config_document(lake: str, model_version: str) -> dict[str, Any] | None:
    """A usable version's ``config.json`` as a dict (checkpoint or record), None if there is none."""
    return _document(Lake(lake).model(check_version(model_version)))


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
    def wanted(version: str) -> bool:
        return not is_external(version) and (variant is None or version.startswith(f"{variant}-"))

    found, problems = _scan(lake)
    unreadable = [why for version, why in sorted(problems.items()) if wanted(version)]
    if unreadable:   # it could be the newest: choosing another silently would embed with the wrong model
        raise DuetError(f"{unreadable[0]} (the newest model cannot be told while it is unusable; or name "
                        "the version to use)", fields=("model_version",))
    versions = [v for v, _ in found if wanted(v)]
    if not versions:
        what = f"{variant} model" if variant else "model"
        raise DuetError(f"no {what} under {Lake(lake).models}: run `duet pretrain` first")
    return versions[-1]


def require_weights(lake: str, model_version: str) -> None:
    """Refuse, before any work, a name that is not a model version's and a version that cannot be loaded
    as a model (an imported embedding)."""
    check_version(model_version)
    if is_external(model_version):
        raise DuetError(f"{model_version} is an imported embedding (a record under {Lake(lake).models}, no "
                        "weights): it can be validated, put in a training set, evaluated and published, but "
                        "not loaded as a model; `duet embed` runs duet's own encoders ("
                        + ", ".join(f"{name}-..." for name in variant_names()) + ")")


def read(lake: str, model_version: str) -> tuple[dict[str, Any], bytes]:
    """The config document and the weight bytes of a checkpoint (what a Spark job broadcasts), refused
    unless they hash to ``model_version`` (``content_version``): the same name means the same model."""
    require_weights(lake, model_version)
    folder = Lake(lake).model(model_version)
    document = _document(folder)   # None without both files (the name is valid and not an import's)
    if document is None:
        known = ", ".join(list_versions(lake, external=False)) or "none"
        raise DuetError(f"no model {model_version!r} under {Lake(lake).models} (known: {known}); "
                        "run `duet pretrain` first")
    weights = (folder / WEIGHTS).read_bytes()
    actual = content_version(document.get("config", {}), weights)
    if actual != model_version:
        raise DuetError(f"{model_version}: its content does not match its name: {folder}'s {CONFIG} and "
                        f"{WEIGHTS} hash to {actual} (a checkpoint is named by its variant and the SHA-256 "
                        "of both), so it was edited, copied or renamed and would embed differently under "
                        f"the same name; refusing it: {_remedy(model_version)}")
    return document, weights


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
    path = Lake(lake).model(model_version) / CONFIG
    previous = path.read_text() if path.is_file() else None
    document = {"model_version": model_version, "variant": EXTERNAL,
                "dims": {"click": click_dim, "conversion": conversion_dim}, "info": info}
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True, default=str))
    return previous


def restore_external(lake: str, model_version: str, previous: str | None) -> None:
    """Undo ``write_external``: put ``previous`` back, or remove the record (and its folder) if None."""
    check_external_name(model_version)
    path = Lake(lake).model(model_version) / CONFIG
    if previous is not None:
        write_atomic(path, previous)
        return
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass
