"""The ranker's training set: labelled clicks joined point-in-time with user features through Feast.

``build_training_set`` reads ``training/examples`` (``spark_jobs.examples``), keeps the **matured**
examples whose click falls in the ranker's period, and asks Feast, once per model version, for that
version's FeatureService (click embedding and its snapshot ``embedding_ts``, conversion embedding, the
sequence summary) at each click's time: ``get_historical_features`` with ``user_id`` and
``event_timestamp = click_ts`` as entity rows. Feast's point-in-time join takes, per example, the
feature row with the greatest ``event_timestamp <= click_ts`` within the view's ttl, so a click never
sees an embedding of a later snapshot. The rows of every version are written to ``training/training_set``
in one overwrite commit, one row per (click, model version), with the split of the click's time.

When a row counts as available (``available_at``, ``duet training-set --available-at``):

* ``snapshot`` (the default, the contract's rule): at its snapshot. A row embedded, re-embedded or
  backfilled after the click still joins it when its snapshot precedes the click.
* ``created``: also not before it was written, ``created_timestamp <= click_ts``, as a served system would
  have seen the table (Feast's ``filter_by_created_timestamp``, applied in its point-in-time join before
  the latest row is chosen): a click whose latest snapshot's row was written after it falls back to the
  latest row that existed then, within the ttl, else null. The embeddings table keeps one row per (user,
  snapshot, version), so a re-embedded snapshot's earlier row is gone (no Delta time travel here): the
  click falls back to an earlier snapshot, not to the value served then. On a lake whose embeddings were
  computed after its clicks (the demo, a backfill) no row was available to them and none joins: the
  option is for a lake embedded as time went (``duet daily``). The sequence summary has no creation
  time and joins by snapshot either way.

Time splits: ``ranker.splits.Splits``. Examples outside the ranker's period are not written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.contracts import TRAINING_EXAMPLES, TRAINING_SET
from core.errors import DuetError
from core.records import to_dict
from core.spark import create_table, spark_schema
from core.times import micros
from feature_repo.catalog import CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW, spec_from_lake
from feature_repo.sources import EMBEDDING_TS, slug
from feature_repo.views import SUMMARY_FEATURES
from ranker.splits import RECORD_KEY, SPLIT_NAMES, Splits

# When an embedding row counts as available to a click (the module docstring): at its snapshot, or also
# not before its ``created_timestamp``.
SNAPSHOT, CREATED = "snapshot", "created"
AVAILABLE_AT = (SNAPSHOT, CREATED)


@dataclass(frozen=True)
class SplitCounts:
    """One (model version, split) of ``training/training_set``: its rows, positives, and the rows whose
    point-in-time join found no embedding."""

    rows: int
    positives: int
    without_embedding: int


@dataclass(frozen=True)
class TrainingSetReport:
    """What ``build_training_set`` wrote: the ``splits`` and, per ``"<model version>/<split>"``, its
    counts (model versions in name order, splits in time order)."""

    splits: Splits
    rows: dict[str, SplitCounts]

    def to_dict(self) -> dict:
        return to_dict(self)


def split_column(splits: Splits):
    """``train`` / ``valid`` / ``test`` by click time, null outside the ranker's period."""
    us = F.unix_micros("click_ts")
    train, valid, test, until = (F.lit(micros(t)) for t in (splits.train_from, splits.valid_from,
                                                              splits.test_from, splits.test_until))
    return (F.when((us >= train) & (us < valid), "train")
            .when((us >= valid) & (us < test), "valid")
            .when((us >= test) & (us < until), "test"))


def entity_rows(spark: SparkSession, lake: str, splits: Splits) -> DataFrame:
    """Matured examples of the ranker's period, as Feast entity rows (``event_timestamp`` = click time)."""
    examples = spark.read.format("delta").load(TRAINING_EXAMPLES.location(lake))
    return (examples.where(F.col("matured")).withColumn("split", split_column(splits))
            .where(F.col("split").isNotNull())
            .select("click_id", "user_id", "click_ts", "label", "split", "ad_id", "advertiser_id",
                    F.col("click_ts").alias("event_timestamp")))


def joined(store, entities: DataFrame, model_version: str, conversion: bool,
           available_at: str = SNAPSHOT) -> DataFrame:
    """One model version's features for ``entities``, renamed to the training set's columns; with
    ``available_at = created`` only rows written by the click's time (the module docstring)."""
    tag = slug(model_version)
    click_view, conversion_view = f"{CLICK_VIEW}_{tag}", f"{CONVERSION_VIEW}_{tag}"
    service = store.get_feature_service(tag)
    frame = store.get_historical_features(entity_df=entities, features=service, full_feature_names=True,
                                          filter_by_created_timestamp=available_at == CREATED).to_spark_df()
    conversion_col = (F.col(f"`{conversion_view}__conversion_embedding`") if conversion
                      else F.lit(None).cast("array<float>"))
    return frame.select(
        "click_id", "user_id", "click_ts", "label", "split", F.lit(model_version).alias("model_version"),
        F.col(f"`{click_view}__{EMBEDDING_TS}`").alias("embedding_ts"),
        F.col(f"`{click_view}__click_embedding`").alias("click_embedding"),
        conversion_col.alias("conversion_embedding"),
        "ad_id", "advertiser_id",
        *(F.col(f"`{SUMMARY_VIEW}__{name}`").alias(name) for name in SUMMARY_FEATURES))


