"""Batch inference: rows in the input layout -> rows of ``embeddings/user_embeddings``, in Arrow.

This is the one function both embedding engines run: the local engine on batches it streams from
``deltalake`` (``encoders.embed``), the Spark engine inside ``mapInArrow`` on every executor
(``encoders.spark_embed``). Rows are ordered by click count before batching so that a batch pads to
similar lengths; the output order does not matter (the table is keyed). A batch with a vector that is
not finite is refused (``DuetError``) before it leaves this function, so no engine writes it. It imports
only torch and pyarrow: no Delta, no Spark.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core.contracts import USER_EMBEDDINGS
from core.errors import DuetError
from encoders.batch import tensorize
from encoders.train import autocast
from encoders.variants import UserModel

OUTPUT_SCHEMA = USER_EMBEDDINGS.arrow_schema()


def _vectors(values: np.ndarray) -> pa.Array:
    """(B, E) float32 -> list<float> array (one list per row)."""
    b, e = values.shape
    offsets = pa.array(np.arange(0, (b + 1) * e, e, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32()),
                                    type=OUTPUT_SCHEMA.field("click_embedding").type)


@torch.inference_mode()
def embed_rows(model: UserModel, rows: pa.Table, model_version: str, created: datetime,
               batch_size: int = 512, device: torch.device | None = None,
               bf16: bool = False) -> pa.RecordBatch:
    """Embed every row of ``rows`` (input layout) -> a record batch in the embedding table's schema.

    ``created`` is the run's ``created_timestamp``; ``event_timestamp`` is each row's snapshot. Raises
    ``DuetError`` if any vector holds NaN or infinity (finite weights can still overflow).
    """
    device = device or next(model.parameters()).device
    order = pc.sort_indices(pc.fill_null(pc.list_value_length(rows.column("click_ad_ids")), 0))
    rows = rows.take(order)
    clicks, conversions = [], []
    for start in range(0, rows.num_rows, batch_size):
        batch = tensorize(rows.slice(start, batch_size), model.cfg).to(device)
        with autocast(device, bf16):
            out = model(batch)
        clicks.append(out.click.float().cpu().numpy())
        if out.conversion is not None:
            conversions.append(out.conversion.float().cpu().numpy())
    n = rows.num_rows
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=OUTPUT_SCHEMA)
    click = np.concatenate(clicks)
    conversion = np.concatenate(conversions) if conversions else None
    _check_finite(rows, model_version, click, conversion)
    columns = {
        "user_id": rows.column("user_id"),
        "event_timestamp": rows.column("snapshot_ts"),
        "created_timestamp": pa.array([created] * n, OUTPUT_SCHEMA.field("created_timestamp").type),
        "click_embedding": _vectors(click),
        "conversion_embedding": (_vectors(conversion) if conversion is not None
                                 else pa.nulls(n, OUTPUT_SCHEMA.field("conversion_embedding").type)),
        "model_version": pa.array([model_version] * n, pa.string()),
    }
    return pa.table(columns).cast(OUTPUT_SCHEMA).combine_chunks().to_batches()[0]


def _check_finite(rows: pa.Table, model_version: str, click: np.ndarray,
                  conversion: np.ndarray | None) -> None:
    """Refuse vectors with NaN or infinity, naming the model and some users (the publish gate would stop
    them later; this stops them before they are written)."""
    bad = ~np.isfinite(click).all(axis=1)
    if conversion is not None:
        bad |= ~np.isfinite(conversion).all(axis=1)
    if bad.any():
        users = rows.column("user_id").filter(pa.array(bad)).to_pylist()
        raise DuetError(f"{model_version} gave non-finite embeddings (NaN or infinity) for {len(users)} of "
                        f"{rows.num_rows} user(s) at {rows.column('snapshot_ts')[0].as_py().isoformat()} "
                        f"(e.g. {', '.join(map(str, users[:3]))}); refusing to write them: its weights "
                        "overflow on these inputs. Re-train it with `duet pretrain`")


def embed_tables(model: UserModel, tables: Iterable[pa.Table], model_version: str, created: datetime,
                 batch_size: int = 512, device: torch.device | None = None,
                 bf16: bool = False) -> Iterator[pa.RecordBatch]:
    """``embed_rows`` over a stream of tables (empty ones are skipped)."""
    for table in tables:
        if table.num_rows:
            yield embed_rows(model, table, model_version, created, batch_size, device, bf16)
