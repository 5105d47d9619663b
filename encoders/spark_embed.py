"""Distributed embedding on Spark (``duet embed --engine spark``): the local engine's vectors, on a cluster.

The driver plans the run exactly as the local engine does (``encoders.embed.plan_run``: which users,
which sequence table versions), reads that snapshot of both sequence tables with Spark at those
versions, joins them per user into the encoders' input layout (``encoders.batch.INPUT_SCHEMA``), and
broadcasts the checkpoint as bytes (config JSON and safetensors: no pickle of a model). Each Python
worker rebuilds the model once and runs ``encoders.inference.embed_rows``, the local engine's function,
on the Arrow batches of ``mapInArrow``: no row becomes a Python object. One torch thread per task
(``spark.task.cpus``), so tasks do not fight over cores.

The write is one Delta commit recording the run in its ``userMetadata``, like the local engine's: a
``replaceWhere`` overwrite of the (snapshot, model version) rows, or for ``--changed-only`` a MERGE that
upserts the re-embedded users and deletes those without a sequence.

The checks are the local engine's: the version's name and content (``model_store.read``) and its
weights (``checkpoint.model_from_bytes``) on the driver before any job; finite vectors in
``inference.embed_rows`` on the workers, whose ``DuetError`` fails the job before the commit and is
raised on the driver as itself.

Executors need torch, safetensors, pyarrow and this source tree (``infra/submit.sh`` ships the tree).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from core.errors import DuetError
from core.spark import create_table, require_utc, spark_schema
from core.times import sql_timestamp
from encoders import checkpoint, model_store
from encoders.batch import CLICK_COLUMNS, CONVERSION_COLUMNS, INPUT_SCHEMA
from encoders.config import EmbedConfig
from encoders.embed import EmbedReport, RunPlan, plan_run

_MODELS: dict[str, object] = {}  # per worker process: model version -> model, built once
# A worker's DuetError as Spark reports it: the last line of the Python traceback inside its own error.
_WORKER_ERROR = re.compile(r"(?:[\w.]+\.)?DuetError: (.+)")


def _sequences(spark: SparkSession, lake: str, plan: RunPlan) -> DataFrame:
    """The snapshot's click and conversion sequences side by side, in the input layout."""

    def snapshot_rows(table, renames: dict[str, str]) -> DataFrame:
        df = (spark.read.format("delta").option("versionAsOf", plan.versions[table.path])
              .load(table.location(lake)).where(F.col("snapshot_ts") == F.lit(plan.snapshot)))
        return df.select("user_id", *[F.col(src).alias(dst) for src, dst in renames.items()])

    joined = snapshot_rows(CLICK_SEQUENCES, CLICK_COLUMNS).join(
        snapshot_rows(CONVERSION_SEQUENCES, CONVERSION_COLUMNS), "user_id", "full_outer")
    if plan.users is not None:
        users = spark.createDataFrame([(u,) for u in plan.users.to_pylist()], "user_id string")
        joined = joined.join(F.broadcast(users), "user_id")
    return joined.select(*[F.lit(plan.snapshot).alias(c) if c == "snapshot_ts" else F.col(c)
                           for c in INPUT_SCHEMA.names])


def _embedder(model_version: str, broadcast, created: datetime, batch_size: int) -> Callable:
    def embed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch
        from pyspark import TaskContext

        from encoders.checkpoint import model_from_bytes
        from encoders.inference import embed_rows

        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context else 1))
        if model_version not in _MODELS:
            config, weights = broadcast.value
            _MODELS[model_version] = model_from_bytes(config, weights)
        model = _MODELS[model_version]
        for batch in batches:
            if batch.num_rows:
                rows = pa.Table.from_batches([batch]).cast(INPUT_SCHEMA)
                yield embed_rows(model, rows, model_version, created, batch_size)

    return embed


def _ensure_table(spark: SparkSession, lake: str) -> DeltaTable:
    create_table(spark, USER_EMBEDDINGS, USER_EMBEDDINGS.location(lake))
    return DeltaTable.forPath(spark, USER_EMBEDDINGS.location(lake))


