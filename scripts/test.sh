#!/usr/bin/env bash
# The test run behind `make test` (and so .ci/run): lint, then pytest without benchmarks. Extra arguments go
# to pytest, e.g. `make test PYTEST_ARGS="-k ingest"`.
#
# DUET_TEST_WORKERS=N runs the suite on N pytest-xdist workers, a test file per worker at a time
# (--dist loadfile: every test of the one shared demo run is in tests/test_demo.py, so the demo runs once;
# xdist's loadgroup does not group under pytest 9, which renamed the node id it rewrites), the longest
# files first (tests/conftest.py LONGEST_FIRST, not xdist's default of most tests first), one OpenMP
# thread per process (spinning threads of two processes on one core slowed pre-training several-fold).
# The default is 0, one process: on the 2-core dev machine the suite already keeps both cores busy
# (Spark local[2], torch), and two workers measured no faster (BENCHMARKS.md, "The test run").
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
workers=${DUET_TEST_WORKERS:-0}
xdist=()
if [ "$workers" != 0 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
exec .venv/bin/python -m pytest -m "${DUET_TEST_MARKERS:-not benchmark and not cluster}" "${xdist[@]}" "$@"
