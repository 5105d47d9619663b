"""Tensorised pre-training examples on disk, as safetensors shards, read back in shuffled batches.

Examples are tensorised once (``encoders.batch``, padded to the caps so shards concatenate) and written
in shards of about ``shard_rows`` rows; an epoch visits the shards in a random order, a few at a time,
shuffling rows within that window. Memory is bounded by the window, not by the number of examples, and
an epoch costs no Arrow work. Batches group users of similar sequence lengths (little padding). Ids are
stored as int32 and widened when a batch is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from encoders.batch import Targets, UserBatch


def _compact(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32) if t.dtype == torch.int64 else t


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int64) if t.dtype == torch.int32 else t


@dataclass
class ShardSet:
    """Shards written by ``ShardWriter``: their paths and total rows."""

    paths: list[Path] = field(default_factory=list)
    rows: int = 0

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                window: int = 4) -> Iterator[tuple[UserBatch, Targets]]:
        """Batches of (inputs, targets), each trimmed to its longest sequences.

        Rows of a window of ``window`` shards are grouped into batches of similar click counts, so
        that a batch pads little (users' activity is heavy-tailed: most sequences are far below the
        cap). With ``shuffle``, shards come in a random order, rows of equal length in a random order
        and the batches of a window in a random order (``generator`` makes it repeatable); without,
        everything is in a fixed order.
        """
        order = (torch.randperm(len(self.paths), generator=generator).tolist() if shuffle
                 else list(range(len(self.paths))))
        for start in range(0, len(order), window):
            loaded = [load_file(str(self.paths[i])) for i in order[start:start + window]]
            tensors = {k: torch.cat([_widen(s[k]) for s in loaded]) for k in loaded[0]}
            n = len(tensors["click_mask"])
            rows = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            lengths = tensors["click_mask"].sum(1)[rows]
            rows = rows[torch.sort(lengths, stable=True).indices]
            starts = list(range(0, n, batch_size))
            if shuffle:
                starts = [starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()]
            for b in starts:
                idx = rows[b:b + batch_size]
                part = {k: v[idx] for k, v in tensors.items()}
                yield UserBatch.from_tensors(part).trimmed(), Targets.from_tensors(part)


class ShardWriter:
    """Collects (inputs, targets) and writes a shard each time ``shard_rows`` rows are pending."""

    def __init__(self, folder: Path, prefix: str, shard_rows: int) -> None:
        self.folder, self.prefix, self.shard_rows = Path(folder), prefix, shard_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: list[dict[str, torch.Tensor]] = []
        self.pending_rows = 0
        self.shards = ShardSet()

    def add(self, inputs: UserBatch, targets: Targets) -> None:
        self.pending.append({k: _compact(v) for k, v in (inputs.as_tensors() | targets.as_tensors()).items()})
        self.pending_rows += len(inputs)
        if self.pending_rows >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        tensors = {k: torch.cat([p[k] for p in self.pending]).contiguous() for k in self.pending[0]}
        path = self.folder / f"{self.prefix}-{len(self.shards.paths):05d}.safetensors"
        save_file(tensors, str(path))
        self.shards.paths.append(path)
        self.shards.rows += self.pending_rows
        self.pending, self.pending_rows = [], 0

    def close(self) -> ShardSet:
        self._flush()
        return self.shards
