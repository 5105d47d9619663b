"""The README's commands cannot drift: its test command is CI's, and its usage block runs here."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from deltalake import DeltaTable

from tests.conftest import REPO, SHORT_RUN_ENV

README = (REPO / "README.md").read_text()


def test_the_two_commands_are_in_the_readme_ci_and_makefile():
    assert "make demo" in README and "make test" in README
    assert "make test" in (REPO / ".ci/run").read_text()
    targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.M)
    assert {"demo", "test", "setup", "bench"} <= set(targets)


@pytest.mark.integration
def test_usage_block_runs_as_written(tmp_path, taobao_sample):
    # The blocks run in order in one shell: the feature store's block publishes the first block's lake.
    usage, feature_store = re.findall(r"```bash readme-test\n(.*?)```", README, re.S)
    block = usage + feature_store
    env = {**SHORT_RUN_ENV, "WORK": str(tmp_path), "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    tables = ("raw/clicks", "raw/conversions", "features/click_sequences", "features/conversion_sequences",
              "embeddings/user_embeddings")
    for table in tables:
        assert f"PASS {table}" in result.stdout
    assert "read 10000 = ingested 9252 + already present 0 + quarantined 0 + skipped 748" in result.stdout
    clicks = DeltaTable(str(tmp_path / "lake/raw/clicks")).to_pyarrow_table()
    assert clicks.num_rows > 9046
    snapshots = set(DeltaTable(str(tmp_path / "lake/features/click_sequences")).to_pyarrow_table()
                    .column("snapshot_ts").to_pylist())
    assert len(snapshots) == 8  # seven daily snapshots and one at 12:30
    assert "re-embedded 0 changed user(s)" in result.stdout
    embedded = DeltaTable(str(tmp_path / "lake/embeddings/user_embeddings")).to_pyarrow_table()
    assert len(set(embedded.column("event_timestamp").to_pylist())) == 2
    assert all(v.startswith("duet-") for v in embedded.column("model_version").to_pylist())
    # The curl example: the published snapshot's vector for a known user, nothing for an unknown one.
    assert "published duet-" in result.stdout
    # `duet validate` ran the embedding suite just before: publish takes that pass (serving.publish).
    assert re.search(r"gate: the pass in \S+/lake/_quality/\d{8}T\d{6}Z, same rows", result.stdout)
    online = json.loads((tmp_path / "online.json").read_text())
    assert online["metadata"]["feature_names"] == ["user_id", "click_embedding", "conversion_embedding"]
    click = online["results"][1]
    assert len(click["values"][0]) == 64 and click["values"][1] is None
    assert click["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert click["event_timestamps"][0] == "2026-01-12T00:00:00Z"
