"""The lazy packages' `if TYPE_CHECKING:` imports (what a type checker sees) name exactly the
`_EXPORTS` that `__getattr__` loads at run time, from the same modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import mlkit

LAZY_PACKAGES = ["mlkit", "mlkit.env", "mlkit.gpu", "mlkit.runner"]


def _type_checking_imports(path: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    names[alias.asname or alias.name] = stmt.module
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checking_imports_match_the_lazy_exports(package):
    module = importlib.import_module(package)
    path = Path(mlkit.__file__).parent.joinpath(*package.split(".")[1:], "__init__.py")
    assert _type_checking_imports(path) == module._EXPORTS
    for name, source in module._EXPORTS.items():  # and each name is really there
        assert getattr(module, name) is getattr(importlib.import_module(source), name)
