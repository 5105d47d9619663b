#!/usr/bin/env bash
# The test run behind `make test` (and so .ci/run): lint, then pytest without benchmarks, on two workers
# (pytest-xdist; DUET_TEST_WORKERS=N for another count, 0 for none), a test file per worker at a time
# (--dist loadfile: the tests of the one shared demo run are all in tests/test_demo.py, so the demo runs
# once; xdist's loadgroup does not group under pytest 9, which renamed the node id it rewrites), in the
# order of tests/conftest.py LONGEST_FIRST (not xdist's default, most tests first). Extra
# arguments go to pytest, e.g.
# `make test PYTEST_ARGS="-k ingest"`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
# Two workers on two cores: torch's OpenMP threads spin while they wait, so two processes of two threads
# each slowed pre-training several-fold; each process (workers and the commands they start) gets one.
if [ "${DUET_TEST_WORKERS:-2}" != 0 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
fi
exec .venv/bin/python -m pytest -m "not benchmark" -n "${DUET_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
