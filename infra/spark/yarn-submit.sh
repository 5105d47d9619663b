#!/usr/bin/env bash
# One duet Spark job on a YARN cluster, the driver inside YARN (cluster mode):
#   infra/spark/yarn-submit.sh [spark-submit options...] -- JOB [job arguments...]
#   infra/spark/yarn-submit.sh --queue etl -- daily --lake s3a://duet-lake/lake --date 2026-02-01 \
#       --landing s3a://duet-lake/landing
# It is infra/submit.sh with YARN's options: the same checks, the same zip of duet's packages
# (--py-files) and the same Delta jars (--jars .jars/*), plus
#   --master yarn --deploy-mode cluster   the driver runs in YARN's application master, not here: the run
#                                         survives this machine, and spark-submit waits and exits non-zero
#                                         when the application fails (YARN reports failed or succeeded, not
#                                         duet's exit code: 75 and 1 both read as failed, see infra/README.md)
#   --archives ENV.tar.gz#environment      the Python environment, unpacked by YARN beside the driver and
#                                         every executor as ./environment; the driver and the executors'
#                                         Python workers run ./environment/bin/python
#   --properties-file spark-defaults.conf  infra/spark/spark-defaults.conf (Delta, UTC, S3A)
# The environment: a packed copy of .venv, built on a machine with the cluster nodes' OS and CPU
# architecture, e.g. `pip install venv-pack && venv-pack -p .venv -o duet-venv.tar.gz` (a plain venv
# links to its base interpreter, so the nodes need Python 3.11 at the same path; conda-pack or a
# relocatable Python avoids that). Name it with DUET_VENV_ARCHIVE (a local file, uploaded on each run, or
# an hdfs:// / s3a:// URI uploaded once). HADOOP_CONF_DIR (or YARN_CONF_DIR) names the cluster's
# configuration. Upload pyspark's jars once and name them with DUET_SPARK_YARN_ARCHIVE
# (spark.yarn.archive, e.g. hdfs:///apps/spark/spark-4.1.4-jars.zip), else each run uploads them (~460 MB).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

[ -n "${HADOOP_CONF_DIR:-}${YARN_CONF_DIR:-}" ] \
  || { echo "yarn-submit: set HADOOP_CONF_DIR (or YARN_CONF_DIR) to the cluster's configuration folder" >&2; exit 2; }
archive=${DUET_VENV_ARCHIVE:-}
[ -n "$archive" ] || { echo "yarn-submit: set DUET_VENV_ARCHIVE to the packed Python environment (see the comment at the top)" >&2; exit 2; }
case "$archive" in
  *://*) ;;
  *) [ -f "$archive" ] || { echo "yarn-submit: no such file: $archive" >&2; exit 2; } ;;
esac

yarn_args=(--master yarn --deploy-mode cluster
  --properties-file "$root/infra/spark/spark-defaults.conf"
  --archives "$archive#environment"
  # The Python of the driver (in the application master) and, through it, of the executors' workers.
  # Not PYSPARK_PYTHON in this shell: infra/submit.sh runs its checks with that Python here.
  --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python
  --conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python
  # duet's quiet logging, shipped beside the driver: the path infra/submit.sh names is this machine's.
  --files "$root/core/log4j2.properties"
  --driver-java-options "-Duser.timezone=UTC -Dlog4j.configurationFile=log4j2.properties")
[ -z "${DUET_SPARK_YARN_ARCHIVE:-}" ] || yarn_args+=(--conf "spark.yarn.archive=$DUET_SPARK_YARN_ARCHIVE")

# The driver's class-data archive is this machine's file; the driver runs elsewhere.
export DUET_CLASS_ARCHIVE=""
# Options given here come after ours, so a later --conf of the caller wins.
exec "$root/infra/submit.sh" "${yarn_args[@]}" "$@"
