"""The import budget: `import mlkit` and `mlkit --help` stay light (DESIGN.md, style rule 18)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pynvml", "conda_lock", "rattler", "numpy", "sklearn", "mlflow")


def imported_after(code: str) -> set[str]:
    """Top-level module names present in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_mlkit_is_light():
    loaded = imported_after("import mlkit")
    assert not loaded & {*HEAVY, "typer", "rich", "yaml", "click"}, loaded & {*HEAVY, "typer", "rich", "yaml"}


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["runs", "--help"], ["gpus", "--help"]])
def test_help_imports_no_heavy_modules(argv: list[str]):
    code = f"import sys; sys.argv = ['mlkit', *{argv!r}]\nfrom mlkit.cli import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    loaded = imported_after(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_exits_zero_and_lists_commands():
    result = subprocess.run([sys.executable, "-m", "mlkit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("run", "runs", "experiments", "gpus", "env", "models", "gc", "report"):
        assert f" {command} " in result.stdout or f" {command}\n" in result.stdout, command
