"""The house's layers hold: base ``core`` at the bottom, the stages in data-flow order, the conductor on top.

Every ``.py`` file of the project packages is parsed (never imported) and its imports, including those
inside functions and relative ones, form a graph between project modules. The graph must have no circle;
``core`` imports no other project package; a stage imports ``core`` and earlier stages at most, never a
later stage or the conductor ``duet``. The checker is tested on synthetic graphs too, so a broken rule
cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BASE, CONDUCTOR = "core", "duet"
STAGES = ("spark_jobs", "encoders", "feature_repo", "serving", "ranker")  # the order data flows through them
PACKAGES = (BASE, *STAGES, CONDUCTOR)
HEAVY = ("pyspark", "pyarrow", "torch", "great_expectations", "feast", "deltalake", "pandas")

Graph = dict[str, set[str]]


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every .py under the project packages (missing or empty folders are fine)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name ``path`` imports, anywhere in the file, with relative imports made absolute."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            # ``from pkg import x``: x is a submodule or a name of pkg; resolving picks whichever exists.
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> Graph:
    """Project module -> the project modules it imports (a name resolves to its longest module prefix)."""
    modules = project_modules(root)
    graph: Graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(path, module):
            parts = name.split(".")
            prefixes = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
            target = next((p for p in prefixes if p in modules), None)
            if target is not None and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _rank(module: str) -> int:
    """0 for the base, 1.. for the stages in data-flow order, last for the conductor."""
    return PACKAGES.index(module.split(".")[0])


def layer_violations(graph: Graph) -> list[str]:
    """Imports that run back up: the base importing anything of the project above it, a stage importing
    a later stage or the conductor. The conductor may import everything."""
    wrong = []
    for module, targets in sorted(graph.items()):
        if module.split(".")[0] == CONDUCTOR:
            continue
        for target in sorted(targets):
            if _rank(target) > _rank(module):
                wrong.append(f"{module} imports {target}")
    return wrong


def _files(modules: list[str]) -> str:
    found = project_modules(REPO)
    return ", ".join(str(found[m].relative_to(REPO)) if m in found else m for m in modules)


def test_no_import_circles():
    found = circles(import_graph(REPO))
    assert not found, "import circles: " + "; ".join(_files(c) for c in found)


def test_no_import_runs_back_up_the_layers():
    graph = import_graph(REPO)
    wrong = layer_violations(graph)
    files = project_modules(REPO)
    assert not wrong, "imports against the layers (core < " + " < ".join(STAGES) + " < duet): " + "; ".join(
        f"{files[a.split(' imports ')[0]].relative_to(REPO)}: {a}" for a in wrong)


def test_the_graph_sees_the_project():
    graph = import_graph(REPO)
    assert "core.contracts" in graph["spark_jobs.ingest"]
    assert "spark_jobs.ingest" in graph["spark_jobs.taobao"]
    assert "spark_jobs.sequences" in graph["duet.cli"]  # imported inside a handler


def test_core_contracts_loads_nothing_heavy():
    code = ("import core.contracts, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{set(HEAVY)!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# The checker itself, on graphs and files made up to break each rule.

def test_checker_finds_a_circle():
    graph = {"spark_jobs.a": {"spark_jobs.b"}, "spark_jobs.b": {"spark_jobs.c"},
             "spark_jobs.c": {"spark_jobs.a"}, "spark_jobs.d": {"spark_jobs.a"}}
    assert circles(graph) == [["spark_jobs.a", "spark_jobs.b", "spark_jobs.c"]]
    assert circles({"core.a": {"core.b"}, "core.b": set()}) == []


@pytest.mark.parametrize(("module", "target", "allowed"), [
    ("core.contracts", "spark_jobs.parse", False),
    ("core.quality", "duet.cli", False),
    ("spark_jobs.ingest", "duet.cli", False),
    ("spark_jobs.ingest", "encoders.model", False),
    ("encoders.model", "ranker.model", False),
    ("feature_repo.views", "ranker.model", False),
    ("feature_repo.catalog", "serving.publish", False),
    ("serving.publish", "feature_repo.catalog", True),
    ("serving.online", "ranker.model", False),
    ("encoders.model", "spark_jobs.sequences", True),
    ("ranker.model", "core.contracts", True),
    ("duet.cli", "ranker.model", True),
    ("core.spark", "core.errors", True),
])
def test_checker_knows_the_layers(module, target, allowed):
    assert (layer_violations({module: {target}}) == []) == allowed


def test_checker_reads_relative_and_local_imports(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("from .errors import DuetError\n")
    (tmp_path / "core" / "errors.py").write_text("class DuetError(Exception): ...\n")
    (tmp_path / "core" / "late.py").write_text("def f():\n    from ..duet import cli\n    import os\n")
    (tmp_path / "duet").mkdir()
    (tmp_path / "duet" / "cli.py").write_text("from core import late\nfrom core.errors import DuetError\n")
    graph = import_graph(tmp_path)
    assert graph == {"core": {"core.errors"}, "core.errors": set(), "core.late": {"duet.cli"},
                     "duet.cli": {"core.late", "core.errors"}}
    assert layer_violations(graph) == ["core.late imports duet.cli"]
    assert circles(graph) == [["core.late", "duet.cli"]]
