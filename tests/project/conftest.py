"""Fixtures for MLproject tests: write a project directory from YAML text."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write `MLproject` (dedented) plus any extra files into a fresh directory; return it."""

    def make(mlproject: str | None, files: dict[str, str] | None = None, name: str = "proj") -> Path:
        directory = tmp_path / name
        directory.mkdir()
        if mlproject is not None:
            (directory / "MLproject").write_text(textwrap.dedent(mlproject))
        for rel, text in (files or {}).items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(text)
        return directory

    return make
