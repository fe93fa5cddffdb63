"""On a GPU machine: the served model runs on the GPU the server leased (real NVML, real CUDA)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serve.serve_helpers import call, invoke, log_first_pixel, row

pytestmark = [pytest.mark.serve, pytest.mark.torch, pytest.mark.gpu]


def test_served_model_runs_on_the_leased_gpu(torch_ok, serve_cli, registry, monkeypatch):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    monkeypatch.delenv("MLKIT_FAKE_NVML", raising=False)
    log_first_pixel("digits")
    registry.set_alias("digits", "champion", 1)
    server = serve_cli("models:/digits@champion", "--gpus", "1", "--record-interval", "0.2s")
    info = call(server.url, path="/v1/model").json()
    assert info["device"] == "cuda:0"
    assert invoke(server.url, {"inputs": [row(6)]}).json() == {"predictions": [6]}

    # the ledger holds a lease of that GPU for the serving run, and `mlkit gpus` shows it
    gpus = subprocess.run(
        [sys.executable, "-m", "mlkit", "gpus", "--json"], capture_output=True, text=True, timeout=60
    )
    report = json.loads(gpus.stdout)
    leased = [g for g in report["gpus"] if g.get("leased_by") == server.info["run_id"]]
    assert len(leased) == 1
    assert [lease["role"] for lease in report["leases"] if lease["run_id"] == server.info["run_id"]] == [
        "serving"
    ]
    table = subprocess.run(
        [sys.executable, "-m", "mlkit", "gpus"], capture_output=True, text=True, timeout=60
    )
    assert "(serving)" in table.stdout + table.stderr
    # the server process itself is the one on that GPU
    pids = {p["pid"] for p in leased[0].get("processes", [])}
    assert server.proc.pid in pids
    metrics = call(server.url, path="/metrics").body.decode()
    line = next(x for x in metrics.splitlines() if x.startswith("mlkit_serve_gpu_memory_bytes "))
    assert float(line.split()[1]) > 0
    assert server.stop() == 0
