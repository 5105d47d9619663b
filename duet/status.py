"""`duet status --lake DIR`: what a lake holds and what `duet daily` would do next, read without Spark.

Everything comes from the Delta logs (delta-rs: versions, row counts from the files' statistics, the
embedding runs recorded in the commits) and the project's own records (``_feast/serving.json``,
``_quality/latest.json``, ``duet daily``'s day records), so it answers in seconds on a lake of any size and
starts no JVM. Printed as lines for people, then one JSON object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta

from core.contracts import TABLES, USER_EMBEDDINGS
from core.lake import Lake
from core.table_versions import content_version, table_version
from duet.daily import (
    DailyConfig,
    Landing,
    StepRun,
    complete_days,
    examples_cutoff,
    plan,
    served_model,
)


@dataclass
class TableStatus:
    path: str
    version: int
    content_version: int
    rows: int
    files: int


@dataclass
class LakeStatus:
    lake: str
    tables: list[TableStatus] = field(default_factory=list)
    snapshots: int = 0
    latest_snapshot: str | None = None
    embedded: dict[str, str] = field(default_factory=dict)     # model version -> its newest snapshot
    served: dict | None = None
    labels_cutoff: str | None = None
    last_validation: dict | None = None
    next_date: str | None = None
    landed: bool | None = None
    next_steps: list[StepRun] = field(default_factory=list)

    def lines(self) -> list[str]:
        from serving.versions import contract_views_stale

        out = [f"lake {self.lake}"]
        out += [f"  {t.path}: version {t.version} (rows last changed at {t.content_version}), "
                f"{t.rows:,} rows in {t.files} file(s)" for t in self.tables]
        out.append(f"  sequences: {self.snapshots} complete snapshot(s), the newest {self.latest_snapshot}")
        out += [f"  embeddings {v}: newest snapshot {s}" for v, s in sorted(self.embedded.items())]
        served = self.served or {}
        slot = f", online slot {served['slot']}" if served.get("slot") else ""
        stale = ("; the contract views are marked stale: a promote or publish rewriting them was killed or "
                 "is running (duet's readers do not read them)") if contract_views_stale(served) else ""
        out.append(f"  served: {served.get('model_version')} at {served.get('snapshot')} "
                   f"(published {served.get('published_at')}{slot}){stale}")
        out.append(f"  labels: cutoff {self.labels_cutoff}")
        if self.last_validation:
            v = self.last_validation
            out.append(f"  last validation: {'PASS' if v['success'] else 'FAIL'} at {v['run_at']} "
                       f"({', '.join(v['tables'])})")
        if self.next_date:
            landed = {None: "", True: ", its input has landed",
                      False: ", its input has not landed"}[self.landed]
            out.append(f"  next `duet daily --date {self.next_date}`{landed}:")
            out += [f"    {s.step} {s.day}: {'runs (' + s.why + ')' if s.ran else s.why}"
                    for s in self.next_steps]
        return out

    def to_json(self) -> str:
        from core.records import plain

        return json.dumps(plain(self), default=str)


def _table(lake: Lake, table) -> TableStatus | None:
    from deltalake.exceptions import TableNotFoundError

    from core.object_storage import delta_table

    location = lake.table(table)
    try:
        dt = delta_table(location)
    except TableNotFoundError:
        return None
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()   # delta-rs hands back an Arrow C table
    rows = sum(n or 0 for n in actions.get("num_records", []))
    return TableStatus(table.path, table_version(location), content_version(location), rows,
                       len(actions.get("path", [])))


def embedded_snapshots(lake: Lake) -> dict[str, str]:
    """Each model version's newest embedded snapshot, from the runs recorded in the table's commits."""
    from deltalake.exceptions import TableNotFoundError

    from core.object_storage import delta_table
    from encoders.lake import EmbeddingRun

    try:
        history = delta_table(lake.table(USER_EMBEDDINGS)).history()
    except TableNotFoundError:
        return {}
    newest: dict[str, str] = {}
    for commit in history:
        run = EmbeddingRun.from_json(commit.get("userMetadata"))
        if run and run.snapshot.isoformat() > newest.get(run.model_version, ""):
            newest[run.model_version] = run.snapshot.isoformat()
    return newest


def lake_status(root: str, landing: str | None = None, today: date | None = None) -> LakeStatus:
    lake = Lake(root)
    status = LakeStatus(lake.root)
    status.tables = [t for t in (_table(lake, t) for t in TABLES) if t]
    days = complete_days(lake)
    status.snapshots = len(days)
    status.latest_snapshot = days[-1].isoformat() if days else None
    status.embedded = embedded_snapshots(lake)
    status.served = served_model(lake)
    cutoff = examples_cutoff(lake)
    status.labels_cutoff = cutoff.isoformat() if cutoff else None
    if lake.latest_quality.is_file():
        latest = json.loads(lake.latest_quality.read_text())
        status.last_validation = {"run_at": latest.get("run_at"), "success": latest.get("success"),
                                  "tables": [t["table"] for t in latest.get("tables", [])]}
    if days:
        nxt = days[-1] + timedelta(days=1)
        if today is None or nxt <= today:
            status.next_date = nxt.isoformat()
            if landing:
                status.landed = Landing(landing).landed(nxt - timedelta(days=1))
            status.next_steps = plan(DailyConfig(lake=lake.root, days=(nxt,), landing=landing))
    return status


def today() -> date:
    from datetime import datetime

    return datetime.now(UTC).date()