def _merge(spark: SparkSession, lake: str, plan: RunPlan, rows: DataFrame) -> dict:
    """Upsert ``rows`` and delete the planned users that no longer have a sequence; one commit."""
    changed = spark.createDataFrame([(u,) for u in plan.users.to_pylist()], "user_id string")
    gone = (changed.join(rows.select("user_id"), "user_id", "left_anti")
            .select("user_id", F.lit(plan.snapshot).alias("event_timestamp"),
                    F.lit(plan.model_version).alias("model_version"), F.lit(True).alias("_delete")))
    source = rows.withColumn("_delete", F.lit(False)).unionByName(gone, allowMissingColumns=True)
    on = " AND ".join(f"t.{k} = s.{k}" for k in USER_EMBEDDINGS.key)
    values: dict[str, Column] = {c: F.col(f"s.{c}") for c in USER_EMBEDDINGS.columns}
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, plan.run.to_json())
    try:
        (_ensure_table(spark, lake).alias("t").merge(source.alias("s"), on)
         .whenMatchedDelete(condition="s._delete")
         .whenMatchedUpdate(set=values)
         .whenNotMatchedInsert(condition="NOT s._delete", values=values)
         .execute())
    finally:
        spark.conf.unset(key)
    return _last_metrics(spark, lake)


def _last_metrics(spark: SparkSession, lake: str) -> dict:
    return DeltaTable.forPath(spark, USER_EMBEDDINGS.location(lake)).history(1).first()["operationMetrics"]


def embed_snapshots_spark(spark: SparkSession, lake: str, snapshots: list[datetime],
                          model_version: str | None = None, cfg: EmbedConfig | None = None,
                          changed_only: bool = False,
                          log: Callable[[str], None] = print) -> list[EmbedReport]:
    """Embed each snapshot on Spark (one commit each, the checkpoint broadcast once); return the
    reports (also logged)."""
    require_utc(spark)
    cfg = cfg or EmbedConfig()
    version = model_version or model_store.latest_version(lake)
    model_store.require_weights(lake, version)   # an imported embedding (ext-...) has no model to run
    plans = [plan_run(lake, s, version, changed_only) for s in snapshots]
    document, weights = model_store.read(lake, version)
    # refuse a bad checkpoint (not safetensors, not fitting its config, non-finite) before executors do
    checkpoint.model_from_bytes(document["config"], weights, version)
    broadcast = spark.sparkContext.broadcast((document["config"], weights))
    try:
        return [_embed_one(spark, lake, plan, broadcast, cfg, log) for plan in plans]
    finally:
        broadcast.unpersist()


def _embed_one(spark: SparkSession, lake: str, plan: RunPlan, broadcast, cfg: EmbedConfig,
               log: Callable[[str], None]) -> EmbedReport:
    started = time.perf_counter()
    snapshot, version = plan.snapshot, plan.model_version
    if plan.mode == "changed-only" and (plan.users is None or len(plan.users) == 0):
        embedded = deleted = 0
    else:
        try:
            embedded, deleted = _write(spark, lake, plan, broadcast, cfg)
        except DuetError:
            raise
        except Exception as e:
            found = _WORKER_ERROR.search(str(e))
            if found:   # e.g. non-finite vectors: one line that says what to do, not a Java stack
                raise DuetError(found.group(1).strip()) from e
            raise
    report = EmbedReport(snapshot, version, "spark", plan.mode, embedded, deleted,
                         time.perf_counter() - started, plan.note)
    log(report.line())
    return report


def _write(spark: SparkSession, lake: str, plan: RunPlan, broadcast, cfg: EmbedConfig) -> tuple[int, int]:
    """Embed the plan's users on the executors and write them in one commit; (embedded, deleted)."""
    snapshot, version = plan.snapshot, plan.model_version
    created = datetime.now(UTC)
    rows = _sequences(spark, lake, plan).mapInArrow(
        _embedder(version, broadcast, created, cfg.batch_size), spark_schema(USER_EMBEDDINGS))
    if plan.mode == "full":
        _ensure_table(spark, lake)
        (rows.write.format("delta").mode("overwrite")
         .option("replaceWhere",
                 f"event_timestamp = {sql_timestamp(snapshot)} AND model_version = '{version}'")
         .option("userMetadata", plan.run.to_json())
         .save(USER_EMBEDDINGS.location(lake)))
        embedded, deleted = int(_last_metrics(spark, lake).get("numOutputRows", 0)), 0
    else:
        metrics = _merge(spark, lake, plan, rows)
        embedded = (int(metrics.get("numTargetRowsInserted", 0))
                    + int(metrics.get("numTargetRowsUpdated", 0)))
        deleted = int(metrics.get("numTargetRowsDeleted", 0))
    return embedded, deleted


def run_record(spark: SparkSession, lake: str) -> dict | None:
    """The newest commit's run record (for tests and debugging)."""
    text = DeltaTable.forPath(spark, USER_EMBEDDINGS.location(lake)).history(1).first()["userMetadata"]
    return json.loads(text) if text else None
