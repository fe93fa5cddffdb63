"""The wait queue: runs that wait for GPUs (`--wait`) are served in the order they began waiting.

A waiting run is recorded in the lease ledger beside the leases (`Waiter`, in mlkit.gpu.records); like a lease, a waiter
read back is checked field by field (mlkit.gpu.trust) and counts only while its process lives. Before any run takes
GPUs, `holds()` walks the runs that have waited longer, oldest first, and sets aside for each the
GPUs it could use now: all it asked for if it can be served, else the free ones it could use
towards its request. A later run — waiting or not — can take only what is left, so a run asking for
two GPUs is not starved by a stream of one-GPU runs, and runs started together begin in order.
GPUs that no earlier waiter can use (other indices, too little free memory for its filter) stay
free for later runs. `--gpus auto` never waits, so it is never queued, but it respects the queue.

Pure functions of a probe snapshot, the leases and the queue; the ledger calls them under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mlkit.gpu.records import Waiter
from mlkit.gpu.select import Held, claimable, select

if TYPE_CHECKING:
    from mlkit.gpu.devices import GpuReport


def holds(report: GpuReport, earlier: list[Waiter], leased: Mapping[str, str]) -> dict[str, Held]:
    """GPU UUID -> the earlier waiter it is set aside for. `earlier` is oldest first."""
    taken: dict[str, str] = dict(leased)
    held: dict[str, Held] = {}
    for waiter in earlier:
        try:
            request = waiter.gpu_request
        except (TypeError, ValueError):  # written by another mlkit version: it does not hold GPUs
            continue
        selection = select(report, request, taken)
        if selection.ok:
            gpus = selection.gpus
        elif selection.fatal:  # waiting cannot help it; it will give up on its next poll
            gpus = []
        else:
            gpus = claimable(report, request, taken)
        for gpu in gpus:
            held[gpu.uuid] = taken[gpu.uuid] = Held(waiter.run_id)
    return held
