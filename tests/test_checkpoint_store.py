"""One checkpoint store (``core.checkpoint_store``) under both ``encoders.checkpoint`` and
``ranker.checkpoint`` (issue 24, item 4): a save is never seen half done, even when the saving process is
killed at any moment; what a killed save leaves (and what the previous code left: ``.<name>-old``,
``.<name>-XXXXXXXX``) is ignored by every reader and never makes a later save fail; listings of
``_models`` and ``_rankers`` skip hidden folders.

The kill trials fork their savers from a forkserver that has imported torch once (a fresh interpreter
takes ~2 s to import it on this machine), then SIGKILL each at a random moment of its save loop.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.lake import Lake
from core.records import to_dict
from ranker.checkpoint import load_ranker, save_ranker
from ranker.config import RankerConfig
from ranker.model import Ranker

NAME = "duet-1234567"
# ad_ids: a 65536 x 8 table, so that a checkpoint is ~2 MB and a save takes long enough to be hit mid-write
CFG = RankerConfig(ad_ids=True, ad_buckets=1 << 16)
USER_WIDTH = 4
TRIALS = 150          # a kill lands in the previous code's rename-and-remove window ~1 time in 30
DISK_TRIALS = 30      # where there is no tmpfs: each save waits for the disk (fsync: ~60 ms here)
MIN_TRIALS, BUDGET_S = 20, 20.0   # on a loaded machine: stop after BUDGET_S, but never before MIN_TRIALS
TMPFS = Path("/dev/shm")


@pytest.fixture()
def kill_lake(tmp_path):
    """(lake, trials): a lake on tmpfs where there is one. A kill tests what a process's death leaves, which
    does not depend on the disk; fsync to this machine's disk makes a save ~20x slower."""
    if not (TMPFS.is_dir() and os.access(TMPFS, os.W_OK)):
        yield str(tmp_path / "lake"), DISK_TRIALS
        return
    folder = tempfile.mkdtemp(prefix="duet-kill-", dir=TMPFS)
    try:
        yield f"{folder}/lake", TRIALS
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ranker(marker: float) -> Ranker:
    """A ranker whose every floating-point tensor holds ``marker``: a mix of two saves shows."""
    model = Ranker(CFG, USER_WIDTH)
    _mark(model, marker)
    return model


def _mark(model: Ranker, marker: float) -> None:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(marker)


def _marker_of(model: Ranker, document: dict) -> float:
    """The marker of a loaded checkpoint; AssertionError if its weights and its document disagree."""
    marker = document["marker"]
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert bool((tensor == marker).all()), f"{name} is not {marker}: a mix of two saves"
    return marker


def _save_forever(lake: str, first: int, done) -> None:
    """The child: save the ranker again and again, each save with the next marker; ``done`` is the last
    marker whose save returned."""
    torch.set_num_threads(1)
    model = _ranker(first)
    marker = first
    while True:
        _mark(model, marker)
        save_ranker(lake, NAME, model, CFG, {"marker": marker})
        done.value = marker
        marker += 1


def _save_time(lake: str) -> float:
    """The time one save takes here (what the kills are spread over)."""
    model = _ranker(0)
    started = time.perf_counter()
    for marker in range(3):
        _mark(model, marker)
        save_ranker(lake, NAME, model, CFG, {"marker": marker})
    return (time.perf_counter() - started) / 3


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.test_checkpoint_store"])
    return context


