"""What GPUs this machine has and what they are doing, read through NVML.

`read_gpus()` initialises NVML, reads every GPU and shuts NVML down again; nothing happens at
import. (`mlkit.gpu.probe()`, in mlkit.gpu.host, adds the ledger's leases and calls it.)
No library, no driver or no GPU gives `GpuReport(gpus=[], reason=...)`, never an exception. A
field NVML cannot read is `None`; a GPU that falls off the bus mid-probe is listed with
`lost=True` and the others are still read (gpustat's `safenvml` and `InvalidGPU`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlkit import procid
from mlkit.gpu import nvml
from mlkit.gpu.nvml import query

if TYPE_CHECKING:  # annotations only: the records never load NVML, the probe reads them
    from mlkit.gpu.records import Lease, Waiter

_NO_ID = 0xFFFFFFFF  # NVML's "not a MIG process" gpuInstanceId


@dataclass
class GpuProcess:
    """One process with a context on a GPU. PIDs are host PIDs (NVML ignores PID namespaces)."""

    pid: int
    used_memory: int | None  # bytes; None where NVML cannot say (WDDM, no permission)
    name: str | None = None  # from psutil; None when the pid is not visible here
    user: str | None = None
    mlkit_run_id: str | None = None  # the mlkit run this process belongs to
    unaccounted: str | None = None  # why no live lease accounts for it, when it may be an mlkit run's
    gpu_instance_id: int | None = None  # MIG only


@dataclass
class GpuInfo:
    """One GPU (or one MIG instance, with `parent_uuid` set) as NVML reports it right now."""

    index: int
    uuid: str
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total: int | None = None  # bytes (nvmlMemory_v2, as nvidia-smi)
    memory_used: int | None = None
    memory_free: int | None = None
    utilization_gpu: int | None = None  # percent of time a kernel ran
    utilization_memory: int | None = None
    temperature: int | None = None  # degrees C
    power_draw: float | None = None  # W
    power_limit: float | None = None  # W (enforced limit)
    sm_clock: int | None = None  # MHz
    sm_clock_max: int | None = None
    compute_capability: str | None = None  # "9.0"
    mig_mode: bool | None = None  # None: the card has no MIG
    mig_instances: list[GpuInfo] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    throttle_reasons: list[str] | None = None
    energy_mj: int | None = None  # total energy since the driver loaded (Volta+)
    parent_uuid: str | None = None  # for a MIG instance: its GPU
    gpu_instance_id: int | None = None  # for a MIG instance
    leased_by: str | None = None  # run id of the mlkit lease on this UUID
    not_free: str | None = None  # set when a process no live lease accounts for runs on it
    lost: bool = False
    error: str | None = None  # why the GPU could not be read (lost)

    @property
    def is_mig_instance(self) -> bool:
        return self.parent_uuid is not None

    @property
    def label(self) -> str:
        """ "GPU 0" or "GPU 0 MIG 2" for messages."""
        if self.gpu_instance_id is not None:
            return f"GPU {self.index} MIG {self.gpu_instance_id}"
        return f"GPU {self.index}"


@dataclass
class GpuReport:
    """The machine's GPUs, the driver, and why there are none when there are none."""

    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None  # the CUDA version the driver supports, "13.0"
    reason: str | None = None  # set when gpus is empty (or NVML could not start)
    leases: list[Lease] = field(default_factory=list)  # mlkit leases alive on this host
    waiting: list[Waiter] = field(default_factory=list)  # runs queued for GPUs, oldest first
    ignored: list[dict[str, Any]] = field(default_factory=list)  # ledger records not honoured, and why

    def by_uuid(self) -> dict[str, GpuInfo]:
        """Every selectable unit (GPUs and MIG instances) by UUID."""
        units: dict[str, GpuInfo] = {}
        for gpu in self.gpus:
            units[gpu.uuid] = gpu
            for mig in gpu.mig_instances:
                units[mig.uuid] = mig
        return units


