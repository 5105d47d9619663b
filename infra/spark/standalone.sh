#!/usr/bin/env bash
# A Spark standalone cluster (one master, N workers) from the pyspark installation in .venv, or from
# $SPARK_HOME if set: no Spark download, no sbin scripts (pip's pyspark has bin/spark-class, not sbin/
# start-master.sh). Each daemon runs `spark-class org.apache.spark.deploy.{master.Master,worker.Worker}`
# in the background, its pid and log under --dir.
#
#   infra/spark/standalone.sh start --dir DIR [--workers 2] [--cores 1] [--memory 1g] [--host 127.0.0.1]
#                                   [--port P] [--webui-port P] [--timeout 120]
#       starts the master and the workers, waits until every worker has registered with the master (its
#       JSON at http://HOST:WEBUI/json/ counts them as alive) and prints the master URL (spark://HOST:P)
#       as the only line on stdout; also written to DIR/master-url (and the web UI's to DIR/webui-url).
#       Exits 1 with the daemon's log tail, and nothing left running, if a daemon dies or a worker has not
#       registered within --timeout s.
#   infra/spark/standalone.sh stop --dir DIR
#       stops the workers (each kills its executors), then the master; waits until they are gone.
#   infra/spark/standalone.sh status --dir DIR
#       prints the master URL and the number of alive workers; exits 1 if the master is not running.
#
# Ports: --port and --webui-port default to free ports picked on --host (so several clusters, and the
# tests, run side by side); a given port that is taken is an error (spark.port.maxRetries=0: the daemon
# never drifts to the next port, so the printed URL is the one it listens on). Workers take free ports.
# Every daemon runs with -Duser.timezone=UTC and SPARK_LOCAL_IP=HOST; executors' scratch space and logs go
# under DIR (local/, work-N/). A job then runs with `infra/submit.sh --master "$(cat DIR/master-url)" ...`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

usage() {
  sed -n '7,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "standalone: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in -h|--help) usage ;; esac
dir="" workers=2 cores=1 memory=1g host=127.0.0.1 port="" webui_port="" timeout=120
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --cores) cores=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    --host) host=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --webui-port) webui_port=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "standalone: unknown option $1" >&2; usage ;;
  esac
done
[ -n "$dir" ] || { echo "standalone: --dir DIR is required" >&2; usage; }
for n in "$workers" "$cores" "$timeout" ${port:+"$port"} ${webui_port:+"$webui_port"}; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "standalone: not a number: $n" >&2; usage; }
done

py=python3
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
# pip's bin/spark-class finds its home with whatever python3 is on the PATH; name it instead.
if [ -z "${SPARK_HOME:-}" ] && [ -x "$root/.venv/bin/python" ]; then
  SPARK_HOME=$("$root/.venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME
fi
spark_class="${SPARK_HOME:-/nonexistent}/bin/spark-class"

# pid files: DIR/master.pid, DIR/worker-N.pid. A pid counts as ours only while its command line is a
# Spark daemon's, so a stale file whose pid was reused by another process is never killed.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'org\.apache\.spark\.deploy\.'
}

listening() { (exec 3<> "/dev/tcp/$host/$1") 2>/dev/null; }

free_port() {
  "$py" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' "$host"
}

# The master's JSON (http://HOST:WEBUI/json/): "<url> <alive workers>", or nothing while it is not up.
master_state() {
  "$py" - "$1" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/json/", timeout=5) as r:
        state = json.load(r)
    print(state["url"], state.get("aliveworkers", 0))
except Exception:
    pass
EOF
}

log_tail() { echo "--- $1 (last lines) ---" >&2; tail -n 25 "$1" >&2 2>/dev/null || true; }

