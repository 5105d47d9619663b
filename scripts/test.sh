#!/usr/bin/env bash
# The test run behind `make test` (and so .ci/run): lint, then pytest without benchmarks, on two workers
# (pytest-xdist; DUET_TEST_WORKERS=N for another count, 0 for none), a test file per worker at a time
# (--dist loadfile: the tests of the one shared demo run are all in tests/test_demo.py, so the demo runs
# once; xdist's loadgroup does not group under pytest 9, which renamed the node id it rewrites). Extra
# arguments go to pytest, e.g.
# `make test PYTEST_ARGS="-k ingest"`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -m "not benchmark" -n "${DUET_TEST_WORKERS:-2}" --dist loadfile "$@"
