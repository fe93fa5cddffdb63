"""The wait queue: runs that wait for GPUs (`--wait`) are served in the order they began waiting.

A waiting run is recorded in the lease ledger beside the leases (`Waiter`); like a lease, a waiter
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
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlkit.gpu.select import GpuRequest, Held, claimable, select

if TYPE_CHECKING:
    from mlkit.gpu.devices import GpuReport


@dataclass
class Waiter:
    """One run waiting for GPUs, as the ledger stores it."""

    run_id: str
    pid: int  # the supervisor that waits
    pid_start: float | None
    host: str
    since: float  # epoch s: the queue's order
    request: dict[str, Any] = field(default_factory=dict)  # GpuRequest's fields
    user: str | None = None
    uid: int | None = None  # the waiting process's real uid

    @classmethod
    def of(cls, request: GpuRequest, **fields: Any) -> Waiter:
        return cls(request=asdict(request), **fields)

    @property
    def gpu_request(self) -> GpuRequest:
        fields = dict(self.request)
        fields["ids"] = tuple(fields.get("ids") or ())
        return GpuRequest(**fields)

    def describe(self) -> str:
        return self.gpu_request.describe()


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
