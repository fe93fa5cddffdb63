"""GPUs: the NVML probe, the selection policy, the host's lease ledger and the system-metrics sampler.

    report = probe()                                   # GpuReport; no driver -> gpus=[], reason
    request = GpuRequest.parse("1", min_free_memory=parse_memory("20GiB"))
    with reserve(request, run_id=run_id, owner_pid=os.getpid(), wait=3600) as lease:
        env.update(lease.env)                          # CUDA_VISIBLE_DEVICES by UUID

Names load lazily; nothing here imports pynvml (it is imported inside the functions that call it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlkit._lazy import lazy_exports

_EXPORTS = {
    "probe": "mlkit.gpu.host",
    "GpuReport": "mlkit.gpu.devices",
    "GpuInfo": "mlkit.gpu.devices",
    "GpuProcess": "mlkit.gpu.devices",
    "GpuRequest": "mlkit.gpu.select",
    "reserve": "mlkit.gpu.reserving",
    "GpuLease": "mlkit.gpu.lease",
    "Lease": "mlkit.gpu.records",
    "leased_run_ids": "mlkit.gpu.ledger",
    "SystemMetricsSampler": "mlkit.gpu.sampler",
    "parse_memory": "mlkit.units",
    "parse_duration": "mlkit.units",
}

# The real names for type checkers (a re-export, so ruff's F401 is off for this file in
# pyproject.toml); at run time __getattr__ below imports each on first use.
if TYPE_CHECKING:
    from mlkit.gpu.devices import GpuInfo, GpuProcess, GpuReport
    from mlkit.gpu.host import probe
    from mlkit.gpu.lease import GpuLease
    from mlkit.gpu.ledger import leased_run_ids
    from mlkit.gpu.records import Lease
    from mlkit.gpu.reserving import reserve
    from mlkit.gpu.sampler import SystemMetricsSampler
    from mlkit.gpu.select import GpuRequest
    from mlkit.units import parse_duration, parse_memory

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("mlkit.gpu", _EXPORTS, globals())
