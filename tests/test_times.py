"""The one time conversion (``core.times``) and the shared metrics (``core.metrics``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from core.errors import DuetError
from core.metrics import logloss, normalized_entropy, row_losses
from core.times import arrow_micros, micros, sql_timestamp
from tests.conftest import REPO

INSTANT = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
INSTANT_US = 1_767_607_200_123_456


def test_an_instant_is_its_epoch_microseconds_in_any_zone():
    assert micros(INSTANT) == INSTANT_US
    assert micros(INSTANT.astimezone(timezone(timedelta(hours=-5)))) == INSTANT_US
    assert micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0


@pytest.mark.parametrize("convert", [micros, sql_timestamp])
def test_a_naive_datetime_is_refused(convert):
    with pytest.raises(DuetError, match="no time zone"):
        convert(datetime(2026, 1, 5, 10))


def test_the_sql_literal_is_the_instant_in_utc():
    paris = INSTANT.astimezone(timezone(timedelta(hours=1)))
    assert sql_timestamp(paris) == "timestamp'2026-01-05 10:00:00.123456'"
    assert sql_timestamp(datetime(2026, 1, 5, tzinfo=UTC)) == "timestamp'2026-01-05 00:00:00'"


def test_arrow_timestamps_of_any_unit_and_zone_become_microseconds_and_nulls_nan():
    us = pa.array([INSTANT, None], pa.timestamp("us", tz="UTC"))
    got = arrow_micros(us)
    assert got[0] == INSTANT_US and np.isnan(got[1])
    ms = pa.chunked_array([pa.array([INSTANT_US // 1000], pa.timestamp("ms", tz="Europe/Paris")),
                           pa.array([0], pa.timestamp("ms", tz="Europe/Paris"))])
    got = arrow_micros(ms)
    assert got.dtype == np.int64 and got.tolist() == [INSTANT_US // 1000 * 1000, 0]
    assert arrow_micros(pa.array([5], pa.timestamp("us"))).tolist() == [5]     # zone-less: read as UTC
    with pytest.raises(pa.ArrowInvalid):                 # a finer unit must hold whole microseconds
        arrow_micros(pa.array([1], pa.timestamp("ns", tz="UTC")))


def test_core_times_loads_nothing_heavy():
    code = ("import core.times, sys; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pyarrow', 'numpy'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_weights_count_like_repeated_rows_and_probabilities_are_clipped():
    p, y = np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1])
    assert logloss(p, y, np.array([1, 2, 1])) == pytest.approx(logloss(p[[0, 1, 1, 2]], y[[0, 1, 1, 2]]))
    assert normalized_entropy(p, y, np.array([1, 2, 1])) == pytest.approx(
        normalized_entropy(p[[0, 1, 1, 2]], y[[0, 1, 1, 2]]))
    assert row_losses(np.array([0.0, 1.0]), np.array([1, 0])) == pytest.approx(-np.log(1e-7))
    assert np.isnan(normalized_entropy(p, np.ones(3)))   # one class: no base-rate entropy to compare with