def build_training_set(spark: SparkSession, store, lake: str, splits: Splits,
                       model_versions: list[str], record: dict | None = None,
                       available_at: str = SNAPSHOT) -> TrainingSetReport:
    """Write ``training/training_set`` for ``model_versions`` (registered in ``store``), joining the
    embedding rows available at each click (``available_at``: ``snapshot`` or ``created``, the module
    docstring); return counts per split and version. The commit's userMetadata records the splits, the
    versions, ``available_at`` and ``record`` (``ranker.data.training_set_record`` reads it back: ``duet
    evaluate`` reports the periods)."""
    splits.check()
    if available_at not in AVAILABLE_AT:
        raise DuetError(f"available_at: {available_at!r} is not one of {', '.join(AVAILABLE_AT)}",
                        fields=("available_at",))
    if not model_versions:
        raise DuetError("no model version to build a training set for")
    known = {v: conversion_dim for v, _, conversion_dim in spec_from_lake(lake).versions}
    missing = [v for v in model_versions if v not in known]
    if missing:
        raise DuetError(f"unknown model version(s) {', '.join(missing)}: pre-train (`duet pretrain`) or "
                        "import (`duet embeddings import`) them first")
    entities = entity_rows(spark, lake, splits).persist()
    if entities.isEmpty():
        entities.unpersist()
        raise DuetError("no matured example falls in the ranker's period: the data's time range is too short "
                        "for the splits", fields=("splits",))
    frames = [joined(store, entities, v, bool(known[v]), available_at) for v in model_versions]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    schema = spark_schema(TRAINING_SET)
    # Created from the contract first (NOT NULL columns as constraints); the overwrite keeps that schema.
    create_table(spark, TRAINING_SET, TRAINING_SET.location(lake))
    metadata = json.dumps({RECORD_KEY: {"splits": splits.to_dict(), "model_versions": list(model_versions),
                                        "available_at": available_at, **(record or {})}},
                          sort_keys=True, default=str)
    out.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields]) \
        .write.format("delta").mode("overwrite").option("userMetadata", metadata) \
        .save(TRAINING_SET.location(lake))
    entities.unpersist()
    counts = spark.read.format("delta").load(TRAINING_SET.location(lake)) \
        .groupBy("model_version", "split").agg(F.count("*").alias("rows"), F.sum("label").alias("positives"),
                                               F.sum(F.col("embedding_ts").isNull().cast("int"))
                                               .alias("without_embedding")).collect()
    ordered = sorted(counts, key=lambda r: (r["model_version"], SPLIT_NAMES.index(r["split"])))
    return TrainingSetReport(splits, {
        f"{r['model_version']}/{r['split']}": SplitCounts(
            rows=r["rows"], positives=int(r["positives"]), without_embedding=int(r["without_embedding"]))
        for r in ordered})


def delayed_feedback_pool(spark: SparkSession, store, lake: str, history_from: datetime, trained_at: datetime,
                          attribution_window, report_grace):
    """The clicks of ``[history_from, trained_at)`` labelled as they were known at ``trained_at`` (the
    contract's rule with ``label_cutoff = trained_at``: a conversion reported later is not seen), with
    ``matured`` at that instant, ``report_delay_s`` (click to the first report of a seen positive) and the
    sequence summary joined point-in-time through Feast. Returns a ``pyarrow.Table`` (the pool of a
    delayed-feedback experiment, ``ranker.delayed``; small enough for the driver: clicks only, no
    embeddings).

    Every label and feature here was known at ``trained_at``: the labels by construction, the summary
    by the point-in-time join (its snapshot is at or before the click)."""
    from core.contracts import RAW_CLICKS, RAW_CONVERSIONS
    from spark_jobs.examples import ExamplesConfig, label_clicks

    if not history_from < trained_at:
        raise DuetError(f"delayed feedback: history_from {history_from.isoformat()} must come before the "
                        f"training instant {trained_at.isoformat()}")
    clicks = spark.read.format("delta").load(RAW_CLICKS.location(lake)) \
        .where(F.unix_micros("click_ts") >= F.lit(micros(history_from)))
    conversions = spark.read.format("delta").load(RAW_CONVERSIONS.location(lake))
    labelled = label_clicks(clicks, conversions, ExamplesConfig(lake, trained_at, attribution_window,
                                                                 report_grace), report_delay=True)
    entities = labelled.select("click_id", "user_id", "click_ts", "label", "matured", "report_delay_s",
                               "ad_id", "advertiser_id", F.col("click_ts").alias("event_timestamp"))
    frame = store.get_historical_features(
        entity_df=entities, features=[f"{SUMMARY_VIEW}:{name}" for name in SUMMARY_FEATURES],
        full_feature_names=False).to_spark_df()
    return frame.select("click_id", "user_id", "click_ts", "label", "matured", "report_delay_s", "ad_id",
                        "advertiser_id", *SUMMARY_FEATURES).orderBy("click_id").toArrow()
