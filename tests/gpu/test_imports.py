"""pynvml is imported only inside functions, never by importing mlkit's GPU code."""

from __future__ import annotations

import subprocess
import sys


def test_importing_gpu_code_does_not_import_pynvml():
    code = (
        "import sys\n"
        "import mlkit, mlkit.gpu, mlkit.gpu.devices, mlkit.gpu.select, mlkit.gpu.ledger, mlkit.gpu.sampler\n"
        "import mlkit.units, mlkit.gpu.nvml, mlkit.cli.gpus\n"
        "from mlkit.gpu import GpuRequest, reserve, SystemMetricsSampler, parse_memory, probe\n"
        "GpuRequest.parse('2', min_free_memory=parse_memory('1GiB'))\n"
        "print(sorted(m for m in ('pynvml', 'torch', 'mlkit.gpu.fake') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_probe_imports_pynvml_only_when_called():
    code = "import sys\nfrom mlkit.gpu import probe\nprobe()\nprint('pynvml' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
