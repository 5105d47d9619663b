"""The model store keeps its promise that a model version names exactly one model (issue 23): a checkpoint
whose content does not hash to its name, a name that is not a direct child of ``_models/`` in the
contract's form, non-finite weights or embeddings, and config files that are corrupt or wrongly typed are
refused with a message that names the file and what to do, before anything is written; a corrupt folder
does not break work on another version; a killed pre-training's scratch folder is removed by the next
one, never a running one's. Tiny models saved directly and sequence tables written with deltalake: no
Spark.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from deltalake import DeltaTable, write_deltalake

from benchmarks.synthetic_sequences import synthetic_rows
from core.contracts import CLICK_SEQUENCES, CONVERSION_SEQUENCES, USER_EMBEDDINGS
from core.errors import DuetError
from core.records import from_dict, to_dict
from duet.cli import main as duet
from encoders import checkpoint, model_store
from encoders.config import ModelConfig, ObjectiveConfig, PretrainConfig, TrainConfig
from encoders.embed import embed_snapshots
from encoders.inference import embed_rows
from encoders.pretrain import pretrain
from encoders.variants import UserModel
from tests import feature_lake as fl
from tests.conftest import REPO

SMALL = ModelConfig(dim=16, heads=2, ad_buckets=257, advertiser_buckets=64, conversion_type_buckets=8,
                    click_layers=1, conversion_blocks=1, shared_layers=2, click_only_layers=2,
                    merged_layers=2)
CFG = PretrainConfig(model=SMALL, train=TrainConfig(epochs=1, batch_size=32, device="cpu"))
USERS = 12
SNAPSHOT = datetime(2026, 1, 6, tzinfo=UTC)


def _model(seed: int = 0) -> UserModel:
    torch.manual_seed(seed)
    return UserModel(SMALL, ObjectiveConfig()).eval()


def _sequence_lake(lake: str, snapshots: list[datetime], users: int = USERS) -> None:
    """Both sequence tables, partitioned by snapshot as the sequences job writes them."""
    clicks, conversions = [], []
    for snapshot in snapshots:
        for u in range(users):
            click, conversion = fl.sequence_rows(u, snapshot)
            clicks.append(click)
            conversions += [conversion] if conversion else []
    for table, rows in ((CLICK_SEQUENCES, clicks), (CONVERSION_SEQUENCES, conversions)):
        write_deltalake(table.location(lake), pa.Table.from_pylist(rows, schema=table.arrow_schema()),
                        partition_by=["snapshot_ts"])


@pytest.fixture()
def lake(tmp_path) -> str:
    """A lake with one snapshot of sequences and a checkpoint of a small duet model."""
    path = str(tmp_path / "lake")
    _sequence_lake(path, [SNAPSHOT])
    return path


def _save(lake: str, model: UserModel | None = None) -> str:
    info = {"trained_at": "2026-01-07T00:00:00+00:00"}
    return checkpoint.save(lake, model or _model(), CFG, info).model_version


def _folder(lake: str, version: str) -> Path:
    return Path(lake) / "_models" / version


def _no_embeddings(lake: str) -> bool:
    return not DeltaTable.is_deltatable(USER_EMBEDDINGS.location(lake))


# --- item 4: a checkpoint's content is checked against its name ------------------------------------------


def test_a_checkpoint_whose_config_was_edited_is_refused(lake):
    version = _save(lake)
    config = _folder(lake, version) / "config.json"
    # heads 2 -> 4 still fits the weights (dim 16) and would embed differently under the same name
    config.write_text(config.read_text().replace('"heads": 2', '"heads": 4'))
    for load in (model_store.read, checkpoint.load):
        with pytest.raises(DuetError, match=f"{version}: its content does not match its name") as e:
            load(lake, version)
        assert str(config.parent) in str(e.value) and "duet pretrain" in str(e.value)
    with pytest.raises(DuetError, match="does not match its name"):
        embed_snapshots(lake, [SNAPSHOT], version, log=lambda _: None)
    assert _no_embeddings(lake)


def test_a_checkpoint_under_a_name_its_content_does_not_hash_to_is_refused(lake):
    version = _save(lake)
    for name, message in (("duet-heads8", "not a model version"), ("duet-0000000", "does not match its name"),
                          ("shared-" + version.split("-")[1], "does not match its name")):
        shutil.copytree(_folder(lake, version), _folder(lake, name))
        with pytest.raises(DuetError, match=message):
            checkpoint.load(lake, name)
    assert "duet-heads8" not in model_store.list_versions(lake)   # not a version: never listed or a default
    checkpoint.load(lake, version)                                # the original still loads


def test_non_finite_weights_are_refused_before_anything_is_embedded(lake):
    model = _model()
    with torch.no_grad():
        model.encoder.click.norm.weight[3] = float("nan")
    version = _save(lake, model)                                  # its name is its content's: only NaN fails
    with pytest.raises(DuetError, match=rf"{version}: weights that are not finite .*encoder\.click\.norm"):
        embed_snapshots(lake, [SNAPSHOT], version, log=lambda _: None)
    assert _no_embeddings(lake)


def _overflowing() -> UserModel:
    """Finite weights whose embeddings overflow to infinity and NaN."""
    model = _model()
    with torch.no_grad():
        model.encoder.click.tokens.time.net[0].weight.fill_(1e30)
        model.encoder.click.tokens.time.net[2].weight.fill_(1e30)
    return model


def test_a_model_that_computes_non_finite_embeddings_writes_nothing(lake):
    model = _overflowing()
    rows = synthetic_rows(5, seed=1)
    with pytest.raises(DuetError, match="duet-0000000 gave non-finite embeddings .* for 5 of 5 user"):
        embed_rows(model, rows, "duet-0000000", datetime.now(UTC))
    version = _save(lake, model)
    with pytest.raises(DuetError, match=f"{version} gave non-finite embeddings"):
        embed_snapshots(lake, [SNAPSHOT], version, log=lambda _: None)
    assert _no_embeddings(lake)
    # a good model still embeds every user
    good = _save(lake)
    assert embed_snapshots(lake, [SNAPSHOT], good, log=lambda _: None)[0].embedded == USERS


# --- item 5: a model version is a name, never a path --------------------------------------------------------


def test_a_version_that_is_not_a_direct_child_of_models_is_refused(lake, tmp_path, capsys):
    version = _save(lake)
    evil = tmp_path / "evil"                                      # <lake>/_models/../../evil
    shutil.copytree(_folder(lake, version), evil)
    assert (Path(lake) / "_models" / "../../evil").resolve() == evil
    at = SNAPSHOT.isoformat()
    assert duet(["embed", "--lake", lake, "--snapshot", at, "--model-version", "../../evil"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("duet: error: ") and err.count("\n") == 1 and "not a model version" in err, err
    assert _no_embeddings(lake)
    bad = ["../../evil", f"{version}/../{version}", f"/{version}", f"{version}\n", "", ".", "..",
           "duet-Heads8", "ext-../x"]
    for name in bad:
        for call in (model_store.read, model_store.require_weights, model_store.config_document,
                     checkpoint.load):
            with pytest.raises(DuetError, match="not a model version"):
                call(lake, name)
    assert model_store.check_version(version) == version


# --- item 7: corrupt or wrongly typed config files ----------------------------------------------------------


def test_a_corrupt_config_in_another_folder_does_not_break_work_on_a_version(lake, capsys):
    version = _save(lake)
    broken = _folder(lake, "duet-1234567")
    shutil.copytree(_folder(lake, version), broken)
    (broken / "config.json").write_text('{"model_version": "duet-1234567", "config": {')
    # Work on another version goes on: embedding it, listing versions and their widths.
    assert embed_snapshots(lake, [SNAPSHOT], version, log=lambda _: None)[0].embedded == USERS
    assert model_store.list_versions(lake) == [version]
    assert list(model_store.version_dims(lake)) == [version]
    # What needs the broken folder names its file and says what to do.
    path = str(broken / "config.json")
    with pytest.raises(DuetError, match="is not valid JSON") as e:
        model_store.read(lake, "duet-1234567")
    assert path in str(e.value) and "duet pretrain" in str(e.value)
    # The newest model cannot be told while one folder is unreadable: the default refuses, naming it.
    with pytest.raises(DuetError, match="name the version to use") as e:
        model_store.latest_version(lake)
    assert path in str(e.value) and e.value.fields == ("model_version",)
    with pytest.raises(DuetError, match="no shared model"):    # another variant's default is not blocked
        model_store.latest_version(lake, "shared")
    capsys.readouterr()
    assert duet(["embed", "--lake", lake, "--snapshot", SNAPSHOT.isoformat()]) == 1
    err = capsys.readouterr().err
    assert err.startswith("duet: error: ") and err.count("\n") == 1 and path in err, err
    assert err.rstrip().endswith("(see --model-version)"), err   # the command line names the flag


def test_config_values_of_the_wrong_type_are_refused_naming_the_key(lake):
    for data, message in (({"heads": "4"}, "ModelConfig: heads must be an integer, got '4'"),
                          ({"dim": True}, "ModelConfig: dim must be an integer, got True"),
                          ({"dim": 16.0}, "ModelConfig: dim must be an integer, got 16.0"),
                          ({"dropout": "0"}, "ModelConfig: dropout must be a number, got '0'"),
                          ({"variant": 1}, "ModelConfig: variant must be a string, got 1")):
        with pytest.raises(DuetError, match=message):
            from_dict(ModelConfig, data)
    with pytest.raises(DuetError, match="PretrainConfig: model must be a mapping, got 3"):
        from_dict(PretrainConfig, {"model": 3})
    with pytest.raises(DuetError, match="TrainConfig: bf16 must be true or false, got 'yes'"):
        from_dict(PretrainConfig, {"train": {"bf16": "yes"}})
    assert from_dict(ModelConfig, {"dropout": 0}).dropout == 0    # an integer is a number
    version = _save(lake)
    config = _folder(lake, version) / "config.json"
    config.write_text(config.read_text().replace('"heads": 2', '"heads": "2"'))
    with pytest.raises(DuetError, match="heads must be an integer") as e:
        checkpoint.load(lake, version)
    assert str(config) in str(e.value)
    assert model_store.list_versions(lake) == []                  # unusable: neither listed nor a default


# --- item 8: a killed pre-training's scratch folder -------------------------------------------------------


PRETRAIN_CHILD = """
import json, sys
from core.records import from_dict
from encoders.config import PretrainConfig
from encoders.pretrain import pretrain
pretrain(sys.argv[1], from_dict(PretrainConfig, json.loads(sys.argv[2])), log=lambda _: None)
"""


def _scratch(lake: str) -> set[str]:
    root = Path(lake) / "_models"
    return {p.name for p in root.glob(".examples-*")} if root.is_dir() else set()


def _pretrain_child(lake: str, cfg: PretrainConfig) -> tuple[subprocess.Popen, str]:
    """A pre-training in another process, held while its scratch folder exists: (process, folder)."""
    before = _scratch(lake)
    child = subprocess.Popen([sys.executable, "-c", PRETRAIN_CHILD, lake, json.dumps(
        to_dict(cfg))], cwd=REPO)
    deadline = time.monotonic() + 120
    try:
        while not (new := _scratch(lake) - before):
            assert child.poll() is None and time.monotonic() < deadline, "the pre-training wrote no examples"
            time.sleep(0.02)
        # its shards, not only the folder, so that the folder is what a pre-training leaves when killed
        while not list((Path(lake) / "_models" / next(iter(new))).glob("*.safetensors")):
            assert child.poll() is None and time.monotonic() < deadline, "the pre-training wrote no shard"
            time.sleep(0.02)
    except BaseException:
        child.kill()               # it trains without end
        child.wait()
        raise
    return child, next(iter(new))


def test_a_killed_pretrainings_examples_are_removed_at_the_next_one_but_a_running_ones_are_kept(tmp_path):
    lake = str(tmp_path / "lake")
    _sequence_lake(lake, [SNAPSHOT + timedelta(days=d) for d in range(6)])
    # Endless training, so that the children hold their scratch folders until signalled.
    endless = replace(CFG, train=replace(CFG.train, epochs=100_000, patience=100_000, shard_rows=8))
    running, kept = _pretrain_child(lake, endless)
    os.kill(running.pid, signal.SIGSTOP)                          # alive, but doing nothing
    try:
        killed, left = _pretrain_child(lake, endless)
        killed.kill()
        killed.wait()
        assert _scratch(lake) == {kept, left}                     # what a killed pre-training leaves
        pretrain(lake, CFG, log=lambda _: None)
        assert _scratch(lake) == {kept}                           # the dead one's removed, the live one's not
    finally:
        running.kill()
        running.wait()
    pretrain(lake, CFG, log=lambda _: None)
    assert _scratch(lake) == set()
