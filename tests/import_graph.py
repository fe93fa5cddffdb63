"""The import graph of one mlkit package, read from the source (imports inside functions included).

An import inside a function hides a cycle from Python but not from the reader; imports under
`if TYPE_CHECKING:` alone do not count (they never run). Tests import it directly:
`from import_graph import find_cycle, package_graph, unexplained_function_imports`.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ImportNode = ast.Import | ast.ImportFrom


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST) -> list[tuple[ImportNode, bool]]:
    """Every import that can run, with whether it sits inside a function."""
    found: list[tuple[ImportNode, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def _targets(node: ImportNode, package: str) -> set[str]:
    """The modules of `package` (one level below it) an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.module == package:  # from mlkit.tracking import files
        names = [f"{package}.{alias.name}" for alias in node.names]
    else:
        names = [node.module or ""]
    depth = package.count(".") + 1
    return {".".join(name.split(".")[: depth + 1]) for name in names if name.startswith(package + ".")}


def package_files(package: str) -> dict[str, Path]:
    """module name -> source file, for the modules directly in `package` (not __init__)."""
    root = Path(importlib.import_module(package).__file__ or "").parent
    return {f"{package}.{p.stem}": p for p in sorted(root.glob("*.py")) if p.stem != "__init__"}


def package_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (at the top or inside functions)."""
    graph = {}
    for name, path in package_files(package).items():
        found = [_targets(node, package) for node, _ in imports(ast.parse(path.read_text()))]
        graph[name] = set().union(*found) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, str] = {}

    def walk(name: str, path: list[str]) -> list[str] | None:
        if state.get(name) == "done":
            return None
        if state.get(name) == "open":
            return [*path[path.index(name) :], name]
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            cycle = walk(target, [*path, name])
            if cycle:
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        cycle = walk(name, [])
        if cycle:
            return cycle
    return None


def unexplained_function_imports(package: str) -> list[str]:
    """'file:line: import' for each import inside a function with no comment saying why."""
    missing = []
    for path in package_files(package).values():
        lines = path.read_text().splitlines()
        for node, in_function in imports(ast.parse("\n".join(lines))):
            if not in_function:
                continue
            first = node.lineno - 1
            while first > 0 and lines[first - 1].strip().startswith(("import ", "from ")):
                first -= 1  # a block of imports shares one comment
            said = lines[first - 1].strip().startswith("#") or any(
                "#" in lines[i] for i in range(first, node.end_lineno or node.lineno)
            )
            if not said:
                missing.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return missing
