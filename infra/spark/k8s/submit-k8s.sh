#!/usr/bin/env bash
# One duet Spark job on Kubernetes with a plain spark-submit (cluster mode: the driver runs in a pod of the
# duet image, infra/spark/k8s/Dockerfile), from any machine whose kubectl context reaches the cluster:
#   infra/spark/k8s/submit-k8s.sh --master k8s://https://API-SERVER:443 [--image duet-spark:0.1.0]
#       [--namespace duet] [spark-submit options...] -- JOB [job arguments...]
#   infra/spark/k8s/submit-k8s.sh --master k8s://https://10.0.0.1:443 -- \
#       daily --lake s3a://duet-lake/lake --date 2026-02-01 --landing s3a://duet-lake/landing
#   infra/spark/k8s/submit-k8s.sh --master k8s://https://10.0.0.1:443 --conf spark.executor.instances=8 -- \
#       backfill --lake s3a://duet-lake/lake --from 2026-01-01 --to 2026-01-31 --landing s3a://duet-lake/landing
# JOB is a job of duet/submit_entry.py (daily, backfill, ingest, ...), run from the image
# (local:///opt/duet/duet/submit_entry.py); nothing of this checkout is uploaded. The master is
# $K8S_MASTER unless --master is given; `kubectl cluster-info` prints the API server's address.
#
# spark-submit waits for the driver pod to finish but exits 0 whatever the driver's exit code (Spark on
# Kubernetes does not pass it back), so this script reads the driver container's exit code with kubectl
# and exits with it: 0 done, 1 failed, 2 usage error, 75 inputs not landed yet (see infra/README.md).
# spark-submit is the one in .venv (pyspark 4.1, with Kubernetes support) unless SPARK_HOME is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)

master=${K8S_MASTER:-} image=${DUET_IMAGE:-duet-spark:0.1.0} namespace=${DUET_NAMESPACE:-duet}
submit_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --master) master=${2:?}; shift 2 ;;
    --image) image=${2:?}; shift 2 ;;
    --namespace) namespace=${2:?}; shift 2 ;;
    *) submit_args+=("$1"); shift ;;
  esac
done
usage="usage: $0 --master k8s://https://HOST:PORT [--image IMAGE] [--namespace NS] [spark-submit options] -- JOB [args]"
[ "${1:-}" = "--" ] || { echo "$usage" >&2; exit 2; }
shift
job=${1:-}
[ -n "$job" ] || { echo "$usage" >&2; exit 2; }
case "$master" in
  k8s://*) ;;
  *) echo "submit-k8s: --master must be k8s://https://HOST:PORT (or set K8S_MASTER), got '${master}'" >&2; exit 2 ;;
esac

py="$root/.venv/bin/python"
if [ -n "${SPARK_HOME:-}" ]; then
  submit="$SPARK_HOME/bin/spark-submit"
else
  submit="$root/.venv/bin/spark-submit"
  # pip's bin/spark-submit finds its home with whatever python3 is on the PATH; name it instead.
  SPARK_HOME=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME
fi
# An unknown job, or a stray argument spark-submit would run instead of it: refused before a JVM starts
# (the same check as infra/submit.sh; the list of jobs lives in duet/submit_entry.py alone).
(cd "$root" && "$py" -c 'import sys; from duet.submit_entry import check; sys.exit(check(sys.argv[1], sys.argv[2:]))' \
  "$job" ${submit_args[@]+"${submit_args[@]}"}) || exit 2

# A driver pod name of our own, so that its exit code can be read afterwards (lower case, <= 63 chars).
stamp=$(date -u +%Y%m%d-%H%M%S)
driver_pod="duet-${job}-${stamp}-driver"

# --properties-file: the cluster settings of infra/spark/spark-defaults.conf (Delta, UTC, S3A); the
# driver in its pod reads only what is passed from here. The Delta and S3A jars are in the image
# (/opt/duet/.jars, .jars-s3), on the class path of the driver from its start and of every executor.
set +e
"$submit" \
  --master "$master" --deploy-mode cluster --name "duet-$job" \
  --properties-file "$root/infra/spark/spark-defaults.conf" \
  --conf spark.kubernetes.namespace="$namespace" \
  --conf spark.kubernetes.container.image="$image" \
  --conf spark.kubernetes.authenticate.driver.serviceAccountName=duet-spark \
  --conf spark.kubernetes.authenticate.executor.serviceAccountName=duet-spark \
  --conf spark.kubernetes.driver.pod.name="$driver_pod" \
  --conf spark.kubernetes.submission.waitAppCompletion=true \
  --conf spark.driver.extraClassPath='/opt/duet/.jars/*:/opt/duet/.jars-s3/*' \
  --conf spark.executor.extraClassPath='/opt/duet/.jars/*:/opt/duet/.jars-s3/*' \
  --conf spark.driver.memory=4g \
  --conf spark.executor.instances=4 --conf spark.executor.cores=2 --conf spark.executor.memory=6g \
  --conf spark.executor.memoryOverhead=3g \
  ${submit_args[@]+"${submit_args[@]}"} \
  local:///opt/duet/duet/submit_entry.py "$@"
rc=$?
set -e
[ "$rc" -eq 0 ] || exit "$rc"   # the submission itself failed (API server, quota, a bad option)

if ! command -v kubectl > /dev/null; then
  echo "submit-k8s: no kubectl here, so the driver's exit code is unknown; see: kubectl -n $namespace get pod $driver_pod" >&2
  exit 0
fi
code=$(kubectl -n "$namespace" get pod "$driver_pod" \
  -o jsonpath='{.status.containerStatuses[?(@.name=="spark-kubernetes-driver")].state.terminated.exitCode}' || true)
if [ -z "$code" ]; then
  echo "submit-k8s: could not read the exit code of pod $driver_pod in namespace $namespace" >&2
  exit 1
fi
echo "submit-k8s: driver $driver_pod exited $code (logs: kubectl -n $namespace logs $driver_pod)" >&2
exit "$code"
