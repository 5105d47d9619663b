#!/usr/bin/env bash
# The test run behind `make test` (and so .ci/run): lint, then pytest without benchmarks. Extra arguments go
# to pytest, e.g. `make test PYTEST_ARGS="-k ingest"`.
#
# The suite runs on two pytest-xdist workers (one process on a machine with one core), a test file per
# worker at a time (--dist loadfile: every test of the shared demo run is in tests/test_demo.py, and the
# demo itself runs once per run, under a file lock, whichever worker needs it first: tests/conftest.py
# demo_run; xdist's loadgroup does not group under pytest 9, which renamed the node id it rewrites), the
# longest files first (tests/conftest.py LONGEST_FIRST, not xdist's default of most tests first), one
# OpenMP thread per process (spinning threads of two processes on one core slowed pre-training
# several-fold). On the 2-core dev machine one process left the cores idle about a fifth of the time
# (vmstat: 76 to 81% busy); two workers keep them busy: 17:42 against 19:37 for one process in the same
# hour (BENCHMARKS.md, "The test run"). DUET_TEST_WORKERS=N sets the number; 0 is one process (as
# `make test-cluster` runs: each of its tests starts a cluster of its own and wants the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
workers=${DUET_TEST_WORKERS:-$(( $(nproc) > 1 ? 2 : 0 ))}
xdist=()
if [ "$workers" != 0 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
exec .venv/bin/python -m pytest -m "${DUET_TEST_MARKERS:-not benchmark and not cluster}" "${xdist[@]}" "$@"
