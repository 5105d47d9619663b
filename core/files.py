"""Writing a file so that a reader never sees half of it: one way for the whole project.

``atomic_path`` is the one atomic write: a hidden temporary file next to the target (so the rename stays on
one file system), written by the caller, flushed to disk (``fsync``), then renamed over the target by one
``os.replace``; the directory is synced so the rename itself survives a crash. On an exception the
temporary file is removed and the target is untouched. ``write_atomic`` is it for text or bytes.
``core.checkpoint_store`` does the same for a folder of files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

FILE_MODE = 0o644   # mkstemp makes files private; what is written here is meant to be shared like any output


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` a folder's entries) to disk. A file system that cannot
    sync a folder (some network and FUSE ones) is let be: the rename is still atomic there."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (its folder created if missing) for the caller to write; when the
    block ends without an exception it is synced and renamed over ``path``, else removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(target.parent, directory=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
