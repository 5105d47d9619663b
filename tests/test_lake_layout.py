"""The lake's layout has one owner: a path under a lake is spelled in ``core/lake.py`` (the project's folders,
``_models``, ``_feast``, ...) or ``core/contracts.py`` (the tables' paths, ``raw/clicks``, ...), never where
it is used. So is a feature view's name, in ``feature_repo/catalog.py``.

Every ``.py`` file of the project packages is parsed (never imported) and its string literals are read,
f-strings' literal parts included, docstrings left out (they describe the layout to a reader; code and
messages build paths from the owner's constants, so that a message can never disagree with the code). A
spelling anywhere else fails with its file and line. The checker is tested on a synthetic file too, so a
broken scan cannot pass unnoticed. ``feature_repo/feature_store.yaml`` must spell its Feast paths (``feast
-c feature_repo`` reads it as is): it is checked to agree with ``core.lake`` instead.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from core import lake as lake_layout
from core.contracts import TABLES
from tests.conftest import REPO

PACKAGES = ("core", "spark_jobs", "encoders", "feature_repo", "serving", "ranker", "duet", "benchmarks")
OWNERS = {"core/lake.py", "core/contracts.py"}

LAKE_PATHS = (*lake_layout.FOLDERS, *(table.path for table in TABLES))
# A name as a whole path component: not part of a longer word (``data_quality``, ``raw/clicks_v2``).
LAKE_PATH = re.compile(r"(?<![\w.-])(?:" + "|".join(map(re.escape, LAKE_PATHS)) + r")(?![\w-])")


def literals(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal of ``source`` but its documentation: a string standing alone
    as a statement (a docstring, of a module, class, function or attribute)."""
    tree = ast.parse(source, filename=filename)
    documentation = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation:
            yield node.lineno, node.value


def spellings(source: str, pattern: re.Pattern[str], filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, excerpt) of each literal of ``source`` in which ``pattern`` finds a spelling: the spelling
    with up to 30 characters of the literal either side (a script in a string can be long)."""
    found = []
    for line, text in literals(source, filename):
        match = pattern.search(text)
        if match:
            found.append((line, text[max(0, match.start() - 30):match.end() + 30]))
    return sorted(found)


def project_files() -> dict[str, Path]:
    return {path.relative_to(REPO).as_posix(): path
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def offenders(pattern: re.Pattern[str], owners: set[str]) -> list[str]:
    found = []
    for name, path in project_files().items():
        if name not in owners:
            found += [f"{name}:{line}: {text!r}" for line, text in spellings(path.read_text(), pattern, name)]
    return found


def test_the_scan_finds_paths_in_code_and_messages_and_skips_documentation():
    source = '''"""A module under <lake>/_models, reading raw/clicks."""
def f(lake, version):
    """Writes _feast/serving.json."""
    x = f"{lake}/_models/{version}"
    y = "_rankers"
    z = f"no rows in raw/conversions under {lake}"
    ok = ("data_quality", "_quality_score", "raw/clicks_v2", "my_stages", "features/click_sequences_old")
    return Path(lake) / "_quality" / "summary.json"
'''
    assert spellings(source, LAKE_PATH) == [(4, "/_models/"), (5, "_rankers"),
                                            (6, "no rows in raw/conversions under "), (8, "_quality")]


def test_no_lake_path_is_spelled_outside_its_owner():
    found = offenders(LAKE_PATH, OWNERS)
    assert not found, ("a lake path spelled outside core/lake.py and core/contracts.py; ask a core.lake.Lake "
                       "(or a core.contracts table) for it:\n" + "\n".join(found))


def test_only_the_lake_tells_a_uri_from_a_local_path():
    found = offenders(re.compile(r"\A://\Z"), {"core/lake.py"})
    assert not found, "use core.lake.is_uri (or core.lake.absolute):\n" + "\n".join(found)


def test_a_feature_view_name_is_spelled_once():
    from feature_repo.catalog import CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW

    names = re.compile("|".join(map(re.escape, (CLICK_VIEW, CONVERSION_VIEW, SUMMARY_VIEW))))
    found = offenders(names, {"feature_repo/catalog.py"})
    assert not found, "import the view's name from feature_repo.catalog:\n" + "\n".join(found)


def test_feature_store_yaml_keeps_feast_where_the_lake_says():
    """``feast -c feature_repo`` reads the yaml as is, so it spells ``${DUET_LAKE}/_feast/...`` itself;
    with the variable given a root, its paths are the ``Lake``'s."""
    from feature_repo.catalog import LAKE_VARIABLE

    lake = lake_layout.Lake("/lake")
    text = (REPO / "feature_repo" / "feature_store.yaml").read_text()
    config = yaml.safe_load(text.replace("${" + LAKE_VARIABLE + "}", lake.root))
    assert config["registry"]["path"] == str(lake.registry)
    assert config["online_store"]["path"] == str(lake.online_db)
    assert Path(config["offline_store"]["spark_conf"]["spark.sql.warehouse.dir"]).parent == lake.feast
