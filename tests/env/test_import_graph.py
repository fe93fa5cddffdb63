"""mlkit.env's modules import one another one way only, imports inside functions included.

An import inside a function hides a cycle from Python but not from the reader; imports under
`if TYPE_CHECKING:` alone do not count (they never run). Every import left inside a function
says why in a comment (the import budget: see tests/test_imports.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mlkit.env

PACKAGE = "mlkit.env"
ROOT = Path(mlkit.env.__file__).parent


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that can run, with whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

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


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules of this package an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.module == PACKAGE:  # from mlkit.env import cache
        names = [f"{PACKAGE}.{alias.name}" for alias in node.names]
    else:
        names = [node.module or ""]
    return {name for name in names if name.startswith(PACKAGE + ".") and name.count(".") == 2}


def _modules() -> dict[str, ast.AST]:
    return {
        f"{PACKAGE}.{p.stem}": ast.parse(p.read_text())
        for p in sorted(ROOT.glob("*.py"))
        if p.stem != "__init__"
    }


def test_no_import_cycle() -> None:
    graph = {
        name: set().union(*(_targets(n) for n, _ in _imports(tree))) - {name}
        for name, tree in _modules().items()
    }
    state: dict[str, str] = {}

    def walk(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join([*path, name])
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            walk(target, [*path, name])
        state[name] = "done"

    for name in graph:
        walk(name, [])
    assert "mlkit.env.lockfile" in graph and "mlkit.env.lock" not in graph


def test_imports_inside_functions_say_why() -> None:
    missing = []
    for path in sorted(ROOT.glob("*.py")):
        lines = path.read_text().splitlines()
        for node, in_function in _imports(ast.parse("\n".join(lines))):
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
    assert not missing, "imports inside functions without a comment saying why:\n" + "\n".join(missing)
