"""The feature views, as builders: embeddings (click, conversion) and the sequence summary.

``EMBEDDING_TTL`` bounds the point-in-time join offline (a row older than this at the entity's time is
not joined): two days lets a user keep the previous daily snapshot's vectors when one snapshot is
missing, never older ones. Feast does not apply a ttl on online reads (STACK.md); ``serving.online``
applies it against the time the caller asks about.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field
from feast.data_source import DataSource
from feast.types import Array, Float32, Int32, String, UnixTimestamp

from feature_repo.entities import USER_KEY
from feature_repo.sources import EMBEDDING_TS

EMBEDDING_TTL = timedelta(days=2)
SUMMARY_TTL = timedelta(days=2)
CLICK_FEATURE, CONVERSION_FEATURE = "click_embedding", "conversion_embedding"
SUMMARY_FEATURES = ("click_count", "conversion_count", "clicks_7d", "conversions_7d", "hours_since_click",
                    "hours_since_conversion", "attributed_share")


def embedding_view(name: str, feature: str, source: DataSource, user: Entity, model_version: str,
                   dim: int, online: bool, with_timestamp: bool = False) -> FeatureView:
    """One embedding of one model version: ``feature`` is ``click_embedding`` or ``conversion_embedding``,
    an ``Array(Float32)`` of ``dim`` values (in the description, the tags and ``vector_length``).
    ``online``: the view has online tables (a two-embedding version's own views and the contract's);
    a single-embedding version's are read offline only.
    ``with_timestamp``: also the row's snapshot (``embedding_ts``), so a training set records it."""
    what = "click" if feature == CLICK_FEATURE else "conversion"
    stamp = [Field(name=EMBEDDING_TS, dtype=UnixTimestamp,
                   description="the snapshot the embedding was computed for")] if with_timestamp else []
    return FeatureView(
        name=name, entities=[user], ttl=EMBEDDING_TTL, source=source, online=online,
        schema=[Field(name=USER_KEY, dtype=String),
                Field(name=feature, dtype=Array(Float32), vector_length=dim,
                      description=f"{what} embedding, {dim} float32 values", tags={"dim": str(dim)}),
                *stamp],
        description=f"{what} embedding of {model_version} ({dim} values) per user and snapshot",
        tags={"model_version": model_version, "dim": str(dim), "embedding": what})


def summary_view(name: str, source: DataSource, user: Entity) -> FeatureView:
    """The sequence summary's figures (``SUMMARY_FEATURES``), as the view ``name`` (``feature_repo.catalog``
    names every view)."""
    return FeatureView(
        name=name, entities=[user], ttl=SUMMARY_TTL, source=source, online=True,
        schema=[Field(name=USER_KEY, dtype=String),
                Field(name="click_count", dtype=Int32, description="clicks in the snapshot's sequence"),
                Field(name="conversion_count", dtype=Int32,
                      description="conversions in the snapshot's sequence"),
                Field(name="clicks_7d", dtype=Int32,
                      description="clicks of the sequence in the 7 days before the snapshot"),
                Field(name="conversions_7d", dtype=Int32,
                      description="conversions of the sequence in the 7 days before the snapshot "
                                  "(by conversion time, reported before the snapshot)"),
                Field(name="hours_since_click", dtype=Float32,
                      description="hours from the most recent click to the snapshot, -1 if none"),
                Field(name="hours_since_conversion", dtype=Float32,
                      description="hours from the most recent conversion to the snapshot, -1 if none"),
                Field(name="attributed_share", dtype=Float32,
                      description="share of the sequence's conversions attributed to a click, 0 if none")],
        description="per-user figures of the click and conversion sequences at a snapshot")
