"""``core.records``: the one ``to_dict`` / ``from_dict`` of configs and stage results.

A record goes to JSON and back unchanged, and ``from_dict`` refuses what it cannot be sure of, naming the
key: what the encoders' and the ranker's own readers accepted and refused before is still so."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import DuetError
from core.records import from_dict, optional_key, to_dict
from encoders.config import ModelConfig, PretrainConfig, TrainConfig
from ranker.config import RankerConfig


@dataclass(frozen=True)
class Window:
    start: datetime
    length: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class Run:
    name: str
    seeds: tuple[int, ...] = (1, 2, 3)
    window: Window = field(default_factory=lambda: Window(datetime(2026, 1, 5, tzinfo=UTC)))
    grace: timedelta | None = timedelta(days=1)
    scores: dict[str, float] = field(default_factory=dict)
    note: str | None = optional_key()


def _through_json(record):
    return json.loads(json.dumps(to_dict(record)))


def test_a_nested_record_round_trips_through_json():
    run = Run("a", seeds=(4, 5), window=Window(datetime(2026, 2, 1, 6, tzinfo=UTC), timedelta(hours=36)),
              grace=None, scores={"ne": 0.93}, note="kept")
    data = _through_json(run)
    assert data["window"] == {"start": "2026-02-01T06:00:00+00:00", "length": 129600.0}
    assert data["seeds"] == [4, 5] and data["grace"] is None
    assert from_dict(Run, data) == run


def test_missing_keys_take_the_defaults_and_an_absent_optional_key_is_left_out():
    assert from_dict(Run, {"name": "b"}) == Run("b")
    assert "note" not in to_dict(Run("b"))


def test_lists_become_tuples_and_numbers_become_time():
    window = {"start": "2026-01-05T00:00:00Z", "length": 60}
    run = from_dict(Run, {"name": "c", "seeds": [7], "window": window, "grace": 3600})
    assert run.seeds == (7,) and isinstance(run.seeds, tuple)
    assert run.window == Window(datetime(2026, 1, 5, tzinfo=UTC), timedelta(minutes=1))
    assert run.grace == timedelta(hours=1)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "d", "sedes": [1]}, r"Run: unknown key\(s\) sedes \(known: name, seeds"),
    ({"name": "d", "window": {"start": "2026-01-05", "lenght": 1}}, r"Window: unknown key\(s\) lenght"),
    ({"name": 3}, "Run: name must be a string, got 3"),
    ({"name": "d", "seeds": [1, True]}, r"Run: seeds\[1\] must be an integer, got True"),
    ({"name": "d", "seeds": 1}, "Run: seeds must be a list, got 1"),
    ({"name": "d", "window": 3}, "Run: window must be a mapping, got 3"),
    ({"name": "d", "window": {"start": "soon"}}, "Window: start must be an ISO-8601 time, got 'soon'"),
    ({"name": "d", "grace": "1d"}, "Run: grace must be a number of seconds, got '1d'"),
    ({"name": "d", "scores": {"ne": "low"}}, r"Run: scores\['ne'\] must be a number, got 'low'"),
])
def test_what_cannot_be_trusted_is_refused_naming_the_key(data, message):
    with pytest.raises(DuetError, match=message):
        from_dict(Run, data)


def test_the_encoders_configs_read_as_before():
    cfg = PretrainConfig(model=ModelConfig(variant="shared", dim=32), train=TrainConfig(epochs=3, bf16=False))
    assert from_dict(PretrainConfig, _through_json(cfg)) == cfg
    # The checkpoint's model version hashes this document: it must stay the plain field mapping.
    assert to_dict(cfg)["model"]["dim"] == 32 and list(to_dict(cfg)) == ["model", "objective", "train"]
    assert from_dict(ModelConfig, {"dropout": 0}).dropout == 0        # an integer is a number
    with pytest.raises(DuetError, match="PretrainConfig: model must be a mapping, got 3"):
        from_dict(PretrainConfig, {"model": 3})
    with pytest.raises(DuetError, match="TrainConfig: bf16 must be true or false, got 'yes'"):
        from_dict(PretrainConfig, {"train": {"bf16": "yes"}})


def test_the_ranker_config_reads_its_saved_lists_as_tuples():
    cfg = RankerConfig(hidden=(32, 16), ridge=(1.0, 10.0))
    saved = _through_json(cfg)
    assert saved["hidden"] == [32, 16]
    assert from_dict(RankerConfig, saved) == cfg
    assert from_dict(RankerConfig, {"ridge": [1, 10]}).ridge == (1, 10)   # integers written by a person
    with pytest.raises(DuetError, match=r"RankerConfig: unknown key\(s\) hiden"):
        from_dict(RankerConfig, {"hiden": [8]})
