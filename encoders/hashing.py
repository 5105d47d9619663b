"""Stable hashing of string ids into embedding buckets, vectorised over Arrow arrays.

Ids (ads, advertisers, conversion types) form an open set, so tokens are looked up by hash instead of by
a vocabulary that would have to be rebuilt and shipped with every model. The hash is 64-bit FNV-1a over
the UTF-8 bytes: the same bucket on every machine and Python version (Python's ``hash`` is salted per
process). Only the distinct values are hashed (Arrow's dictionary encoding finds them), so the cost is
per distinct id, not per event; there is no per-row Python.

Bucket 0 is reserved for padding: ids map to ``1 .. buckets - 1``; a null id hashes as the empty
string.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes -> ``(n,) uint64``. Nulls hash as ``""``."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
    binary = pc.fill_null(strings.cast(pa.large_binary()), b"")
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)
    offsets = offsets[binary.offset: binary.offset + len(binary) + 1]
    data_buffer = binary.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(len(binary), _FNV_OFFSET, dtype=np.uint64)
    # One vectorised step per byte position: ids are short, so this loops ~10-20 times.
    for j in range(int(lengths.max()) if len(lengths) else 0):
        live = np.flatnonzero(lengths > j)
        h[live] ^= data[starts[live] + j].astype(np.uint64)
        h[live] *= _FNV_PRIME
    return h


def bucketize(strings: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """String ids -> ``(n,) int64`` buckets in ``[1, buckets - 1]`` (0 stays free for padding)."""
    if buckets < 2:
        raise ValueError("need at least 2 buckets (bucket 0 is padding)")
    if len(strings) == 0:
        return np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(strings)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    per_value = (fnv1a64(encoded.dictionary) % np.uint64(buckets - 1)).astype(np.int64) + 1
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    if encoded.indices.null_count:  # a null id: hash it as the empty string
        empty = int(fnv1a64(pa.array([""]))[0] % np.uint64(buckets - 1)) + 1
        out = np.full(len(indices), empty, np.int64)
        valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
        out[valid] = per_value[indices[valid].astype(np.int64)]
        return out
    return per_value[indices.astype(np.int64)]
