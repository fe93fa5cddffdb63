"""Helpers for the trainer tests: run a project's train.py for real, read what it logged."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, trainer_env

torch = pytest.importorskip("torch")

PROJECTS = REPO / "projects"


def run_train(
    project: str, *args: str, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in the project directory, as `mlkit run` would start it."""
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=PROJECTS / project,
        env=env or trainer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(store_root: Path):
    """The single run in the store (Default experiment)."""
    from mlkit.tracking.store import FileStore

    runs, _ = FileStore(store_root).search_runs(["0"])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


@pytest.fixture
def train():
    """`train("cnn", "--epochs", "1")`: run that project's train.py, return the CompletedProcess."""
    return run_train


@pytest.fixture
def the_run(store_root):
    """`the_run()`: the one run the test created in its store."""
    return lambda: only_run(store_root)


def load_project_module(project: str, name: str):
    """Import projects/<project>/<name>.py under a unique name; its `model` import resolves to
    the same project's model.py (each project has one, so sys.modules['model'] is swapped)."""
    saved = sys.modules.pop("model", None)
    sys.path.insert(0, str(PROJECTS / project))
    try:
        spec = importlib.util.spec_from_file_location(f"{project}_{name}", PROJECTS / project / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PROJECTS / project))
        sys.modules.pop("model", None)
        if saved is not None:
            sys.modules["model"] = saved


@pytest.fixture(scope="session")
def project_module():
    """`project_module("rnn", "train")`: import a project file in-process (see load_project_module)."""
    return load_project_module
