"""Private scratch folders under ``<lake>/_models`` (pre-training's example shards), and the removal of
those a killed process left behind.

A scratch folder is ``_models/.<prefix>-XXXXXXXX`` (hidden, so never taken for a model version) holding a
``.lock`` file on which its owner keeps an exclusive ``flock`` for as long as it uses the folder. The
kernel drops that lock when the owner exits however it exits (SIGKILL and the OOM killer included), so a
folder whose lock can be taken belongs to no live process: ``remove_stale`` removes it, holding the lock
while it does. A folder whose lock is held is never touched. The lock file is locked before it gets its
name (created under another name, locked, renamed), so no process ever sees an unlocked ``.lock`` of a
live owner. A folder without ``.lock`` is either being created this instant or was left by a duet from
before these locks: it is removed only once older than ``LOCKLESS_AGE_S``.

This module never removes anything but hidden folders of the prefix it is given, under ``_models``. The
locks are ``flock`` locks: they hold between processes of one machine (and over NFS, where Linux maps
them to POSIX locks), which is where the encoders' lake lives (a local file system).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.lake import Lake

LOCK = ".lock"
LOCKLESS_AGE_S = 24 * 3600.0   # a day: no pre-training of an older duet is still writing such a folder


@contextmanager
def scratch_folder(lake: str, prefix: str) -> Iterator[Path]:
    """A new folder ``<lake>/_models/.<prefix>-XXXXXXXX``, locked while in use and removed on exit."""
    root = Lake(lake).models
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=root))
    fd = None
    try:
        pending = folder / f"{LOCK}.{os.getpid()}"
        fd = os.open(pending, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.replace(pending, folder / LOCK)   # the name appears already locked
        except OSError:   # a file system without flock (some FUSE, SMB): no lock, removed after a day
            os.close(fd)
            fd = None
            pending.unlink(missing_ok=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def remove_stale(lake: str, prefix: str) -> list[str]:
    """Remove the scratch folders of ``prefix`` that no live process uses; return their names."""
    root = Lake(lake).models
    if not root.is_dir():
        return []
    removed = []
    for folder in sorted(root.glob(f".{prefix}-*")):
        if folder.is_dir() and not folder.is_symlink() and _remove_if_stale(folder):
            removed.append(folder.name)
    return removed


def _remove_if_stale(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:   # removed by another process meanwhile
            return False
        if age <= LOCKLESS_AGE_S:    # being created now, or too recent to judge
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:                 # not readable by us: not ours to judge
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:     # its owner is alive
            return False
        except OSError:             # no flock on this file system: not ours to judge
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)
