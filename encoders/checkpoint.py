"""Checkpoints: weights as safetensors plus the config as JSON, never a pickle.

A checkpoint is a folder ``<lake>/_models/<model_version>/`` holding ``model.safetensors`` (tensors only:
loading it cannot run code) and ``config.json`` (the ``PretrainConfig``, rebuilt with unknown keys
rejected, plus what training reported). ``model_version`` is the variant and the first 7 hex digits of
the SHA-256 of the canonical config JSON and the weight bytes (``duet-3f2a9c1``): the same name means
the same model, and loading checks it (``model_store.read`` recomputes the name from the folder's
content and refuses a mismatch). The folder is saved by the one checkpoint store
(``core.checkpoint_store``, write-once): written and synced under a hidden temporary name, then renamed,
so a crash never leaves a half checkpoint under a real name, and what a killed save left is removed by the
next save. Weights that are not finite are refused at load: such a
model would embed every user as NaN.

Parameters shared between modules (the id tables both DUET encoders use) are stored once; the file's
metadata maps each alias to the stored name.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from core import checkpoint_store
from core.errors import DuetError
from core.lake import Lake
from core.records import from_dict, to_dict
from encoders.config import PretrainConfig
from encoders.model_store import CONFIG, WEIGHTS, content_version, read
from encoders.variants import UserModel

_ALIASES = "duet.aliases"


@dataclass(frozen=True)
class Checkpoint:
    """A saved model: its version, config and training info (what ``config.json`` holds)."""

    model_version: str
    config: PretrainConfig
    info: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.config.model.variant


def weights_bytes(model: UserModel) -> bytes:
    """The model's state as safetensors bytes, each shared tensor once (aliases in the metadata)."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_storage: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in by_storage:
            aliases[name] = by_storage[key]
        else:
            by_storage[key] = name
            kept[name] = tensor.detach().to("cpu").contiguous()
    return save_tensors(kept, metadata={_ALIASES: json.dumps(aliases, sort_keys=True)})


def version_of(cfg: PretrainConfig, weights: bytes) -> str:
    """The model version of ``cfg`` with ``weights``: what ``model_store.read`` checks a folder against."""
    return content_version(to_dict(cfg), weights)


def save(lake: str, model: UserModel, cfg: PretrainConfig, info: dict[str, Any]) -> Checkpoint:
    """Write the checkpoint folder; return it. Saving the same model twice is a no-op."""
    weights = weights_bytes(model)
    version = version_of(cfg, weights)
    document = {"model_version": version, "config": to_dict(cfg), "info": info}
    text = json.dumps(document, indent=1, sort_keys=True, default=str)
    checkpoint_store.save(Lake(lake).models, version, {WEIGHTS: weights, CONFIG: text.encode()},
                          replace=False)
    return Checkpoint(version, cfg, info)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]).get("__metadata__") or {}


def model_from_bytes(config: dict[str, Any], weights: bytes, name: str = "checkpoint") -> UserModel:
    """Rebuild a model from a config document and safetensors bytes, in eval mode.

    Raises ``DuetError`` (its message starting with ``name``) for anything that is not a valid
    safetensors file for this config, and for weights that are not finite: the bytes are parsed as a
    header and raw tensors, never unpickled.
    """
    cfg = from_dict(PretrainConfig, config)
    try:
        tensors = load_tensors(weights)
        aliases = json.loads(_metadata(weights).get(_ALIASES, "{}"))
    except (SafetensorError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise DuetError(f"not a safetensors checkpoint ({type(e).__name__}: {e}); refusing to load it") from e
    broken = sorted(n for n, t in tensors.items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise DuetError(f"{name}: weights that are not finite (NaN or infinity) in {', '.join(broken[:3])}"
                        f"{more}: it would embed every user as NaN; refusing to load it. Re-train it with "
                        "`duet pretrain` (a lower learning rate if training diverged)")
    state = dict(tensors) | {alias: tensors[name] for alias, name in aliases.items() if name in tensors}
    model = UserModel(cfg.model, cfg.objective)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ from the config's
        raise DuetError(f"checkpoint does not fit its config: {str(e).splitlines()[1].strip()}") from e
    if missing or unexpected:
        raise DuetError(f"checkpoint does not fit its config: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    return model.eval()


def load(lake: str, model_version: str) -> tuple[UserModel, Checkpoint]:
    """The model and its checkpoint record. Raises ``DuetError`` if missing or not safetensors."""
    document, weights = read(lake, model_version)
    model = model_from_bytes(document["config"], weights, model_version)
    cfg = from_dict(PretrainConfig, document["config"])
    return model, Checkpoint(model_version, cfg, document.get("info", {}))
