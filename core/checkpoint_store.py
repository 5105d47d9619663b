"""The one checkpoint store: a named folder of files under a root, made current by one atomic operation.

``encoders.checkpoint`` (``<lake>/_models/<model_version>/``) and ``ranker.checkpoint``
(``<lake>/_rankers/<name>/``) both save and read through here. A save writes every file into a fresh hidden
temporary folder next to the target (``.<name>.tmp-XXXXXXXX``), syncs each file and the folder to disk,
then makes it current with **one** atomic step, in one of two modes:

* **write-once** (``replace=False``: the encoders' content-addressed versions, where the same name means
  the same content): the temporary folder is renamed to ``<name>``. Nothing is ever replaced, so that
  rename is the one step, and ``<name>`` stays a plain folder (what Spark's driver, copies of a lake and
  ``encoders.model_store``'s content check read). A complete ``<name>`` is never written again.
* **replace** (``replace=True``: a ranker saved again under the same name): the temporary folder is
  renamed to a hidden version ``.<name>.v-<nanoseconds>-<hex>`` and ``<name>`` is a **symbolic link** to
  it, replaced by making a new link under a temporary name and ``os.replace``-ing it over the old one:
  rename(2) of a link over a link is atomic, so a reader finds the old version or the new one, never
  none and never a mix. Symbolic links rather than a pointer file: whatever opens
  ``<root>/<name>/config.json`` keeps working unchanged through the link (a pointer file would make every
  reader go through this module), and the link's target is relative (the version's name), so a lake
  copied or moved with its links (``cp -a``, ``rsync -a``, ``shutil.copytree``) still reads. The project's
  own folders are local or mounted file systems (``core.lake``), which have links. A reader that opens
  two files through the link could see two versions when a save lands in between: ``read`` resolves the
  link once and reads every file from that one version (again, if a save removed it meanwhile).

After a save, under an exclusive ``flock`` on the root (saves in one root take turns), the old versions
of that name and what killed saves left are removed: ``.<name>.v-*`` other than the current one, any
``.*.tmp-*`` folder and ``.*.link-*`` link (only a dead save leaves one while the lock is held), and the
previous code's leftovers of that name (``.<name>-old``, ``.<name>-XXXXXXXX``). Removal is best-effort and
never makes a save fail; where the file system has no ``flock``, nothing is removed (leftovers are hidden
and ignored). A ranker saved by the previous code (``<name>`` a plain folder) is read as it is and moved
to a hidden version by the next save. Readers list only ``names``: hidden entries are never a checkpoint
(pathlib's ``glob("*")`` matches them: filter with ``is_hidden``).

Standard library only: callers hand over bytes (safetensors, JSON) and get bytes back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from core.errors import DuetError
from core.files import FILE_MODE, fsync_path

FOLDER_MODE = 0o755
_READ_TRIES = 5
_TOKEN = "[a-z0-9_]{8}"   # tempfile's random part (and 4 bytes of hex)
_DEAD_SAVE = re.compile(rf"^\..+\.(?:tmp|link)-{_TOKEN}\Z")


def is_hidden(name: str) -> bool:
    """A hidden entry (a version, a save in progress or a dead save's leftover): never a checkpoint."""
    return name.startswith(".")


def check_name(name: str) -> str:
    """``name`` if it can only name a direct, visible child of a root, else ``DuetError``."""
    if not isinstance(name, str) or not name or is_hidden(name) or "/" in name or "\0" in name:
        raise DuetError(f"not a checkpoint name: {name!r} (a folder's name directly under the store, not "
                        "starting with '.')")
    return name


def names(root: str | os.PathLike) -> list[str]:
    """The checkpoints' names under ``root``, sorted: visible folders (or links to one) only."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not is_hidden(p.name) and p.is_dir())


def _versions(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.v-\d{{20}}-[0-9a-f]{{8}}\Z")


def current(root: str | os.PathLike, name: str) -> Path | None:
    """The folder holding ``name``'s files now (the link's version resolved once), None if there is none.
    Without ``<name>`` (a save killed while moving a previous code's folder), the newest complete version."""
    folder = Path(root)
    entry = folder / check_name(name)
    if entry.is_symlink():
        return folder / os.readlink(entry)
    if entry.is_dir():
        return entry
    if not folder.is_dir():
        return None
    pattern = _versions(name)
    versions = sorted(p.name for p in folder.iterdir() if pattern.match(p.name) and p.is_dir())
    return folder / versions[-1] if versions else None


def read(root: str | os.PathLike, name: str, files: Sequence[str]) -> dict[str, bytes] | None:
    """The bytes of each of ``files`` of ``name``, all from one version; None if there is no complete one."""
    for _ in range(_READ_TRIES):
        folder = current(root, name)
        if folder is None:
            return None
        try:
            return {f: (folder / f).read_bytes() for f in files}
        except (FileNotFoundError, NotADirectoryError):   # replaced and removed meanwhile: read the new one
            continue
    return None


def _complete(folder: Path, files: Mapping[str, bytes]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


@contextmanager
def _locked(root: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on ``root`` for the block; yields whether it is held (False where the file
    system has none)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)   # drops the lock


def _write_temporary(root: Path, name: str, files: Mapping[str, bytes]) -> Path:
    """A new hidden folder under ``root`` holding ``files``, each synced to disk, and the folder too."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        for file, data in files.items():
            if file != Path(file).name or is_hidden(file):
                raise DuetError(f"not a checkpoint file name: {file!r}")
            with open(tmp / file, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp / file, FILE_MODE)
        os.chmod(tmp, FOLDER_MODE)
        fsync_path(tmp, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _stamp(root: Path, name: str) -> Path:
    """A new version's path: ``.<name>.v-<nanoseconds, 20 digits>-<8 hex>``, in the order made."""
    return root / f".{name}.v-{time.time_ns():020d}-{secrets.token_hex(4)}"


def _remove(path: Path) -> None:
    with suppress(OSError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def _clean(root: Path, name: str, keep: str | None) -> None:
    """Remove ``name``'s versions but ``keep``, dead saves' leftovers and the previous code's of ``name``.
    Only while the root's lock is held: no other save is running then."""
    versions = _versions(name)
    legacy = re.compile(rf"^\.{re.escape(name)}-(?:old|{_TOKEN})\Z")
    with suppress(OSError):
        for entry in root.iterdir():
            if entry.name != keep and (versions.match(entry.name) or legacy.match(entry.name)
                                       or _DEAD_SAVE.match(entry.name)):
                _remove(entry)


def save(root: str | os.PathLike, name: str, files: Mapping[str, bytes], *, replace: bool = True) -> Path:
    """Make ``files`` (file name -> bytes) the checkpoint ``<root>/<name>`` (module docstring); return that
    path. ``replace=False``: write-once, an existing complete checkpoint of that name is kept as it is."""
    check_name(name)
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    with _locked(folder) as locked:
        if not replace:
            if not _complete(target, files):
                _publish_once(folder, name, files)
            if locked:
                _clean(folder, name, keep=None)
            return target
        tmp = _write_temporary(folder, name, files)
        try:
            if target.is_dir() and not target.is_symlink():   # the previous code's plain folder
                os.rename(target, _stamp(folder, name))
            version = _stamp(folder, name)
            os.rename(tmp, version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        link = folder / f".{name}.link-{secrets.token_hex(4)}"
        os.symlink(version.name, link)
        try:
            os.replace(link, target)   # the one step that makes the new version current
        except BaseException:
            _remove(link)
            raise
        fsync_path(folder, directory=True)
        if locked:
            _clean(folder, name, keep=version.name)
    return target


def _publish_once(root: Path, name: str, files: Mapping[str, bytes]) -> None:
    """Write-once: the temporary folder renamed to ``<name>``, unless a complete one got there first."""
    tmp = _write_temporary(root, name, files)
    target = root / name
    try:
        os.rename(tmp, target)   # atomic; fails if <name> is a folder that is not empty
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and _complete(target, files):
            return
        raise
    fsync_path(root, directory=True)