def read_gpus(
    leases: list[Lease],
    waiting: list[Waiter] | None = None,
    ignored: list[dict[str, Any]] | None = None,
) -> GpuReport:
    """Read every GPU through NVML. Never raises for a missing driver or an unreadable field.

    `leases` are the live mlkit leases to mark on the GPUs and their processes; `waiting` and
    `ignored` (the runs waiting for GPUs, the ledger records not honoured) are carried into the
    report. The ledger itself is read by `mlkit.gpu.host.probe()`, which calls this.
    """
    waiting = waiting or []
    ignored = ignored or []
    try:
        nv = nvml.load()
    except nvml.NvmlMissing as exc:
        return GpuReport(reason=f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py")
    reason = _init(nv)
    if reason:
        return GpuReport(reason=reason, leases=leases, waiting=waiting)
    try:
        report = _read_all(nv)
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass
    report.leases, report.waiting, report.ignored = leases, waiting, ignored
    _mark_leases(report, leases)
    return report


def _init(nv: ModuleType) -> str | None:
    """Start NVML; a one-line reason when it cannot start."""
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        return init_failure_reason(nv, exc)
    return None


def init_failure_reason(nv: ModuleType, exc: BaseException) -> str:
    if isinstance(exc, nv.NVMLError_LibraryNotFound):
        return "no NVIDIA driver: NVML library libnvidia-ml.so.1 not found"
    if isinstance(exc, nv.NVMLError_DriverNotLoaded):
        return "the NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded); load it with `modprobe nvidia` or reboot"
    if isinstance(exc, nv.NVMLError_LibRmVersionMismatch):
        return "the NVIDIA driver library and kernel module versions differ (after a driver upgrade?); reboot or reload the nvidia modules"
    if isinstance(exc, nv.NVMLError_NoPermission):
        return "no permission to open the NVIDIA devices (NVML: Insufficient Permissions)"
    return f"NVML could not start: {exc}"


def _read_all(nv: ModuleType) -> GpuReport:
    driver = nvml.text(query(nv, nv.nvmlSystemGetDriverVersion))
    cuda = nvml.cuda_version_text(query(nv, nv.nvmlSystemGetCudaDriverVersion))
    try:
        count = nv.nvmlDeviceGetCount()
    except nv.NVMLError as exc:
        return GpuReport(driver_version=driver, cuda_version=cuda, reason=f"NVML could not count GPUs: {exc}")
    gpus = [read_gpu(nv, i) for i in range(count)]
    reason = None if gpus else f"the NVIDIA driver ({driver or 'unknown version'}) reports no GPUs"
    if gpus and all(g.lost for g in gpus):
        reason = "every GPU is lost (fell off the bus); check `nvidia-smi` and dmesg"
    return GpuReport(gpus=gpus, driver_version=driver, cuda_version=cuda, reason=reason)


def read_gpu(nv: ModuleType, index: int) -> GpuInfo:
    """One GPU by NVML index; a lost GPU comes back with `lost=True` instead of raising."""
    info = GpuInfo(index=index, uuid=f"unknown-{index}")
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        info.uuid = nvml.text(query(nv, nv.nvmlDeviceGetUUID, handle)) or info.uuid
        _fill(nv, handle, info)
    except nv.NVMLError as exc:  # lost (query re-raises only that) or no handle at all
        info.lost = True
        info.error = str(exc) or type(exc).__name__
    return info


def _fill(nv: ModuleType, handle: Any, info: GpuInfo) -> None:
    info.name = nvml.text(query(nv, nv.nvmlDeviceGetName, handle))
    pci = query(nv, nv.nvmlDeviceGetPciInfo, handle)
    info.pci_bus_id = nvml.text(pci.busId) if pci is not None else None
    _fill_memory(nv, handle, info)
    util = query(nv, nv.nvmlDeviceGetUtilizationRates, handle)
    if util is not None:
        info.utilization_gpu, info.utilization_memory = int(util.gpu), int(util.memory)
    info.temperature = temperature(nv, handle)
    power = query(nv, nv.nvmlDeviceGetPowerUsage, handle)
    info.power_draw = power / 1000.0 if power is not None else None
    limit = query(nv, nv.nvmlDeviceGetEnforcedPowerLimit, handle)
    info.power_limit = limit / 1000.0 if limit is not None else None
    info.sm_clock = query(nv, nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM)
    info.sm_clock_max = query(nv, nv.nvmlDeviceGetMaxClockInfo, handle, nv.NVML_CLOCK_SM)
    cc = query(nv, nv.nvmlDeviceGetCudaComputeCapability, handle)
    info.compute_capability = f"{cc[0]}.{cc[1]}" if cc is not None else None
    info.throttle_reasons = nvml.throttle_names(throttle_mask(nv, handle))
    info.energy_mj = query(nv, nv.nvmlDeviceGetTotalEnergyConsumption, handle)
    info.processes = processes(nv, handle)
    mode = query(nv, nv.nvmlDeviceGetMigMode, handle)
    info.mig_mode = bool(mode[0] == nv.NVML_DEVICE_MIG_ENABLE) if mode is not None else None
    if info.mig_mode:
        info.mig_instances = _mig_instances(nv, handle, info)


def _fill_memory(nv: ModuleType, handle: Any, info: GpuInfo) -> None:
    mem = query(nv, nv.nvmlDeviceGetMemoryInfo, handle, version=nv.nvmlMemory_v2)
    if mem is None:  # a driver older than R510: v1 (used includes the reservation)
        mem = query(nv, nv.nvmlDeviceGetMemoryInfo, handle)
    if mem is not None:
        info.memory_total, info.memory_used, info.memory_free = int(mem.total), int(mem.used), int(mem.free)


def temperature(nv: ModuleType, handle: Any) -> int | None:
    """GPU core temperature: the versioned call, else the deprecated one (old drivers)."""
    value = query(nv, nv.nvmlDeviceGetTemperatureV, handle, nv.NVML_TEMPERATURE_GPU)
    if value is None:
        value = query(nv, nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
    return value


def throttle_mask(nv: ModuleType, handle: Any) -> int | None:
    mask = query(nv, nv.nvmlDeviceGetCurrentClocksEventReasons, handle)
    if mask is None:
        mask = query(nv, nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
    return mask


def processes(nv: ModuleType, handle: Any) -> list[GpuProcess]:
    """Compute and graphics processes, de-duplicated by pid (as gpustat)."""
    seen: dict[int, GpuProcess] = {}
    for fn in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
        for proc in query(nv, fn, handle) or []:
            if proc.pid in seen:
                continue
            gi = getattr(proc, "gpuInstanceId", _NO_ID)
            seen[proc.pid] = GpuProcess(
                pid=int(proc.pid),
                used_memory=proc.usedGpuMemory,
                gpu_instance_id=None if gi in (None, _NO_ID) else int(gi),
            )
    return list(seen.values())


def _mig_instances(nv: ModuleType, handle: Any, parent: GpuInfo) -> list[GpuInfo]:
    count = query(nv, nv.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
    instances = []
    for slot in range(count):
        mig = query(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
        if mig is None:  # NotFound: an empty slot
            continue
        uuid = nvml.text(query(nv, nv.nvmlDeviceGetUUID, mig))
        if uuid is None:
            continue
        gi = query(nv, nv.nvmlDeviceGetGpuInstanceId, mig)
        inst = GpuInfo(
            index=parent.index,
            uuid=uuid,
            name=nvml.text(query(nv, nv.nvmlDeviceGetName, mig)),
            pci_bus_id=parent.pci_bus_id,
            compute_capability=parent.compute_capability,
            parent_uuid=parent.uuid,
            gpu_instance_id=gi,
            processes=[p for p in parent.processes if gi is not None and p.gpu_instance_id == gi],
        )
        _fill_memory(nv, mig, inst)
        instances.append(inst)
    return instances


def _mark_leases(report: GpuReport, leases: list[Lease]) -> None:
    """Set `leased_by` on leased GPUs and `mlkit_run_id` on processes of mlkit runs; a GPU running
    a process that may be an mlkit run's and that no live lease on it accounts for is `not_free`
    (NVML's process list is the second source of truth beside the ledger)."""
    by_uuid = {lease.uuid: lease for lease in leases}
    owner_run = {lease.pid: lease.run_id for lease in leases if lease.is_local}
    for held in leases:
        for pid, _ in held.procs:
            owner_run.setdefault(int(pid), held.run_id)
    units = report.by_uuid()
    for unit in units.values():
        lease = by_uuid.get(unit.uuid) or (by_uuid.get(unit.parent_uuid) if unit.parent_uuid else None)
        unit.leased_by = by_uuid[unit.uuid].run_id if unit.uuid in by_uuid else None
        if unit.mig_mode and unit.mig_instances:
            continue  # its processes are its instances' (judged there)
        leased_runs = {lease.run_id} if lease else set()
        for proc in unit.processes:
            _describe_process(proc, owner_run)
            if proc.mlkit_run_id is not None and proc.mlkit_run_id in leased_runs:
                continue
            if proc.mlkit_run_id is not None:
                proc.unaccounted = (
                    f"pid {proc.pid} of mlkit run {proc.mlkit_run_id[:8]}… holds no lease on it"
                )
            elif proc.name is None:
                proc.unaccounted = f"pid {proc.pid} (not visible here) and no lease accounts for it"
        stray = [p.unaccounted for p in unit.processes if p.unaccounted]
        if stray and unit.leased_by is None:
            unit.not_free = "not free: " + "; ".join(stray[:3])
    for gpu in report.gpus:  # a MIG instance's stray process keeps its whole card from whole-GPU runs
        if gpu.not_free is None and gpu.mig_instances:
            stray = [m.not_free for m in gpu.mig_instances if m.not_free]
            if stray:
                gpu.not_free = stray[0]


def _describe_process(proc: GpuProcess, owner_run: dict[int, str]) -> None:
    """Name, user and mlkit run of a GPU process: the run from the ledger's processes (it or an
    ancestor holds a lease) or from its environment (MLKIT_RUN_ID, where we may read it)."""
    import psutil  # import budget: `--gpus none` never loads psutil

    try:
        p = psutil.Process(proc.pid)
        with p.oneshot():
            proc.name = p.name()
            try:
                proc.user = p.username()
            except (KeyError, psutil.Error):  # a uid with no passwd entry
                proc.user = None
            chain = [proc.pid] + [parent.pid for parent in p.parents()]
    except (psutil.Error, OSError):  # another PID namespace (containers) or gone
        return
    for pid in chain:
        if pid in owner_run:
            proc.mlkit_run_id = owner_run[pid]
            return
    env = procid.environ_of(proc.pid)
    if env and env.get("MLKIT_RUN_ID"):
        proc.mlkit_run_id = env["MLKIT_RUN_ID"]


def to_dict(report: GpuReport) -> dict[str, Any]:
    """The report as plain JSON-able data (for `mlkit gpus --json`)."""
    return dataclasses.asdict(report)


def fake_active() -> str | None:
    """The fake NVML scenario in use, if any (for `mlkit gpus` to say so)."""
    return os.environ.get(nvml.FAKE_ENV) or None
