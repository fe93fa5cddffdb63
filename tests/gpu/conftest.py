"""GPU test fixtures: the stand-in NVML by scenario, its state file, and the `gpu` marker's skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def _real_gpu_count() -> int:
    """GPUs the real NVML sees (the stand-in switched off for the call)."""
    saved = os.environ.pop("MLKIT_FAKE_NVML", None)
    try:
        from mlkit.gpu.devices import read_gpus

        return len([g for g in read_gpus([]).gpus if not g.lost])
    finally:
        if saved is not None:
            os.environ["MLKIT_FAKE_NVML"] = saved


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    gpu_items = [item for item in items if item.get_closest_marker("gpu") and here in Path(item.path).parents]
    if gpu_items and _real_gpu_count() == 0:
        skip = pytest.mark.skip(reason="needs a real NVIDIA GPU (probe() found none)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_fake_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLKIT_FAKE_NVML", raising=False)
    monkeypatch.delenv("MLKIT_FAKE_NVML_STATE", raising=False)
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch):
    """Select a stand-in scenario for this process and its subprocesses: fake_nvml("four_idle")."""

    def use(scenario: str) -> None:
        monkeypatch.setenv("MLKIT_FAKE_NVML", scenario)

    return use


class FakeState:
    """The MLKIT_FAKE_NVML_STATE file: change a fake GPU while something watches it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gpus: dict[str, dict] = {}

    def set(self, index: int, **fields) -> None:
        self.gpus.setdefault(str(index), {}).update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": self.gpus}))
        os.replace(tmp, self.path)  # a new inode: readers see the change at once


@pytest.fixture
def fake_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeState:
    state = FakeState(tmp_path / "fake-nvml-state.json")
    monkeypatch.setenv("MLKIT_FAKE_NVML_STATE", str(state.path))
    return state
