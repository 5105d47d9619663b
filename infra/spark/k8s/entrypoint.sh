#!/usr/bin/env bash
# The duet image's entry point (infra/spark/k8s/Dockerfile). Three uses of one image:
#   driver ARGS     Spark on Kubernetes starts a cluster-mode driver pod with this (spark-submit in
#                   client mode inside the pod, as Spark's own image does); the Spark operator's
#                   SparkApplication and infra/spark/k8s/submit-k8s.sh come here.
#   executor        Spark starts each executor pod with this; what the executor needs comes in the
#                   environment the driver sets (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...).
#   anything else   runs as given: `duet daily ...` (the CronJob, whose pod is the driver in client
#                   mode), `infra/submit.sh ...`, `bash`.
# It follows the contract of Spark's kubernetes/dockerfiles/spark/entrypoint.sh, for pyspark installed by
# pip (SPARK_HOME inside the virtual environment) instead of a Spark distribution under /opt/spark.
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME is not set (the image sets it)}"
: "${JAVA_HOME:?JAVA_HOME is not set (the image sets it)}"

# An arbitrary uid (OpenShift) has no passwd entry, and the JVM and Hadoop's user lookup want one.
if ! getent passwd "$(id -u)" > /dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "$(id -u):x:$(id -u):$(id -g):duet:${HOME:-/tmp}:/bin/false" >> /etc/passwd
fi

# The executor's class path: extra class path from Spark (spark.executor.extraClassPath, in
# SPARK_CLASSPATH), Spark's jars, and a configuration folder if one is mounted.
classpath="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*"
[ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
[ -n "${HADOOP_CONF_DIR:-}" ] && classpath="$HADOOP_CONF_DIR:$classpath"
classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$classpath"

case "${1:-}" in
  driver)
    shift
    cmd=("$SPARK_HOME/bin/spark-submit" --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}"
         --deploy-mode client "$@")
    ;;
  executor)
    shift
    # The executor's JVM options arrive as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in that order
    # (-Duser.timezone=UTC among them: core/spark.py sets spark.executor.extraJavaOptions).
    java_opts=()
    while IFS= read -r name; do java_opts+=("${!name}"); done < <(
      compgen -e | grep '^SPARK_JAVA_OPT_[0-9]*$' | sort -t_ -k4 -n || true)
    cmd=("$JAVA_HOME/bin/java" ${java_opts[@]+"${java_opts[@]}"}
         "-Xms${SPARK_EXECUTOR_MEMORY:?}" "-Xmx${SPARK_EXECUTOR_MEMORY}"
         -cp "$classpath${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
         org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
         --driver-url "${SPARK_DRIVER_URL:?}" --executor-id "${SPARK_EXECUTOR_ID:?}"
         --cores "${SPARK_EXECUTOR_CORES:?}" --app-id "${SPARK_APPLICATION_ID:?}"
         --hostname "${SPARK_EXECUTOR_POD_IP:?}" --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
         --podName "${SPARK_EXECUTOR_POD_NAME:?}")
    ;;
  "")
    cmd=(duet --help)
    ;;
  *)
    cmd=("$@")
    ;;
esac

# tini as PID 1: signals reach the JVM (a pod's TERM stops Spark cleanly) and zombies are reaped.
if [ "${DUET_ENTRYPOINT_DRY_RUN:-}" = 1 ]; then printf '%s\n' "${cmd[@]}"; exit 0; fi
exec /usr/bin/tini -s -- "${cmd[@]}"
