#!/usr/bin/env bash
# Run one duet Spark job with spark-submit, on any master:
#   infra/submit.sh [--master URL] [spark-submit options...] -- JOB [job arguments...]
#   infra/submit.sh --master local[2] -- ingest --lake /data/lake --clicks /data/clicks.csv
#   infra/submit.sh --master spark://head:7077 --conf spark.executor.memory=8g -- ingest --lake s3a://...
# JOB is one of the Spark jobs of the duet command line (duet/submit_entry.py JOBS: ingest, sequences,
# embed (with --engine spark), validate, daily, backfill, maintain); the driver runs `duet JOB args` through
# duet/submit_entry.py. The packages the executors run (core duet spark_jobs encoders) are shipped as a zip
# (--py-files); the driver also needs the project installed (serving, ranker, and feature_repo, which Feast
# reads as a folder, never from a zip). The Delta jars come from .jars/ (scripts/setup.sh) or, if absent,
# from Maven via --packages. spark-submit is the one in .venv (pyspark 4.1) unless SPARK_HOME is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

submit_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do submit_args+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "usage: $0 [spark-submit options] -- JOB [args]" >&2; exit 2; }
shift
job=${1:?"usage: $0 [spark-submit options] -- JOB [args]"}; shift

if [ -n "${SPARK_HOME:-}" ]; then submit="$SPARK_HOME/bin/spark-submit"; else submit="$root/.venv/bin/spark-submit"; fi
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$root/.venv/bin/python}
# Refuse an unknown job, or a stray argument spark-submit would run instead of it, before a JVM starts;
# the list of jobs lives in the entry script alone.
(cd "$root" && "$PYSPARK_PYTHON" -c 'import sys; from duet.submit_entry import check; sys.exit(check(sys.argv[1], sys.argv[2:]))' "$job" ${submit_args[@]+"${submit_args[@]}"}) || exit 2
# log4j takes a URI: percent-encoded, so a checkout path with a space does not split the driver options.
log4j=$("$PYSPARK_PYTHON" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$root/core/log4j2.properties")
# The driver's class-data archive, if scripts/setup.sh built one (core.spark.driver_start_options): a
# faster start, ignored by a JVM it does not match (a driver on a cluster node, another Java); none when
# this Python cannot import pyspark (a SPARK_HOME install that brings its own).
start=$(cd "$root" && "$PYSPARK_PYTHON" -c 'from core.spark import driver_start_options; print(" ".join(driver_start_options()))' 2>/dev/null || true)

jars=$(ls "$root"/.jars/*.jar 2>/dev/null | paste -sd, || true)
if [ -n "$jars" ]; then
  deps=(--jars "$jars")
else
  delta=$(sed -nE 's:.*<delta.version>(.*)</delta.version>.*:\1:p' "$root/infra/jars/pom.xml")
  deps=(--packages "io.delta:delta-spark_4.1_2.13:$delta")
fi

zip_dir=$(mktemp -d)
trap 'rm -rf "$zip_dir"' EXIT
(cd "$root" && python3 -m zipfile -c "$zip_dir/duet_jobs.zip" core duet spark_jobs encoders >/dev/null)

# UTC JVM and duet's quiet logging on the driver (a later --driver-java-options of yours wins).
exec "$submit" "${deps[@]}" \
  --driver-java-options "-Duser.timezone=UTC -Dlog4j.configurationFile=$log4j${start:+ $start}" \
  --py-files "$zip_dir/duet_jobs.zip" ${submit_args[@]+"${submit_args[@]}"} "$root/duet/submit_entry.py" "$job" "$@"
