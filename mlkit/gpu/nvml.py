"""Which NVML module to talk to, and the one helper every optional query goes through.

`load()` returns the real `pynvml` (nvidia-ml-py), or the stand-in `mlkit.gpu.fake` when
`MLKIT_FAKE_NVML=<scenario>` is set. Both are imported here, inside the function, never when
`mlkit.gpu` is imported. `query(nv, fn, ...)` turns any `NVMLError` into `None` (gpustat's
`safenvml`), except a lost GPU, which it re-raises so the probe can mark the device.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from mlkit.errors import UsageError

FAKE_ENV = "MLKIT_FAKE_NVML"

# nvmlClocksEventReasons bits (nvml.h); names as nvidia-smi prints them.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


class NvmlMissing(Exception):
    """The nvidia-ml-py package is not installed (distinct from a missing driver)."""


def load() -> ModuleType:
    """The NVML binding: `mlkit.gpu.fake` under MLKIT_FAKE_NVML, else `pynvml`."""
    scenario = os.environ.get(FAKE_ENV)
    if scenario:
        from mlkit.gpu import fake  # loaded only when the stand-in is asked for (it imports pynvml)

        if scenario not in fake.SCENARIOS:
            raise UsageError(
                f"{FAKE_ENV}={scenario!r}: no such stand-in NVML scenario",
                hint=f"use one of {', '.join(fake.SCENARIOS)}, or unset {FAKE_ENV} for the real NVML",
            )
        return fake
    try:
        import pynvml  # import budget: never at `import mlkit.gpu`, only when GPUs are read
    except ImportError as exc:  # a broken install: nvidia-ml-py is a dependency
        raise NvmlMissing(str(exc)) from exc
    return pynvml


def is_lost(nv: ModuleType, exc: BaseException) -> bool:
    """True for the errors that mean the GPU fell off the bus (gpustat's InvalidGPU)."""
    lost = tuple(
        cls
        for cls in (getattr(nv, "NVMLError_GpuIsLost", None), getattr(nv, "NVMLError_Unknown", None))
        if cls
    )
    return bool(lost) and isinstance(exc, lost)


def query(nv: ModuleType, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call one NVML getter; `None` when it fails (not supported, no permission, old driver...).

    A lost GPU is not swallowed: the caller marks the whole device lost.
    """
    try:
        return fn(*args, **kwargs)
    except nv.NVMLError as exc:
        if is_lost(nv, exc):
            raise
        return None
    except Exception as exc:
        mismatch = getattr(nv, "NVMLLibraryMismatchError", None)
        if mismatch is not None and isinstance(exc, mismatch):  # binding newer than the driver
            return None
        raise


def text(value: Any) -> str | None:
    """NVML strings: struct fields are bytes, wrapped calls already str."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace").rstrip("\x00")
    return str(value)


def throttle_names(mask: int | None) -> list[str] | None:
    """Names of the set bits of a clocks-event-reasons mask (unknown bits as hex)."""
    if mask is None:
        return None
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(hex(unknown))
    return names


def cuda_version_text(value: int | None) -> str | None:
    """13000 -> "13.0", 12040 -> "12.4"."""
    if value is None:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"
