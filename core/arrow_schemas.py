"""The input files' Arrow schemas: what ``duet generate`` writes and ``duet ingest`` reads.

Kept apart from ``core.contracts`` because building them imports pyarrow, which a consumer that only
needs a table's path or columns should not pay for. They are the raw tables' columns with every field
nullable: an input file may have gaps, and deciding what happens to them is ingest's job.
"""

from __future__ import annotations

import pyarrow as pa

from core.contracts import RAW_CLICKS, RAW_CONVERSIONS, Table


def input_schema(table: Table) -> pa.Schema:
    """``table``'s Arrow schema with every field nullable (timestamps: microseconds, UTC)."""
    schema = table.arrow_schema()
    return pa.schema([f.with_nullable(True) for f in schema])


CLICKS_ARROW = input_schema(RAW_CLICKS)
CONVERSIONS_ARROW = input_schema(RAW_CONVERSIONS)
