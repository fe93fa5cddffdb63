"""Fixtures every test shares: each test gets its own store, cache and host state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_mlkit


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
    # GPUs: what an inherited CUDA_VISIBLE_DEVICES or a Slurm job around the tests would narrow
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("MLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLKIT_ENV_DIR", str(tmp_path / "envs"))
    monkeypatch.setenv("MLKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


@pytest.fixture
def store_root(isolated: Path) -> Path:
    return isolated / "mlruns"


@pytest.fixture
def mlkit_cli():
    """The `run_mlkit` helper as a fixture."""
    return run_mlkit
