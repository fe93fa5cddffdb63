"""`mlkit run` on a real NVIDIA GPU (skipped where there is none): lease, CUDA env, OOM reason."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def real_gpu(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("MLKIT_FAKE_NVML", raising=False)
    from mlkit.gpu import probe

    if not probe().gpus:
        pytest.skip("no NVIDIA GPU here")


GPU_PROJECT = {
    "gpu.py": """
        import json, os, torch, mlkit
        x = torch.randn(2048, 2048, device="cuda")
        for _ in range(50):
            y = x @ x
        torch.cuda.synchronize()
        print(json.dumps({"cvd": os.environ["CUDA_VISIBLE_DEVICES"], "count": torch.cuda.device_count()}))
        mlkit.log_metric("norm", float(y.norm()))
    """,
    "oom.py": """
        import torch
        torch.empty(10**15, dtype=torch.uint8, device="cuda")
    """,
}


def test_one_gpu_is_leased_by_uuid_and_sampled(make_project, mlkit_run, only_run):
    project = make_project(GPU_PROJECT)
    result = mlkit_run(
        "--env-manager", "local", "--gpus", "1", "--system-metrics-interval", "0.5", str(project), "-e", "gpu.py",
        fast=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    run = only_run()
    assert run.info.status == "FINISHED"
    assert seen["count"] == 1
    assert seen["cvd"] == run.data.tags["mlkit.gpu.0.uuid"] == run.data.tags["mlkit.gpu.uuids"]
    assert "norm" in run.data.metrics
    assert any(key.startswith("system/") for key in run.data.metrics)
    from mlkit.gpu.ledger import leased_run_ids

    assert run.info.run_id not in leased_run_ids()  # released at the end
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != seen["cvd"]  # only the child saw it


def test_cuda_oom_is_the_failure_reason(make_project, mlkit_run, only_run):
    project = make_project(GPU_PROJECT)
    result = mlkit_run(
        "--env-manager", "local", "--gpus", "1", "--system-metrics-interval", "0", str(project), "-e", "oom.py",
        fast=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    run = only_run()
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "cuda_oom")
