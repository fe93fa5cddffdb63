"""mlkit.tracking's modules import one another one way only, imports inside functions included.

The store owns its search cache (FileStore.run_index) and marks lost runs itself; the modules
below it (layout, index, lost, search, ...) take what they need from the store's public methods or
as arguments, never from its private attributes. docs/internals.md draws the arrows.
"""

from __future__ import annotations

import ast

from import_graph import find_cycle, package_files, package_graph, unexplained_function_imports

PACKAGE = "mlkit.tracking"


def test_no_import_cycle() -> None:
    graph = package_graph(PACKAGE)
    assert {"mlkit.tracking.store", "mlkit.tracking.search", "mlkit.tracking.search_grammar"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_store_sits_above_its_helpers() -> None:
    """index, lost, layout and the search grammar never import the store, not even in a function."""
    graph = package_graph(PACKAGE)
    for low in ("layout", "index", "lost", "search_grammar", "files", "entities", "validation"):
        assert "mlkit.tracking.store" not in graph[f"{PACKAGE}.{low}"], low


def test_no_module_reaches_into_the_store() -> None:
    """Only store.py touches a FileStore's private attributes (`store._x`, `self.store._x`)."""
    found = []
    for name, path in package_files(PACKAGE).items():
        if name == "mlkit.tracking.store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and (
                    (isinstance(node.value, ast.Name) and node.value.id == "store")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "store")  # self.store
                )
            ):
                found.append(f"{path.name}:{node.lineno}: store.{node.attr}")
    assert not found, "\n".join(found)


def test_imports_inside_functions_say_why() -> None:
    missing = unexplained_function_imports(PACKAGE)
    assert not missing, "imports inside functions without a comment saying why:\n" + "\n".join(missing)
