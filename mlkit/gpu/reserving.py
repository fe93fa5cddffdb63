"""`reserve`: the one way to get a run's GPU lease.

`reserve(GpuRequest.parse("none"), ...)` gives a CPU lease without loading the host's ledger
(mlkit.gpu.ledger: its records, the liveness proofs, the wait queue: ~10 ms of every
`mlkit run --gpus none`); any other request is the ledger's (`ledger.reserve_gpus`).
"""

from __future__ import annotations

from collections.abc import Callable

from mlkit.gpu.lease import GpuLease, lease_tags
from mlkit.gpu.select import GpuRequest, cuda_env


def reserve(
    request: GpuRequest,
    *,
    run_id: str,
    owner_pid: int,
    wait: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    role: str | None = None,
) -> GpuLease:
    """Lease GPUs for `run_id`, held by process `owner_pid` (the supervisor).

    `wait`: seconds to wait for the request to become satisfiable (None/0: don't wait; math.inf:
    forever). Raises GpuUnavailableError (no wait, or waiting cannot help: no such GPUs) or
    GpuWaitTimeoutError. `on_wait(msg)` hears what it is waiting for whenever that changes.
    `role="serving"` marks the lease of a model server (`mlkit gpus` shows it).
    """
    if request.kind == "none":
        return GpuLease(env=cuda_env([]), tags=lease_tags([], None), run_id=run_id, owner_pid=owner_pid)
    from mlkit.gpu import ledger  # import budget: only a run that asks for GPUs

    return ledger.reserve_gpus(
        request, run_id=run_id, owner_pid=owner_pid, wait=wait, on_wait=on_wait, role=role
    )
