"""The stand-in NVML for machines without a GPU: the slice of `pynvml` that mlkit calls.

Selected with `MLKIT_FAKE_NVML=<scenario>` (so real `mlkit` subprocesses use it too); the module
itself is what `mlkit.gpu.nvml.load()` returns in place of `pynvml`. Constants and exception
classes are pynvml's own, so `except nv.NVMLError_NotSupported` means the same thing on both.

Scenarios (named after what they reproduce):

- `four_idle`         4 idle H100s.
- `one_busy_foreign`  2 H100s; GPU 0 runs another user's process (30 GiB, 95 % busy).
- `mig`               GPU 0 is an A100 in MIG mode with 3 instances (one busy), GPU 1 a plain A100.
- `field_raises`      2 GPUs whose power/temperature/clock/energy/utilisation getters raise
                      NotSupported or NoPermission (consumer cards, containers without rights).
- `unaccounted`       4 H100s; GPU 2 runs a compute process (20 GiB) that no lease accounts for and
                      that is not visible here (a run whose lease the ledger lost, another container).
- `gpu_lost`          3 GPUs; GPU 1 fell off the bus (every query raises GpuIsLost).
- `none`              a driver, zero GPUs.
- `no_driver`         nvmlInit raises LibraryNotFound (as this machine's real pynvml does).
- `driver_not_loaded` nvmlInit raises DriverNotLoaded.

`MLKIT_FAKE_NVML_STATE=<json file>` is re-read whenever it changes, so a test can change a GPU
while another process watches it: `{"gpus": {"0": {"memory_used": 0, "util_gpu": 0,
"processes": [], "lost": false}}}` (keys as in `_gpu()` below).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import pynvml as _real

# pynvml's own constants and exception classes (not its functions: those would call the driver).
for _name in dir(_real):
    if _name.startswith(("NVML_", "NVMLError", "nvmlMemory_v", "nvmlTemperature_v")):
        globals()[_name] = getattr(_real, _name)
NVMLError = _real.NVMLError
NVMLLibraryMismatchError = _real.NVMLLibraryMismatchError
nvmlMemory_v2 = _real.nvmlMemory_v2

SCENARIO_ENV = "MLKIT_FAKE_NVML"
STATE_ENV = "MLKIT_FAKE_NVML_STATE"
GiB = 1024**3
MiB = 1024**2
UNSEEN_PID = 0x7FFFFF00  # above any pid_max (2**22): a process this host's /proc never shows
_ENERGY_EPOCH = 1_700_000_000.0  # the energy counter counts from here at the GPU's power draw

_ERRORS = {
    "NotSupported": _real.NVML_ERROR_NOT_SUPPORTED,
    "NoPermission": _real.NVML_ERROR_NO_PERMISSION,
    "GpuIsLost": _real.NVML_ERROR_GPU_IS_LOST,
    "NotFound": _real.NVML_ERROR_NOT_FOUND,
    "FunctionNotFound": _real.NVML_ERROR_FUNCTION_NOT_FOUND,
    "LibraryNotFound": _real.NVML_ERROR_LIBRARY_NOT_FOUND,
    "DriverNotLoaded": _real.NVML_ERROR_DRIVER_NOT_LOADED,
    "Unknown": _real.NVML_ERROR_UNKNOWN,
    "Uninitialized": _real.NVML_ERROR_UNINITIALIZED,
}


def _gpu(index: int, **over: Any) -> dict[str, Any]:
    gpu = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-f4ce{index:04x}-0000-4000-8000-00000000000{index}",
        "pci_bus_id": f"00000000:{0x18 + 0x10 * index:02X}:00.0",
        "memory_total": 81559 * MiB,
        "memory_reserved": 512 * MiB,
        "memory_used": 4 * MiB,
        "util_gpu": 0,
        "util_mem": 0,
        "temperature": 31 + index,
        "power_mw": 72_000,
        "power_limit_mw": 700_000,
        "sm_clock": 345,
        "sm_clock_max": 1980,
        "cc": [9, 0],
        "mig": False,
        "mig_instances": [],
        "processes": [],
        "throttle": 0x1,
        "raises": {},
        "lost": False,
    }
    gpu.update(over)
    return gpu


def _a100(index: int, **over: Any) -> dict[str, Any]:
    base = {
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total": 81920 * MiB,
        "power_limit_mw": 400_000,
        "power_mw": 55_000,
        "sm_clock": 210,
        "sm_clock_max": 1410,
        "cc": [8, 0],
    }
    return _gpu(index, **{**base, **over})


def _mig(gi: int, ci: int, slot: int, total_gib: int, used: int = 0) -> dict[str, Any]:
    return {
        "uuid": f"MIG-0a1b2c3d-{slot:04x}-5000-8000-00000000{gi:04x}",
        "name": f"NVIDIA A100-SXM4-80GB MIG {total_gib // 10}g.{total_gib}gb",
        "gi": gi,
        "ci": ci,
        "memory_total": total_gib * GiB,
        "memory_used": used,
    }


_NOT_SUPPORTED_FIELDS = {
    name: "NotSupported"
    for name in (
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTemperatureV",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetMaxClockInfo",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
    )
}


def scenario(name: str) -> dict[str, Any]:
    """The named scenario as plain data: driver, CUDA version and the GPUs in PCI order."""
    base: dict[str, Any] = {"driver": "580.95.05", "cuda": 13000, "init_error": None, "gpus": []}
    if name == "four_idle":
        base["gpus"] = [_gpu(i) for i in range(4)]
    elif name == "one_busy_foreign":
        foreign = {"pid": 1, "used_memory": 30 * GiB, "gi": None, "ci": None}
        base["gpus"] = [
            _gpu(0, memory_used=30 * GiB + 4 * MiB, util_gpu=95, util_mem=60, power_mw=610_000, sm_clock=1980,
                 throttle=0x4, processes=[foreign], temperature=71),
            _gpu(1),
        ]  # fmt: skip
    elif name == "mig":
        instances = [_mig(1, 0, 0, 40), _mig(2, 0, 1, 20, used=12 * GiB), _mig(3, 0, 2, 10)]
        base["gpus"] = [
            _a100(0, mig=True, mig_instances=instances, memory_used=12 * GiB,
                  processes=[{"pid": 1, "used_memory": 12 * GiB, "gi": 2, "ci": 0}],
                  raises={"nvmlDeviceGetUtilizationRates": "NotSupported"}),
            _a100(1),
        ]  # fmt: skip
    elif name == "field_raises":
        no_permission = {"nvmlDeviceGetComputeRunningProcesses": "NoPermission",
                         "nvmlDeviceGetGraphicsRunningProcesses": "NoPermission",
                         "nvmlDeviceGetTotalEnergyConsumption": "FunctionNotFound",
                         "nvmlDeviceGetCudaComputeCapability": "NotSupported"}  # fmt: skip
        base["gpus"] = [
            _gpu(0, name="NVIDIA GeForce RTX 4090", raises=dict(_NOT_SUPPORTED_FIELDS)),
            _gpu(1, name="NVIDIA GeForce RTX 4090", raises=no_permission),
        ]
    elif name == "unaccounted":
        stray = {"pid": UNSEEN_PID, "used_memory": 20 * GiB, "gi": None, "ci": None}
        base["gpus"] = [_gpu(i) for i in range(4)]
        base["gpus"][2] = _gpu(2, memory_used=20 * GiB, util_gpu=80, processes=[stray])
    elif name == "gpu_lost":
        base["gpus"] = [_gpu(0), _gpu(1, lost=True), _gpu(2)]
    elif name == "none":
        pass
    elif name == "no_driver":
        base["init_error"] = "LibraryNotFound"
    elif name == "driver_not_loaded":
        base["init_error"] = "DriverNotLoaded"
    else:
        raise ValueError(f"{SCENARIO_ENV}={name!r}: unknown scenario (one of {', '.join(SCENARIOS)})")
    return base


SCENARIOS = (
    "four_idle",
    "one_busy_foreign",
    "mig",
    "field_raises",
    "unaccounted",
    "gpu_lost",
    "none",
    "no_driver",
    "driver_not_loaded",
)


# --- the machine: scenario + state file -------------------------------------------------------

_lock = threading.Lock()
_init_count = 0
_cache: dict[str, Any] = {"key": None, "machine": None}


def _machine() -> dict[str, Any]:
    """The scenario with the state file's overrides; re-read only when the file changes."""
    name = os.environ.get(SCENARIO_ENV, "four_idle")
    state_path = os.environ.get(STATE_ENV)
    stamp = None
    if state_path:
        try:
            st = os.stat(state_path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
    key = (name, state_path, stamp)
    if _cache["key"] == key:
        return _cache["machine"]
    machine = scenario(name)
    if state_path and stamp is not None:
        try:
            with open(state_path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
        for index, over in (state.get("gpus") or {}).items():
            i = int(index)
            if i < len(machine["gpus"]):
                machine["gpus"][i] = {**machine["gpus"][i], **copy.deepcopy(over)}
    _cache["key"], _cache["machine"] = key, machine
    return machine


def _raise(name: str) -> NoReturn:
    raise NVMLError(_ERRORS[name])


def _check_init() -> None:
    if _init_count <= 0:
        _raise("Uninitialized")


@dataclass(frozen=True)
class _Handle:
    index: int
    mig_slot: int | None = None


def _gpu_of(handle: _Handle, fn: str) -> dict[str, Any]:
    _check_init()
    gpus = _machine()["gpus"]
    if not isinstance(handle, _Handle) or handle.index >= len(gpus):
        _raise("NotFound")  # an index that is gone (a handle from an older state)
    gpu = gpus[handle.index]
    if gpu.get("lost"):
        _raise("GpuIsLost")
    if fn in gpu.get("raises", {}):
        _raise(gpu["raises"][fn])
    return gpu


def _mig_of(handle: _Handle, gpu: dict[str, Any]) -> dict[str, Any] | None:
    if handle.mig_slot is None:
        return None
    return gpu["mig_instances"][handle.mig_slot]


# --- lifecycle and system --------------------------------------------------------------------


def nvmlInit() -> None:
    nvmlInitWithFlags(0)


def nvmlInitWithFlags(flags: int) -> None:
    global _init_count
    error = _machine()["init_error"]
    if error:
        _raise(error)
    with _lock:
        _init_count += 1


def nvmlShutdown() -> None:
    global _init_count
    with _lock:
        if _init_count <= 0:
            _raise("Uninitialized")
        _init_count -= 1


def nvmlSystemGetDriverVersion() -> str:
    _check_init()
    return _machine()["driver"]


def nvmlSystemGetCudaDriverVersion() -> int:
    _check_init()
    return _machine()["cuda"]


def nvmlDeviceGetCount() -> int:
    _check_init()
    return len(_machine()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    _check_init()
    if not 0 <= index < len(_machine()["gpus"]):
        _raise("NotFound")
    return _Handle(index)


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    _check_init()
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    for i, gpu in enumerate(_machine()["gpus"]):
        if gpu["uuid"] == uuid:
            if gpu.get("lost"):
                _raise("GpuIsLost")
            return _Handle(i)
        for slot, mig in enumerate(gpu["mig_instances"]):
            if mig["uuid"] == uuid:
                return _Handle(i, slot)
    _raise("NotFound")
    raise AssertionError  # unreachable


# --- device getters --------------------------------------------------------------------------


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _gpu_of(handle, "nvmlDeviceGetIndex")
    return handle.index


def nvmlDeviceGetName(handle: _Handle) -> str:
    gpu = _gpu_of(handle, "nvmlDeviceGetName")
    mig = _mig_of(handle, gpu)
    return mig["name"] if mig else gpu["name"]


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    gpu = _gpu_of(handle, "nvmlDeviceGetUUID")
    mig = _mig_of(handle, gpu)
    return mig["uuid"] if mig else gpu["uuid"]


@dataclass
class _PciInfo:
    busId: bytes
    busIdLegacy: bytes


def nvmlDeviceGetPciInfo(handle: _Handle) -> _PciInfo:
    gpu = _gpu_of(handle, "nvmlDeviceGetPciInfo")
    return _PciInfo(busId=gpu["pci_bus_id"].encode(), busIdLegacy=gpu["pci_bus_id"][4:].encode())


@dataclass
class _Memory:
    total: int
    reserved: int
    free: int
    used: int


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> _Memory:
    gpu = _gpu_of(handle, "nvmlDeviceGetMemoryInfo")
    mig = _mig_of(handle, gpu)
    if mig:
        return _Memory(mig["memory_total"], 0, mig["memory_total"] - mig["memory_used"], mig["memory_used"])
    total, used = gpu["memory_total"], gpu["memory_used"]
    if version is None:  # v1: `used` includes the driver's reservation (gpustat #141)
        used += gpu["memory_reserved"]
        return _Memory(total, 0, total - used, used)
    reserved = gpu["memory_reserved"]
    return _Memory(total, reserved, total - reserved - used, used)


@dataclass
class _Utilization:
    gpu: int
    memory: int


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> _Utilization:
    gpu = _gpu_of(handle, "nvmlDeviceGetUtilizationRates")
    if _mig_of(handle, gpu) is not None:
        _raise("NotSupported")
    return _Utilization(gpu["util_gpu"], gpu["util_mem"])


def nvmlDeviceGetTemperatureV(handle: _Handle, sensor: int, version: int | None = None) -> int:
    return _gpu_of(handle, "nvmlDeviceGetTemperatureV")["temperature"]


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    return _gpu_of(handle, "nvmlDeviceGetTemperature")["temperature"]


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return _gpu_of(handle, "nvmlDeviceGetPowerUsage")["power_mw"]


def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return _gpu_of(handle, "nvmlDeviceGetEnforcedPowerLimit")["power_limit_mw"]


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetTotalEnergyConsumption")
    return int(gpu["power_mw"] * (time.time() - _ENERGY_EPOCH))  # mW * s = mJ


def nvmlDeviceGetClockInfo(handle: _Handle, clock_type: int) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetClockInfo")
    return gpu["sm_clock"] if clock_type == _real.NVML_CLOCK_SM else 1593


def nvmlDeviceGetMaxClockInfo(handle: _Handle, clock_type: int) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetMaxClockInfo")
    return gpu["sm_clock_max"] if clock_type == _real.NVML_CLOCK_SM else 2619


def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
    major, minor = _gpu_of(handle, "nvmlDeviceGetCudaComputeCapability")["cc"]
    return (major, minor)


def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    return _gpu_of(handle, "nvmlDeviceGetCurrentClocksEventReasons")["throttle"]


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: _Handle) -> int:
    return _gpu_of(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")["throttle"]


def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    gpu = _gpu_of(handle, "nvmlDeviceGetMigMode")
    if gpu["name"].startswith("NVIDIA GeForce"):
        _raise("NotSupported")
    mode = int(bool(gpu["mig"]))
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetMaxMigDeviceCount")
    return 7 if gpu["mig"] else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    gpu = _gpu_of(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
    if not gpu["mig"] or index >= len(gpu["mig_instances"]):
        _raise("NotFound")  # an empty slot, as the real call reports it
    return _Handle(handle.index, index)


def nvmlDeviceIsMigDeviceHandle(handle: _Handle) -> int:
    return int(handle.mig_slot is not None)


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: _Handle) -> _Handle:
    _gpu_of(handle, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
    return _Handle(handle.index)


def nvmlDeviceGetGpuInstanceId(handle: _Handle) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetGpuInstanceId")
    mig = _mig_of(handle, gpu)
    if mig is None:
        _raise("NotSupported")
    return mig["gi"]


def nvmlDeviceGetComputeInstanceId(handle: _Handle) -> int:
    gpu = _gpu_of(handle, "nvmlDeviceGetComputeInstanceId")
    mig = _mig_of(handle, gpu)
    if mig is None:
        _raise("NotSupported")
    return mig["ci"]


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int
    computeInstanceId: int


def _processes(handle: _Handle, fn: str) -> list[_Process]:
    gpu = _gpu_of(handle, fn)
    mig = _mig_of(handle, gpu)
    result = []
    for proc in gpu["processes"]:
        if mig is not None and proc.get("gi") != mig["gi"]:
            continue
        gi = proc.get("gi")
        ci = proc.get("ci")
        result.append(
            _Process(
                pid=proc["pid"],
                usedGpuMemory=proc.get("used_memory"),
                gpuInstanceId=0xFFFFFFFF if gi is None else gi,
                computeInstanceId=0xFFFFFFFF if ci is None else ci,
            )
        )
    return result


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Process]:
    return _processes(handle, "nvmlDeviceGetComputeRunningProcesses")


def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[_Process]:
    _gpu_of(handle, "nvmlDeviceGetGraphicsRunningProcesses")
    return []
