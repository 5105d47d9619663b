"""What is checked in the tables of the ranker's stage, as plain data for ``core.quality.validate_lake``:

* ``training/examples`` (written by ``spark_jobs.examples``): contract columns, one row per click, labels
  in {0, 1}, a delay exactly for positives and never negative, one cutoff for the whole table, and no
  click at or after it;
* ``training/training_set``: contract columns, one row per (click, model version), splits named as
  ``ranker.splits`` names them, no embedding from after its click, an embedding exactly when its
  snapshot is known, and every row a matured example with the same label (cross-checked against
  ``training/examples``).
"""

from __future__ import annotations

import great_expectations.expectations as gxe

from core.contracts import TRAINING_EXAMPLES, TRAINING_SET
from core.quality import Suite, has_columns, no_rows, not_null, view_name
from ranker.splits import SPLIT_NAMES


def examples_suite() -> Suite:
    t = TRAINING_EXAMPLES
    return Suite(t, [
        has_columns(t),
        *not_null(t, [c.name for c in t.fields if not c.nullable]),
        gxe.ExpectColumnValuesToBeUnique(column="click_id", description=f"{t.path}: one row per click"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1],
                                        description=f"{t.path}: label is 0 or 1"),
        no_rows(
            query="SELECT click_id FROM {batch} WHERE (label = 1) <> "
                  "(conversion_delay_s IS NOT NULL) OR conversion_delay_s < 0",
            description=f"{t.path}: a delay exactly for positive examples, never negative"),
        no_rows(
            query="SELECT click_id FROM {batch} WHERE click_ts >= label_cutoff OR "
                  "label_cutoff <> (SELECT max(label_cutoff) FROM {batch})",
            description=f"{t.path}: one label cutoff, every click before it"),
    ])


def training_set_suite() -> Suite:
    t = TRAINING_SET
    examples = view_name(TRAINING_EXAMPLES)
    return Suite(t, [
        has_columns(t),
        *not_null(t, [c.name for c in t.fields if not c.nullable]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(t.key),
                                            description=f"{t.path}: one row per (click_id, model_version)"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLIT_NAMES),
                                        description=f"{t.path}: split is one of {', '.join(SPLIT_NAMES)}"),
        no_rows(
            query="SELECT click_id, model_version FROM {batch} WHERE embedding_ts > click_ts "
                  "OR (embedding_ts IS NULL) <> (click_embedding IS NULL)",
            description=f"{t.path}: no embedding from after its click; an embedding exactly when its "
                        "snapshot is known"),
        no_rows(
            query=(f"SELECT b.click_id, b.model_version FROM {{batch}} b "
                   f"LEFT JOIN {examples} e ON e.click_id = b.click_id "
                   "WHERE e.click_id IS NULL OR NOT e.matured OR e.label <> b.label"),
            description=f"{t.path}: every row is a matured example of {TRAINING_EXAMPLES.path}, same label"),
    ], needs=(TRAINING_EXAMPLES,))


def suites_for(present: set[str]) -> list[Suite]:
    out = []
    if TRAINING_EXAMPLES.path in present:
        out.append(examples_suite())
        if TRAINING_SET.path in present:
            out.append(training_set_suite())
    return out
