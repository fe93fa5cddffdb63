"""Docs under test: every command is in the README and has help; every docs/ link resolves."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main

from mlkit.cli import app

from helpers import REPO


def command_paths() -> list[tuple[str, ...]]:
    """Every leaf command of the CLI, e.g. ("runs", "list")."""

    def walk(command, path=()):
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [leaf for name, child in sorted(children.items()) for leaf in walk(child, (*path, name))]

    return walk(typer.main.get_command(app))


README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_is_in_the_readme(path: tuple[str, ...]):
    group_line = next((line for line in README.splitlines() if f"`mlkit {path[0]}" in line), None)
    assert group_line is not None, f"README never shows `mlkit {path[0]}`"
    if len(path) > 1:
        assert re.search(rf"\b{path[-1]}\b", group_line), (
            f"README's `mlkit {path[0]}` line lacks {path[-1]!r}"
        )


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]):
    result = subprocess.run([sys.executable, "-m", "mlkit", *path, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage: mlkit " + " ".join(path) in " ".join(result.stdout.split())


def test_doc_links_resolve():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
