"""The fast path: Feast's online layout read directly, without the SDK's per-call work (registry
lookups, request validation, response protobufs). Tested to return exactly what ``SdkReader`` returns.

Layout (Feast 0.67, ``entity_key_serialization_version: 3``, read from ``key_encoding_utils``,
``online_stores/helpers.py``, ``sqlite.py``, ``redis.py``):

* entity key = u32le(1 key) u32le(2 = STRING) u32le(len) "user_id" u32le(2 = STRING) u32le(len) <user id>;
* SQLite: table ``<project>_<view>``, one row per (entity_key, feature_name), ``value`` a serialized
  ``ValueProto``, ``event_ts`` epoch seconds;
* Redis: one hash per entity, key = entity key + project name; field ``murmur3_32("<view>:<feature>")``
  (4 bytes, little endian) holds the ``ValueProto``, field ``_ts:<view>`` a protobuf ``Timestamp``.

The views are those of ``OnlineConfig.model_version`` in the slot the serving record names at each read
(``serving.online.SlotWatch``): a row of another version, or of the slot a publish is writing, is never
read, since it is stored under another table (SQLite) or other hash fields (Redis).

If Feast changes its layout, the parity tests fail; readers never raise (``serving.online``).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from datetime import datetime

import mmh3
import numpy as np
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo.entities import USER_KEY
from serving.online import Embeddings, OnlineConfig, SlotWatch, all_missing, assemble

_STRING = 2
_KEY_HEAD = struct.pack("<III", 1, _STRING, len(USER_KEY)) + USER_KEY.encode()


def entity_key(user_id: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) of ``{"user_id": user_id}``."""
    value = user_id.encode()
    return _KEY_HEAD + struct.pack("<II", _STRING, len(value)) + value


class _Floats:
    """Decodes a ``ValueProto`` holding ``float_list_val`` of ``dim`` values. Protobuf packs the floats
    as little-endian float32 at the end of the message, after a header that depends on ``dim`` only: when
    a blob has exactly that header, its floats are viewed in place (no per-value Python objects);
    anything else goes through the protobuf parser."""

    def __init__(self, dim: int):
        self.size = 4 * dim
        self.header = ValueProto(float_list_val={"val": [1.0] * dim}).SerializeToString()[:-self.size]

    def __call__(self, blob: bytes | None) -> np.ndarray | None:
        if blob is None:
            return None
        if len(blob) == len(self.header) + self.size and blob.startswith(self.header):
            return np.frombuffer(blob, dtype="<f4", offset=len(self.header))
        value = ValueProto.FromString(blob)
        return np.array(value.float_list_val.val, np.float32) if value.HasField("float_list_val") else None


_SECONDS: dict[bytes, int] = {}


def _seconds(blob: bytes | None) -> int:
    """Epoch seconds of a serialized protobuf ``Timestamp`` (snapshots repeat: cached by bytes)."""
    if not blob:
        return 0
    seconds = _SECONDS.get(blob)
    if seconds is None:
        seconds = Timestamp.FromString(blob).seconds
        if len(_SECONDS) < 4096:
            _SECONDS[blob] = seconds
    return seconds


class SqliteReader:
    """Both embeddings with one SQL query on Feast's SQLite online store."""

    def __init__(self, path: str, cfg: OnlineConfig, project: str = "duet"):
        self.path, self.cfg, self.project = path, cfg, project
        self.watch = SlotWatch(cfg, "sqlite")
        self.decoders = (_Floats(cfg.click_dim), _Floats(cfg.conversion_dim))
        self.conn: sqlite3.Connection | None = None

    def tables(self, slot: str | None) -> list[tuple[str, str]]:
        """(table, feature) of the click and the conversion embedding in ``slot``."""
        return [(f"{self.project}_{view}", feature) for view, feature in self.cfg.views(slot)]

    def read(self, user_ids: Sequence[str], as_of: datetime | None = None) -> Embeddings:
        try:
            if self.conn is None:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            slot = self.watch.slot()
            tables = self.tables(slot)
            keys = [entity_key(u) for u in user_ids]
            marks = ",".join("?" * len(keys))
            # A view may hold other features (a version's click view also stores ``embedding_ts``).
            query = " UNION ALL ".join(
                f'SELECT {i}, entity_key, value, event_ts FROM "{table}" '
                f"WHERE feature_name = ? AND entity_key IN ({marks})"
                for i, (table, _) in enumerate(tables))
            found: list[dict[bytes, tuple]] = [{}, {}]
            parameters = [p for _, feature in tables for p in (feature, *keys)]
            for which, key, value, ts in self.conn.execute(query, parameters):
                found[which][key] = (value, ts)
            columns = []
            for rows, decode in zip(found, self.decoders, strict=True):
                pairs = [rows.get(k, (None, 0)) for k in keys]
                columns.append(([decode(v) for v, _ in pairs], [int(t or 0) for _, t in pairs]))
            return assemble(user_ids, self.cfg, as_of, *columns, slot=slot)
        except Exception as e:  # noqa: BLE001 - the serving path degrades to defaults, never raises
            return all_missing(user_ids, self.cfg, f"{type(e).__name__}: {e}")


def _field(view: str, feature: str) -> bytes:
    return mmh3.hash(f"{view}:{feature}", signed=False).to_bytes(4, "little")


class RedisReader:
    """Both embeddings with one pipelined ``HMGET`` per user on Feast's Redis online store."""

    def __init__(self, client, cfg: OnlineConfig, project: str = "duet"):
        self.client, self.cfg = client, cfg
        self.suffix = project.encode()
        self.watch = SlotWatch(cfg, "redis")
        self._fields: dict[str | None, list[bytes]] = {}
        self.decoders = (_Floats(cfg.click_dim), _Floats(cfg.conversion_dim))

    def fields(self, slot: str | None) -> list[bytes]:
        """The hash fields of the click and the conversion embedding in ``slot`` (value, then time)."""
        if slot not in self._fields:
            self._fields[slot] = [f for view, feature in self.cfg.views(slot)
                                  for f in (_field(view, feature), f"_ts:{view}".encode())]
        return self._fields[slot]

    def read(self, user_ids: Sequence[str], as_of: datetime | None = None) -> Embeddings:
        try:
            slot = self.watch.slot()
            fields = self.fields(slot)
            pipe = self.client.pipeline(transaction=False)
            for u in user_ids:
                pipe.hmget(entity_key(u) + self.suffix, fields)
            replies = pipe.execute()
            columns = []
            for i, decode in enumerate(self.decoders):
                columns.append(([decode(reply[2 * i]) for reply in replies],
                                [_seconds(reply[2 * i + 1]) for reply in replies]))
            return assemble(user_ids, self.cfg, as_of, *columns, slot=slot)
        except Exception as e:  # noqa: BLE001 - the serving path degrades to defaults, never raises
            return all_missing(user_ids, self.cfg, f"{type(e).__name__}: {e}")
