"""duet's daily run as an Airflow DAG: one task a day runs ``duet daily --date {{ ds }}``.

Copy this file into the DAGs folder of an Airflow (2.9+ or 3.x) whose workers have duet installed (a
checkout after scripts/setup.sh, its ``.venv/bin`` on the PATH, or the image of infra/spark/k8s/Dockerfile)
and set three Airflow Variables: ``duet_lake`` (``s3a://duet-lake/lake``), ``duet_landing`` (where the
day's files land) and ``duet_spark_master`` (``spark://head:7077``, ``yarn``, ``k8s://https://...``), and
optionally ``duet_daily_args``. The worker runs the Spark driver (client mode); the executors run on the
cluster. A lake on S3 keeps its models, Feast files and run records in ``$DUET_HOME`` (core/lake.py): give
the workers that variable, naming a folder every worker that may run the task sees (a shared mount), or
pin the task to one worker's queue.

The date: the schedule is a cron trigger at 01:30 UTC (``CronTriggerTimetable``), whose logical date is the
trigger time itself, so ``{{ ds }}`` is the UTC day the run fires, the same date infra/spark/k8s/cronjob.yaml
passes (``date -u +%F``). With Airflow's data-interval schedules (``schedule="@daily"``) ``{{ ds }}`` would be
the day before: keep the two deployments on one meaning.

``duet daily``'s exit codes, and what the task does with each:

- 0, done or nothing to do: the task succeeds; the run record (the JSON line ``duet daily`` prints last) is
  its XCom.
- 75, the date's inputs have not landed yet: not a failure. ``BashOperator`` cannot say so (any non-zero
  exit is a failure that spends a retry, and ``skip_on_exit_code=75`` would mark the day skipped, a run
  that never happens and that catchup does not revisit), so the task is a sensor: 75 means "not yet", and
  it pokes again every ``poke_interval`` in reschedule mode (no worker slot held while it waits), until
  ``timeout``; then it fails.
- 1, failed with a one-line reason: an ordinary failure, retried (``retries``, backing off); a re-run
  converges.
- 2, usage error: fails at once, without retries (``AirflowFailException``): a retry cannot help.

``max_active_runs=1`` and ``depends_on_past``: the lake takes one daily writer at a time (Delta's S3 log
store is safe for one writing driver only), and days are written in order, so a failed day holds the
later ones until it is fixed. ``catchup=True``: a paused or new DAG runs every missed day from
``start_date``, oldest first, one at a time: the backfill (each run also builds any snapshot missing
before its date: ``duet daily`` catches a lake up). One long run instead: ``duet backfill --from D1 --to
D2`` with the DAG paused.

Airflow is not a dependency of duet: tests/test_infra.py checks this file by parsing it, and runs the task's
exit-code handling against stand-ins for the few Airflow names it imports.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

from airflow.exceptions import AirflowException, AirflowFailException

try:  # Airflow 3
    from airflow.sdk import DAG, BaseSensorOperator, CronTriggerTimetable, PokeReturnValue
except ImportError:  # Airflow 2.9+
    from airflow import DAG
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
    from airflow.timetables.trigger import CronTriggerTimetable

NOT_LANDED = 75  # duet daily: the date's inputs have not landed yet; try again later
USAGE_ERROR = 2

# duet_daily_args (optional): more options, e.g. `--engine spark` or `--feature-store-yaml FILE`.
DUET_DAILY = (
    "duet daily --lake '{{ var.value.duet_lake }}' --date {{ ds }}"
    " --landing '{{ var.value.duet_landing }}' --master '{{ var.value.duet_spark_master }}'"
    " {{ var.value.get('duet_daily_args', '') }}"
)


class DuetDailySensor(BaseSensorOperator):
    """Runs ``bash_command`` (templated) once per poke and reads its exit code as duet's exit codes say."""

    template_fields = ("bash_command",)

    def __init__(self, *, bash_command: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bash_command = bash_command

    def poke(self, context):
        self.log.info("Running: %s", self.bash_command)
        last = ""
        with subprocess.Popen(["bash", "-c", self.bash_command], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                self.log.info("%s", line)
                last = line or last
        code = proc.returncode
        if code == 0:
            try:
                record = json.loads(last)
            except ValueError:
                record = {"last_line": last}
            return PokeReturnValue(is_done=True, xcom_value=record)
        if code == NOT_LANDED:
            self.log.info("Inputs not landed yet (exit 75); poking again in %s s", self.poke_interval)
            return False
        if code == USAGE_ERROR:
            raise AirflowFailException(f"duet daily: usage error (exit 2), not retried: {last}")
        raise AirflowException(f"duet daily failed (exit {code}): {last}")


with DAG(
    dag_id="duet_daily",
    description="duet daily: ingest the landed files, snapshot, embed, validate, publish, labels",
    schedule=CronTriggerTimetable("30 1 * * *", timezone="UTC"),
    # The first day to run (catchup runs every day since). timezone.utc, not datetime.UTC: an Airflow
    # worker may run Python 3.10.
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),  # noqa: UP017
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "duet",
        "depends_on_past": True,
        "retries": 3,
        "retry_delay": timedelta(minutes=15),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(hours=2),
    },
    tags=["duet"],
    doc_md=__doc__,
) as dag:
    DuetDailySensor(
        task_id="duet_daily",
        bash_command=DUET_DAILY,
        mode="reschedule",
        poke_interval=30 * 60,
        timeout=20 * 60 * 60,  # wait for the landing until 21:30 UTC, before the next day's run
    )
