#!/usr/bin/env bash
# The test run behind `make test` (and so .ci/run): lint, then pytest without benchmarks.
# Extra arguments go to pytest, e.g. `make test PYTEST_ARGS="-k ingest"`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -m "not benchmark" "$@"
