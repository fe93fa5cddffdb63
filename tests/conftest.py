"""Fixtures every test shares: each test gets its own store, cache and host state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every mlkit path at tmp_path so tests never touch the user's files or each other."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLKIT_TRACKING_URI", str(store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLKIT_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLKIT_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLKIT_ENV_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("MLKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


@pytest.fixture
def store_root(isolated: Path) -> Path:
    return isolated / "mlruns"


def run_mlkit(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `mlkit` command in a subprocess (python -m mlkit), capturing its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlkit", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input,
    )


@pytest.fixture
def mlkit_cli():
    """The `run_mlkit` helper as a fixture."""
    return run_mlkit
