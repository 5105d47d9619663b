"""What is checked in the table this stage writes: the Great Expectations suite of
``embeddings/user_embeddings``, as plain data for the generic runner ``core.quality.validate_lake``.

* contract columns, non-null keys and vectors, one row per (user_id, event_timestamp, model_version),
  and a model version named ``<variant>-<7 hex digits>`` or, for an imported embedding, ``ext-<name>``;
* dimensions: every row of a model version has the widths its ``_models/<version>/config.json`` gives
  (a checkpoint's config, or an imported embedding's record; a version with neither fails), and
  ``conversion_embedding`` is null exactly for the single-embedding versions;
* finite values (no NaN or infinity) and L2 norms within ``[min_norm, max_norm]`` (a collapsed or
  exploded model);
* coverage: for every (snapshot, model version) present, the share of users with a click or conversion
  sequence at that snapshot who have an embedding is at least ``min_coverage``, and no embedding exists
  for a user without a sequence at its snapshot (a stale row).

Dimensions come from ``encoders.model_store.version_dims`` (each version's ``config.json`` read as JSON):
validation does not load torch. Imported embeddings (``duet embeddings import``) are held to every check
here, exactly as the encoders' own rows are.

Every check is hereditary to a (snapshot, model version) group: if it holds on the whole table it holds
on the rows of any one group (row-wise checks, uniqueness, and coverage computed per group). The publish
gate relies on that to take a whole-table pass as its verdict on one group (``serving.publish``); a check
that does not have this property (a table-wide row count, a share across groups) must not be added here
without changing the gate (``tests/test_embed.py`` guards it).
"""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations.expectations as gxe

from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from core.quality import Suite, has_columns, no_rows, not_null, view_name
from encoders.model_store import CHECKPOINT_NAME, EXTERNAL_NAME, version_dims


@dataclass(frozen=True)
class EmbeddingQualityConfig:
    min_norm: float = 1e-3
    max_norm: float = 1e3
    min_coverage: float = 1.0


def checkpoint_dims(lake: str) -> dict[str, tuple[int, int | None]]:
    """Model version -> (click width, conversion width or None), from each version's config.json
    (checkpoints and imported embeddings' records)."""
    return version_dims(lake)


def _norm(column: str) -> str:
    return f"sqrt(aggregate({column}, 0D, (acc, x) -> acc + double(x) * double(x)))"


def _widths(dims: dict[str, tuple[int, int | None]]) -> str:
    """A SQL condition true for rows whose widths match their version's checkpoint."""
    if not dims:
        return "false"
    cases = []
    for version, (click, conversion) in sorted(dims.items()):
        second = (f"size(conversion_embedding) = {conversion}" if conversion
                  else "conversion_embedding IS NULL")
        cases.append(f"WHEN '{version}' THEN size(click_embedding) = {click} AND {second}")
    return f"coalesce(CASE model_version {' '.join(cases)} ELSE false END, false)"


def embedding_suite(dims: dict[str, tuple[int, int | None]], cfg: EmbeddingQualityConfig,
                    with_sequences: tuple = (CLICK_SEQUENCES, CONVERSION_SEQUENCES)) -> Suite:
    """The suite of ``embeddings/user_embeddings`` given each model version's widths."""
    t = USER_EMBEDDINGS
    vectors = "concat(click_embedding, coalesce(conversion_embedding, array()))"
    checks = [
        has_columns(t),
        *not_null(t, [c.name for c in t.fields if not c.nullable]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(t.key),
                                            description=f"{t.path}: one row per {', '.join(t.key)}"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="model_version", regex=f"^({CHECKPOINT_NAME}|{EXTERNAL_NAME})$",
            description=f"{t.path}: model_version is <variant>-<7 hex digits> or ext-<name> "
                        f"(^({CHECKPOINT_NAME}|{EXTERNAL_NAME})$)"),
        no_rows(
            query=(f"SELECT user_id, event_timestamp, model_version FROM {{batch}} "
                   f"WHERE NOT {_widths(dims)}"),
            description=f"{t.path}: vector widths match the model version's config.json "
                        "(conversion_embedding null exactly for single-embedding versions)"),
        no_rows(
            query=(f"SELECT user_id, event_timestamp, model_version FROM {{batch}} "
                   f"WHERE exists({vectors}, x -> isnan(x) OR abs(x) = double('infinity'))"),
            description=f"{t.path}: every vector value is finite"),
        no_rows(
            query=(
                f"SELECT user_id, event_timestamp, model_version FROM {{batch}} WHERE "
                f"NOT {_norm('click_embedding')} BETWEEN {cfg.min_norm} AND {cfg.max_norm} OR "
                f"(conversion_embedding IS NOT NULL AND NOT {_norm('conversion_embedding')} "
                f"BETWEEN {cfg.min_norm} AND {cfg.max_norm})"),
            description=f"{t.path}: L2 norms within [{cfg.min_norm}, {cfg.max_norm}]"),
    ]
    if with_sequences:
        users = " UNION ".join(f"SELECT user_id, snapshot_ts FROM {view_name(s)}" for s in with_sequences)
        checks += [
            no_rows(
                query=(
                    f"WITH seq AS ({users}), "
                    "runs AS (SELECT DISTINCT event_timestamp, model_version FROM {batch}), "
                    "expected AS (SELECT r.event_timestamp, r.model_version, s.user_id FROM runs r "
                    "JOIN seq s ON s.snapshot_ts = r.event_timestamp), "
                    "coverage AS (SELECT e.event_timestamp, e.model_version, count(*) AS users, "
                    "count(b.user_id) AS embedded FROM expected e LEFT JOIN {batch} b "
                    "ON b.user_id = e.user_id "
                    "AND b.event_timestamp = e.event_timestamp AND b.model_version = e.model_version "
                    "GROUP BY e.event_timestamp, e.model_version) "
                    f"SELECT * FROM coverage WHERE embedded < users * {cfg.min_coverage}"),
                description=f"{t.path}: at least {cfg.min_coverage:.1%} of the users with sequences at a "
                            "snapshot "
                            "have an embedding, for every (snapshot, model version)"),
            no_rows(
                query=(
                    f"SELECT b.user_id, b.event_timestamp, b.model_version FROM {{batch}} b LEFT ANTI JOIN "
                    f"({users}) s ON s.user_id = b.user_id AND s.snapshot_ts = b.event_timestamp"),
                description=f"{t.path}: no embedding for a user without a sequence at its snapshot "
                            "(stale row)"),
        ]
    return Suite(t, checks, needs=tuple(with_sequences))


def suites_for(lake: str, present: set[str], cfg: EmbeddingQualityConfig | None = None) -> list[Suite]:
    """The embedding suite if the table is present (cross-checked against the sequence tables present)."""
    if USER_EMBEDDINGS.path not in present:
        return []
    sequences = tuple(s for s in (CLICK_SEQUENCES, CONVERSION_SEQUENCES) if s.path in present)
    return [embedding_suite(checkpoint_dims(lake), cfg or EmbeddingQualityConfig(), sequences)]
