"""The lease ledger's records: `Lease` (one GPU held by one run) and `Waiter` (one run waiting).

Plain data, read back and checked field by field by mlkit.gpu.trust, kept by mlkit.gpu.ledger,
ordered by mlkit.gpu.queue and marked on the GPUs by mlkit.gpu.devices; this module imports none
of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlkit.gpu.select import GpuRequest


@dataclass
class Lease:
    """One GPU held by one run (every field is checked when read back: mlkit.gpu.trust)."""

    uuid: str
    run_id: str
    pid: int  # the supervisor (mlkit run) that holds it
    pid_start: float | None  # that pid's start time, epoch s: a reused pid is not the owner
    host: str
    since: float  # epoch s
    user: str | None = None
    uid: int | None = None  # the supervisor's real uid
    procs: list[list[float]] = field(default_factory=list)  # [pid, start] of the run's entry point
    pgid: int | None = None  # the entry point's process group (it leads its own session)
    role: str | None = None  # "serving": held by `mlkit models serve` for its lifetime (None: a run)

    @property
    def is_local(self) -> bool:
        import socket  # import budget: `mlkit run --gpus none` loads this module, never socket

        return self.host == socket.gethostname()


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
