"""The spark-submit entry point every job shares: parse the job's arguments, run it, one-line errors.

Under spark-submit the master, jars and settings come from spark-submit; ``duet.spark.spark_session``
only fills in what is unset. ``duet <job>`` reaches the same ``run`` functions through ``duet.cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pyspark.sql import SparkSession

from duet.errors import DuetError


def submit_main(job: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[SparkSession, argparse.Namespace], object],
                argv: list[str] | None = None) -> int:
    """Parse ``argv`` for ``job``, run it on the session spark-submit configured; return an exit code."""
    from duet.spark import spark_session

    parser = argparse.ArgumentParser(prog=f"{job}.py", description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(spark_session(app_name=f"duet-{job}"), args)
    except DuetError as e:
        print(f"{job}: error: {e}", file=sys.stderr)
        return 1
    return 0
