"""A run's GPU lease: `GpuLease`, and the `mlkit.gpu.*` tags that describe it.

Leases come from `mlkit.gpu.reserving.reserve`: a CPU lease without the host's ledger, a lease of
GPUs from it (mlkit.gpu.ledger, which hands each such lease its own track/remove steps).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the probe (and NVML) load only when GPUs are asked for
    from mlkit.gpu.devices import GpuInfo, GpuReport


@dataclass(eq=False)
class GpuLease:
    """The GPUs a run holds. Release it when the run ends (or use it as a context manager)."""

    gpus: list[GpuInfo] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notice: str | None = None
    run_id: str | None = None
    owner_pid: int | None = None
    released: bool = False
    _held_fd: int | None = field(default=None, repr=False, compare=False)
    _gpu_fds: list[int] = field(default_factory=list, repr=False, compare=False)  # flocks on its GPUs' files
    # the ledger's steps for a lease of GPUs (mlkit.gpu.ledger.track_lease / remove_lease)
    _track: Callable[[GpuLease, int], None] | None = field(default=None, repr=False, compare=False)
    _remove: Callable[[GpuLease], None] | None = field(default=None, repr=False, compare=False)

    @property
    def uuids(self) -> list[str]:
        return [gpu.uuid for gpu in self.gpus]

    def track(self, pid: int) -> None:
        """Record the run's entry point (`pid`, leading its own process group) in the lease: the
        lease then lasts while it or its group lives, also if the supervisor is killed first."""
        if self.released or not self.gpus or self._track is None:
            return
        self._track(self, pid)

    def release(self) -> None:
        """Give the GPUs back. Idempotent; a no-op for a CPU lease."""
        if self.released:
            return
        self.released = True
        try:
            if self.gpus and self._remove is not None:
                self._remove(self)
        finally:
            # Only now: while our lease is in the ledger, the `held` flock is what proves that
            # our live pid is the mlkit process that took it (else it reads as an impostor's).
            if self._held_fd is not None:
                os.close(self._held_fd)
                self._held_fd = None
            for fd in self._gpu_fds:  # the GPUs are free again, as the kernel tells other reservers
                os.close(fd)
            self._gpu_fds = []

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lease_tags(gpus: list[GpuInfo], report: GpuReport | None) -> dict[str, str]:
    """`mlkit.gpu.*` tags for the run record."""
    tags = {"mlkit.gpu.count": str(len(gpus)), "mlkit.gpu.uuids": ",".join(g.uuid for g in gpus)}
    for i, gpu in enumerate(gpus):
        for key, value in (
            ("name", gpu.name),
            ("uuid", gpu.uuid),
            ("index", gpu.index),
            ("memory_total", gpu.memory_total),
            ("compute_capability", gpu.compute_capability),
            ("mig_parent_uuid", gpu.parent_uuid),
        ):
            if value is not None:
                tags[f"mlkit.gpu.{i}.{key}"] = str(value)
    if report is None:  # no probe was made (--gpus none)
        return tags
    if report.driver_version:
        tags["mlkit.gpu.driver_version"] = report.driver_version
    if report.cuda_version:
        tags["mlkit.gpu.cuda_version"] = report.cuda_version
    return tags
