"""Build the driver JVM's class-data-sharing archive (``core.spark.CLASS_ARCHIVE``): ``python -m
duet.class_archive``, run by scripts/setup.sh once per Python environment and Java.

One JVM runs a small version of what duet's Spark jobs do (ingest with quarantine and the re-run's
dedup, sequences for two snapshots and then one of them again and a third) with
``-XX:ArchiveClassesAtExit``; at its exit the JDK writes every class it loaded, parsed and verified, into
the archive, and later drivers map it instead of loading those classes from the jars again. Which
classes a later job uses beyond these only decides how much of its start the archive saves; nothing it
computes depends on the archive. The archive is written beside its destination and renamed into place,
so a failed or interrupted build leaves the previous state (no archive, or the old one).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _workload(work: Path, dump_to: Path) -> None:
    """The jobs, through the command line's own handlers, in this one process and so one JVM."""
    from pyspark import SparkContext

    from duet.cli import main as duet

    events, lake = work / "events", str(work / "lake")
    duet(["generate", "--out", str(events), "--users", "40", "--days", "4", "--seed", "1"])
    clicks, conversions = str(events / "clicks.parquet"), str(events / "conversions.parquet")
    bad = work / "bad_clicks.csv"   # a CSV with a row to quarantine: the text reader and the quarantine
    bad.write_text("click_id,user_id,ad_id,advertiser_id,click_ts\n"
                   "c1,u1,a1,v1,2026-01-05T10:00:00Z\nc2,u2,a2,v2,not-a-time\n")
    steps = [
        ["ingest", "--lake", lake, "--clicks", clicks, "--conversions", conversions, "--master", "local[1]",
         "--conf", f"spark.driver.extraJavaOptions=-XX:ArchiveClassesAtExit={dump_to}"],
        ["ingest", "--lake", lake, "--clicks", clicks, "--conversions", conversions],   # all already present
        ["ingest", "--lake", lake, "--clicks", str(bad)],
        ["sequences", "--lake", lake, "--from", "2026-01-06", "--to", "2026-01-07"],
        ["sequences", "--lake", lake, "--from", "2026-01-07", "--to", "2026-01-08"],   # one again, one new
    ]
    try:
        for step in steps:
            if duet(step) != 0:
                raise SystemExit(f"class archive: `duet {step[0]}` failed; no archive written")
    finally:
        # The JDK writes the archive when the JVM exits, which PySpark's gateway does once its stdin
        # closes. Waited for here, failed or not, so that no JVM writes after the caller has cleaned up.
        gateway = SparkContext._gateway
        if gateway is not None:
            SparkContext.getOrCreate().stop()
            gateway.proc.stdin.close()
            gateway.proc.wait(timeout=600)


def build(target: Path) -> float:
    """Write the archive to ``target``; return the seconds it took."""
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.environ["DUET_CLASS_ARCHIVE"] = ""          # the building JVM maps no archive of its own
    with tempfile.TemporaryDirectory(prefix="duet-class-archive-") as tmp:
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            _workload(Path(tmp), partial)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise SystemExit("class archive: the JVM wrote no archive (see its output above)")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    from core.spark import CLASS_ARCHIVE

    parser = argparse.ArgumentParser(prog="python -m duet.class_archive",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CLASS_ARCHIVE,
                        help=f"the archive (default {CLASS_ARCHIVE})")
    args = parser.parse_args(argv)
    seconds = build(args.out)
    print(f"class archive: {args.out} ({args.out.stat().st_size / 2**20:.0f} MiB) in {seconds:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