def _kill_trials(lake: str, trials: int, seed: int = 24) -> tuple[int, list[str]]:
    """Kill a saving child up to ``trials`` times at random moments; after each kill, load and check.
    Returns the trials run and what went wrong (empty: every load gave exactly one complete save, and every
    save succeeded)."""
    rng = random.Random(seed)
    context = _context()
    window = 2 * _save_time(lake)
    problems: list[str] = []
    first = 1000
    started = time.monotonic()
    trial = 0
    while trial < trials and (trial < MIN_TRIALS or time.monotonic() - started < BUDGET_S):
        trial += 1
        done = context.Value("d", -1.0, lock=False)
        child = context.Process(target=_save_forever, args=(lake, first, done), daemon=True)
        child.start()
        deadline = time.monotonic() + 30
        while done.value < first and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        if done.value < first:   # the save after the previous kill failed
            child.kill()
            child.join()
            problems.append(f"trial {trial}: a save after a kill failed (exit code {child.exitcode})")
            first += 1000
            continue
        time.sleep(rng.uniform(0, window))
        child.kill()
        child.join()
        last = int(done.value)
        try:
            model, document = load_ranker(lake, NAME)
            marker = _marker_of(model, document)
        except Exception as e:   # noqa: BLE001 - every way a load can fail is what is counted
            problems.append(f"trial {trial}: load after a kill failed: {type(e).__name__}: {e}")
        else:
            if marker not in (last, last + 1):
                problems.append(f"trial {trial}: loaded save {marker}, expected {last} or {last + 1}")
        first = last + 1000
    return trial, problems


def test_a_ranker_save_killed_at_any_moment_leaves_one_complete_checkpoint(kill_lake):
    lake, trials = kill_lake
    run, problems = _kill_trials(lake, trials)
    assert not problems, f"{len(problems)} of {run} kill trials failed:\n" + "\n".join(problems)
    # what the kills left is cleaned by the next save: one version, the link, nothing else
    save_ranker(lake, NAME, _ranker(7), CFG, {"marker": 7})
    entries = sorted(p.name for p in Lake(lake).rankers.iterdir())
    assert len(entries) == 2 and entries[1] == NAME and entries[0].startswith(f".{NAME}.v-"), entries
    assert _marker_of(*load_ranker(lake, NAME)) == 7


def _old_layout(lake: str, marker: float) -> Path:
    """A ranker as the previous code saved it: a plain folder ``_rankers/<name>/``."""
    folder = Lake(lake).ranker(NAME)
    folder.mkdir(parents=True)
    model = _ranker(marker)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"config": to_dict(CFG), "user_width": USER_WIDTH,
                                                    "marker": marker}))
    return folder


def test_what_the_previous_code_left_is_read_ignored_and_replaced(tmp_path):
    lake = str(tmp_path / "lake")
    folder = _old_layout(lake, 1)
    assert _marker_of(*load_ranker(lake, NAME)) == 1               # an old lake's ranker still loads
    shutil.copytree(folder, folder.with_name(f".{NAME}-old"))      # a kill after the old code's first rename
    half = folder.with_name(f".{NAME}-k3x9_q2a")                    # ... or in the middle of its write
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 100)
    assert _marker_of(*load_ranker(lake, NAME)) == 1               # leftovers are not read
    save_ranker(lake, NAME, _ranker(2), CFG, {"marker": 2})        # ... and do not make a save fail
    assert _marker_of(*load_ranker(lake, NAME)) == 2
    save_ranker(lake, NAME, _ranker(3), CFG, {"marker": 3})
    assert _marker_of(*load_ranker(lake, NAME)) == 3
    names = sorted(p.name for p in Lake(lake).rankers.iterdir())
    assert names[1:] == [NAME] and len(names) == 2, names          # the leftovers are gone


def test_saves_of_two_names_keep_both(tmp_path):
    """A save removes its own name's old versions and dead saves' leftovers, never another name's."""
    lake = str(tmp_path / "lake")
    save_ranker(lake, "shared-7654321", _ranker(5), CFG, {"marker": 5})
    save_ranker(lake, NAME, _ranker(6), CFG, {"marker": 6})
    assert _marker_of(*load_ranker(lake, "shared-7654321")) == 5
    assert _marker_of(*load_ranker(lake, NAME)) == 6


# -- the encoders' write-once checkpoints under _models ---------------------------------------------------


