"""Instants as epoch microseconds and as Spark SQL literals: the project's one time conversion.

Timestamps are UTC microseconds everywhere (the contract's tables, Arrow ``timestamp[us, UTC]``). Spark code
compares ``unix_micros(column)`` with ``micros(instant)`` (no session time zone involved) or writes a
filter with ``sql_timestamp(instant)``; numpy code takes ``arrow_micros`` of an Arrow column. A naive
``datetime`` is refused: Python would read it in the host's local zone.

Standard library at import (pyarrow is imported by ``arrow_micros`` when called), so any module may use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.errors import DuetError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise DuetError(f"{instant.isoformat()} has no time zone: give an instant (e.g. tzinfo=UTC), "
                        "never a local time")
    return instant


def micros(instant: datetime) -> int:
    """Microseconds since the epoch of a zone-aware instant."""
    return int(_aware(instant).timestamp() * 1_000_000)


def sql_timestamp(instant: datetime) -> str:
    """A zone-aware instant as a Spark SQL literal in UTC, ``timestamp'2026-01-05 10:00:00'`` (Spark reads
    it in the session time zone, which duet sets to UTC: ``core.spark``)."""
    return f"timestamp'{_aware(instant).astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def arrow_micros(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow timestamps (any unit, any zone; or int64 microseconds) -> (n,) epoch microseconds, int64
    (float64 with NaN where a value is null). A unit finer than microseconds must hold whole microseconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(values, pa.timestamp("us", "UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
