"""Fixtures for the model and registry tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def nets() -> ModuleType:
    """tests/models/nets.py, imported from its path as `mlkit_test_nets` (no fresh interpreter finds it)."""
    pytest.importorskip("torch")
    name = "mlkit_test_nets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "nets.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def store(store_root: Path):
    from mlkit.tracking.store import FileStore

    return FileStore(store_root)


@pytest.fixture
def registry(store_root: Path):
    from mlkit.tracking.registry import RegistryStore

    return RegistryStore(store_root)


@pytest.fixture
def model_run(store):
    """Make a finished run holding a (weightless) model directory; returns its run id."""

    def make(
        metrics: dict[str, float] | None = None, params: dict[str, str] | None = None, with_model: bool = True
    ) -> str:
        run = store.create_run("0")
        run_id = run.info.run_id
        for key, value in (metrics or {}).items():
            store.log_metric(run_id, key, value)
        store.log_params(run_id, params or {})
        if with_model:
            model_dir = store.artifact_dir(run_id) / "model"
            model_dir.mkdir(parents=True)
            (model_dir / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nrun_id: {run_id}\n")
        store.set_terminated(run_id, "FINISHED")
        return run_id

    return make