def test_a_listing_of_models_ignores_hidden_folders_and_a_save_removes_dead_saves_leftovers(tmp_path):
    from duet.stage_cache import checkpoint_configs
    from encoders import checkpoint, model_store
    from encoders.config import ModelConfig, ObjectiveConfig, PretrainConfig
    from encoders.variants import UserModel

    small = ModelConfig(dim=16, heads=2, ad_buckets=257, advertiser_buckets=64, conversion_type_buckets=8,
                        click_layers=1, conversion_blocks=1, shared_layers=2, click_only_layers=2,
                        merged_layers=2)
    lake = str(tmp_path / "lake")
    torch.manual_seed(0)
    saved = checkpoint.save(lake, UserModel(small, ObjectiveConfig()).eval(), PretrainConfig(model=small), {})
    root = Lake(lake).models
    # What killed saves leave: a complete copy under a temporary name (killed just before its rename), a
    # folder of the previous code's temporary name; and a live pre-training's scratch folder.
    shutil.copytree(root / saved.model_version, root / f".{saved.model_version}.tmp-k3x9_q2a")
    shutil.copytree(root / saved.model_version, root / ".duet-7654321-abcd_123")
    (root / ".examples-a1b2c3d4").mkdir()
    assert model_store.list_versions(lake) == [saved.model_version]
    assert set(checkpoint_configs(Lake(lake))) == {saved.model_version}
    torch.manual_seed(1)
    other = checkpoint.save(lake, UserModel(small, ObjectiveConfig()).eval(), PretrainConfig(model=small), {})
    assert model_store.list_versions(lake) == sorted([saved.model_version, other.model_version])
    assert {p.name for p in root.iterdir()} == {saved.model_version, other.model_version,
                                                ".duet-7654321-abcd_123", ".examples-a1b2c3d4"}
    checkpoint.load(lake, saved.model_version)                     # write-once: still there, still its own
    assert checkpoint.save(lake, checkpoint.load(lake, other.model_version)[0], PretrainConfig(model=small),
                           {"again": True}).model_version == other.model_version
    assert json.loads((root / other.model_version / "config.json").read_text())["info"] == {}


# -- the store itself, without torch: a write-once save killed mid-write -----------------------------------


def _write_once_forever(root: str, first: int, size: int, done) -> None:
    from core import checkpoint_store

    n = first
    while True:
        payload = bytes([n % 251]) * size
        checkpoint_store.save(Path(root), f"m{n}", {"a.bin": payload, "b.json": json.dumps(n).encode()},
                              replace=False)
        done.value = n
        n += 1


def test_a_write_once_save_killed_mid_write_leaves_complete_folders_only(kill_lake):
    from core import checkpoint_store

    root = Path(kill_lake[0]) / "store"
    context = _context()
    rng = random.Random(4)
    size = 4 << 20
    first = 1
    for trial in range(8):
        done = context.Value("d", -1.0, lock=False)
        child = context.Process(target=_write_once_forever, args=(str(root), first, size, done), daemon=True)
        child.start()
        while done.value < first and child.is_alive():
            time.sleep(0.002)
        assert done.value >= first, f"trial {trial}: a save after a kill failed"
        time.sleep(rng.uniform(0, 0.05))
        child.kill()
        child.join()
        names = checkpoint_store.names(root)
        assert all(not n.startswith(".") for n in names)
        for name in names:
            n = int(name[1:])
            files = checkpoint_store.read(root, name, ("a.bin", "b.json"))
            assert files["b.json"] == json.dumps(n).encode() and files["a.bin"] == bytes([n % 251]) * size
        first = int(done.value) + 100
    checkpoint_store.save(root, "last", {"a.bin": b"x"}, replace=False)
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]


def test_names_that_could_leave_the_root_are_refused(tmp_path):
    from core import checkpoint_store
    from core.errors import DuetError

    for name in ("", ".", "..", ".hidden", "a/b", "../x"):
        with pytest.raises(DuetError, match="not a checkpoint name"):
            checkpoint_store.save(tmp_path, name, {"a": b""})
