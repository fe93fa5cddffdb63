"""mlkit's modules import one another one way only, imports inside functions included.

An import inside a function hides a cycle from Python but not from the reader: each package
(`mlkit.gpu`, `mlkit.project`, ..., and the top-level modules of `mlkit` itself) is a graph of
its modules, and that graph has no cycle. Imports under `if TYPE_CHECKING:` alone do not count
(they never run). Every import left inside a function says why in a comment (the import budget:
see tests/test_imports.py). docs/internals.md draws the resulting package map. The walker
(`imports`, `find_cycle`, the comment check) is tests/import_graph.py, shared with the per-package
tests; this file adds the resolution of any `mlkit` import to a module and runs it on every package.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from import_graph import find_cycle, imports, unexplained_function_imports

import mlkit

ROOT = Path(mlkit.__file__).parent

EXCLUDED_PACKAGES: set[str] = set()  # every package is checked

# Packages whose imports inside functions do not all say why yet (issue 15): the comment check
# skips them. Take a package out of this set once each of its function-level imports has its
# comment; the set only shrinks. (Their cycles are checked all the same.)
COMMENTS_PENDING: set[str] = set()


def _module_name(path: Path) -> str:
    parts = ["mlkit", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _package_of(name: str, is_package: bool) -> str:
    """The package whose graph a module belongs to: a package's __init__ belongs to itself."""
    return name if is_package else name.rpartition(".")[0]


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


SOURCES = _sources()


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> set[str]:
    """The mlkit modules an import statement loads (`from mlkit.x import y`: y when it is a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in SOURCES}
    base = node.module or ""
    if node.level:  # relative: from . import x / from ..y import z
        here = importer if _is_package(SOURCES[importer]) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            here = here.rpartition(".")[0]
        base = f"{here}.{base}" if base else here
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in SOURCES:
            found.add(f"{base}.{alias.name}")
        elif base in SOURCES:
            found.add(base)
    return found


@functools.cache
def _graph() -> dict[str, set[str]]:
    """Each mlkit module to the modules of its own package that it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in SOURCES.items():
        package = _package_of(name, _is_package(path))
        if package in EXCLUDED_PACKAGES:
            continue
        targets = set()
        for node, _ in imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, name):
                if target != name and _package_of(target, _is_package(SOURCES[target])) == package:
                    targets.add(target)
        graph[name] = targets
    return graph


PACKAGES = sorted({_package_of(n, _is_package(p)) for n, p in SOURCES.items()} - EXCLUDED_PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_within_package(package: str) -> None:
    graph = _graph()
    members = {
        name: targets
        for name, targets in graph.items()
        if name in graph and _package_of(name, _is_package(SOURCES[name])) == package
    }
    cycle = find_cycle(members)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walker_sees_what_it_must() -> None:
    """The graph is not empty by accident: known one-way edges are found, TYPE_CHECKING ones are not."""
    graph = _graph()
    assert {"mlkit.gpu", "mlkit.project", "mlkit.env", "mlkit.runner", "mlkit.cli"} <= set(PACKAGES)
    assert "mlkit.env.lockfile" in graph["mlkit.env.spec"]  # from mlkit.env.lockfile import ...
    assert "mlkit.env.lock" not in SOURCES  # "lock" is an flock; a conda-lock.yml is a lockfile
    assert "mlkit.gpu.nvml" in graph["mlkit.gpu.devices"]  # from mlkit.gpu import nvml (a module)
    assert "mlkit.gpu.ledger" not in graph["mlkit.gpu.devices"]  # only under TYPE_CHECKING, if at all
    assert "mlkit.project.model" in graph["mlkit.project.load"]
    assert "mlkit.units" in graph and "mlkit.gpu.units" not in SOURCES
    relative = ast.parse("from . import nvml\nfrom ..errors import UsageError\nfrom .select import select")
    found = set().union(*(_targets(node, "mlkit.gpu.devices") for node, _ in imports(relative)))
    assert found == {"mlkit.gpu.nvml", "mlkit.errors", "mlkit.gpu.select"}
    hidden = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mlkit.errors\n")
    assert [type(node) for node, _ in imports(hidden)] == [ast.ImportFrom]
    inside = ast.parse("def f():\n    import mlkit.errors\n")
    assert [in_function for _, in_function in imports(inside)] == [True]
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert cycle == ["a", "b", "c", "a"]


def test_imports_inside_functions_say_why() -> None:
    """(Modules of each package; a package's own __init__ is not read by the shared walker.)"""
    missing = [
        f"{package}: {line}"
        for package in PACKAGES
        if package not in COMMENTS_PENDING
        for line in unexplained_function_imports(package)
    ]
    assert not missing, "imports inside functions without a comment saying why:\n" + "\n".join(missing)


def _top_package(name: str) -> str:
    """`mlkit.gpu.ledger` -> `mlkit.gpu`; a top-level module (`mlkit.fsio`) is its own node."""
    return ".".join(name.split(".")[:2])


def test_packages_import_one_another_one_way() -> None:
    """The package map of docs/internals.md: between packages (and top-level modules) every arrow
    points one way, imports inside functions included."""
    graph: dict[str, set[str]] = {}
    for name, path in SOURCES.items():
        if name == "mlkit":
            continue  # the package's own __init__: lazy exports name their modules as strings
        here = _top_package(name)
        for node, _ in imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, name):
                there = _top_package(target)
                if there != here and there != "mlkit":
                    graph.setdefault(here, set()).add(there)
    cycle = find_cycle(graph)
    assert cycle is None, "packages import each other both ways: " + " -> ".join(cycle or [])
