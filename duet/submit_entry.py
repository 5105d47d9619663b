"""The spark-submit entry point: ``infra/submit.sh -- JOB [args]`` runs ``duet JOB args`` on the driver.

Only the Spark jobs of the command line are offered (``JOBS``); a later stage's Spark job (``embed``, say)
is added to that list and to ``duet.cli``, nothing else. Under spark-submit the master, jars and settings
come from spark-submit; ``core.spark.spark_session`` only fills in what is unset. An unknown job name
exits 2 with "no such job", like a usage error, before anything is imported; so does an argument before
``--`` that is not a spark-submit option (``check_options``), which spark-submit would run as the
application instead of this script.
"""

from __future__ import annotations

import os
import sys

JOBS = ("ingest", "sequences", "embed", "validate", "daily", "backfill", "maintain")


def check_job(name: str) -> int:
    """0 if ``name`` is a job spark-submit may run, else 2 after saying so on stderr."""
    if name in JOBS:
        return 0
    print(f"submit: no such job: {name!r} (jobs: {', '.join(JOBS)})", file=sys.stderr)
    return 2


# spark-submit options that take no value; every other option takes the next argument (or is --opt=value).
FLAGS = ("--verbose", "-v", "--supervise", "--help", "-h", "--version")


def check_options(options: list[str]) -> int:
    """0 if ``options`` (infra/submit.sh's arguments before ``--``) are spark-submit options and their
    values only, else 2 after saying so on stderr."""
    i = 0
    while i < len(options):
        if not options[i].startswith("-"):
            print(f"submit: unexpected argument {options[i]!r} before '--': only spark-submit options go "
                  "there (spark-submit would run it instead of the duet job)", file=sys.stderr)
            return 2
        i += 1 if options[i] in FLAGS or "=" in options[i] else 2
    return 0


def check(job: str, options: list[str]) -> int:
    """What infra/submit.sh runs before a JVM starts: the job name and the spark-submit options."""
    return check_job(job) or check_options(options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    refused = check_job(argv[0] if argv else "")
    if refused:
        return refused
    from duet.cli import main as duet

    return duet(argv)


if __name__ == "__main__":
    # Run as a file, Python puts duet/ itself first on sys.path, where cli.py would shadow any top-level
    # module named cli; duet is imported as a package from the --py-files zip (or the install) instead.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
