# The README's two commands: `make demo` and `make test`. Both set up a fresh machine by themselves
# (scripts/setup.sh: .venv from requirements.lock, Delta jars into .jars/) and reuse it when warm.
WORKDIR ?= demo-work
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-cluster bench lint lock clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/duet demo --workdir $(WORKDIR) $(DEMO_ARGS)

test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

bench: setup
	.venv/bin/python -m benchmarks.ingest_throughput
	.venv/bin/python -m benchmarks.sequences_vs_duckdb
	.venv/bin/python -m benchmarks.encoder_throughput
	.venv/bin/python -m benchmarks.embed_scale
	.venv/bin/python -m benchmarks.encoder_quality
	.venv/bin/python -m benchmarks.online_lookup
	.venv/bin/python -m benchmarks.validate_query_checks
	.venv/bin/python -m benchmarks.ranker_ablation

# The tests that start a Spark standalone cluster or an S3 API server on loopback (marked `cluster`).
test-cluster: setup
	DUET_TEST_WORKERS=0 DUET_TEST_MARKERS=cluster bash scripts/test.sh $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .

# Re-resolve requirements.lock after changing pyproject.toml dependencies.
lock: setup
	.venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header -o requirements.lock

clean:
	rm -rf $(WORKDIR) bench-work .pytest_cache
