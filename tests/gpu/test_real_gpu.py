"""On a machine with a real NVIDIA GPU (skipped elsewhere: see conftest.py)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from mlkit.gpu import GpuRequest, SystemMetricsSampler, probe, reserve
from mlkit.tracking.store import FileStore

from helpers import REPO, run_mlkit

pytestmark = pytest.mark.gpu


def test_real_probe_reads_the_card():
    report = probe()
    assert report.gpus and report.reason is None
    assert report.driver_version and report.cuda_version
    gpu = report.gpus[0]
    assert gpu.uuid.startswith("GPU-") and gpu.name and gpu.pci_bus_id
    assert gpu.memory_total > 0 and gpu.memory_used is not None and gpu.memory_free is not None
    assert gpu.power_draw is not None and gpu.power_draw > 0
    assert gpu.power_limit is not None and gpu.power_limit > 0
    assert gpu.sm_clock is not None and gpu.sm_clock_max is not None and gpu.sm_clock_max >= gpu.sm_clock
    assert gpu.compute_capability and gpu.temperature is not None
    assert gpu.throttle_reasons is not None and gpu.mig_mode is not None


def test_real_mlkit_gpus_json():
    result = run_mlkit("gpus", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["gpus"] and doc["reason"] is None and doc["gpus"][0]["power_draw"]


def test_real_sampler_and_lease(store_root):
    store = FileStore(store_root)
    run_id = store.create_run(store.get_or_create_experiment("gpu")).info.run_id
    with reserve(GpuRequest.parse("1"), run_id=run_id, owner_pid=os.getpid()) as lease:
        assert lease.env["CUDA_VISIBLE_DEVICES"].startswith(("GPU-", "MIG-"))
        sampler = SystemMetricsSampler(store, run_id, lease.uuids, interval=0.2)
        sampler.start(os.getpid())
        import time

        time.sleep(1.5)
        summary = sampler.stop()
    assert sampler.failed_ticks == 0, sampler.errors
    assert len(store.get_metric_history(run_id, "system/gpu_0_memory_usage_megabytes")) >= 3
    assert summary["system/gpu_0_energy_wh"] > 0


TRAIN = textwrap.dedent(
    """
    import os, time
    import torch
    import mlkit

    mlkit.log_metric("cuda_device_count", torch.cuda.device_count())
    mlkit.log_param("cuda_visible_devices", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    x = torch.randn(4096, 4096, device="cuda")
    end = time.time() + 6
    while time.time() < end:
        y = x @ x
        torch.cuda.synchronize()
    """
)


@pytest.mark.torch
def test_real_mlkit_run_records_gpu_metrics(tmp_path: Path, store_root: Path):
    pytest.importorskip("torch")
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "MLproject").write_text("name: tiny\nentry_points:\n  main:\n    command: python train.py\n")
    (project / "train.py").write_text(TRAIN)
    result = run_mlkit(
        "run", str(project), "--gpus", "1", "--system-metrics-interval", "1", "--env-manager", "local",
        "--store", str(store_root), "--json", timeout=300,
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = FileStore(store_root)
    runs = [r for e in store.list_experiments() for r in store.search_runs([e.experiment_id])[0]]
    (run,) = runs
    data = run.data
    assert run.info.status == "FINISHED"
    assert data.metrics["cuda_device_count"] == 1
    assert data.params["cuda_visible_devices"] == data.tags["mlkit.gpu.uuids"]
    assert data.tags["mlkit.gpu.count"] == "1" and data.tags["mlkit.gpu.0.uuid"].startswith(("GPU-", "MIG-"))
    history = store.get_metric_history(run.info.run_id, "system/gpu_0_utilization_percentage")
    assert len(history) >= 3 and max(m.value for m in history) > 0
    assert store.get_metric_history(run.info.run_id, "system/gpu_0_memory_usage_megabytes")
    assert data.metrics["system/gpu_0_energy_wh"] > 0
    assert data.metrics["system/gpu_0_peak_memory_megabytes"] > 60  # a 4096² fp32 tensor is 67 MB
    assert not any(k.startswith("system/gpu_1_") for k in data.metrics)
