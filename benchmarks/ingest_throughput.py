"""Benchmark: `duet ingest` throughput and peak memory against a plain Delta append of the same files.

For each size, generated events are ingested into a fresh lake by `duet ingest` (parse, quarantine rules,
in-file and in-table duplicate checks, insert-only MERGEs), and, as the reference in the same run, by a
bare Spark job that reads the same Parquet files and appends them to Delta with no checks at all. Both
run as fresh processes (JVM start included in both). Peak memory is the largest resident set of the whole
process tree (Python driver + JVM), sampled every 0.2 s. A third run re-ingests the same files (the
idempotent no-op path). Prints one JSON object per size and a final JSON list.

    .venv/bin/python -m benchmarks.ingest_throughput [--clicks 1000000 4000000] [--workdir bench-work]
    .venv/bin/python -m benchmarks.ingest_throughput --clicks 20000000 --generate-only
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

CLICKS_PER_USER = 14 * 4.0  # 14 days x 4 clicks per user-day on average

REFERENCE = """
import sys
from core.contracts import RAW_CLICKS, RAW_CONVERSIONS
from core.spark import spark_session
spark = spark_session(app_name="bench-reference")
lake = sys.argv[1]
for name, table in (("clicks", RAW_CLICKS), ("conversions", RAW_CONVERSIONS)):
    spark.read.parquet(f"{sys.argv[2]}/{name}.parquet").write.format("delta").mode("append") \\
        .save(table.location(lake))
"""


def _measure(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (seconds, peak RSS of the process tree in MiB, stdout)."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [proc, *proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return seconds, peak / 2**20, out


def run_size(n_clicks: int, work: Path, generate_only: bool = False) -> dict:
    events, lake, ref_lake = work / f"events-{n_clicks}", work / f"lake-{n_clicks}", work / f"ref-{n_clicks}"
    for p in (lake, ref_lake):
        shutil.rmtree(p, ignore_errors=True)
    users = max(1, round(n_clicks / CLICKS_PER_USER))
    bin_duet = str(Path(sys.executable).with_name("duet"))
    gen_s, gen_mb, out = _measure([bin_duet, "generate", "--out", str(events), "--users", str(users),
                                   "--days", "14", "--seed", "11"])
    summary = json.loads(out)
    if generate_only:
        return {"clicks": summary["clicks"], "generate_s": round(gen_s, 1),
                "generate_peak_rss_mib": round(gen_mb)}
    duet = [bin_duet, "ingest", "--lake", str(lake),
            "--clicks", str(events / "clicks.parquet"), "--conversions", str(events / "conversions.parquet")]
    ingest_s, ingest_mb, out = _measure(duet)
    assert f"ingested {summary['clicks']} " in out, out
    reingest_s, _, out = _measure(duet)
    assert "ingested 0 " in out, out
    ref_s, ref_mb, _ = _measure([sys.executable, "-c", REFERENCE, str(ref_lake), str(events)])
    rows = summary["clicks"] + summary["conversions"]
    return {
        "clicks": summary["clicks"],
        "conversions": summary["conversions"],
        "generate_s": round(gen_s, 1),
        "generate_peak_rss_mib": round(gen_mb),
        "ingest_s": round(ingest_s, 1),
        "ingest_rows_per_s": round(rows / ingest_s),
        "ingest_peak_rss_mib": round(ingest_mb),
        "reingest_noop_s": round(reingest_s, 1),
        "reference_append_s": round(ref_s, 1),
        "reference_peak_rss_mib": round(ref_mb),
        "ratio_ingest_to_reference": round(ingest_s / ref_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--generate-only", action="store_true",
                        help="only time the generator (--clicks 20000000: does its memory stay flat?)")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
               "platform": platform.platform(), "python": platform.python_version()}
    results = []
    for n in args.clicks:
        figures = run_size(n, work, args.generate_only)
        result = {"benchmark": "ingest_throughput", **figures, "machine": machine}
        print(json.dumps(result), flush=True)
        results.append(result)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
