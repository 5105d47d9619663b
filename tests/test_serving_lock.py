"""One publish, promote, rollback or retire of a lake at a time (``serving.versions.serving_lock``, issue 26):
while another process holds the lake's serving lock, each of them stops at once saying it lost and who
holds it, and changes nothing; a holder killed with SIGKILL leaves no stale lock. (The commands' normal
runs, which take the lock, are tests/test_model_versions.py and tests/test_daily.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from core.errors import DuetError
from core.lake import Lake
from serving.publish import PublishConfig, publish
from serving.store import StoreConfig
from serving.versions import promote, retire, rollback, serving_lock
from tests.conftest import REPO

HOLDER = """
import sys, time
from serving.versions import serving_lock
with serving_lock(sys.argv[1], "the publish of duet-aaaaaaa at 2026-01-10T00:00:00+00:00"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held(tmp_path):
    """A lake whose serving lock another process holds (as a publish would); killed at the end."""
    lake = str(tmp_path / "lake")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lake], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert holder.stdout.readline().strip() == "held"
    yield lake, holder
    if holder.poll() is None:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


def test_every_change_of_what_is_served_loses_to_a_running_one_and_changes_nothing(held):
    lake, holder = held
    store = StoreConfig(lake)
    attempts = {
        "publish": lambda: publish(None, PublishConfig(store, datetime(2026, 1, 11, tzinfo=UTC),
                                                       "duet-bbbbbbb")),
        "promote": lambda: promote(store, "duet-bbbbbbb"),
        "rollback": lambda: rollback(store),
        "retire": lambda: retire(store, "duet-bbbbbbb"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(DuetError) as lost:
            attempt()
        message = str(lost.value)
        assert " lost: the publish of duet-aaaaaaa at 2026-01-10T00:00:00+00:00 (pid " in message, name
        assert f"pid {holder.pid}" in message and "changed nothing" in message, name
    assert not Lake(lake).serving_file.exists()        # nothing recorded, nothing applied
    assert sorted(p.name for p in Lake(lake).feast.iterdir()) == [Lake(lake).serving_lock.name]


def test_a_killed_holder_leaves_no_stale_lock_and_the_lock_is_reentrant(held):
    lake, holder = held
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with serving_lock(lake, "the promote of duet-bbbbbbb"), serving_lock(lake, "its publish"):
        assert "the promote of duet-bbbbbbb" in Lake(lake).serving_lock.read_text()
    assert Lake(lake).serving_lock.read_text() == ""
