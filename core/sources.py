"""The project's own source files, read the same way from a checkout and from the zip that
``infra/submit.sh`` ships to a cluster (``duet_jobs.zip`` on ``sys.path``).

Code hashes (``duet.stage_cache.code_fingerprint``, ``core.quality.suite_fingerprint``) read source bytes.
``Path(__file__).read_bytes()`` fails inside a zip (``NotADirectoryError``) and ``Path.rglob`` finds nothing
there, so a hash made that way broke or silently left the code out under spark-submit. This reads through
``importlib.resources``, which serves both, and names every file by its path from the package's parent
(``core/quality.py``), so a checkout and its zip give the same hash.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def source(package: str, name: str) -> bytes:
    """The bytes of module file ``name`` (e.g. ``quality.py``) of ``package``."""
    return files(package).joinpath(name).read_bytes()


def package_sources(package: str, suffix: str = ".py") -> list[tuple[str, bytes]]:
    """Every ``suffix`` file under ``package`` (recursively), as (``package/sub/name``, bytes), sorted by
    path parts."""
    found: list[tuple[tuple[str, ...], bytes]] = []

    def walk(folder: Traversable, parts: tuple[str, ...]) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, (*parts, entry.name))
            elif entry.name.endswith(suffix):
                found.append(((*parts, entry.name), entry.read_bytes()))

    walk(files(package), (package,))
    return [("/".join(parts), data) for parts, data in sorted(found, key=lambda f: f[0])]
