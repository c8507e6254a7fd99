"""The package's modules (and those of benchmarks/reproduction/, reproduce.py's parts) import one another without a
cycle.

The graph has an edge for every import of a module of the same package, at module level and inside functions alike: an
import moved into a function still makes each module need the other, it only hides the cycle from Python's import
order. `from gon_lightning.a import b` is an edge to the module `a.b` when `b` is one, else to `a`. An import of a
module's own ancestor package (`from gon_lightning import __version__` in gon_lightning.export.hub) is no edge: Python
imports every ancestor package before the module anyway, and counting it would make each package whose `__init__`
re-exports its modules a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of `package` (a folder) and the modules of the same package it imports."""
    root = package.parent
    modules = {module_name(path, root): path for path in sorted(package.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported |= {
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                }
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{path}:{node.lineno}: a relative import; the package imports absolutely")
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {module for module in imported if module in modules} - ancestors - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


@pytest.mark.parametrize("package", ["gon_lightning", "benchmarks/reproduction"])
def test_no_import_cycle_in_the_package(package: str):
    found = cycle(import_graph(REPO / package))
    assert found is None, f"import cycle: {' -> '.join(found)}"


@pytest.mark.parametrize("where", ["module level", "in a function"])
def test_a_cycle_is_found_wherever_the_import_stands(tmp_path: Path, where: str):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.sub.b import B\nVERSION = 1\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from pkg import VERSION\nimport os\nA = 1\n")
    back = "from pkg.sub import b\n" if where == "module level" else "def f():\n    from pkg.sub.b import B\n"
    (package / "sub" / "b.py").write_text("from pkg.sub.a import A\nB = A\n")
    assert cycle(import_graph(package)) is None  # ancestors are no edge: pkg -> b -> a -> pkg is not a cycle
    (package / "sub" / "a.py").write_text("from pkg import VERSION\nimport os\n" + back)
    assert sorted(set(cycle(import_graph(package)))) == ["pkg.sub.a", "pkg.sub.b"]
