"""What this host's GPUs are doing and who holds them: NVML's view marked with the lease ledger.

`probe()` reads the ledger (mlkit.gpu.ledger: the live leases, the runs waiting, the records not
honoured) and then the GPUs (mlkit.gpu.devices). It sits above both, so the device reader never
reads the ledger and the ledger, which probes under its lock, never calls back here.
"""

from __future__ import annotations

from typing import Any

from mlkit.gpu.devices import GpuReport, read_gpus
from mlkit.gpu.ledger import read_survey
from mlkit.gpu.records import Lease, Waiter


def probe(*, leases: list[Lease] | None = None) -> GpuReport:
    """Read every GPU through NVML. Never raises for a missing driver or an unreadable field.

    `leases` are the live mlkit leases to mark on the GPUs and their processes; `None` reads
    them, and the runs waiting for GPUs, from the host's lease ledger.
    """
    # import budget: loaded with the probe, which reads NVML anyway
    from mlkit.gpu import allocation

    entries = allocation.allocated()
    if entries is not None:  # inside a Slurm job: only the job's GPUs, and no host ledger
        return allocation.scope(read_gpus([]), entries)
    visible = allocation.inherited()  # an inherited CUDA_VISIBLE_DEVICES: only the GPUs it names
    if leases is not None:
        report = read_gpus(leases)
    else:
        try:
            survey = read_survey()
        except OSError:
            report = read_gpus([])
        else:
            ignored = [_ignored(record, state, why) for record, state, why in survey.ignored]
            report = read_gpus(survey.leases, survey.waiters, ignored)
    return report if visible is None else allocation.narrow(report, visible)


def _ignored(record: Lease | Waiter, state: str, why: str) -> dict[str, Any]:
    return {
        "kind": "lease" if isinstance(record, Lease) else "waiter",
        "run_id": record.run_id,
        "uuid": getattr(record, "uuid", None),
        "pid": record.pid,
        "host": record.host,
        "user": record.user,
        "state": state,
        "why": why,
        "clear": f"mlkit gpus --release {record.run_id}",
    }