stop_all() {
  local f pid waited
  for f in "$dir"/worker-*.pid "$dir"/master.pid; do   # workers first: each stops its executors
    [ -e "$f" ] || continue
    if alive "$f"; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
  done
  for f in "$dir"/worker-*.pid "$dir"/master.pid; do
    [ -e "$f" ] || continue
    waited=0
    while alive "$f" && [ $waited -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
    if alive "$f"; then pid=$(cat "$f"); echo "standalone: $pid did not stop in 15 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$f"
  done
  rm -f "$dir/master-url" "$dir/webui-url"
}

case "$cmd" in
  stop)
    [ -d "$dir" ] || exit 0
    stop_all
    ;;

  status)
    alive "$dir/master.pid" || die "no master running under $dir"
    state=$(master_state "$(cat "$dir/webui-url")")
    [ -n "$state" ] || die "the master under $dir does not answer on $(cat "$dir/webui-url")"
    echo "$state" | { read -r url n; echo "$url ($n alive workers)"; }
    ;;

  start)
    [ -x "$spark_class" ] || die "no $spark_class: run scripts/setup.sh (or set SPARK_HOME)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for f in "$dir"/*.pid; do
      if alive "$f"; then die "daemons are running under $dir (${f##*/}); run: $0 stop --dir $dir"; fi
    done
    rm -f "$dir"/*.pid "$dir/master-url" "$dir/webui-url"
    mkdir -p "$dir/local"
    export SPARK_LOCAL_IP=$host SPARK_LOCAL_DIRS="$dir/local"
    # -Duser.timezone=UTC on the daemons (executors get theirs from the job: core/spark.py, submit.sh);
    # maxRetries=0: a daemon whose port is taken fails instead of listening elsewhere.
    export SPARK_DAEMON_JAVA_OPTS="${SPARK_DAEMON_JAVA_OPTS:-} -Duser.timezone=UTC -Dspark.port.maxRetries=0"
    # A failed start (a port taken meanwhile, a worker that never registers) leaves nothing behind.
    trap 'status=$?; if [ $status -ne 0 ]; then stop_all; fi; exit $status' EXIT

    for p in ${port:+"$port"} ${webui_port:+"$webui_port"}; do
      ! listening "$p" || die "port $p on $host is in use"
    done
    port=${port:-$(free_port)}
    webui_port=${webui_port:-$(free_port)}
    webui="http://$host:$webui_port"
    echo "$webui" > "$dir/webui-url"
    started=$(date +%s)
    # stdin, stdout and stderr away from the caller: a daemon holding a caller's pipe would keep
    # `$(standalone.sh start ...)` or a test's subprocess waiting for ever.
    "$spark_class" org.apache.spark.deploy.master.Master --host "$host" --port "$port" \
      --webui-port "$webui_port" < /dev/null > "$dir/master.log" 2>&1 &
    echo $! > "$dir/master.pid"
    # The workers start as soon as the master's RPC port listens (a worker that finds no master retries
    # only after 5 to 15 s); the URL is known, since the master listens on $port or exits.
    url="spark://$host:$port"
    until listening "$port"; do
      alive "$dir/master.pid" || { log_tail "$dir/master.log"; die "the master exited (its log above)"; }
      [ $(($(date +%s) - started)) -lt "$timeout" ] || { log_tail "$dir/master.log"; die "the master did not listen on $url within ${timeout} s"; }
      sleep 0.2
    done
    echo "$url" > "$dir/master-url"

    for i in $(seq 1 "$workers"); do
      mkdir -p "$dir/work-$i"
      "$spark_class" org.apache.spark.deploy.worker.Worker --host "$host" --port 0 --webui-port 0 \
        --cores "$cores" --memory "$memory" --work-dir "$dir/work-$i" "$url" \
        < /dev/null > "$dir/worker-$i.log" 2>&1 &
      echo $! > "$dir/worker-$i.pid"
    done
    while :; do
      state=$(master_state "$webui")
      n=${state##* }
      [ -n "$state" ] && [ "$n" -ge "$workers" ] && break
      alive "$dir/master.pid" || { log_tail "$dir/master.log"; die "the master exited (its log above)"; }
      for i in $(seq 1 "$workers"); do
        alive "$dir/worker-$i.pid" || { log_tail "$dir/worker-$i.log"; die "worker $i exited before registering with $url"; }
      done
      if [ $(($(date +%s) - started)) -ge "$timeout" ]; then
        for i in $(seq 1 "$workers"); do log_tail "$dir/worker-$i.log"; done
        die "only ${n:-0} of $workers workers registered with $url within ${timeout} s"
      fi
      sleep 0.5
    done
    echo "standalone: $url up with $workers worker(s) of $cores core(s) and $memory in $(($(date +%s) - started)) s; web UI $webui" >&2
    echo "$url"
    ;;

  *) usage ;;
esac
